"""Launcher overhead: the product's whole training path against a bare PyTorch loop, as whole processes.

Product: `accelerate launch --cpu --num_processes 1 train.py` with the default config (Accelerate,
one-cycle, exact metrics, per-epoch checkpoints, plain console lines, offline W&B) and a fixed max_lr
(the range test's cost is measured by lr_test_cost.py). Bare: benchmarks/bare_loop.py, the same model,
data, augmentation, optimizer, schedule, batch and epochs. Both with the same threads, alternated
A B A B; medians of the per-pair ratios.

    .venv/bin/python benchmarks/overhead.py        # ~8 min on 2 cores; writes results/overhead.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, SCRATCH, machine_header, read_json  # noqa: E402

CONFIG = "configs/fashion_mnist.yaml"
MAX_LR = 0.01
WORK = SCRATCH / "overhead"


def product(epochs: int, index: int) -> tuple[float, dict]:
    run_dir = WORK / f"product-{index}"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "train.py", "--config", CONFIG, f"output_dir={run_dir}",
               f"trainer.epochs={epochs}", f"schedule.max_lr={MAX_LR}", "trainer.resume=none", "console.mode=plain",
               "tracking.wandb.mode=offline"]  # fmt: skip
    seconds = timed(command)
    found = read_json(run_dir / "summary.json")
    assert found["wandb_mode"] == "offline" and found["completed"], found
    return seconds, found


def bare(epochs: int, index: int) -> tuple[float, dict]:
    out = WORK / f"bare-{index}.json"
    seconds = timed([sys.executable, "benchmarks/bare_loop.py", "--config", CONFIG, "--max-lr", str(MAX_LR), "--out", str(out),
                     f"trainer.epochs={epochs}"])  # fmt: skip
    return seconds, read_json(out)


def timed(command: list[str]) -> float:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_API_KEY": ""}
    env.pop("WANDB_API_KEY")
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    rows, wall_ratios, speed_ratios = [], [], []
    for index in range(args.pairs):
        (bare_wall, bare_run), (product_wall, product_run) = bare(args.epochs, index), product(args.epochs, index)
        speed = bare_run["train_images_per_second"] / product_run["train_images_per_second"]
        wall_ratios.append(product_wall / bare_wall)
        speed_ratios.append(speed)
        cells = [index + 1, f"{bare_wall:.1f}", f"{product_wall:.1f}", f"{wall_ratios[-1]:.3f}"]
        cells += [f"{run['train_images_per_second']:,.0f}" for run in (bare_run, product_run)] + [f"{speed:.3f}"]
        cells += [f"{100 * run['test_acc']:.2f}" for run in (bare_run, product_run)]
        rows.append("| " + " | ".join(map(str, cells)) + " |")
        print(rows[-1], flush=True)
    wall, speed = statistics.median(wall_ratios), statistics.median(speed_ratios)
    lines = [
        "# Launcher overhead: product against a bare PyTorch loop",
        "",
        machine_header(),
        "",
        f"`{CONFIG}` (small CNN, full Fashion-MNIST: 54k train, 6k validation, 10k test, batch 128), {args.epochs} epochs, "
        f"max_lr {MAX_LR} fixed, 1 process with {args.threads} threads each side, {args.pairs} pairs run bare then product. "
        "Wall = the whole process from launch to exit (imports, data, every epoch's validation, the test, and for the product "
        "the `accelerate launch` wrapper, checkpoints and the W&B offline writer). Training throughput = images/s over the "
        "training batches only. Ratios > 1 mean the product is slower.",
        "",
        f"**Median ratios: training throughput {speed:.3f}, wall time {wall:.3f}** (target ≤ 1.05).",
        "",
        "| pair | bare wall s | product wall s | wall ratio | bare train img/s | product train img/s | throughput ratio | "
        "bare test % | product test % |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    out = RESULTS / "overhead.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
