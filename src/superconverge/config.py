"""Typed experiment configuration: a YAML file plus ``key.sub=value`` overrides.

OmegaConf parses the file and the dotted overrides; pydantic validates the merged
tree against the schema below, so every error names the offending key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from superconverge import lr_rules, registry
from superconverge.budget import check_budget
from superconverge.errors import UserError
from superconverge.records import METRIC_NAMES

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
MonitorName = Literal[("auto", *METRIC_NAMES)]  # auto: what the task has (accuracy for a classifier)


class ConfigError(UserError):
    """The configuration file or an override is invalid."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_assignment=True)


class DataConfig(Section):
    """The data set, its splits and how batches are made."""

    name: str = Field("fashion_mnist", description="a built-in data set (" + ", ".join(registry.DATASETS) + ") or your own "
                      "`package.module:callable`")  # fmt: skip
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of your own data set's factory")
    root: Path = Field(Path("data"), description="where data sets live; `imagefolder`: a folder of class folders, or of "
                       "`train/` [`val/`] [`test/`] folders of them")  # fmt: skip
    mirror: str | None = Field(None, description="a server holding the data sets' archives under their own names (clusters "
                               "without internet; trusted, no checksum)")  # fmt: skip
    batch_size: PositiveInt = Field(128, description="per process and micro-step; the global batch is this x processes x "
                                    "`trainer.grad_accum_steps`")  # fmt: skip
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="loader workers per process; `auto`: 0 for in-memory data (augmented on the device), else the "
        "cores this process may use, shared among its machine's processes")  # fmt: skip
    val_fraction: float = Field(0.1, ge=0, lt=1, description="validation carved from the training set (an imagefolder's own "
                                "`val/` wins)")  # fmt: skip
    split_seed: int = Field(0, description="seed of that split and of `limit_train`'s subset, independent of `seed`")
    limit_train: PositiveInt | None = Field(None, description="train on this many samples (a seeded, class-stratified subset); "
                                            "null: all")  # fmt: skip
    drop_last: bool = Field(False, description="drop the last incomplete global batch of each epoch")
    augment: bool = Field(True, description="random crops, and flips where they keep the label, on the training split only")
    crop_padding: Annotated[int, Field(ge=0)] | None = Field(None, description="random-crop padding in pixels; null: image "
                                                             "size / 8, 0: no crop")  # fmt: skip
    image_size: PositiveInt | None = Field(None, description="resize to this square size; null: native (imagefolder: 224)")
    normalize: Literal["dataset", "imagenet"] = Field("dataset", description="statistics of the training images, or "
                                                      "ImageNet's (for pretrained models)")  # fmt: skip
    bad_images: Literal["error", "skip"] = Field("error", description="imagefolder files PIL cannot read: stop naming them "
                                                 "before any work, or train without them with a counted warning")  # fmt: skip
    fake_train_size: PositiveInt = Field(2000, description="`fake`: random images in the training split (the test split "
                                         "has a fifth)")  # fmt: skip
    fake_image_size: PositiveInt = Field(32, description="`fake`: their size in pixels")

    @field_validator("name")
    @classmethod
    def _known_data_set(cls, name: str) -> str:
        return registry.check_name("data.name", name, registry.DATASETS)


class ModelConfig(Section):
    """The network: a built-in, torchvision's, timm's or your own."""

    # torchvision's names are checked when the model is built (validating a config imports no model zoo).
    name: str = Field("small_cnn", description="a built-in model (" + ", ".join(registry.MODELS) + "), a torchvision "
                      "classification model, `timm/<name>`, or your own `package.module:callable`")  # fmt: skip
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model factory, after "
                                   "`num_classes` and `in_channels`")  # fmt: skip
    head: str | None = Field(None, description="the head submodule of your own model (for `optimizer.backbone_lr_ratio`)")
    pretrained: bool = Field(False, description="torchvision's or timm's published weights, downloaded once per machine; "
                             "the head is resized to the data's classes")  # fmt: skip
    weights_mirror: str | None = Field(None, description="a server holding torchvision's weight files under their own names "
                                       "(clusters without internet)")  # fmt: skip
    weights_file: Path | None = Field(None, description="a local state dict, loaded with `weights_only=True`; a head of "
                                      "another size is re-initialised")  # fmt: skip


class LossConfig(Section):
    """The training loss."""

    name: str = Field("cross_entropy", description="`cross_entropy`, or your own `package.module:callable` taking "
                      "(outputs, targets) and returning the batch's mean loss (a class is built with `loss.kwargs`)")  # fmt: skip
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the loss")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing (`loss.name=cross_entropy`)")

    @field_validator("name")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        return registry.check_name("loss.name", name, registry.LOSSES)


