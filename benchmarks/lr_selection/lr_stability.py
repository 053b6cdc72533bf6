"""Does the range test's max_lr depend on how it is run? num_iter, seed and process count at one global batch.

The default job's config (full Fashion-MNIST, global batch 256) with ``lr_finder.num_iter`` 50, 100,
200, 400, seeds 0-2, on 1 process (batch 256) and on 2 processes (batch 128 each). For every rule:
the spread of its answers (max / min) over all 24 tests, and within each factor.

    .venv/bin/python -m benchmarks.lr_selection.lr_stability     # ~10 min on 2 cores; writes results/lr_stability.md
"""

from __future__ import annotations

import math
from itertools import product

from benchmarks.common import LAUNCH_ONE_CPU, RESULTS, SCRATCH, machine_header, read_json, timed
from superconverge import lr_rules
from superconverge.config import LRFinderConfig

CONFIG = "configs/fashion_mnist.yaml"
NUM_ITERS = (50, 100, 200, 400)
SEEDS = (0, 1, 2)
WORLDS = {1: 256, 2: 128}  # processes: per-process batch (global batch 256 either way)
WORK = SCRATCH / "lr_stability"


def range_test(world: int, num_iter: int, seed: int) -> dict:
    run_dir = WORK / f"w{world}-n{num_iter}-s{seed}"
    if not (run_dir / "lr_finder.json").exists():
        prefix = LAUNCH_ONE_CPU if world == 1 else [*LAUNCH_ONE_CPU[:3], "--config_file", "launch/cpu.yaml", "--num_processes", str(world)]
        args = [f"output_dir={run_dir}", f"lr_finder.num_iter={num_iter}", f"seed={seed}", f"data.batch_size={WORLDS[world]}"]
        timed([*prefix, "lr_find.py", "--config", CONFIG, *args], OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    return read_json(run_dir / "lr_finder.json")


def answers(found: dict) -> dict[str, float]:
    """Every rule's answer, recomputed from the raw curve with the current rules and defaults."""
    cfg = LRFinderConfig()
    curve = lr_rules.analyze(found["lrs"], found["raw_losses"], cfg.skip_start, cfg.skip_end, chance_loss=math.log(10))
    return lr_rules.suggestions(curve)


def spread(values: list[float]) -> float:
    return max(values) / min(values)


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    found = {key: range_test(*key) for key in product(WORLDS, NUM_ITERS, SEEDS)}
    for run in found.values():
        run["suggestions"] = answers(run)
    rules, default = list(lr_rules.POLICIES), LRFinderConfig().policy
    lines = [
        "# Stability of the range test's answer",
        "",
        machine_header(),
        "",
        f"`{CONFIG}` (full Fashion-MNIST), global batch 256: 1 process x 256 or 2 processes x 128; lr_finder.num_iter "
        f"{', '.join(map(str, NUM_ITERS))}; seeds {', '.join(map(str, SEEDS))}: {len(found)} range tests. "
        "Spread = largest / smallest answer; the target is <= 2 for the default rule.",
        "",
        "## Every answer of the default rule (" + default + ")",
        "",
        "| processes | num_iter | " + " | ".join(f"seed {s}" for s in SEEDS) + " | iterations done |",
        "|---|---|" + "---|" * len(SEEDS) + "---|",
    ]
    for world, num_iter in product(WORLDS, NUM_ITERS):
        runs = [found[world, num_iter, s] for s in SEEDS]
        cells = " | ".join(f"{r['suggestions'][default]:.2e}" for r in runs)
        iterations = "/".join(str(r["iterations_run"]) for r in runs)
        lines.append(f"| {world} | {num_iter} | {cells} | {iterations} |")
    lines += [
        "",
        "## Spread of each rule (max / min)",
        "",
        "| rule | over all 24 | worst over num_iter (fixed seed, processes) | worst over seeds (fixed num_iter, processes) | "
        "worst 1 vs 2 processes (fixed num_iter, seed) |",
        "|---|---|---|---|---|",
    ]
    for rule in rules:
        lr = {key: run["suggestions"][rule] for key, run in found.items()}
        by_iter = max(spread([lr[w, n, s] for n in NUM_ITERS]) for w in WORLDS for s in SEEDS)
        by_seed = max(spread([lr[w, n, s] for s in SEEDS]) for w in WORLDS for n in NUM_ITERS)
        by_world = max(spread([lr[w, n, s] for w in WORLDS]) for n in NUM_ITERS for s in SEEDS)
        name = f"**{rule}** (default)" if rule == default else rule
        lines.append(f"| {name} | {spread(list(lr.values())):.2f} | {by_iter:.2f} | {by_seed:.2f} | {by_world:.2f} |")
    out = RESULTS / "lr_stability.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
