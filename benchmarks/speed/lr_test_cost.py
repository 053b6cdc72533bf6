"""LR range-test cost: its share of the default run's wall time, and how it grows with num_iter and world size.

Every rank runs its own micro-batches of each global batch through the DDP model, so at a fixed
per-process batch the time per iteration should not grow with the number of processes (target:
2 processes <= 1.3x one), and the whole test should be <= 5 % of the default run.

    .venv/bin/python -m benchmarks.speed.lr_test_cost     # ~10 min on 2 cores; writes results/lr_test_cost.md
"""

from __future__ import annotations

import shutil
import statistics

from benchmarks.common import LAUNCH_ONE_CPU, RESULTS, SCRATCH, machine_header, read_json, timed

CONFIG = "configs/fashion_mnist.yaml"
NUM_ITERS = (50, 100, 200, 400)
WORLD_SIZES = (1, 2)
ROUNDS = 2
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
    print(f"default run: range test {test:.1f} s of {found['wall_seconds']:.1f} s", flush=True)
    return [
        "## Share of the default run (`make train`: 2 processes, 10 epochs, full Fashion-MNIST)",
        "",
        "| range test s | trainer wall s | whole command s | share of trainer wall | share of command | test accuracy % |",
        "|---|---|---|---|---|---|",
        f"| {test:.1f} | {found['wall_seconds']:.1f} | {wall:.1f} | {100 * test / found['wall_seconds']:.1f} % | "
        f"{100 * test / wall:.1f} % | {100 * found['test_acc']:.2f} |",
        "",
        f"max_lr {found['max_lr']:.2e} ({found['lr_policy']}).",
        "",
    ]


def range_test(world_size: int, num_iter: int) -> tuple[dict, float]:
    run_dir = WORK / f"w{world_size}-n{num_iter}"
    shutil.rmtree(run_dir, ignore_errors=True)
    wall = launch(world_size, "lr_find.py", f"output_dir={run_dir}", f"lr_finder.num_iter={num_iter}")
    return read_json(run_dir / "lr_finder.json"), wall


def growth() -> list[str]:
    """Every (world size, num_iter) ROUNDS times, alternated; the fastest round of each (this VM drifts)."""
    fastest: dict[tuple[int, int], tuple[dict, float]] = {}
    for _ in range(ROUNDS):
        for world_size in WORLD_SIZES:
            for num_iter in NUM_ITERS:
                found, wall = range_test(world_size, num_iter)
                best = fastest.get((world_size, num_iter))
                if best is None or found["seconds"] < best[0]["seconds"]:
                    fastest[world_size, num_iter] = found, wall
    rows, per_iteration_ms = [], {}
    for (world_size, num_iter), (found, wall) in fastest.items():
        per_iteration = found["seconds"] / found["iterations_run"]
        per_iteration_ms.setdefault(world_size, []).append(1000 * per_iteration)
        rows.append(
            f"| {world_size} | {found['effective_batch_size']} | {num_iter} | {found['iterations_run']} | {found['seconds']:.1f} | "
            f"{1000 * per_iteration:.0f} | {wall:.1f} | {found['max_lr']:.2e} ({found['policy']}) |"
        )
        print(rows[-1], flush=True)
    return [
        "## Growth with num_iter and world size (`lr_find.py`, the same code path)",
        "",
        f"Each row: the faster of {ROUNDS} alternated rounds. "
        "Iterations done < num_iter when the loss diverged first and too few were left for another sweep.",
        "",
        "| world size | effective batch | num_iter | iterations done | range test s | ms per iteration | whole command s | chosen max_lr |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Per-process batch 128 throughout. Median ms per iteration: 1 process {statistics.median(per_iteration_ms[1]):.0f}, "
        f"2 processes {statistics.median(per_iteration_ms[2]):.0f}: ratio "
        f"**{statistics.median(per_iteration_ms[2]) / statistics.median(per_iteration_ms[1]):.2f}** (target <= 1.3).",
        "",
    ]


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    header = [
        "# LR range-test cost",
        "",
        machine_header(),
        "",
        f"`{CONFIG}`, one thread per process. Range test s = the test itself (from lr_finder.json); "
        "the whole command adds imports, data loading and process start.",
        "",
    ]
    body = growth() + default_run()
    out = RESULTS / "lr_test_cost.md"
    out.write_text("\n".join(header + body))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
