"""LR-policy quality: each range-test suggestion against an exhaustive grid of fixed max_lr values.

For every dataset x optimizer x seed: one LR range test (its three suggestions), one-cycle runs at
each suggestion, one-cycle runs over a half-decade grid spanning four decades, and constant-LR
runs at the winning policy's suggestion with the same and with 3x the epochs. Regret of a policy =
best grid accuracy - the policy's accuracy (means over seeds, in points).

    .venv/bin/python benchmarks/lr_policies.py      # ~15 min on 2 cores; writes results/lr_policies.{md,png}

Runs are cached under benchmarks/results/tmp/lr_policies/ (a rerun continues where it stopped);
delete that folder to measure afresh.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, SCRATCH, machine_header, read_json, run_in_process  # noqa: E402

POLICIES = ("steepest", "valley", "minimum")
EPOCHS = 3
DATASETS = {
    # name: (config file, extra overrides, seeds)
    "fashion_mnist_10k": ("configs/fashion_mnist.yaml", ["data.limit_train=10000", f"data.root={ROOT / 'data'}"], 3),
    "digits": ("configs/digits.yaml", [], 5),
}
OPTIMIZERS = {
    # name: (overrides, grid of max_lr exponents: half-decade steps over four decades)
    "adamw": ([], [-4 + i / 2 for i in range(9)]),
    "sgd": (["optimizer.name=sgd", "optimizer.momentum=0.9", "optimizer.weight_decay=5e-4"], [-3 + i / 2 for i in range(9)]),
}
CONSTANT = ["schedule.div_factor=1", "schedule.final_div_factor=1", "schedule.cycle_momentum=false"]  # a flat "cycle"
WORK = SCRATCH / "lr_policies"


@dataclass(frozen=True)
class Job:
    kind: str  # range_test | grid | policy | constant
    dataset: str
    optimizer: str
    seed: int
    max_lr: float | None = None
    epochs: int = EPOCHS
    label: str = ""

    @property
    def run_dir(self) -> Path:
        lr = f"-lr{self.max_lr:.4g}" if self.max_lr else ""
        return WORK / f"{self.dataset}-{self.optimizer}-s{self.seed}-{self.kind}{self.label}{lr}-e{self.epochs}"

    def argv(self) -> list[str]:
        config, data_overrides, _ = DATASETS[self.dataset]
        args = ["--config", str(ROOT / config), *data_overrides, *OPTIMIZERS[self.optimizer][0]]
        args += [f"seed={self.seed}", f"output_dir={self.run_dir}", f"trainer.epochs={self.epochs}"]
        if self.max_lr is not None:
            args.append(f"schedule.max_lr={self.max_lr!r}")
        return args + (CONSTANT if self.kind == "constant" else [])


def execute(job: Job) -> tuple[Job, dict]:
    """Run one job (or read its cached result): range-test suggestions, or a run's summary."""
    done = job.run_dir / ("lr_finder.json" if job.kind == "range_test" else "summary.json")
    if not done.exists():
        code = run_in_process("lr_find" if job.kind == "range_test" else "train", job.argv())
        if code != 0:
            raise RuntimeError(f"{job} exited {code}")
    return job, read_json(done)


def run_all(jobs: list[Job]) -> dict[Job, dict]:
    # Two single-threaded workers: both cores busy, no oversubscription (as in `make train`).
    pool = multiprocessing.get_context("spawn").Pool(2)
    results = {}
    for count, (job, result) in enumerate(pool.imap_unordered(execute, jobs), 1):
        results[job] = result
        if count % 10 == 0 or count == len(jobs):
            print(f"  {count}/{len(jobs)} runs", flush=True)
    pool.close()  # not terminate(): the trainer's SIGTERM handler would turn that into a checkpoint request
    pool.join()
    return results


@dataclass
class Cell:
    """Everything measured for one dataset x optimizer."""

    dataset: str
    optimizer: str
    suggestions: dict[str, list[float]] = field(default_factory=dict)
    range_test_seconds: list[float] = field(default_factory=list)
    grid: dict[float, list[float]] = field(default_factory=dict)
    policy: dict[str, list[float]] = field(default_factory=dict)
    constant: dict[int, list[float]] = field(default_factory=dict)
    constant_lr: list[float] = field(default_factory=list)

    @property
    def best_grid(self) -> tuple[float, float]:
        lr = max(self.grid, key=lambda x: statistics.mean(self.grid[x]))
        return lr, statistics.mean(self.grid[lr])

    def regret(self, policy: str) -> float:
        return 100 * (self.best_grid[1] - statistics.mean(self.policy[policy]))


