"""``metrics.png``: a run at a glance (loss, accuracy, LR and momentum), redrawn at the end of every epoch."""

from __future__ import annotations

import os
from pathlib import Path

from superconverge.errors import say
from superconverge.run_dir import RunDir
from superconverge.tracking import Tracking

METRICS_PNG = "metrics.png"


def refresh_metrics(run_dir: RunDir, history: list[dict], tracking: Tracking) -> None:
    """Redraw ``metrics.png`` from the whole history and LR trace and log it to the trackers (main process).

    Never fatal: a picture that cannot be drawn warns and training goes on.
    """
    if not run_dir.is_main or not history:
        return
    path = run_dir.path / METRICS_PNG
    try:
        lrs, momentums = run_dir.trace.read()
        draw_metrics(history, lrs, momentums, path)
    except Exception as exc:  # noqa: BLE001 - a picture must never stop training
        say(f"{METRICS_PNG} could not be drawn ({type(exc).__name__}: {' '.join(str(exc).split())}); training goes on")
        return
    tracking.log_image("metrics/plot", path, step=history[-1]["optimizer_steps"])


def draw_metrics(history: list[dict], lrs: list[float], momentums: list[float], path: Path) -> None:
    """Loss and (where the task has it) accuracy per epoch, LR and momentum per optimizer step, as one PNG.

    The PNG's ``Description`` says what it shows ("epochs N, optimizer steps M"), for a reader that cannot look.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry; PNG through Agg

    epochs = [r["epoch"] for r in history]
    has_acc = any(r.get("train_acc") is not None or r.get("val_acc") is not None for r in history)
    panels = 3 if has_acc else 2
    fig = Figure(figsize=(4.2 * panels, 3.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, panels)
    _per_epoch(axes[0], epochs, history, "loss")
    if has_acc:
        _per_epoch(axes[1], epochs, history, "acc")
    ax = axes[-1]
    steps = range(1, len(lrs) + 1)
    ax.plot(steps, lrs, color="tab:blue", label="lr")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate", color="tab:blue")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    mom = ax.twinx()
    mom.plot(steps, momentums, color="tab:orange", label="momentum")
    mom.set_ylabel("momentum (beta1)", color="tab:orange")
    ax.set_title("LR and momentum")
    fig.suptitle(f"epoch {epochs[-1]}, optimizer step {history[-1]['optimizer_steps']}")
    # Written beside and renamed: a reader (W&B's upload, an image viewer) never sees half a file.
    partial = path.with_name(path.name + ".partial")
    fig.savefig(partial, format="png", metadata={"Description": f"epochs {len(history)}, optimizer steps {len(lrs)}"})
    os.replace(partial, path)


def _per_epoch(ax, epochs: list[int], history: list[dict], metric: str) -> None:
    for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
        points = [(e, r.get(f"{split}_{metric}")) for e, r in zip(epochs, history, strict=True) if r.get(f"{split}_{metric}") is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, color=color, label=split)
    ax.set_xlabel("epoch")
    ax.set_title("accuracy" if metric == "acc" else "loss")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if ax.lines:
        ax.legend()
