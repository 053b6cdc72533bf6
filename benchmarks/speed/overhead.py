"""Launcher overhead: the product's whole training path against a bare PyTorch loop, as whole processes.

Product: `python train.py` (one process) with the default config (Accelerate, one-cycle, exact
metrics, per-epoch checkpoints, plain console lines, offline W&B) and a fixed max_lr (the range
test's cost is measured by lr_test_cost.py). Bare: bare_loop.py, the same model, data,
augmentation, optimizer, schedule, batch and epochs. Both with the same threads, alternated
A B A B; medians of the per-pair ratios. `accelerate launch` in front of train.py adds a fixed
cost of its own (its Python start), measured once and reported beside.

    .venv/bin/python -m benchmarks.speed.overhead        # ~12 min on 2 cores; writes results/overhead.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor

from benchmarks.common import LAUNCH_ONE_CPU, RESULTS, SCRATCH, machine_header, read_json, timed

CONFIG = "configs/fashion_mnist.yaml"
MAX_LR = 0.01
WORK = SCRATCH / "overhead"


def product(epochs: int, index: int, prefix: list[str]) -> tuple[float, dict]:
    run_dir = WORK / f"product-{index}"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "train.py", "--config", CONFIG, f"output_dir={run_dir}", f"trainer.epochs={epochs}",
               f"schedule.max_lr={MAX_LR}", "trainer.resume=none", "console.mode=plain", "tracking.wandb.mode=offline"]  # fmt: skip
    seconds = timed(prefix + command, WANDB_MODE="offline")
    found = read_json(run_dir / "summary.json")
    assert found["wandb_mode"] == "offline" and found["completed"], found
    return seconds, found


def bare(epochs: int, index: int, prefix: list[str]) -> tuple[float, dict]:
    out = WORK / f"bare-{index}.json"
    seconds = timed(prefix + [sys.executable, "-m", "benchmarks.speed.bare_loop", "--config", CONFIG, "--max-lr", str(MAX_LR),
                              "--out", str(out), f"trainer.epochs={epochs}"])  # fmt: skip
    return seconds, read_json(out)


def alternated(epochs: int, index: int) -> tuple[tuple[float, dict], tuple[float, dict]]:
    return bare(epochs, index, []), product(epochs, index, [])


def simultaneous(epochs: int, index: int) -> tuple[tuple[float, dict], tuple[float, dict]]:
    """Both at once, each pinned to its own core (swapped every pair): the host's drift hits both alike."""
    cores = (0, 1) if index % 2 == 0 else (1, 0)
    with ThreadPoolExecutor(2) as pool:
        bare_run = pool.submit(bare, epochs, 100 + index, ["taskset", "-c", str(cores[0])])
        product_run = pool.submit(product, epochs, 100 + index, ["taskset", "-c", str(cores[1])])
        return bare_run.result(), product_run.result()


def launcher_seconds() -> float:
    """`accelerate launch` starting a script that does nothing: its fixed cost on top of `python`."""
    noop = WORK / "noop.py"
    noop.write_text("")
    return timed([*LAUNCH_ONE_CPU, str(noop)]) - timed([sys.executable, str(noop)])


def measure(pair, pairs: int, epochs: int) -> tuple[list[str], float, float]:
    """Table rows and the median throughput and wall ratios (product / bare cost)."""
    rows, wall_ratios, speed_ratios = [], [], []
    for index in range(pairs):
        (bare_wall, bare_run), (product_wall, product_run) = pair(epochs, index)
        speed_ratios.append(bare_run["train_images_per_second"] / product_run["train_images_per_second"])
        wall_ratios.append(product_wall / bare_wall)
        cells = [index + 1, f"{bare_wall:.1f}", f"{product_wall:.1f}", f"{wall_ratios[-1]:.3f}"]
        cells += [f"{run['train_images_per_second']:,.0f}" for run in (bare_run, product_run)] + [f"{speed_ratios[-1]:.3f}"]
        cells += [f"{100 * run['test_acc']:.2f}" for run in (bare_run, product_run)]
        rows.append("| " + " | ".join(map(str, cells)) + " |")
        print(pair.__name__, rows[-1], flush=True)
    return rows, statistics.median(speed_ratios), statistics.median(wall_ratios)


TABLE_HEAD = [
    "| pair | bare wall s | product wall s | wall ratio | bare train img/s | product train img/s | throughput ratio | "
    "bare test % | product test % |",
    "|---|---|---|---|---|---|---|---|---|",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # as each `make train` process
    WORK.mkdir(parents=True, exist_ok=True)
    rows, speed, wall = measure(alternated, args.pairs, args.epochs)
    together, together_speed, together_wall = measure(simultaneous, args.pairs, args.epochs)
    launcher = launcher_seconds()
    lines = [
        "# Launcher overhead: product against a bare PyTorch loop",
        "",
        machine_header(),
        "",
        f"`{CONFIG}` (small CNN, full Fashion-MNIST: 54k train, 6k validation, 10k test, batch 128), {args.epochs} epochs, "
        f"max_lr {MAX_LR} fixed, one process with one thread each side. Product: `python train.py` with per-epoch "
        "checkpoints, plain console lines and offline W&B; bare: `benchmarks/speed/bare_loop.py`. Wall = the whole process from "
        "start to exit (imports, data, every epoch's validation, the test). Training throughput = images/s over the "
        "training batches only. Ratios > 1 mean the product is slower. Starting train.py through `accelerate launch` "
        f"instead of `python` adds {launcher:.1f} s (Accelerate's launcher process), not counted here.",
        "",
        "This 2-core virtual machine drifts by up to ±25% over minutes (the same program's throughput from one run to the "
        "next), so the A B alternation is followed by the same pairs run simultaneously, each process pinned to its own "
        "core (swapped every pair), meant to expose both to the same drift; single simultaneous pairs still spread from "
        "0.92 to 1.46 in follow-up checks, so read a median of 5 as ±10%. A cProfile of the product's epoch puts "
        "its own per-step work (metrics, console, LR trace, preemption check, Accelerate's wrappers) at about 1% of "
        "the step; its fixed costs are W&B's start (2.4 s) and imports (about 1 s more than the bare loop's).",
        "",
        f"**Median ratios, alternated: training throughput {speed:.3f}, wall time {wall:.3f}. Simultaneous: training "
        f"throughput {together_speed:.3f}, wall time {together_wall:.3f}.** Target ≤ 1.05.",
        "",
        f"## Alternated, bare then product ({args.pairs} pairs)",
        "",
        *TABLE_HEAD,
        *rows,
        "",
        f"## Simultaneous, one core each ({args.pairs} pairs)",
        "",
        *TABLE_HEAD,
        *together,
    ]
    out = RESULTS / "overhead.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
