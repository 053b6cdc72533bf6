"""LR suggestions from a range test's recorded curve, computed without plotting.

torch-lr-finder exposes its one suggestion only through ``plot()`` (which needs matplotlib), so
the policies are written here, after fastai's ``callback/schedule.py`` and Lightning's
``tuner/lr_finder.py``. The range test itself is torch-lr-finder's, run by ``run_range_test``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import nn
from torch.utils.data import DataLoader
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from superconverge.config import Config
from superconverge.console import RunConsole
from superconverge.data import BatchTransform, DataBundle
from superconverge.errors import UserError
from superconverge.schedule import build_optimizer

MIN_POINTS = 5


class RangeTestError(UserError):
    """The range test's curve gives no usable learning rate."""


def usable_curve(lrs: Sequence[float], losses: Sequence[float], skip_start: int = 10, skip_end: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Cut the curve at its first non-finite loss, then drop ``skip_start``/``skip_end`` points."""
    lrs, losses = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    finite = np.isfinite(losses)
    cut = len(losses) if finite.all() else int(np.argmin(finite))
    lrs, losses = lrs[:cut], losses[:cut]
    end = len(losses) - skip_end
    if end - skip_start < MIN_POINTS:
        raise RangeTestError(
            f"the range test's loss diverged or went non-finite after {cut} of {len(finite)} iterations, leaving "
            f"{max(0, end - skip_start)} usable points: lower lr_finder.start_lr or raise lr_finder.num_iter"
        )
    lrs, losses = lrs[skip_start:end], losses[skip_start:end]
    if losses.min() >= losses[0] * (1 - 1e-3):
        raise RangeTestError(
            "the range test's loss never went down between lr_finder.start_lr and lr_finder.end_lr: "
            "raise lr_finder.end_lr (or lr_finder.num_iter) so the test reaches learning rates that train"
        )
    return lrs, losses


def steepest(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR where the loss falls fastest against log-LR (Lightning's and torch-lr-finder's rule)."""
    return float(lrs[int(np.argmin(np.gradient(losses, np.log10(lrs))))])


def minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    """A tenth of the LR at the lowest loss (fastai's ``minimum``)."""
    return float(lrs[int(np.argmin(losses))] / 10)


def valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """About half-way down the longest descending stretch of the curve (fastai's default)."""
    n = len(losses)
    run_length = [1] * n  # longest strictly decreasing subsequence ending at i
    start, end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run_length[i] < run_length[j] + 1:
                run_length[i] = run_length[j] + 1
        if run_length[end] < run_length[i]:
            end, start = i, i - run_length[i]
    third = (end - start) / 3
    return float(lrs[start + int(third) + int(third / 2)])


POLICIES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"steepest": steepest, "valley": valley, "minimum": minimum}


def suggestions(lrs: Sequence[float], losses: Sequence[float], skip_start: int = 10, skip_end: int = 5) -> dict[str, float]:
    """Every policy's suggestion for one recorded curve."""
    curve = usable_curve(lrs, losses, skip_start, skip_end)
    return {name: policy(*curve) for name, policy in POLICIES.items()}


@dataclass
class RangeTestResult:
    lrs: list[float]
    losses: list[float]  # smoothed, as torch-lr-finder records them
    raw_losses: list[float]
    suggestions: dict[str, float]
    policy: str
    max_lr: float
    effective_batch_size: int
    accumulation_steps: int
    iterations: int
    batches_seen: int
    stopped_on_divergence: bool
    seconds: float
    fallback_used: bool = False
    error: str | None = None


class _TrainingBatches(TrainDataLoaderIter):
    """Feeds the finder what training sees: the training augmentation, on the training device."""

    def __init__(self, loader: DataLoader, transform: BatchTransform | None, device: torch.device, seed: int, channels_last: bool,
                 progress: Callable[[int], None] | None = None):  # fmt: skip
        super().__init__(loader)
        self.transform, self.device, self.channels_last, self.progress = transform, device, channels_last, progress
        self.generator = torch.Generator(device).manual_seed(seed)
        self.batches_seen = 0

    def inputs_labels_from_batch(self, batch):
        images, labels = batch
        images = images.to(self.device)
        if self.transform is not None:
            images = self.transform(images, self.generator)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self.batches_seen += 1
        if self.progress is not None:
            self.progress(self.batches_seen)
        return images, labels


