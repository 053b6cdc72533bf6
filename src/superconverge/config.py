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

from superconverge import registry
from superconverge.errors import UserError

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ConfigError(UserError):
    """The configuration file or an override is invalid."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_assignment=True)


class DataConfig(Section):
    name: str = "fashion_mnist"  # a registered data set (registry.DATASETS) or "package.module:callable"
    kwargs: dict[str, Any] = Field(default_factory=dict)  # passed to a user's data set factory
    root: Path = Path("data")
    mirror: str | None = None  # a server with the data sets' archives under their own names (no internet)
    batch_size: PositiveInt = 128
    # auto: 0 for the in-memory data sets (batches are augmented on the device) and a user's TensorDataset;
    # otherwise (images decoded one by one), the cores this process may use, shared among the processes of its machine.
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    val_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    split_seed: int = 0
    limit_train: PositiveInt | None = None
    drop_last: bool = False
    augment: bool = True
    crop_padding: Annotated[int, Field(ge=0)] | None = None
    image_size: PositiveInt | None = None
    normalize: Literal["dataset", "imagenet"] = "dataset"
    # imagefolder files PIL cannot read: "error" stops before any work naming them (a data set
    # should not shrink unnoticed); "skip" trains without them, with a counted warning.
    bad_images: Literal["error", "skip"] = "error"
    fake_train_size: PositiveInt = 2000
    fake_image_size: PositiveInt = 32

    @field_validator("name")
    @classmethod
    def _known_data_set(cls, name: str) -> str:
        return registry.check_name("data.name", name, registry.DATASETS)


class ModelConfig(Section):
    # A registered model (registry.MODELS), a torchvision classification model, "timm/<name>" or "package.module:callable";
    # torchvision's names are checked when the model is built (validating a config imports no model zoo).
    name: str = "small_cnn"
    kwargs: dict[str, Any] = Field(default_factory=dict)  # passed to the model factory after num_classes and in_channels
    head: str | None = None  # the submodule that is the head of a user's model (optimizer.backbone_lr_ratio)
    pretrained: bool = False  # torchvision's or timm's published weights, fetched once per machine
    weights_mirror: str | None = None  # a server with torchvision's weight files under their own names (no internet)
    weights_file: Path | None = None


class LossConfig(Section):
    name: str = "cross_entropy"  # or "package.module:callable" taking (outputs, targets), returning the batch's mean loss
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        return registry.check_name("loss.name", name, registry.LOSSES)


class OptimizerConfig(Section):
    name: str = "adamw"  # registry.OPTIMIZERS
    weight_decay: NonNegativeFloat = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    nesterov: bool = False
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0  # for loss.name=cross_entropy
    decay_norm_and_bias: bool = True  # weight decay on normalisation weights and biases too (fastai, nanoGPT, airbench: off)
    # Every parameter outside the model's head at this fraction of the head's LR (fastai's discriminative rates).
    backbone_lr_ratio: Annotated[float, Field(gt=0, le=1)] | None = None

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        if name not in registry.OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(registry.OPTIMIZERS)}")
        return name


class ScheduleConfig(Section):
    max_lr: PositiveFloat | Literal["auto"] = "auto"
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3
    div_factor: Annotated[float, Field(ge=1)] = 25.0
    final_div_factor: Annotated[float, Field(ge=1)] = 1e4
    anneal_strategy: Literal["cos", "linear"] = "cos"
    cycle_momentum: bool = True
    base_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.85
    max_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.95


class LRFinderConfig(Section):
    """The LR range test that picks max_lr when schedule.max_lr is 'auto'."""

    start_lr: PositiveFloat = 1e-6
    end_lr: PositiveFloat = 10.0
    num_iter: Annotated[int, Field(ge=10)] = 100
    sweep_iter: Annotated[int, Field(ge=10)] = 100  # steps of a sweep's grid; num_iter runs as sweeps of it, each from the same weights
    peak_momentum: bool = True  # test at the momentum one cycle has at max_lr (schedule.base_momentum)
    step_mode: Literal["exp", "linear"] = "exp"
    smooth_f: Annotated[float, Field(ge=0, lt=1)] = 0.2  # torch-lr-finder's EMA, used only for its stop rule
    diverge_th: Annotated[float, Field(gt=1)] = 5.0  # stop once that EMA exceeds this multiple of its best
    skip_start: Annotated[int, Field(ge=0)] = 10
    skip_end: Annotated[int, Field(ge=0)] = 5
    policy: Literal["floor_edge", "near_minimum", "steepest", "valley", "minimum"] = "floor_edge"  # chosen in benchmarks/lr_selection/
    fallback_max_lr: PositiveFloat | None = None
    # After the curve: short one-cycle runs from the same weights at the policy's pick x each factor, the best by probe_metric
    # on (up to probe_val_samples of) the validation split wins (lr_probe.py). The only way to an answer past the curve's minimum.
    # Factors and steps chosen on the tune half of benchmarks/lr_selection/lr_policies.py (of 2 or 3 factors from 1..10 at 30 steps).
    probe: bool = False
    probe_factors: list[PositiveFloat] = Field(default_factory=lambda: [1.0, 6.0], min_length=2)
    probe_steps: Annotated[int, Field(ge=2)] = 30  # optimizer steps of each candidate's cycle
    probe_val_samples: PositiveInt = 2048
    # What judges the candidates; auto: the run's trainer.early_stopping.metric (accuracy where the task has one).
    probe_metric: Literal["auto", "val_loss", "val_acc"] = "auto"

    @model_validator(mode="after")
    def _range(self) -> LRFinderConfig:
        if self.start_lr >= self.end_lr:
            raise ValueError(f"lr_finder.start_lr ({self.start_lr}) must be below lr_finder.end_lr ({self.end_lr})")
        return self


class EarlyStoppingConfig(Section):
    patience: PositiveInt | None = None
    metric: Literal["auto", "val_acc", "val_loss"] = "auto"  # auto: val_acc where the task has accuracy, else val_loss
    min_delta: NonNegativeFloat = 0.0


class TrainerConfig(Section):
    epochs: PositiveInt = 5
    grad_accum_steps: PositiveInt = 1
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    grad_clip_norm: PositiveFloat | None = None
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    resume: str = "auto"
    checkpoint_every_steps: PositiveInt | None = None
    stop_after_epochs: PositiveInt | None = None  # end this invocation (checkpointed) after N epochs
    stop_after_steps: PositiveInt | None = None  # ... or after N optimizer steps; a rerun resumes
    cpu: bool | None = None
    channels_last: bool = False  # NHWC activations: faster convolutions with cuDNN and oneDNN
    compile: bool = False  # torch.compile the prepared model through Accelerate (inductor)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    deterministic: bool = False
    preemption_check_steps: PositiveInt = 10  # how often ranks agree on a SIGUSR1/SIGTERM (one all-reduce)
    collective_timeout_minutes: PositiveInt = 120  # ranks wait this long for one another in a collective
    orphan_grace_seconds: PositiveFloat = 120.0  # a rank whose launcher died exits hard if it cannot checkpoint by then
    heartbeat_timeout_seconds: PositiveFloat = 300.0  # multi-node: a node silent this long is gone, and the others stop

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _no_is_not_false(cls, value):
        # YAML and OmegaConf read a bare `no` as false: `trainer.mixed_precision=no` means "no".
        return "no" if value is False else value

    @field_validator("resume")
    @classmethod
    def _resume_value(cls, value: str) -> str:
        if not value:
            raise ValueError("use 'auto', 'none' or a checkpoint directory")
        return value


class WandbConfig(Section):
    project: str = "superconverge"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = Field(default_factory=list)
    mode: Literal["online", "offline", "disabled"] = "online"  # online without an API key runs offline
    log_every_steps: PositiveInt = 50
    init_timeout_seconds: PositiveFloat = 30.0  # then an unreachable server means offline logging, not a stall


class TrackingConfig(Section):
    wandb: WandbConfig = WandbConfig()


class ConsoleConfig(Section):
    mode: Literal["auto", "live", "plain", "quiet"] = "auto"  # auto: live in a terminal, plain lines elsewhere
    log_every_steps: PositiveInt = 50
    log_every_seconds: PositiveFloat | None = None  # plain lines by time instead of steps


class Config(Section):
    seed: int = 0
    output_dir: Path = Path("runs/default")
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
    def _plain_sgd_is_not_cycled(self) -> Config:
        if self.optimizer.name == "sgd" and self.optimizer.momentum == 0 and self.schedule.cycle_momentum:
            raise ValueError("optimizer.momentum=0 (plain SGD) with schedule.cycle_momentum=true would train with momentum "
                             f"{self.schedule.max_momentum} -> {self.schedule.base_momentum} -> {self.schedule.max_momentum}; "
                             "set schedule.cycle_momentum=false, or give SGD a momentum")  # fmt: skip
        return self


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
        if item["type"] == "extra_forbidden":
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
    "trainer.collective_timeout_minutes", "trainer.orphan_grace_seconds", "trainer.heartbeat_timeout_seconds",
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


# A default renamed in an upgrade, (old, new), that means the same thing: not a change on resume.
UPGRADED_DEFAULTS = {"trainer.early_stopping.metric": ("val_acc", "auto")}


def resume_changes(saved: dict, config: Config) -> tuple[dict, dict]:
    """Keys whose value differs from the checkpoint's config: (applied, refused), each key -> (old, new).

    A key the checkpoint's config lacks (added by an upgrade) at its default is no change.
    """
    old, new = _flatten(saved), _flatten(config.model_dump(mode="json"))
    defaults = _flatten(Config().model_dump(mode="json"))
    old = {**{key: value for key, value in defaults.items() if key not in old}, **old}
    old.update({key: new[key] for key, pair in UPGRADED_DEFAULTS.items() if (old.get(key), new.get(key)) == pair})
    changed = {key: (old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)}
    applied = {key: change for key, change in changed.items() if key.startswith(RESUMABLE_KEYS)}
    return applied, {key: change for key, change in changed.items() if key not in applied}


def describe_changes(changes: dict) -> str:
    return ", ".join(f"{key} ({old!r} -> {new!r})" for key, (old, new) in changes.items())


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
