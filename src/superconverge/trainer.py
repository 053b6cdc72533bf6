"""The training loop: prepared objects in, metrics, checkpoints and a summary out."""

from __future__ import annotations

import functools
import gc
import math
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

import psutil
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import broadcast_object_list, is_compiled_module, set_seed
from torch.utils.data import DataLoader

from superconverge.batches import BatchLayout, EpochPlan, RankSampler
from superconverge.budget import END_MARGIN_SECONDS, BudgetError, BudgetPlan, Costs, command_start, plan_now, replan
from superconverge.checkpoint import BEST, LAST, CheckpointError, load_model_weights
from superconverge.config import Config
from superconverge.console import RunConsole
from superconverge.data import DataBundle
from superconverge.errors import UserError
from superconverge.lr_finder import MaxLRChoice
from superconverge.metrics import EarlyStopping, SplitTotals
from superconverge.plots import refresh_metrics
from superconverge.records import EpochRecord, RunSummary, StopReason
from superconverge.run_dir import RunDir
from superconverge.schedule import build_one_cycle, build_optimizer, current_momentum, group_max_lrs
from superconverge.signals import PROGRESS, StopSignals
from superconverge.step import TrainStep
from superconverge.task import Task
from superconverge.tracking import Tracking


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainState:
    """Everything beyond Accelerate's own state that a resumed run needs (stored as JSON)."""

    max_lr: float
    total_steps: int
    lr_policy: str = "fixed"
    lr_finder_seconds: float = 0.0
    lr_suggestions: dict[str, float] = field(default_factory=dict)  # every rule's answer, for the summary
    epoch: int = 0  # epochs completed (the position inside an epoch is optimizer_steps past the epoch's first)
    optimizer_steps: int = 0
    # Each invocation's spread of the global batch ({micro, accum, world, from_step}); the first one's global batch is the run's.
    batch_layouts: list[dict] = field(default_factory=list)
    train_totals: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    early_stopping: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    train_seconds: float = 0.0
    train_images: float = 0.0
    wall_seconds: float = 0.0  # in the trainer (from its construction), over every invocation
    process_seconds: float = 0.0  # from each process's start (start-up, data, range test included), over every invocation
    resumed: int = 0
    budget: dict | None = None  # trainer.budget's first plan (BudgetPlan.record) and its `replans`; a resumed run keeps them
    config: dict = field(default_factory=dict)  # the config this state was made under (a resume may change only some keys)

    @classmethod
    def from_checkpoint(cls, saved: object, path: Path) -> TrainState:
        """A checkpoint's ``trainer_state.json`` as read, checked: one line naming the checkpoint if it is not whole."""
        needed = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING] + ["early_stopping"]
        missing = [key for key in needed if not isinstance(saved, dict) or not saved.get(key)]
        if missing:
            raise CheckpointError(f"checkpoint {path}: trainer_state.json lacks {', '.join(missing)}, so it cannot be resumed. "
                                  "Delete the checkpoint folder, or set trainer.resume=none (starts over)")  # fmt: skip
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in known})


@dataclass
class RunClock:
    """This invocation's marks beside the resumable state: where it started (what the clocks and stop_after_* count
    from), where the running epoch started, and the LR of the last optimizer step."""

    wall_before: float  # the state's wall and process seconds at the start, from earlier invocations
    process_before: float
    steps_at_start: int
    epochs_at_start: int
    started: float = field(default_factory=time.perf_counter)
    epoch_began: float = 0.0
    train_began: float = 0.0  # training time since here is not banked yet (a save in between is not training)
    epoch_marks: tuple[float, float] = (0.0, 0.0)  # the state's train seconds and images when the epoch began
    epoch_steps: int = 0  # the state's optimizer steps when the epoch began
    val_seconds: float = 0.0  # the last validation's
    last_lr: float | None = None

    @classmethod
    def start(cls, state: TrainState) -> RunClock:
        return cls(state.wall_seconds, state.process_seconds, state.optimizer_steps, state.epoch)

    def start_epoch(self, state: TrainState) -> None:
        self.epoch_marks, self.epoch_steps = (state.train_seconds, state.train_images), state.optimizer_steps
        self.epoch_began = self.train_began = time.perf_counter()

    def clock_in(self, state: TrainState) -> None:
        state.wall_seconds = self.wall_before + time.perf_counter() - self.started
        state.process_seconds = self.process_before + time.time() - psutil.Process().create_time()