def unsmooth(smoothed: list[float], smooth_f: float) -> list[float]:
    """Invert torch-lr-finder's exponential smoothing to recover the raw per-iteration losses."""
    if not smoothed or smooth_f <= 0:
        return list(smoothed)
    raw = [smoothed[0]]
    raw += [(cur - (1 - smooth_f) * prev) / smooth_f for prev, cur in zip(smoothed, smoothed[1:], strict=False)]
    return raw


def _amp_settings(mixed_precision: str, device: torch.device) -> dict:
    if mixed_precision not in ("fp16", "bf16"):
        return {}
    dtype = torch.float16 if mixed_precision == "fp16" else torch.bfloat16
    return {
        "amp_backend": "torch",
        "amp_config": {"device_type": device.type, "dtype": dtype},
        "grad_scaler": torch.amp.GradScaler(device.type, enabled=mixed_precision == "fp16"),
    }


def run_range_test(cfg: Config, data: DataBundle, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                   world_size: int, mixed_precision: str, progress: Callable[[int], None] | None = None) -> RangeTestResult:  # fmt: skip
    """torch-lr-finder at the global batch: per-device batches, accumulated over world size x accumulation."""
    finder_cfg = cfg.lr_finder
    accumulation = world_size * cfg.trainer.grad_accum_steps  # per-device batches per optimizer step
    loader = DataLoader(data.train, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers,
                        generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
    batches = _TrainingBatches(loader, data.train_transform, device, cfg.seed, cfg.trainer.channels_last, progress)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optimizer.label_smoothing)
    finder = LRFinder(model, optimizer, criterion, device=device, **_amp_settings(mixed_precision, device))
    started = time.perf_counter()
    # torch-lr-finder prints and draws a tqdm bar of its own; the console belongs to the trainer.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(
            batches,
            start_lr=finder_cfg.start_lr,
            end_lr=finder_cfg.end_lr,
            num_iter=finder_cfg.num_iter,
            step_mode=finder_cfg.step_mode,
            smooth_f=finder_cfg.smooth_f,
            diverge_th=finder_cfg.diverge_th,
            accumulation_steps=accumulation,
        )
    seconds = time.perf_counter() - started
    lrs, losses = list(finder.history["lr"]), list(finder.history["loss"])
    finder.reset()  # model and optimizer back to their state before the test
    result = RangeTestResult(
        lrs=lrs, losses=losses, raw_losses=unsmooth(losses, finder_cfg.smooth_f), suggestions={}, policy=finder_cfg.policy,
        max_lr=float("nan"), effective_batch_size=cfg.global_batch_size(world_size), accumulation_steps=accumulation,
        iterations=len(lrs), batches_seen=batches.batches_seen, stopped_on_divergence=len(lrs) < finder_cfg.num_iter,
        seconds=seconds,
    )  # fmt: skip
    return choose(result, cfg)


def choose(result: RangeTestResult, cfg: Config) -> RangeTestResult:
    """Apply the configured policy, or the configured fallback if the curve is unusable."""
    finder_cfg = cfg.lr_finder
    try:
        result.suggestions = suggestions(result.lrs, result.losses, finder_cfg.skip_start, finder_cfg.skip_end)
        result.max_lr = result.suggestions[finder_cfg.policy]
    except RangeTestError as exc:
        if finder_cfg.fallback_max_lr is None:
            raise
        result.error, result.fallback_used, result.max_lr = str(exc), True, finder_cfg.fallback_max_lr
    return result


def write_artifacts(result: RangeTestResult, run_dir: Path) -> None:
    (run_dir / "lr_finder.json").write_text(json.dumps(asdict(result), indent=1))
    plot(result, run_dir / "lr_finder.png")