class OptimizerConfig(Section):
    """The optimizer; its LR and momentum (or Adam's beta1) follow the schedule."""

    name: str = Field("adamw", description="one of " + ", ".join(registry.OPTIMIZERS))
    weight_decay: NonNegativeFloat = Field(0.01, description="decoupled for AdamW, L2 for Adam and SGD")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD's momentum (cycled by the schedule)")
    nesterov: bool = Field(False, description="SGD with Nesterov momentum")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="the Adam family's betas (beta1 cycled by the schedule)")  # fmt: skip
    decay_norm_and_bias: bool = Field(True, description="weight decay on normalisation weights and biases too (fastai, "
                                      "nanoGPT and airbench keep it off them)")  # fmt: skip
    backbone_lr_ratio: float | None = Field(None, gt=0, le=1, description="every parameter outside the head at this fraction "
                                            "of the head's LR (discriminative rates for a pretrained backbone)")  # fmt: skip

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        return registry.check_name("optimizer.name", name, registry.OPTIMIZERS, import_paths=False)


class ScheduleConfig(Section):
    """The one cycle (torch's OneCycleLR), stepped after every optimizer step."""

    max_lr: PositiveFloat | Literal["auto"] = Field("auto", description="the peak LR; `auto`: from the LR range test")
    pct_start: float = Field(0.3, gt=0, lt=1, description="share of the cycle spent warming up")
    div_factor: float = Field(25.0, ge=1, description="first LR = max_lr / div_factor")
    final_div_factor: float = Field(1e4, ge=1, description="last LR = first LR / final_div_factor")
    anneal_strategy: Literal["cos", "linear"] = Field("cos", description="the shape of both halves of the cycle")
    cycle_momentum: bool = Field(True, description="momentum (SGD) or beta1 (Adam) moves opposite to the LR")
    base_momentum: float = Field(0.85, ge=0, lt=1, description="the momentum at max_lr")
    max_momentum: float = Field(0.95, ge=0, lt=1, description="the momentum at both ends of the cycle")


class LRFinderConfig(Section):
    """The LR range test that picks max_lr when `schedule.max_lr` is `auto` (see docs/lr-range-test.md)."""

    start_lr: PositiveFloat = Field(1e-6, description="the lowest LR swept")
    end_lr: PositiveFloat = Field(10.0, description="the highest LR swept (a sweep stops earlier when the loss diverges)")
    num_iter: int = Field(100, ge=10, description="iterations (global batches) in all, spent on sweeps of `sweep_iter`")
    sweep_iter: int = Field(100, ge=10, description="steps of one sweep's grid; more `num_iter` adds sweeps from the same "
                            "weights, shifted in LR: resolution, not training")  # fmt: skip
    peak_momentum: bool = Field(True, description="test at the momentum one cycle has at max_lr (`schedule.base_momentum`)")
    step_mode: Literal["exp", "linear"] = Field("exp", description="how the LR grows from one iteration to the next")
    smooth_f: float = Field(0.2, ge=0, lt=1, description="torch-lr-finder's moving average, used only for its stop rule")
    diverge_th: float = Field(5.0, gt=1, description="a sweep stops once that average exceeds this multiple of its best")
    skip_start: int = Field(10, ge=0, description="points of each sweep left out at its start when suggesting")
    skip_end: int = Field(5, ge=0, description="points of each sweep left out at its end when suggesting")
    policy: Literal[tuple(lr_rules.POLICIES)] = Field(
        "floor_edge", description="the rule that reads max_lr off the curve")  # chosen in benchmarks/lr_selection/  # fmt: skip
    fallback_max_lr: PositiveFloat | None = Field(None, description="used, with a warning, when the curve gives no answer")
    # Factors and steps chosen on the tune half of benchmarks/lr_selection/lr_policies.py (of 2 or 3 factors from 1..10 at 30 steps).
    probe: bool = Field(False, description="after the curve, short one cycles from the same weights at the rule's pick x "
                        "each of `probe_factors`; the best on the validation split wins")  # fmt: skip
    probe_factors: list[PositiveFloat] = Field(default_factory=lambda: [1.0, 6.0], min_length=2,
                                               description="the probe's candidates, as multiples of the rule's pick")  # fmt: skip
    probe_steps: int = Field(30, ge=2, description="optimizer steps of each candidate's cycle")
    probe_val_samples: PositiveInt = Field(2048, description="validation samples that judge the candidates")
    probe_metric: MonitorName = Field("auto", description="what judges the candidates; `auto`: the run's "
                                      "`trainer.early_stopping.metric`")  # fmt: skip
    race: bool = Field(False, description="train the whole cycle at the pick x each of `race_factors`, one after another "
                       "from the same weights, and keep the best on the validation split as the run (docs/lr-range-test.md)")  # fmt: skip
    # Chosen on the tune half of the 20-task matrix's recorded grids (benchmarks/lr_selection/race_factors.py).
    race_factors: list[PositiveFloat] = Field(default_factory=lambda: [1.0, 1.6, 2.5, 6.0, 10.0], min_length=2,
                                              description="the race's candidates, as multiples of the range test's pick")  # fmt: skip
    race_run: Literal["all", "range_test", "array"] | Annotated[int, Field(ge=0)] = Field(
        "all", description="what this command does of the race: `all` (the range test, each unfinished candidate, the "
        "winner), `range_test` only, candidate N only, or `array`: the candidate `SLURM_ARRAY_TASK_ID` names "
        "(slurm/race.sh: one array task per candidate)")  # fmt: skip

    @model_validator(mode="after")
    def _range(self) -> LRFinderConfig:
        if self.start_lr >= self.end_lr:
            raise ValueError(f"lr_finder.start_lr ({self.start_lr}) must be below lr_finder.end_lr ({self.end_lr})")
        if len(set(self.race_factors)) != len(self.race_factors):
            raise ValueError(f"lr_finder.race_factors {self.race_factors} names a factor twice")
        if isinstance(self.race_run, int) and self.race_run >= len(self.race_factors):
            raise ValueError(f"lr_finder.race_run={self.race_run}: the race has {len(self.race_factors)} candidates "
                             f"(0 to {len(self.race_factors) - 1})")  # fmt: skip
        return self