def accuracy(summary: dict) -> float:
    return summary["test_acc"] if summary["test_acc"] == summary["test_acc"] else 0.0  # NaN (diverged) counts as 0


def measure() -> tuple[list[Cell], str]:
    cells = {(d, o): Cell(d, o) for d in DATASETS for o in OPTIMIZERS}
    seeds = {d: range(DATASETS[d][2]) for d in DATASETS}
    print("range tests", flush=True)
    tests = run_all([Job("range_test", d, o, s) for d, o in cells for s in seeds[d]])
    training = []
    for job, found in sorted(tests.items(), key=lambda item: item[0].seed):
        cell = cells[job.dataset, job.optimizer]
        cell.range_test_seconds.append(found["seconds"])
        for policy in POLICIES:
            cell.suggestions.setdefault(policy, []).append(found["suggestions"][policy])
            training.append(Job("policy", job.dataset, job.optimizer, job.seed, found["suggestions"][policy], label=f"-{policy}"))
        exponents = OPTIMIZERS[job.optimizer][1]
        training += [Job("grid", job.dataset, job.optimizer, job.seed, round(10**e, 10)) for e in exponents]
    print("one-cycle runs: grid and policies", flush=True)
    for job, summary in run_all(training).items():
        cell = cells[job.dataset, job.optimizer]
        target = cell.grid.setdefault(job.max_lr, []) if job.kind == "grid" else cell.policy.setdefault(job.label[1:], [])
        target.append(accuracy(summary))
    winner = min(POLICIES, key=lambda p: (max(c.regret(p) for c in cells.values()), sum(c.regret(p) for c in cells.values())))
    print(f"constant-LR baselines at {winner}'s suggestion", flush=True)
    constant = [
        Job("constant", job.dataset, job.optimizer, job.seed, found["suggestions"][winner], epochs=EPOCHS * factor)
        for job, found in tests.items()
        for factor in (1, 3)
    ]
    for job, summary in run_all(constant).items():
        cell = cells[job.dataset, job.optimizer]
        cell.constant.setdefault(job.epochs // EPOCHS, []).append(accuracy(summary))
        if job.epochs == EPOCHS:
            cell.constant_lr.append(job.max_lr)
    return list(cells.values()), winner


def geomean(values: list[float]) -> float:
    return statistics.geometric_mean(values)


def points(values: list[float]) -> str:
    """Mean ± standard deviation over seeds, in percent."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def cell_table(cell: Cell, winner: str) -> list[str]:
    best_lr, best_acc = cell.best_grid
    lines = [
        f"### {cell.dataset}, {cell.optimizer} ({len(next(iter(cell.grid.values())))} seeds, {EPOCHS} epochs)",
        "",
        "| max_lr | test accuracy % (mean ± sd) | regret (points) |",
        "|---|---|---|",
    ]
    for policy in POLICIES:
        lrs = cell.suggestions[policy]
        chosen = f"**{policy}**" if policy == winner else policy
        lines.append(
            f"| {chosen}: {geomean(lrs):.2e} ({min(lrs):.1e}–{max(lrs):.1e}) | {points(cell.policy[policy])} | {cell.regret(policy):.2f} |"
        )
    for lr in sorted(cell.grid):
        mark = " (best)" if lr == best_lr else ""
        lines.append(f"| grid {lr:.1e}{mark} | {points(cell.grid[lr])} | {100 * (best_acc - statistics.mean(cell.grid[lr])):.2f} |")
    for factor, accs in sorted(cell.constant.items()):
        regret = 100 * (best_acc - statistics.mean(accs))
        lines.append(f"| constant {geomean(cell.constant_lr):.2e}, {factor * EPOCHS} epochs | {points(accs)} | {regret:.2f} |")
    return lines + [""]


def write_report(cells: list[Cell], winner: str) -> Path:
    seconds = sum(read_json(path)["wall_seconds"] for path in WORK.glob("*/summary.json"))
    head = [
        "# LR-policy quality against a grid of fixed max_lr",
        "",
        machine_header(),
        "",
        f"Small CNN, one-cycle over {EPOCHS} epochs, the shipped config of each data set (`configs/fashion_mnist.yaml` on a "
        "10k-image training subset, `configs/digits.yaml`) with its range-test settings; SGD runs use momentum 0.9 and "
        "weight decay 5e-4. One range test per seed gives the three suggestions (geometric mean and range over seeds shown); "
        "the grid trains fixed max_lr values in half-decade steps over four decades; the constant-LR baseline trains at "
        f"the {winner} suggestion with no schedule, for the same and for 3x the epochs. Accuracy is on the test split "
        "(Fashion-MNIST: the 10k test set; digits: a fixed 20% = 359 images, 0.28 points each). "
        f"Regret = best grid mean - policy mean, in points. {sum(len(v) for c in cells for v in c.grid.values())} grid runs; "
        f"{seconds / 60:.0f} min of run time in all (2 runs at a time).",
        "",
        "## Regret per policy (points; lower is better)",
        "",
        "| data set | optimizer | best grid max_lr | best grid accuracy % | " + " | ".join(POLICIES) + " |",
        "|---|---|---|---|" + "---|" * len(POLICIES),
    ]
    for cell in cells:
        best_lr, best_acc = cell.best_grid
        regrets = " | ".join(f"{cell.regret(p):.2f}" for p in POLICIES)
        head.append(f"| {cell.dataset} | {cell.optimizer} | {best_lr:.1e} | {100 * best_acc:.2f} | {regrets} |")
    worst = {p: max(c.regret(p) for c in cells) for p in POLICIES}
    head += [
        "",
        "Worst regret: " + ", ".join(f"{p} {worst[p]:.2f}" for p in POLICIES) + f". Best policy (lowest worst-case regret): **{winner}**.",
        "",
        "![accuracy against max_lr](lr_policies.png)",
        "",
    ]
    body = [line for cell in cells for line in cell_table(cell, winner)]
    out = RESULTS / "lr_policies.md"
    out.write_text("\n".join(head + body))
    return out


def plot(cells: list[Cell], winner: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(DATASETS), len(OPTIMIZERS), figsize=(11, 8), squeeze=False)
    markers = {"steepest": "v", "valley": "o", "minimum": "s"}
    for ax, cell in zip(axes.flat, cells, strict=True):
        lrs = sorted(cell.grid)
        means = [100 * statistics.mean(cell.grid[lr]) for lr in lrs]
        spreads = [100 * statistics.stdev(cell.grid[lr]) for lr in lrs]
        ax.errorbar(lrs, means, yerr=spreads, color="black", marker=".", capsize=3, label="fixed max_lr (one-cycle)")
        for policy in POLICIES:
            suggested = cell.suggestions[policy]
            x, y = geomean(suggested), 100 * statistics.mean(cell.policy[policy])
            span = [[x - min(suggested)], [max(suggested) - x]]
            ax.errorbar([x], [y], xerr=span, marker=markers[policy], markersize=9, linestyle="none", capsize=4,
                        label=f"{policy}{' (default)' if policy == winner else ''}: regret {cell.regret(policy):.2f}")  # fmt: skip
        for factor, style in ((1, "--"), (3, ":")):
            if factor in cell.constant:
                ax.axhline(100 * statistics.mean(cell.constant[factor]), color="gray", linestyle=style,
                           label=f"constant LR, {factor * EPOCHS} epochs")  # fmt: skip
        best = max(means + [100 * statistics.mean(accs) for accs in cell.constant.values()])
        ax.set_ylim(max(min(means) - 2, best - 15), best + 1.5)
        ax.set_xscale("log")
        ax.set_xlabel("max_lr")
        ax.set_ylabel("test accuracy %")
        ax.set_title(f"{cell.dataset}, {cell.optimizer}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower center")
    figure.tight_layout()
    out = RESULTS / "lr_policies.png"
    figure.savefig(out, dpi=110)
    return out


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["WANDB_MODE"] = "disabled"
    cells, winner = measure()
    print(f"wrote {write_report(cells, winner)} and {plot(cells, winner)}")


if __name__ == "__main__":
    main()
