"""The training loop: prepared objects in, metrics, checkpoints and a summary out."""

from __future__ import annotations

import functools
import gc
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import is_compiled_module, set_seed
from torch.utils.data import DataLoader

from superconverge.checkpoint import CheckpointError, load_model_weights
from superconverge.config import Config
from superconverge.console import RunConsole
from superconverge.data import DataBundle
from superconverge.errors import UserError
from superconverge.lr_finder import MaxLRChoice
from superconverge.metrics import EarlyStopping, SplitTotals
from superconverge.run_dir import RunDir
from superconverge.schedule import build_one_cycle, build_optimizer, current_momentum, optimizer_steps_per_epoch
from superconverge.signals import StopSignals
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
    epoch: int = 0  # epochs completed
    batches_done: int = 0  # batches of the current epoch already consumed, per process
    optimizer_steps: int = 0
    train_totals: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    early_stopping: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    lr_trace: list[float] = field(default_factory=list)
    momentum_trace: list[float] = field(default_factory=list)
    stopped_early: bool = False
    train_seconds: float = 0.0
    train_images: float = 0.0
    wall_seconds: float = 0.0
    resumed: int = 0
    config: dict = field(default_factory=dict)  # the config this state was made under (a resume may change only some keys)


def prepare_model(cfg: Config, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The model as every later stage uses it (range test, training, checkpoints): on its device, DDP-wrapped."""
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return accelerator.prepare_model(model)


def make_loaders(cfg: Config, data: DataBundle, pin_memory: bool) -> tuple[DataLoader, DataLoader | None, DataLoader | None]:
    common = dict(num_workers=data.workers, pin_memory=pin_memory, persistent_workers=data.workers > 0)
    train = DataLoader(data.train, batch_size=cfg.data.batch_size, shuffle=True, drop_last=cfg.data.drop_last, **common)

    def evaluation(ds):
        return DataLoader(ds, batch_size=cfg.data.batch_size, **common) if ds is not None else None

    return train, evaluation(data.val), evaluation(data.test)


class Trainer:
    def __init__(
        self,
        cfg: Config,
        accelerator: Accelerator,
        data: DataBundle,
        model: torch.nn.Module,
        choice: MaxLRChoice,
        resume: tuple[Path, dict] | None,
        run_dir: RunDir,
        console: RunConsole,
        tracking: Tracking,
        stop: StopSignals,
    ) -> None:
        self.cfg, self.accelerator, self.run_dir = cfg, accelerator, run_dir  # locked; closed when the run ends
        self.console, self.tracking = console, tracking
        self.stop = stop  # installed by the caller before any work, restored by it when the run ends
        self.preempted = False
        self._nonfinite = torch.zeros((), device=accelerator.device)  # non-finite losses seen; read at check points only
        max_lr = choice.max_lr
        self.train_transform, self.eval_transform = data.train_transform, data.eval_transform
        self.augment_generator = torch.Generator(accelerator.device)
        self.store = run_dir.checkpoints
        train, val, test = make_loaders(cfg, data, pin_memory=accelerator.device.type == "cuda")
        optimizer = build_optimizer(cfg.optimizer, model, lr=max_lr / cfg.schedule.div_factor)
        self.model = model  # prepared by prepare_model before the range test
        self.optimizer, self.train_loader, self.val_loader, self.test_loader = accelerator.prepare(optimizer, train, val, test)
        steps = cfg.trainer.epochs * optimizer_steps_per_epoch(len(self.train_loader), cfg.trainer.grad_accum_steps)
        self.scheduler = accelerator.prepare(build_one_cycle(cfg.schedule, optimizer, max_lr, steps))
        self.state = TrainState(max_lr=max_lr, total_steps=steps, lr_policy=choice.policy, lr_finder_seconds=choice.seconds,
                                lr_suggestions=choice.suggestions, config=cfg.model_dump(mode="json"))  # fmt: skip
        es = cfg.trainer.early_stopping
        self.stopper = EarlyStopping(es.metric, es.patience, es.min_delta)
        # A different augmentation stream on each rank; a resumed run gets its saved RNG back instead.
        set_seed(cfg.seed, device_specific=True)
        if resume is not None:
            self._resume(*resume)
        self._wall_before = self.state.wall_seconds
        self._steps_at_start, self._epochs_at_start = self.state.optimizer_steps, self.state.epoch
        self._started = time.perf_counter()
        self._epoch_began = self._started

    def close(self) -> None:
        """End the run's resources in order: the DDP model and loaders before the process group they use."""
        self.model = self.optimizer = self.scheduler = self.train_loader = self.val_loader = self.test_loader = None
        self.accelerator.free_memory()  # Accelerate's own references to the prepared objects
        gc.collect()
        self.accelerator.end_training()  # trackers finish, the process group is destroyed

    def _resume(self, path: Path, saved: dict) -> None:
        """Continue from a checkpoint folder and its trainer state (read and checked before any work)."""
        if saved["total_steps"] != self.state.total_steps:
            raise CheckpointError(
                f"checkpoint {path} belongs to a schedule of {saved['total_steps']} optimizer steps, but this config gives "
                f"{self.state.total_steps} (epochs, batch size, processes or accumulation changed). Use a new output_dir."
            )
        self.accelerator.load_state(str(path))
        self.state = TrainState(**{**saved, "config": self.state.config})  # with the changes the resume applied
        self.state.resumed += 1
        self.stopper = EarlyStopping(**saved["early_stopping"])

    @property
    def epochs(self) -> int:
        return self.cfg.trainer.epochs

    def fit(self) -> dict:
        self.stop.training = True
        self.run_dir.write_history(self.state.history)
        finished = self.state.stopped_early or self.state.epoch >= self.epochs
        try:
            while not finished:
                if not self._train_epoch(self.state.epoch) or self._end_epoch():
                    return self._finish(completed=False)
                finished = self.state.stopped_early or self.state.epoch >= self.epochs
        except TrainingDiverged:
            self._finish(completed=False, diverged=True)
            raise
        return self._finish(completed=True)

    def _train_epoch(self, epoch: int) -> bool:
        """Run the rest of an epoch; return False if the run must stop here (checkpoint saved)."""
        acc, state, trainer = self.accelerator, self.state, self.cfg.trainer
        self._epoch_marks = (state.train_seconds, state.train_images)
        self.train_loader.set_epoch(epoch)
        loader = self.train_loader
        if state.batches_done:
            loader = acc.skip_first_batches(self.train_loader, state.batches_done)
            loader.set_epoch(epoch)  # the skipping loader would otherwise reshuffle as epoch 0
        totals = SplitTotals(acc.device, state.train_totals, remainder=self._train_remainder())
        self.model.train()
        began = self._epoch_began = time.perf_counter()
        first_batch = state.batches_done
        self.console.start_phase("train", len(self.train_loader), epoch + 1)
        for images, labels in loader:
            images = self._layout(self._augment(images, epoch, state.batches_done))
            with acc.accumulate(self.model):
                logits = self.model(images).float()
                losses = F.cross_entropy(logits, labels, reduction="none", label_smoothing=self.cfg.optimizer.label_smoothing)
                self._nonfinite += (~torch.isfinite(losses.detach())).sum()
                acc.backward(losses.mean())
                if acc.sync_gradients and trainer.grad_clip_norm:
                    acc.clip_grad_norm_(self.model.parameters(), trainer.grad_clip_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            totals.add(acc, losses, logits, labels)
            state.batches_done += 1
            if acc.sync_gradients:
                self._after_optimizer_step()
            self._report_batch(totals, began, first_batch)
            if acc.sync_gradients:
                if self._stop_requested():
                    self._bank_train_time(began, totals)
                    self._save(["last"])
                    return False
                if trainer.checkpoint_every_steps and state.optimizer_steps % trainer.checkpoint_every_steps == 0:
                    self._bank_train_time(began, totals)
                    self._save(["last"])
                    began = time.perf_counter()
        self._bank_train_time(began, totals)
        return True

    def _train_remainder(self) -> int:
        """Real samples in the last global batch; 0 when it is full or drop_last removed it."""
        if self.cfg.data.drop_last:
            return 0
        global_batch = self.cfg.data.batch_size * self.accelerator.num_processes
        return len(self.train_loader.dataset) % global_batch

    def _augment(self, images: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        if self.train_transform is None:
            return images
        # Augmentation randomness is a pure function of (seed, rank, epoch, batch): a run resumed
        # mid-epoch draws exactly what the uninterrupted run drew, whatever the loader prefetched.
        key = (self.cfg.seed, self.accelerator.process_index, epoch, batch)
        self.augment_generator.manual_seed(hash(key) & 0x7FFF_FFFF_FFFF_FFFF)
        return self.train_transform(images, self.augment_generator)

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        return self.eval_transform(images) if self.eval_transform is not None else images

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.cfg.trainer.channels_last else images

    def _report_batch(self, totals: SplitTotals, began: float, first_batch: int) -> None:
        """Console progress every batch; the numbers (one host sync) only at reporting points."""
        if not self.accelerator.is_main_process:
            return
        state = self.state

        @functools.cache
        def stats() -> dict:
            seen = (state.batches_done - first_batch) * self.cfg.data.batch_size * self.accelerator.num_processes
            loss_sum, _, count = (totals.local + totals.shared).tolist()
            lr, momentum = self.optimizer.param_groups[0]["lr"], current_momentum(self.optimizer)
            return {"loss": loss_sum / max(count, 1), "lr": lr, "mom": momentum, "img/s": seen / max(time.perf_counter() - began, 1e-9)}

        self.console.advance(state.batches_done, stats)
        every = self.cfg.tracking.wandb.log_every_steps
        if self.tracking.active and self.accelerator.sync_gradients and state.optimizer_steps % every == 0:
            names = {"loss": "train/loss", "lr": "train/lr", "mom": "train/momentum", "img/s": "train/images_per_second"}
            self.tracking.log({names[k]: v for k, v in stats().items()}, step=state.optimizer_steps)

    def _after_optimizer_step(self) -> None:
        # Recorded before stepping: the LR and momentum the optimizer step just used.
        self.state.lr_trace.append(float(self.optimizer.param_groups[0]["lr"]))
        self.state.momentum_trace.append(current_momentum(self.optimizer))
        # Stepped on every optimizer step, skipped fp16 steps included, so the cycle's length is exact.
        self.scheduler.step()
        self.state.optimizer_steps += 1

    def _check_finite(self, weights_too: bool = False) -> None:
        """Stop every rank together once any rank has seen a NaN or infinite loss (one small all-reduce).

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
        last = self.store.link("last")
        raise TrainingDiverged(
            f"the training loss became NaN or infinite by optimizer step {self.state.optimizer_steps} "
            f"at max_lr {self.state.max_lr:.4g}; nothing after the last good checkpoint ({last or 'none yet'}) was kept. "
            "Lower schedule.max_lr or set trainer.grad_clip_norm."
        )

    def _stop_requested(self) -> bool:
        done = self.state.optimizer_steps
        at_check = done % self.cfg.trainer.preemption_check_steps == 0
        if at_check:
            self._check_finite()
        if done >= self.state.total_steps:
            return False  # the last step: the run ends normally
        if at_check and self.stop.agreed(self.accelerator):
            self.preempted = True
            return True
        limit = self.cfg.trainer.stop_after_steps
        return limit is not None and done - self._steps_at_start >= limit

    def _bank_train_time(self, began: float, totals: SplitTotals) -> None:
        """Fold device totals into the resumable state (one small collective)."""
        before = self.state.train_totals[2]
        self.state.train_totals = totals.fold(self.accelerator)
        self.state.train_images += self.state.train_totals[2] - before
        self.state.train_seconds += time.perf_counter() - began

    def evaluate(self, loader: DataLoader | None, phase: str) -> tuple[float | None, float | None, int]:
        """Loss, accuracy and sample count over the whole split, across all ranks."""
        if loader is None:
            return None, None, 0
        totals = SplitTotals(self.accelerator.device)
        self.model.eval()
        self.console.start_phase(phase, len(loader))
        with torch.no_grad():
            for done, (images, labels) in enumerate(loader, 1):
                self.console.advance(done)
                logits = self.model(self._layout(self._normalize(images))).float()
                totals.add(self.accelerator, F.cross_entropy(logits, labels, reduction="none"), logits, labels)
        result = totals.fold(self.accelerator)
        return (*SplitTotals.summarize(result), int(result[2]))

    def _end_epoch(self) -> bool:
        """Validate, checkpoint and log an epoch; return True if the run must stop here."""
        state = self.state
        train_loss, train_acc = SplitTotals.summarize(state.train_totals)
        val_loss, val_acc, val_count = self.evaluate(self.val_loader, "validation")
        record = {
            "epoch": state.epoch + 1,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "train_samples": int(state.train_totals[2]),
            "val_samples": val_count,
            "lr": state.lr_trace[-1] if state.lr_trace else None,
            "optimizer_steps": state.optimizer_steps,
        }
        monitored = record[self.stopper.metric] if val_loss is not None else record["train_" + self.stopper.metric[4:]]
        improved = self.stopper.update(monitored, state.epoch + 1)
        state.epoch += 1
        state.batches_done, state.train_totals = 0, [0.0, 0.0, 0.0]
        state.stopped_early = self.stopper.should_stop and state.epoch < self.epochs
        seconds, images = state.train_seconds - self._epoch_marks[0], state.train_images - self._epoch_marks[1]
        speed = images / seconds if seconds else None
        record.update(best=improved, seconds=round(time.perf_counter() - self._epoch_began, 3), train_images_per_second=speed)
        state.history.append(record)
        self._save(["last", "best"] if improved else ["last"])
        self.run_dir.append_history(record)
        self.console.end_epoch(record)
        epoch_values = {f"epoch/{k}": v for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        self.tracking.log(epoch_values, step=state.optimizer_steps)
        limit = self.cfg.trainer.stop_after_epochs
        return limit is not None and state.epoch - self._epochs_at_start >= limit and state.epoch < self.epochs and not state.stopped_early

    def _save(self, links: list[str]) -> None:
        self._check_finite(weights_too=True)  # never a checkpoint (least of all `best`) of NaN weights
        state = self.state
        state.early_stopping = self.stopper.state_dict()
        state.wall_seconds = self._wall_before + time.perf_counter() - self._started
        self.store.save(self.accelerator, asdict(state), links)

    def _test(self) -> float | None:
        best = self.store.link("best") or self.store.link("last")
        if self.test_loader is None or best is None:
            return None
        load_model_weights(self.accelerator.unwrap_model(self.model, keep_torch_compile=False), best)
        return self.evaluate(self.test_loader, "test")[1]

    def _finish(self, completed: bool, diverged: bool = False) -> dict:
        state = self.state
        test_acc = self._test() if completed else None
        state.wall_seconds = self._wall_before + time.perf_counter() - self._started
        val_accs = [r["val_acc"] for r in state.history if r["val_acc"] is not None]
        summary = {
            "completed": completed,
            "preempted": self.preempted,
            "diverged": diverged,
            "world_size": self.accelerator.num_processes,
            "global_batch_size": self.cfg.global_batch_size(self.accelerator.num_processes),
            "max_lr": state.max_lr,
            "lr_policy": state.lr_policy,
            "lr_finder_seconds": round(state.lr_finder_seconds, 3),
            "lr_suggestions": state.lr_suggestions,
            "optimizer_steps": state.optimizer_steps,
            "total_optimizer_steps": state.total_steps,
            "final_lr": state.lr_trace[-1] if state.lr_trace else None,
            "epochs_completed": state.epoch,
            "best_epoch": self.stopper.best_epoch,
            "best_val_acc": max(val_accs) if val_accs else None,
            "test_acc": test_acc,
            "stopped_early": state.stopped_early,
            "resumed": state.resumed > 0,
            "times_resumed": state.resumed,
            "mixed_precision": self.accelerator.mixed_precision,
            "compiled": is_compiled_module(self.model),
            "channels_last": self.cfg.trainer.channels_last,
            "device": self.accelerator.device.type,
            "wall_seconds": round(state.wall_seconds, 3),
            "train_images_per_second": state.train_images / state.train_seconds if state.train_seconds else None,
            "wandb_run_id": self.tracking.run_id,
            "wandb_mode": self.tracking.mode,
            "run_dir": str(self.run_dir.path),
        }
        keys = ("best_val_acc", "test_acc", "max_lr", "lr_policy", "optimizer_steps", "epochs_completed", "stopped_early")
        self.tracking.summarize({k: summary[k] for k in keys})
        self.run_dir.write_lr_trace({"total_steps": state.total_steps, "lr": state.lr_trace, "momentum": state.momentum_trace})
        self.run_dir.write_summary(summary)
        self.console.finish(summary, self.tracking.describe())
        self.accelerator.wait_for_everyone()
        self.run_dir.close()
        return summary