class EarlyStoppingConfig(Section):
    """Which metric decides the `best` checkpoint, and whether it may end the run early."""

    patience: PositiveInt | None = Field(None, description="epochs without improvement before stopping; null: never (the "
                                         "cycle's annealing is where accuracy jumps)")  # fmt: skip
    metric: MonitorName = Field("auto", description="`auto`: val_acc where the task has accuracy, else val_loss; also "
                                "chooses the `best` checkpoint")  # fmt: skip
    min_delta: NonNegativeFloat = Field(0.0, description="the smallest change that counts as an improvement")


class TrainerConfig(Section):
    """The run: its length, precision, checkpoints, resume and fault handling."""

    epochs: PositiveInt = Field(5, description="the length of the cycle; with `budget`, its ceiling")
    budget: str | None = Field(None, description="size the cycle to end within a wall-clock time from the command's start: "
                               "a duration (`90s`, `20m`, `2h30m`) or `slurm` (the job's time left, less 3 minutes for the "
                               "preemption signal); the last epoch may be partial, and every epoch's measured costs re-size the rest of "
                               "the cycle. null: `epochs` epochs")  # fmt: skip
    grad_accum_steps: PositiveInt = Field(1, description="micro-batches per optimizer step on each process (Accelerate)")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = Field(None, description="null: what `accelerate launch` says "
                                                                  "(a bare `no` means `no`, not false)")  # fmt: skip
    grad_clip_norm: PositiveFloat | None = Field(None, description="clip the gradients' norm to this")
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    resume: str = Field("auto", description="`auto`: continue from `checkpoints/last` if there is one; `none`: start over; "
                        "or a checkpoint or run directory")  # fmt: skip
    checkpoint_every_steps: PositiveInt | None = Field(None, description="also checkpoint every N optimizer steps, "
                                                       "mid-epoch")  # fmt: skip
    stop_after_epochs: PositiveInt | None = Field(None, description="end this invocation, checkpointed, after N epochs; the "
                                                  "same command resumes")  # fmt: skip
    stop_after_steps: PositiveInt | None = Field(None, description="... or after N optimizer steps")
    cpu: bool | None = Field(None, description="force the CPU; null: when CUDA is absent")
    channels_last: bool = Field(False, description="NHWC activations: faster convolutions with cuDNN and oneDNN")
    compile: bool = Field(False, description="`torch.compile` the prepared model through Accelerate (inductor; on a CPU it "
                          "needs a C++ compiler)")  # fmt: skip
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field("default", description="inductor's mode")
    deterministic: bool = Field(False, description="`torch.use_deterministic_algorithms(True)`")
    preemption_check_steps: PositiveInt = Field(10, description="how often the ranks agree on a SIGUSR1/SIGTERM (one "
                                                "all-reduce), in optimizer steps")  # fmt: skip
    collective_timeout_minutes: PositiveInt = Field(120, description="how long ranks wait for one another in a collective")
    orphan_grace_seconds: PositiveFloat = Field(120.0, description="a rank whose launcher died exits hard if it cannot "
                                                "checkpoint by then")  # fmt: skip
    heartbeat_timeout_seconds: PositiveFloat = Field(300.0, description="multi-node: a node silent this long is gone, and "
                                                     "the others stop naming it")  # fmt: skip
    stall_timeout: PositiveFloat | Literal["auto"] = Field("auto", description="multi-process: a rank behind its peers that "
                                                           "makes no progress this long (seconds) in the range test, training "
                                                           "or evaluation is named and every rank stops (exit 69); `auto`: "
                                                           "10 x its slowest recent batch, at least 120 s")  # fmt: skip

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no_is_not_false(cls, value):
        # YAML and OmegaConf read a bare `no` as false: `trainer.mixed_precision=no` means "no".
        return "no" if value is False else value

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        return check_budget(value)

    @field_validator("resume")
    @classmethod
    def _resume_value(cls, value: str) -> str:
        if not value:
            raise ValueError("use 'auto', 'none' or a checkpoint directory")
        return value


