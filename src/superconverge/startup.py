"""The stages of a run's start, in order: config and task (cli.py) -> accelerator -> locked run directory and resume
point -> the range test's max_lr -> the prepared Trainer; and the exit code its summary gives.

Shared by a single run (cli.main) and each candidate of a race (race.py).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs, TorchDynamoPlugin

from superconverge.batches import BatchLayout
from superconverge.budget import WARMUP_STEPS
from superconverge.checkpoint import check_fits, resolve_resume, validate_checkpoint
from superconverge.config import MOOT_ON_RESUME, Config, ConfigError, describe_changes, resume_changes
from superconverge.console import RunConsole
from superconverge.errors import say
from superconverge.lr_finder import MaxLRChoice, find_max_lr, measure_curve
from superconverge.records import RunSummary, StopReason
from superconverge.run_dir import RunDir
from superconverge.signals import StopSignals
from superconverge.task import Task
from superconverge.tracking import Tracking, start_tracking, wants_wandb
from superconverge.trainer import RunContext, Trainer, TrainState, prepare_model


def uses_cpu(cfg: Config) -> bool:
    return cfg.trainer.cpu if cfg.trainer.cpu is not None else not torch.cuda.is_available()


def make_accelerator(cfg: Config) -> Accelerator:
    # The config decides compilation, not `accelerate launch --dynamo_backend`, so a run is reproducible from its config.yaml.
    dynamo = TorchDynamoPlugin(backend="inductor" if cfg.trainer.compile else "no", mode=cfg.trainer.compile_mode)
    return Accelerator(
        # Accelerate forms a gloo process group only when told to use the CPU; without this a
        # CPU-only `--multi_gpu --num_processes 2` launch would start two independent runs.
        cpu=uses_cpu(cfg),
        dynamo_plugin=dynamo,
        log_with="wandb" if wants_wandb(cfg) else None,
        project_dir=str(cfg.output_dir),
        mixed_precision=cfg.trainer.mixed_precision,
        gradient_accumulation_steps=cfg.trainer.grad_accum_steps,
        step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(minutes=cfg.trainer.collective_timeout_minutes))],
    )


def resumed_choice(resume_state: TrainState | None) -> MaxLRChoice | None:
    """A resumed run continues the schedule it started, with the max_lr it chose then."""
    if resume_state is None:
        return None
    return MaxLRChoice(float(resume_state.max_lr), resume_state.lr_policy, resume_state.lr_finder_seconds, reused=True,
                       suggestions=resume_state.lr_suggestions)  # fmt: skip


def find_resume_point(cfg: Config, model: torch.nn.Module) -> tuple[Path | None, TrainState | None]:
    """The checkpoint to continue from, read whole and checked against the model (every rank, run dir locked)."""
    resume_from = resolve_resume(cfg.trainer.resume, Path(cfg.output_dir))
    if resume_from is None:
        return None, None
    resume_state = TrainState.from_checkpoint(validate_checkpoint(resume_from), resume_from)
    check_fits(resume_from, model)
    check_config_unchanged(cfg, resume_from, resume_state)
    return resume_from, resume_state


def check_config_unchanged(cfg: Config, resume_from: Path, resume_state: TrainState) -> None:
    """A resumed run keeps what shaped its checkpoint; changes it can apply are applied and said."""
    saved = resume_state.config
    if not saved:
        return  # a checkpoint from before configs were stored in it
    applied, refused = resume_changes(saved, cfg)
    if refused:
        raise ConfigError(
            f"cannot resume {resume_from} with a changed {describe_changes(refused)}: a resumed run continues the "
            "schedule, data and model it started with. Put these back, or start a new run with trainer.resume=none "
            "or another output_dir"
        )
    if applied:
        moot = any(key.startswith(MOOT_ON_RESUME) for key in applied)
        note = " (lr_finder settings do not act on a resumed run: it keeps its max_lr)" if moot else ""
        say(f"resuming with {describe_changes(applied)}{note}")


class StoppedBeforeTraining(Exception):
    """A stop signal (or a dead launcher) arrived before the training loop: nothing to checkpoint yet."""


def stop_if_requested(stop: StopSignals, accelerator: Accelerator, run_dir: RunDir, stage: str) -> None:
    """Between start-up stages: a stop request ends the run here on every rank, marked for requeue."""
    if not stop.agreed(accelerator):
        return
    run_dir.write_summary(RunSummary.before_training(stage, str(run_dir.path)))
    run_dir.close()
    raise StoppedBeforeTraining(f"stopped on a signal during {stage}, before training; a rerun starts this stage again")


def build_trainer(cfg: Config, task: Task, stop: StopSignals) -> Trainer:
    """(config, data and model) -> locked run dir, resume point -> (range test on every rank) -> prepared objects.

    ``stop`` is already installed: a signal in any stage ends the run at the next stage boundary.
    """
    accelerator = make_accelerator(cfg)
    run_dir = RunDir.open(cfg, accelerator)
    stop_if_requested(stop, accelerator, run_dir, "data loading")
    resume_from, resume_state = find_resume_point(cfg, task.model)
    layout = batch_layout(cfg, accelerator, resume_state)
    run_dir.record_config(cfg)
    console = RunConsole(cfg.console, accelerator.is_main_process, cfg.trainer.epochs)
    tracking = start_tracking(cfg, accelerator, resume_state.optimizer_steps if resume_state is not None else None)
    stop_if_requested(stop, accelerator, run_dir, "W&B start")
    console.banner(run_facts(cfg, accelerator, layout, task, tracking))
    model = prepare_model(cfg, accelerator, task.model)
    choice = resumed_choice(resume_state) or find_max_lr(cfg, accelerator, task, model, console)
    stop_if_requested(stop, accelerator, run_dir, "the LR range test")
    if choice.range_test is not None:
        tracking.log_range_test(choice, Path(cfg.output_dir) / "lr_finder.png")
    step_seconds = measure_step_seconds(cfg, accelerator, task, model, console, choice, resume_state)
    resume = (resume_from, resume_state) if resume_from is not None else None
    context = RunContext(cfg, accelerator, run_dir, console, tracking, stop, layout)
    return Trainer(context, task, model, choice, resume, step_seconds)


def measure_step_seconds(cfg: Config, accelerator: Accelerator, task: Task, model: torch.nn.Module, console: RunConsole,
                         choice: MaxLRChoice, resume_state: TrainState | None) -> float | None:  # fmt: skip
    """Seconds per global batch through the training step, for a budget's plan (None: no plan to make).

    The range test already ran that step on the real model at the global batch: its time per
    iteration (its first, slower steps included, so the plan errs short). A fixed max_lr has no
    range test, so a one-sweep range test of WARMUP_STEPS times it: it trains its own optimizer and
    puts the model back as it was, and the Trainer reseeds every RNG after it, so the run trains as
    it would have from the same weights.
    """
    if cfg.trainer.budget is None or (resume_state is not None and resume_state.budget):
        return None
    curve = choice.range_test
    if curve is None or curve.iterations_run == 0:
        timing = cfg.lr_finder.model_copy(update={"num_iter": WARMUP_STEPS, "sweep_iter": WARMUP_STEPS})
        curve = measure_curve(cfg.model_copy(update={"lr_finder": timing}), accelerator, task, model, console)
    return curve.seconds / max(curve.iterations_run, 1)


def batch_layout(cfg: Config, accelerator: Accelerator, resume_state: TrainState | None) -> BatchLayout:
    """The configured spread of the global batch; a resumed run keeps its checkpoint's global batch on the processes it
    has now (elastic resume: never a bigger micro-batch than data.batch_size) and says so when the spread changes."""
    world = accelerator.num_processes
    if resume_state is None or not resume_state.batch_layouts:
        return BatchLayout.configured(cfg, world)
    before = BatchLayout.from_record(resume_state.batch_layouts[-1])
    layout = BatchLayout.keeping(before.global_batch, world, cfg.data.batch_size, cfg.trainer.grad_accum_steps)
    accelerator.gradient_accumulation_steps = layout.accum
    if layout != before:
        say(
            f"resuming at the checkpoint's global batch of {layout.global_batch} on {layout.describe()} "
            f"(it ran on {before.describe()}); the schedule and data order continue unchanged"
        )
    return layout


def run_facts(cfg: Config, accelerator: Accelerator, layout: BatchLayout, task: Task, tracking: Tracking) -> dict:
    data, model = task.data, task.model
    sizes = "/".join(str(len(split)) if split is not None else "-" for split in (data.train, data.val, data.test))
    return {
        "world_size": layout.world,
        "device": accelerator.device.type,
        "precision": accelerator.mixed_precision,
        "compile": cfg.trainer.compile_mode if cfg.trainer.compile else "off",
        "channels_last": cfg.trainer.channels_last,
        "global_batch": layout.global_batch,
        "micro_batch": layout.micro,
        "grad_accum": layout.accum,
        "data": f"{cfg.data.name} train/val/test={sizes} workers={data.workers}",
        "model": f"{cfg.model.name} params={sum(p.numel() for p in model.parameters())}",
        "loss": cfg.loss.name + ("" if task.classifies else f" (monitor {task.monitor})"),
        "max_lr": cfg.schedule.max_lr,
        "run_dir": cfg.output_dir,
        "wandb": tracking.describe().replace(" ", ":"),
        **({"tensorboard": tracking.tensorboard_dir} if tracking.tensorboard_dir else {}),
    }


def exit_code(summary: RunSummary, stop: StopSignals) -> int:
    """The exit code of a run that ended with ``summary``; a preempted one says where it stopped."""
    if summary.stop_reason is not StopReason.PREEMPTED:
        return summary.stop_reason.exit_code
    say(
        f"stopped on {stop.reason} at optimizer step {summary.optimizer_steps} of {summary.total_optimizer_steps} "
        f"(checkpoint saved in {summary.run_dir}/checkpoints/last); the same command continues the run"
    )
    return stop.exit_code  # Ctrl-C's own code, else the requeue code
