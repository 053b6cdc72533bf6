"""The range test's speed against the training step's, at the same process count (2) and batch.

Both run the same ``TrainStep``, so their images/s should match; the range test adds one scalar
all-reduce of the loss per iteration and torch-lr-finder's bookkeeping. Target: the range test
within 15 % of training (ratio >= 0.85). Training images/s is the trainer's own figure over its
training batches; the range test's is global images over its seconds.

    .venv/bin/python -m benchmarks.speed.lr_test_speed     # ~4 min on 2 cores; writes results/lr_test_speed.md
"""

from __future__ import annotations

import shutil
import statistics

from benchmarks.common import LAUNCH_ONE_CPU, RESULTS, SCRATCH, machine_header, read_json, timed

CONFIG = "configs/fashion_mnist.yaml"
ROUNDS = 5
WORK = SCRATCH / "lr_test_speed"
ARGS = ["data.limit_train=20000", "data.batch_size=128", "trainer.epochs=2", "trainer.resume=none", "console.mode=quiet",
        "tracking.wandb.mode=disabled"]  # fmt: skip


def one_round(index: int) -> tuple[float, float]:
    run_dir = WORK / f"round{index}"
    shutil.rmtree(run_dir, ignore_errors=True)
    prefix = [*LAUNCH_ONE_CPU[:3], "--config_file", "launch/cpu.yaml", "--num_processes", "2"]
    timed([*prefix, "train.py", "--config", CONFIG, *ARGS, f"output_dir={run_dir}"], OMP_NUM_THREADS="1")
    found, summary = read_json(run_dir / "lr_finder.json"), read_json(run_dir / "summary.json")
    test_speed = found["iterations_run"] * found["effective_batch_size"] / found["seconds"]
    return test_speed, summary["train_images_per_second"]


def main() -> None:
    rows = [one_round(i) for i in range(ROUNDS)]
    ratios = [test / train for test, train in rows]
    lines = [
        "# LR range test speed against the training step",
        "",
        machine_header(),
        "",
        f"`{CONFIG}` with {' '.join(ARGS[:3])}: 2 CPU processes (gloo), batch 128 per process (global 256), one thread each; "
        "range test images/s = its iterations x global batch / its seconds; training images/s = the trainer's figure over its batches.",
        "",
        "| round | range test img/s | training img/s | ratio |",
        "|---|---|---|---|",
        *(f"| {i + 1} | {test:,.0f} | {train:,.0f} | {test / train:.3f} |" for i, (test, train) in enumerate(rows)),
        "",
        f"**Median ratio {statistics.median(ratios):.3f}** (target >= 0.85: within 15 %).",
        "",
    ]
    (RESULTS / "lr_test_speed.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