class WandbConfig(Section):
    """Weights & Biases through Accelerate's tracker: offline without an API key, never fatal."""

    project: str = Field("superconverge", description="the W&B project")
    entity: str | None = Field(None, description="the W&B team or user; null: your default")
    name: str | None = Field(None, description="the run's display name; null: W&B's")
    tags: list[str] = Field(default_factory=list, description="the run's tags")
    mode: Literal["online", "offline", "disabled"] = Field("online", description="`online` without an API key logs offline")
    log_every_steps: PositiveInt = Field(50, description="training values every N optimizer steps")
    init_timeout_seconds: PositiveFloat = Field(30.0, description="then an unreachable server means offline logging, not a "
                                                "stall")  # fmt: skip


class TrackingConfig(Section):
    """Experiment trackers."""

    wandb: WandbConfig = WandbConfig()
    tensorboard: bool = Field(False, description="also log to TensorBoard: event files in `output_dir/tensorboard`, no account")


class ConsoleConfig(Section):
    """What the main process prints."""

    mode: Literal["auto", "live", "plain", "quiet"] = Field("auto", description="`auto`: live in a terminal, plain lines "
                                                            "elsewhere")  # fmt: skip
    log_every_steps: PositiveInt = Field(50, description="a plain line every N micro-steps")
    log_every_seconds: PositiveFloat | None = Field(None, description="plain lines by time instead of steps")


class Config(Section):
    """A run: the YAML file and the command line's `key.sub=value` overrides, checked against this schema."""

    seed: int = Field(0, description="the model's initial weights and the data order and augmentation")
    output_dir: Path = Field(Path("runs/default"), description="the run directory: config, metrics, checkpoints, summary")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    lr_finder: LRFinderConfig = LRFinderConfig()
    trainer: TrainerConfig = TrainerConfig()
    console: ConsoleConfig = ConsoleConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _race_has_no_budget(self) -> Config:
        if self.lr_finder.race and self.trainer.budget is not None:
            raise ValueError("lr_finder.race with trainer.budget: a race trains the cycle once per candidate, so a budget "
                             "cannot size it; set one of them")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _plain_sgd_is_not_cycled(self) -> Config:
        if self.optimizer.name == "sgd" and self.optimizer.momentum == 0 and self.schedule.cycle_momentum:
            raise ValueError("optimizer.momentum=0 (plain SGD) with schedule.cycle_momentum=true would train with momentum "
                             f"{self.schedule.max_momentum} -> {self.schedule.base_momentum} -> {self.schedule.max_momentum}; "
                             "set schedule.cycle_momentum=false, or give SGD a momentum")  # fmt: skip
        return self


# Keys that moved (old -> new): the old one is refused naming the new, and a checkpoint that has it resumes.
RENAMED_KEYS = {"optimizer.label_smoothing": "loss.label_smoothing"}


def _key_of(loc: tuple) -> str:
    """The dotted config key of an error location, without pydantic's union-member tags."""
    model, parts = Config, []
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if fields is None:
            break
        parts.append(str(part))
        if part not in fields:
            break
        model = fields[part].annotation
    return ".".join(parts)


