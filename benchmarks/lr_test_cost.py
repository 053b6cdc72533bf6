"""LR range-test cost: its share of the default run's wall time, and how it grows with num_iter and world size.

Rank 0 runs the whole test at the global batch (world size x grad_accum micro-batches per
iteration) while the other ranks wait, so its cost grows with num_iter x world size.

    .venv/bin/python benchmarks/lr_test_cost.py     # ~7 min on 2 cores; writes results/lr_test_cost.md
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LAUNCH_ONE_CPU, RESULTS, SCRATCH, machine_header, read_json, timed  # noqa: E402

CONFIG = "configs/fashion_mnist.yaml"
NUM_ITERS = (50, 100, 200, 400)
WORLD_SIZES = (1, 2)
WORK = SCRATCH / "lr_test_cost"


def launch(world_size: int, script: str, *args: str) -> float:
    """Seconds the whole command took; a 2-process job is one gloo group (launch/cpu.yaml)."""
    prefix = (
        LAUNCH_ONE_CPU if world_size == 1 else [*LAUNCH_ONE_CPU[:3], "--config_file", "launch/cpu.yaml", "--num_processes", str(world_size)]
    )
    return timed([*prefix, script, "--config", CONFIG, *args], OMP_NUM_THREADS="1", WANDB_MODE="offline")


def default_run() -> list[str]:
    """`make train` as it ships: 2 processes, the range test, 10 epochs, offline W&B."""
    run_dir = WORK / "default"
    shutil.rmtree(run_dir, ignore_errors=True)
    wall = launch(2, "train.py", f"output_dir={run_dir}", "trainer.resume=none", "console.mode=plain")
    found = read_json(run_dir / "summary.json")
    test = found["lr_finder_seconds"]
    return [
        "## Share of the default run (`make train`: 2 processes, 10 epochs, full Fashion-MNIST)",
        "",
        "| range test s | trainer wall s | whole command s | share of trainer wall | share of command | test accuracy % |",
        "|---|---|---|---|---|---|",
        f"| {test:.1f} | {found['wall_seconds']:.1f} | {wall:.1f} | {100 * test / found['wall_seconds']:.1f} % | "
        f"{100 * test / wall:.1f} % | {100 * found['test_acc']:.2f} |",
        "",
    ]


def growth() -> list[str]:
    rows = []
    for world_size in WORLD_SIZES:
        for num_iter in NUM_ITERS:
            run_dir = WORK / f"w{world_size}-n{num_iter}"
            shutil.rmtree(run_dir, ignore_errors=True)
            wall = launch(world_size, "lr_find.py", f"output_dir={run_dir}", f"lr_finder.num_iter={num_iter}")
            found = read_json(run_dir / "lr_finder.json")
            per_iteration = found["seconds"] / found["iterations"]
            rows.append(
                f"| {world_size} | {found['effective_batch_size']} | {num_iter} | {found['iterations']} | {found['seconds']:.1f} | "
                f"{1000 * per_iteration:.0f} | {wall:.1f} | {found['max_lr']:.2e} ({found['policy']}) |"
            )
            print(rows[-1], flush=True)
    return [
        "## Growth with num_iter and world size (`lr_find.py`, the same code path)",
        "",
        "Iterations done < num_iter when the loss diverged first (the test stops there).",
        "",
        "| world size | effective batch | num_iter | iterations done | range test s | ms per iteration | whole command s | chosen max_lr |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    header = [
        "# LR range-test cost",
        "",
        machine_header(),
        "",
        f"`{CONFIG}`, one thread per process. Range test s = the test itself on rank 0 (from lr_finder.json); "
        "the whole command adds imports, data loading and process start.",
        "",
    ]
    body = growth() + default_run()
    out = RESULTS / "lr_test_cost.md"
    out.write_text("\n".join(header + body))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