def plot(result: RangeTestResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(result.lrs, result.raw_losses, color="0.75", linewidth=0.8, label="loss")
    ax.plot(result.lrs, result.losses, color="tab:blue", label="smoothed loss")
    colors = {"steepest": "tab:orange", "valley": "tab:green", "minimum": "tab:purple"}
    for name, lr in result.suggestions.items():
        chosen = name == result.policy and not result.fallback_used
        ax.axvline(lr, color=colors[name], linewidth=3 if chosen else 1.2, linestyle="-" if chosen else "--",
                   label=f"{name}: {lr:.2e}" + (" (chosen)" if chosen else ""))  # fmt: skip
    if result.fallback_used:
        ax.axvline(result.max_lr, color="tab:red", linewidth=3, label=f"fallback: {result.max_lr:.2e} (chosen)")
    finite = [v for v in result.losses if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.95, min(max(finite), finite[0] * 2.5) * 1.05)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test, effective batch {result.effective_batch_size}, {result.iterations} iterations")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass
class MaxLRChoice:
    max_lr: float
    policy: str  # "fixed" for a number in the config, else the policy (or "fallback")
    seconds: float = 0.0
    reused: bool = False


def previous_choice(cfg: Config, world_size: int) -> MaxLRChoice | None:
    """The range test a run already did (a resumed or requeued run never repeats it)."""
    path = Path(cfg.output_dir) / "lr_finder.json"
    if cfg.trainer.resume == "none" or not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved["effective_batch_size"] != cfg.global_batch_size(world_size):
        return None  # the effective batch changed: the old curve no longer applies
    return MaxLRChoice(saved["max_lr"], "fallback" if saved["fallback_used"] else saved["policy"], saved["seconds"], reused=True)


def find_max_lr(cfg: Config, accelerator: Accelerator, data: DataBundle, model: nn.Module, console: RunConsole) -> MaxLRChoice:
    """Run the range test on rank 0 only and give every rank its max_lr (or its error)."""
    if cfg.schedule.max_lr != "auto":
        return MaxLRChoice(float(cfg.schedule.max_lr), "fixed")
    payload = None
    if accelerator.is_main_process:
        payload = _main_process_range_test(cfg, accelerator, data, model, console)
    # The other ranks wait here; the process group's timeout is trainer.collective_timeout_minutes.
    payload = broadcast_object_list([payload], from_process=0)[0]
    if "error" in payload:
        raise RangeTestError(payload["error"])
    return MaxLRChoice(**payload)


def _main_process_range_test(cfg: Config, accelerator: Accelerator, data: DataBundle, model: nn.Module, console: RunConsole) -> dict:
    try:
        previous = previous_choice(cfg, accelerator.num_processes)
        if previous is not None:
            return asdict(previous)
        optimizer = build_optimizer(cfg.optimizer, model, lr=cfg.lr_finder.start_lr)  # the trainer builds its own
        console.start_phase("LR test", cfg.lr_finder.num_iter * accelerator.num_processes * cfg.trainer.grad_accum_steps)
        result = run_range_test(cfg, data, model, optimizer, accelerator.device, accelerator.num_processes, accelerator.mixed_precision,
                                console.advance)  # fmt: skip
        found = " ".join(f"{name}={lr:.3g}" for name, lr in result.suggestions.items())
        console.line(f"LR range test {found} chosen={result.policy} max_lr={result.max_lr:.4g} seconds={result.seconds:.1f}")
        write_artifacts(result, Path(cfg.output_dir))
        if result.fallback_used:
            print(f"WARNING: {result.error}. Using lr_finder.fallback_max_lr={result.max_lr:g} instead.", file=sys.stderr, flush=True)
        return asdict(MaxLRChoice(result.max_lr, "fallback" if result.fallback_used else result.policy, result.seconds))
    except RangeTestError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - any failure on rank 0 must reach every rank, not hang them
        return {"error": f"the LR range test failed on rank 0: {type(exc).__name__}: {exc}"}