def _nearest_key(key: str) -> str | None:
    """The valid key an unknown one was probably meant to be (same section, close spelling)."""
    *parents, name = key.split(".")
    model = Config
    for part in parents:
        model = getattr(model, "model_fields", {}).get(part)
        model = model.annotation if model is not None else None
    match = difflib.get_close_matches(name, list(getattr(model, "model_fields", ())), n=1, cutoff=0.6)
    return ".".join([*parents, match[0]]) if match else None


def _format_errors(error: ValidationError, source: str, override_keys: set[str]) -> str:
    messages: dict[str, list[str]] = {}
    for item in error.errors():
        key = _key_of(item["loc"])
        if item["type"] == "extra_forbidden" and key in RENAMED_KEYS:
            message = f"moved to {RENAMED_KEYS[key]}"
        elif item["type"] == "extra_forbidden":
            nearest = _nearest_key(key)
            message = "unknown key" + (f" (did you mean {nearest}?)" if nearest else "")
        else:
            message = item["msg"].removeprefix("Value error, ")
            if "input" in item and not isinstance(item["input"], dict):
                message += f" (got {item['input']!r})"
        messages.setdefault(key, []).append(message)

    def origin(key: str) -> str:
        from_command_line = any(given == key or given.startswith(key + ".") for given in override_keys)
        return "command line" if from_command_line else source

    lines = [f"{key + ': ' if key else ''}{' or '.join(found)} [{origin(key) if key else source}]" for key, found in messages.items()]
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load, override and validate a config; raise ConfigError naming the key and file."""
    overrides = overrides or []
    source = str(path) if path else "defaults"
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys at the top level")
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} must look like key.sub=value")
    try:
        merged = OmegaConf.merge(OmegaConf.create(raw), OmegaConf.from_dotlist(overrides))
        tree = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse overrides {overrides}: {exc}") from exc
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        keys = {item.split("=", 1)[0] for item in overrides}
        raise ConfigError(_format_errors(exc, source, keys)) from None


# What a resumed run may change: how it is watched, when it pauses, how it loads data and how
# fast it runs. Anything else (data, model, optimizer, schedule, epochs, precision) shaped the
# checkpoint and its one-cycle schedule, so a change could only be ignored.
# Moot on resume: a resumed run keeps the max_lr its range test chose before the first checkpoint, so
# lr_finder keys change nothing, and a default that changed in an upgrade must not block a requeued run.
MOOT_ON_RESUME = ("lr_finder.",)
# The global batch is the checkpoint's (it shaped the schedule); data.batch_size and trainer.grad_accum_steps only
# choose how it is spread over the processes a resume has (batches.BatchLayout.keeping), so they may change too.
LAYOUT_KEYS = ("data.batch_size", "trainer.grad_accum_steps")
RESUMABLE_KEYS = MOOT_ON_RESUME + LAYOUT_KEYS + (
    "output_dir", "console.", "tracking.", "data.num_workers", "data.mirror", "model.weights_mirror", "trainer.resume",
    "trainer.stop_after_epochs",
    "trainer.stop_after_steps", "trainer.checkpoint_every_steps", "trainer.preemption_check_steps",
    "trainer.collective_timeout_minutes", "trainer.orphan_grace_seconds", "trainer.heartbeat_timeout_seconds", "trainer.stall_timeout",
    "trainer.compile", "trainer.compile_mode",
    "trainer.channels_last", "trainer.deterministic",
)  # fmt: skip


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def resume_changes(saved: dict, config: Config) -> tuple[dict, dict]:
    """Keys whose value differs from the checkpoint's config: (applied, refused), each key -> (old, new).

    A key the checkpoint's config lacks (added by an upgrade) at its default is no change.
    """
    old = {RENAMED_KEYS.get(key, key): value for key, value in _flatten(saved).items()}
    new = _flatten(config.model_dump(mode="json"))
    defaults = _flatten(Config().model_dump(mode="json"))
    old = {**{key: value for key, value in defaults.items() if key not in old}, **old}
    changed = {key: (old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)}
    applied = {key: change for key, change in changed.items() if key.startswith(RESUMABLE_KEYS)}
    return applied, {key: change for key, change in changed.items() if key not in applied}


def describe_changes(changes: dict) -> str:
    return ", ".join(f"{key} ({old!r} -> {new!r})" for key, (old, new) in changes.items())


def config_yaml(config: Config) -> str:
    """The config as YAML, every key included: what ``print-config`` shows and a run directory's ``config.yaml`` holds."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: Config, path: Path) -> None:
    path.write_text(config_yaml(config))
