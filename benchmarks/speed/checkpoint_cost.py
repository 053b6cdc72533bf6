"""A checkpoint save at 1k and 100k optimizer steps: the LR/momentum trace inside the trainer state
(as before) against outside it (``StepTrace``: only the steps since the last save are appended).

The real ``CheckpointStore.save`` on one CPU process with the default job's model and AdamW; the
trace's share is what grows with the run (an ImageNet-length run has ~450k steps).

    .venv/bin/python -m benchmarks.speed.checkpoint_cost     # ~1 min; writes results/checkpoint_cost.md
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import asdict

from benchmarks.common import RESULTS, SCRATCH, machine_header
from superconverge.checkpoint import STATE_FILE, CheckpointStore
from superconverge.models import small_cnn
from superconverge.run_dir import StepTrace
from superconverge.trainer import TrainState

WORK = SCRATCH / "checkpoint_cost"
STEPS = (1_000, 100_000)
SAVE_EVERY = 500  # steps between saves (trainer.checkpoint_every_steps)
REPEATS = 5


def timed_save(accelerator, store: CheckpointStore, steps: int, inside: bool, trace: StepTrace) -> tuple[float, int]:
    lrs = [1e-3 * (i % 97) for i in range(steps)]
    state = asdict(TrainState(max_lr=1e-2, total_steps=2 * steps, optimizer_steps=steps))
    if inside:  # as the trainer state held the trace before StepTrace
        state.update(lr_trace=lrs, momentum_trace=lrs)
    if not inside:
        for lr in lrs[-SAVE_EVERY:]:
            trace.record(lr, 0.9)
    started = time.perf_counter()
    if not inside:
        trace.flush()
    final = store.save(accelerator, state, ["last"])
    return time.perf_counter() - started, (final / STATE_FILE).stat().st_size


def main() -> None:
    import torch
    from accelerate import Accelerator

    shutil.rmtree(WORK, ignore_errors=True)
    accelerator = Accelerator(cpu=True)
    model = small_cnn(num_classes=10, in_channels=1)
    accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    (WORK / "checkpoints").mkdir(parents=True)
    store, trace = CheckpointStore(WORK / "checkpoints"), StepTrace(WORK / "lr_trace.tsv", True)
    trace.start(0)
    rows = []
    for steps in STEPS:
        for inside in (True, False):
            runs = [timed_save(accelerator, store, steps, inside, trace) for _ in range(REPEATS)]
            rows.append((steps, inside, statistics.median(s for s, _ in runs), runs[0][1]))
    lines = [
        "# Checkpoint save cost against the run's length", "", machine_header(), "",
        f"`CheckpointStore.save` (Accelerate's save_state: small CNN, AdamW, RNG; then trainer_state.json, rename, links), one CPU "
        f"process, median of {REPEATS}. 'outside': the trace lives in `lr_trace.tsv`, which gets the {SAVE_EVERY} steps since "
        "the last save appended before each save.", "",
        "| optimizer steps | trace | save ms | trainer_state.json bytes |", "|---|---|---|---|",
        *(f"| {steps:,} | {'inside the state (before)' if inside else 'outside (now)'} | {1000 * s:.1f} | {size:,} |"
          for steps, inside, s, size in rows),
        "",
    ]  # fmt: skip
    (RESULTS / "checkpoint_cost.md").write_text("\n".join(lines))
    print("\n".join(lines))
    accelerator.end_training()


if __name__ == "__main__":
    main()