def prepare_model(cfg: Config, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The model as every later stage uses it (range test, training, checkpoints): on its device, DDP-wrapped."""
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return accelerator.prepare_model(model)


def make_loaders(cfg: Config, data: DataBundle, sampler: RankSampler, accelerator: Accelerator) -> tuple[DataLoader, ...]:
    """The training loader follows ``sampler`` (already this rank's share, so Accelerate only moves its batches to the
    device and marks the loader's end for accumulation); evaluation loaders are sharded by Accelerate as usual."""
    common = dict(num_workers=data.workers, pin_memory=accelerator.device.type == "cuda", persistent_workers=data.workers > 0)
    train = prepare_data_loader(DataLoader(data.train, batch_sampler=sampler, **common), accelerator.device, num_processes=1,
                                process_index=0, put_on_device=True)  # fmt: skip

    def evaluation(ds):
        return accelerator.prepare(DataLoader(ds, batch_size=cfg.data.batch_size, **common)) if ds is not None else None

    return train, evaluation(data.val), evaluation(data.test)


@dataclass
class RunContext:
    """What every stage of a run shares: the config and the run's services, set up before any work."""

    cfg: Config
    accelerator: Accelerator
    run_dir: RunDir  # locked; closed when the run ends
    console: RunConsole
    tracking: Tracking
    stop: StopSignals  # installed by the caller before any work, restored by it when the run ends
    layout: BatchLayout  # how the global batch is spread over this invocation's processes


class Trainer:
    def __init__(self, ctx: RunContext, task: Task, model: torch.nn.Module, choice: MaxLRChoice,
                 resume: tuple[Path, TrainState] | None, step_seconds: float | None = None) -> None:  # fmt: skip
        cfg, accelerator = ctx.cfg, ctx.accelerator
        self.cfg, self.accelerator, self.run_dir, self.task = cfg, accelerator, ctx.run_dir, task
        self.console, self.tracking, self.stop = ctx.console, ctx.tracking, ctx.stop
        self._nonfinite = torch.zeros((), device=accelerator.device)  # non-finite losses seen; read at check points only
        max_lr, self.layout = choice.max_lr, ctx.layout
        self.store = ctx.run_dir.checkpoints
        self.plan = EpochPlan(len(task.data.train), ctx.layout, cfg.seed, cfg.data.drop_last)
        self.sampler = RankSampler(self.plan, accelerator.process_index)
        self.train_loader, self.val_loader, self.test_loader = make_loaders(cfg, task.data, self.sampler, accelerator)
        optimizer = build_optimizer(cfg.optimizer, model, max_lr / cfg.schedule.div_factor, task.head)
        self.model = model  # prepared by prepare_model before the range test
        self.optimizer = accelerator.prepare(optimizer)
        self.step = TrainStep(cfg.trainer, accelerator, task, model, self.optimizer, cfg.seed)
        steps, budget = self._cycle_steps(resume, step_seconds)
        self.scheduler = accelerator.prepare(build_one_cycle(cfg.schedule, optimizer, max_lr, steps))
        self.max_lr_per_group = group_max_lrs(optimizer, max_lr)
        self.state = TrainState(max_lr=max_lr, total_steps=steps, lr_policy=choice.policy, lr_finder_seconds=choice.seconds,
                                lr_suggestions=choice.suggestions, budget=budget, config=cfg.model_dump(mode="json"))  # fmt: skip
        es = cfg.trainer.early_stopping
        self.stopper = EarlyStopping(task.monitor, es.patience, es.min_delta)
        # A different augmentation stream on each rank; a resumed run gets its saved RNG back instead.
        set_seed(cfg.seed, device_specific=True)
        if resume is not None:
            self._resume(*resume)
        self._record_layout()
        self.trace = ctx.run_dir.trace
        self.trace.start(self.state.optimizer_steps)
        self.clock = RunClock.start(self.state)
        self.console.epochs = self.epochs

    def _cycle_steps(self, resume: tuple[Path, TrainState] | None, step_seconds: float | None) -> tuple[int, dict | None]:
        """The cycle's optimizer steps (and the budget's plan): ``trainer.epochs`` epochs, or what the budget pays for.
        A resumed run keeps its checkpoint's plan; a new plan is rank 0's clock, broadcast (every rank builds the same cycle)."""
        cfg = self.cfg
        if cfg.trainer.budget is None:
            return cfg.trainer.epochs * self.plan.batches_per_epoch, None  # one optimizer step per global batch
        if resume is not None and resume[1].budget:
            return resume[1].total_steps, resume[1].budget
        data, world = self.task.data, self.accelerator.num_processes
        state_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        costs = Costs.estimate(step_seconds or 0.0, self.layout.global_batch, len(data.val) if data.val is not None else 0,
                               len(data.test) if data.test is not None else 0, state_bytes)  # fmt: skip
        plans: list[BudgetPlan | str | None] = [None]
        if self.accelerator.is_main_process:
            try:
                plans[0] = plan_now(cfg.trainer.budget, costs, self.plan.batches_per_epoch, cfg.trainer.epochs)
            except BudgetError as e:
                plans[0] = str(e)  # every rank raises it
        if world > 1:
            broadcast_object_list(plans)
        if isinstance(plans[0], str):
            raise BudgetError(plans[0])
        self.console.line(plans[0].describe())
        return plans[0].steps, plans[0].record()

    def close(self, end: bool = True) -> None:
        """End the run's resources in order: the DDP model and loaders before the process group they use (``end``: the
        process group too; a race's candidate leaves it to the next one)."""
        self.model = self.optimizer = self.scheduler = self.train_loader = self.val_loader = self.test_loader = self.step = None
        self.accelerator.free_memory()  # Accelerate's own references to the prepared objects
        gc.collect()
        if end:
            self.accelerator.end_training()  # trackers finish, the process group is destroyed

    def _resume(self, path: Path, saved: TrainState) -> None:
        """Continue from a checkpoint folder and its trainer state (read and checked before any work)."""
        if saved.total_steps != self.state.total_steps:
            raise CheckpointError(
                f"checkpoint {path} belongs to a schedule of {saved.total_steps} optimizer steps, but this config gives "
                f"{self.state.total_steps} at a global batch of {self.layout.global_batch} (an older checkpoint, which does not "
                "record its global batch: give it the data.batch_size, trainer.grad_accum_steps and process count it had). "
                "Or use a new output_dir."
            )
        self.accelerator.load_state(str(path))
        self.state = replace(saved, config=self.state.config, resumed=saved.resumed + 1)  # with the changes the resume applied
        self.stopper = EarlyStopping(**saved.early_stopping)

    def _record_layout(self) -> None:
        layouts = self.state.batch_layouts
        if not layouts or BatchLayout.from_record(layouts[-1]) != self.layout:
            layouts.append(self.layout.record(self.state.optimizer_steps))

    @property
    def epochs(self) -> int:
        """The cycle's epochs, the last maybe partial (``trainer.epochs`` without a budget)."""
        return math.ceil(self.state.total_steps / self.plan.batches_per_epoch)

    def fit(self) -> RunSummary:
        """Train until the schedule ends or the run stops; test, and write the summary. Every stop and save is decided here."""
        state, acc, trainer = self.state, self.accelerator, self.cfg.trainer
        self.stop.training = True
        self.run_dir.write_history(state.history)
        reason = self._stop_reason()  # a resumed run may have nothing left to train
        try:
            while reason is None:
                totals, micro_steps_before = self._start_epoch()
                batches = zip(self.sampler.micro_batches(), self.train_loader, strict=True)  # the sampler in step with the loader
                for done, (micro, (inputs, targets)) in enumerate(batches, 1):
                    PROGRESS.bump(state.optimizer_steps + 1)  # for the stall watchdog: this rank has its batch
                    # The step: forward and backward; an optimizer step on a global batch's last micro-batch.
                    out = self.step(inputs, targets, micro)
                    self._nonfinite += (~torch.isfinite(out.loss)).sum()
                    if micro.size:
                        totals.add(acc, out.loss, out.outputs, targets)
                    # The schedule and trace.
                    if acc.sync_gradients:
                        self._advance_schedule()
                    # Reports.
                    self._report(totals, micro_steps_before, done)
                    if not acc.sync_gradients:
                        continue
                    # The finite check, then the ranks' agreement on a stop request: collectives, alike on every rank.
                    agreed = False
                    if state.optimizer_steps % trainer.preemption_check_steps == 0:
                        self._raise_if_diverged()
                        agreed = state.optimizer_steps < state.total_steps and self.stop.agreed(acc)
                    # Stop or checkpoint.
                    reason = self._stop_reason(agreed)
                    every = trainer.checkpoint_every_steps
                    if reason is not None or (every and state.optimizer_steps % every == 0):
                        self._bank_train_time(totals)
                        self._save([LAST])
                        self.clock.train_began = time.perf_counter()
                    if reason is not None or state.optimizer_steps >= state.total_steps:
                        break  # a stop, or a budget's cycle that ends mid-epoch (then validated below as its last epoch)
                PROGRESS.leave()
                if reason is not None:
                    break  # mid-epoch, checkpoint saved
                # End of epoch: validate, record, best/last checkpoint, early stop.
                self._bank_train_time(totals)
                record = self._validate_epoch()
                record.best = self.stopper.update(record.monitored(self.stopper.metric), record.epoch)
                state.epoch, state.train_totals = record.epoch, [0.0, 0.0, 0.0]
                state.stopped_early = self.stopper.should_stop and state.epoch < self.epochs
                state.history.append(asdict(record))
                self._save([LAST, BEST] if record.best else [LAST])
                self.run_dir.append_history(record)
                refresh_metrics(self.run_dir, state.history, self.tracking)
                self.console.end_epoch(record)
                self.tracking.log({f"epoch/{k}": v for k, v in record.numbers().items()}, step=state.optimizer_steps)
                reason = self._stop_reason()
                if reason is None and state.budget:
                    self._replan()
        except TrainingDiverged:
            self._finish(StopReason.DIVERGED)
            raise
        return self._finish(reason)

    def _stop_reason(self, agreed: bool = False) -> StopReason | None:
        """Why the run stops here, or None to go on; ``agreed``: the ranks agreed on a stop request (fit's collective).
        Reads the state only: the same answer on every rank."""
        state, trainer = self.state, self.cfg.trainer
        if state.epoch >= self.epochs:
            return StopReason.COMPLETED
        if state.stopped_early:
            return StopReason.EARLY_STOP
        if state.optimizer_steps >= state.total_steps:
            return None  # the last step: its epoch's end completes the run
        if agreed:
            return StopReason.PREEMPTED
        steps, epochs = state.optimizer_steps - self.clock.steps_at_start, state.epoch - self.clock.epochs_at_start
        if trainer.stop_after_steps is not None and steps >= trainer.stop_after_steps:
            return StopReason.STOP_AFTER
        if trainer.stop_after_epochs is not None and epochs >= trainer.stop_after_epochs:
            return StopReason.STOP_AFTER
        return None

    def _start_epoch(self) -> tuple[SplitTotals, int]:
        """Put the sampler (mid-epoch after a resume) and the clock at the epoch's start; return the running training
        totals and the epoch's micro-steps already done."""
        state = self.state
        # Resumed mid-epoch: the global batches this epoch already had, whatever the process count that trained them.
        first = state.optimizer_steps - state.epoch * self.plan.batches_per_epoch
        self.sampler.start(state.epoch, first)
        self.accelerator.step = 0  # Accelerate's micro-step count (restored by load_state, maybe under another accumulation)
        self.model.train()
        self.clock.start_epoch(state)
        self.console.start_phase("train", self.plan.batches_per_epoch * self.layout.accum, state.epoch + 1)
        PROGRESS.enter("train", "optimizer step")
        return self._totals(state.train_totals, padded=False), first * self.layout.accum

    def _totals(self, already_global: list[float] | None = None, padded: bool = True) -> SplitTotals:
        return SplitTotals(self.accelerator.device, self.task.loss, self.task.classifies, already_global, padded)

    def _advance_schedule(self) -> None:
        """Trace the LR and momentum the optimizer step just used, then step the schedule (on every optimizer step,
        skipped fp16 steps included, so the cycle's length is exact)."""
        self.clock.last_lr = float(self.optimizer.param_groups[0]["lr"])
        self.trace.record(self.clock.last_lr, current_momentum(self.optimizer))
        self.scheduler.step()
        self.state.optimizer_steps += 1

    def _report(self, totals: SplitTotals, before: int, done: int) -> None:
        """Console progress every micro-step (``before`` + ``done`` of the epoch's); the numbers (one host sync) only
        where the console or W&B reports them."""
        if not self.accelerator.is_main_process:
            return
        stats = functools.cache(functools.partial(self._train_stats, totals, done))
        self.console.advance(before + done, stats)
        steps, every = self.state.optimizer_steps, self.cfg.tracking.wandb.log_every_steps
        if self.tracking.active and self.accelerator.sync_gradients and steps % every == 0:
            names = {"loss": "train/loss", "lr": "train/lr", "mom": "train/momentum", "img/s": "train/images_per_second"}
            self.tracking.log({names[k]: v for k, v in stats().items()}, step=steps)

    def _train_stats(self, totals: SplitTotals, done: int) -> dict:
        """Loss so far, LR, momentum, and the rate over this invocation's ``done`` micro-steps of the epoch (saves included)."""
        rate = done * self.layout.micro * self.layout.world / max(time.perf_counter() - self.clock.epoch_began, 1e-9)
        lr, momentum = self.optimizer.param_groups[0]["lr"], current_momentum(self.optimizer)
        return {"loss": totals.running_loss(), "lr": lr, "mom": momentum, "img/s": rate}

    def _raise_if_diverged(self, weights_too: bool = False) -> None:
        """Raise TrainingDiverged on every rank together once any rank has seen a NaN or infinite loss (one small all-reduce).

        Before a save the weights and buffers are checked too: the step after the last finite loss
        can already have made them non-finite.
        """
        bad = self._nonfinite.clone()
        if weights_too:
            for tensor in self.model.state_dict().values():
                if tensor.is_floating_point():
                    bad += (~torch.isfinite(tensor)).sum()
        if self.accelerator.reduce(bad, reduction="sum").item() == 0:
            return
        last = self.store.link(LAST)
        raise TrainingDiverged(
            f"the training loss became NaN or infinite by optimizer step {self.state.optimizer_steps} "
            f"at max_lr {self.state.max_lr:.4g}; nothing after the last good checkpoint ({last or 'none yet'}) was kept. "
            "Lower schedule.max_lr or set trainer.grad_clip_norm."
        )

    def _bank_train_time(self, totals: SplitTotals) -> None:
        """Fold device totals into the resumable state (one small collective), with the training time since the last bank."""
        before = self.state.train_totals[2]
        self.state.train_totals = totals.fold(self.accelerator)
        self.state.train_images += self.state.train_totals[2] - before
        self.state.train_seconds += time.perf_counter() - self.clock.train_began

    def evaluate(self, loader: DataLoader | None, phase: str) -> tuple[float | None, float | None, int]:
        """Loss, accuracy (None without) and sample count over the whole split, across all ranks."""
        if loader is None:
            return None, None, 0
        totals = self._totals()
        self.model.eval()
        self.console.start_phase(phase, len(loader))
        PROGRESS.enter(phase, "batch")
        with torch.no_grad():
            for done, (inputs, targets) in enumerate(loader, 1):
                PROGRESS.bump(done)
                self.console.advance(done)
                out = self.step.evaluate(inputs, targets)
                totals.add(self.accelerator, out.loss, out.outputs, targets)
        PROGRESS.leave()
        result = totals.fold(self.accelerator)
        return (*SplitTotals.summarize(result, self.task.classifies), int(result[2]))

    def _validate_epoch(self) -> EpochRecord:
        """The finished epoch's record: its training totals, the validation split's (collectives), its time and rate."""
        state = self.state
        train_loss, train_acc = SplitTotals.summarize(state.train_totals, self.task.classifies)
        began = time.perf_counter()
        val_loss, val_acc, val_count = self.evaluate(self.val_loader, "validation")
        self.clock.val_seconds = time.perf_counter() - began
        seconds, images = state.train_seconds - self.clock.epoch_marks[0], state.train_images - self.clock.epoch_marks[1]
        return EpochRecord(epoch=state.epoch + 1, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss, val_acc=val_acc,
                           train_samples=int(state.train_totals[2]), val_samples=val_count, lr=self.clock.last_lr,
                           optimizer_steps=state.optimizer_steps, seconds=round(time.perf_counter() - self.clock.epoch_began, 3),
                           train_images_per_second=images / seconds if seconds else None)  # fmt: skip

    def _save(self, links: list[str]) -> None:
        self._raise_if_diverged(weights_too=True)  # never a checkpoint (least of all `best`) of NaN weights
        state = self.state
        state.early_stopping = self.stopper.state_dict()
        self.clock.clock_in(state)
        self.trace.flush()  # before the checkpoint: a resume cuts the file back to the checkpoint's steps
        with PROGRESS.paused():
            self.store.save(self.accelerator, asdict(state), links)

    def _test(self) -> tuple[float | None, float | None]:
        """Test loss and accuracy of the `best` checkpoint (or `last`)."""
        best = self.store.link(BEST) or self.store.link(LAST)
        if self.test_loader is None or best is None:
            return None, None
        load_model_weights(self.accelerator.unwrap_model(self.model, keep_torch_compile=False), best)
        return self.evaluate(self.test_loader, "test")[:2]

    def _finish(self, reason: StopReason) -> RunSummary:
        """Test a run that is over; write the LR trace and summary.json, show them, and unlock the run directory."""
        test_loss, test_acc = self._test() if reason.completed else (None, None)
        lrs, momentums = self.trace.read()
        self.clock.clock_in(self.state)
        summary = self._summary(reason, test_loss, test_acc, final_lr=lrs[-1] if lrs else self.clock.last_lr)
        self.tracking.summarize(summary.wandb())
        self.run_dir.write_lr_trace({"total_steps": self.state.total_steps, "lr": lrs, "momentum": momentums})
        self.run_dir.write_summary(summary)
        self.console.finish(summary, self.tracking.describe())
        self.accelerator.wait_for_everyone()
        self.run_dir.close()
        return summary

    def _replan(self) -> None:
        """At an epoch boundary, re-size the rest of a budget's cycle to the costs this epoch measured (rank 0's decision,
        broadcast: every rank re-sizes alike; the next checkpoint keeps it)."""
        plans = [self._measured_replan() if self.accelerator.is_main_process else None]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(plans)
        if plans[0] is None:
            return
        state = self.state
        state.budget = {**state.budget, "replans": [*state.budget.get("replans", []), plans[0].record()]}
        state.total_steps = plans[0].steps
        self.scheduler.scheduler.resize(state.total_steps)
        self.console.epochs = self.epochs
        self.console.line(plans[0].describe())

    def _measured_replan(self) -> BudgetPlan | None:
        """Costs from the epoch just ended: its step time, the rest of its wall (validation, saves, records), and the test
        split at the validation's rate per sample (the first plan's estimate without a validation split)."""
        state, clock, data = self.state, self.clock, self.task.data
        steps = state.optimizer_steps - clock.epoch_steps
        if steps <= 0:
            return None
        train = state.train_seconds - clock.epoch_marks[0]
        end = state.budget["end_seconds"]
        if data.val is not None and data.test is not None:
            end = clock.val_seconds * len(data.test) / len(data.val) + END_MARGIN_SECONDS
        costs = Costs(train / steps, time.perf_counter() - clock.epoch_began - train, end)
        return replan(state.budget["budget_seconds"], state.total_steps, self._used_seconds(), costs, state.optimizer_steps,
                      self.plan.batches_per_epoch, self.cfg.trainer.epochs)  # fmt: skip

    def _used_seconds(self) -> float:
        """The budget's time used: this command's, from its start (its launcher's), and earlier invocations' (from their
        processes' starts); never time spent in a queue."""
        return self.clock.process_before + time.time() - command_start()

    def _budget_used(self) -> dict | None:
        """The plan and its re-plans with the time the run used against them."""
        plan = self.state.budget
        if not plan:
            return None
        used = round(self._used_seconds(), 3)
        return {**plan, "used_seconds": used, "overrun_seconds": round(max(0.0, used - plan["budget_seconds"]), 3)}

    def _summary(self, reason: StopReason, test_loss: float | None, test_acc: float | None, final_lr: float | None) -> RunSummary:
        state, acc, layout = self.state, self.accelerator, self.layout
        history = [EpochRecord.from_dict(r) for r in state.history]
        val_losses = [r.val_loss for r in history if r.val_loss is not None]
        val_accs = [r.val_acc for r in history if r.val_acc is not None]
        return RunSummary(
            stop_reason=reason, run_dir=str(self.run_dir.path),
            # this invocation's batch and hardware
            world_size=acc.num_processes, global_batch_size=layout.global_batch, micro_batch_size=layout.micro,
            grad_accum_steps=layout.accum, batch_layouts=state.batch_layouts, mixed_precision=acc.mixed_precision,
            compiled=is_compiled_module(self.model), channels_last=self.cfg.trainer.channels_last, device=acc.device.type,
            # the schedule
            max_lr=state.max_lr, max_lr_per_group=self.max_lr_per_group, lr_policy=state.lr_policy,
            lr_finder_seconds=round(state.lr_finder_seconds, 3), lr_suggestions=state.lr_suggestions,
            optimizer_steps=state.optimizer_steps, total_optimizer_steps=state.total_steps, final_lr=final_lr, budget=self._budget_used(),
            # the scores
            epochs_completed=state.epoch, best_epoch=self.stopper.best_epoch, monitor=self.stopper.metric,
            best_val_loss=min(val_losses) if val_losses else None, best_val_acc=max(val_accs) if val_accs else None,
            test_loss=test_loss, test_acc=test_acc,
            # resumes and time, over every invocation
            resumed=state.resumed > 0, times_resumed=state.resumed, wall_seconds=round(state.wall_seconds, 3),
            process_seconds=round(state.process_seconds, 3),
            train_images_per_second=state.train_images / state.train_seconds if state.train_seconds else None,
            wandb_run_id=self.tracking.run_id, wandb_mode=self.tracking.mode,
        )  # fmt: skip
