"""Time to accuracy: what a wall-clock budget buys the default job, in the product and three ways a user gets there otherwise.

The default job (configs/fashion_mnist.yaml: Fashion-MNIST, small_cnn, AdamW, one cycle, max_lr auto) at each budget B,
the seconds of the whole command on this machine:

- product: ``superconverge launch --config_file launch/cpu.yaml --config configs/fashion_mnist.yaml trainer.budget=<B>s``
  (2 CPU processes); test accuracy, plan and used seconds from the run's summary.json. ``trainer.epochs`` (10) stays the
  cycle's ceiling unless ``--max-epochs`` raises it (for both the product and the careful user's N).
- (a) Lightning with ``Trainer(max_time={"seconds": B})`` (peers.py's ``run_lightning``: DDP on 2 CPU processes, its own
  ``lr_find``, its one cycle sized for 10 epochs). Lightning's timer counts from its training loop's start, so the start-up
  and its range test come on top, and it stops mid-cycle: the final weights are not annealed. Test accuracy of those weights.
- (b) a careful user: one product run of 1 epoch (``trainer.epochs=1``) gives the whole command's wall W1 (start-up, range
  test, test and exit included) and the epoch's seconds E (training, validation and save: the epoch's ``seconds`` in
  metrics.jsonl). The user then runs the product with ``trainer.epochs=N`` (no budget), N the most whole epochs whose
  estimate W1 + (N - 1) E fits: N = floor((B - W1) / E) + 1, at least 1, at most the epoch ceiling. The 1-epoch timing run
  is made anew right before each budget's runs and is not charged to the budget (its figures are in the report).
- (c) the seed blog's plain loop (peers.py's ``run_seed_loop``: torch-lr-finder's steepest point, OneCycleLR per batch,
  1 process, 2 threads) for the same N epochs as (b).

Per round, each budget's four systems run in turn (after (b)'s timing run), in the reverse order on odd rounds so the
machine's drift hits them alike. Wall = the whole command's process tree from its start to the root process's exit
(peers.measured, polled every 0.2 s). Run directories and logs go under benchmarks/results/tmp/time_to_accuracy (each run
starts over), the raw records to <report name>.records.json there.

Each system runs in the first interpreter that has its package: this one, then ``--peers-python``; a system that none
has is skipped, with a note in the report. Lightning is not in the project's venv (the optional ``[peers]`` extra); an
environment for it that reuses the project venv's torch instead of downloading another::

    python3.11 -m venv /work/peersenv       # the project venv's interpreter version
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \\
        > /work/peersenv/lib/python3.11/site-packages/shared_venv.pth
    /work/peersenv/bin/pip install 'lightning==2.6.6'   # torch and the rest come from the project venv

Run from the repository root (about 4.5 B + 60 s per budget and round: ~35 min for 2 rounds at 30, 60 and 120 s)::

    .venv/bin/python -m benchmarks.speed.time_to_accuracy --budgets 30 60 120 --rounds 2 --max-epochs 30 \
        --peers-python /work/peersenv/bin/python
    # writes benchmarks/results/time_to_accuracy.md
    .venv/bin/python -m benchmarks.speed.time_to_accuracy --rebuild      # the report again from its records, seconds
    .venv/bin/python -m benchmarks.speed.time_to_accuracy --budgets 60 --rounds 3 --systems product \
        --out benchmarks/results/budget_60s.md                           # the product alone: its wall at one budget
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import yaml

from benchmarks.common import RESULTS, ROOT, SCRATCH, machine_header
from benchmarks.speed.peers import CONFIG, EPOCHS, measured

WORK = SCRATCH / "time_to_accuracy"
SYSTEMS = ("product", "lightning", "careful", "seed_loop")
NAMES = {"product": "product (`trainer.budget`)", "lightning": "(a) Lightning `max_time`", "careful": "(b) careful user, N epochs",
         "seed_loop": "(c) seed loop, N epochs"}  # fmt: skip
PEER_MODULES = {"lightning": "lightning", "seed_loop": "torch_lr_finder"}
WITHIN = 0.05  # the target: the product's wall within 5 % of the budget


def base_env() -> dict:
    """The user's shell: no W&B key, the launcher's own thread count, this worktree's ``src`` first."""
    env = {key: value for key, value in os.environ.items() if key not in ("WANDB_API_KEY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return {**env, "WANDB_MODE": "disabled"}


@cache
def has_module(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], cwd=ROOT, env=base_env(), capture_output=True).returncode == 0


def interpreter(system: str, peers_python: str | None) -> str | None:
    """The first of this interpreter and ``--peers-python`` that has the system's package."""
    for python in dict.fromkeys(filter(None, [sys.executable, peers_python])):
        if has_module(python, PEER_MODULES[system]):
            return python
    return None


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---- one run of each system ----


def product(work: Path, overrides: list[str]) -> dict:
    """The product's whole command; the summary's figures and whether its cycle ended annealed."""
    run_dir = work / "run"
    command = [sys.executable, "-m", "superconverge", "launch", "--config_file", "launch/cpu.yaml", "--config", str(CONFIG),
               *overrides, f"output_dir={run_dir}", "console.mode=plain", "tracking.wandb.mode=disabled"]  # fmt: skip
    wall, cpu = measured(command, base_env(), log=work / "log.txt")
    summary = json.loads((run_dir / "summary.json").read_text())
    schedule = yaml.safe_load((run_dir / "config.yaml").read_text())["schedule"]
    floor_lr = summary["max_lr"] / (schedule["div_factor"] * schedule["final_div_factor"])  # OneCycleLR's last LR
    annealed = summary["optimizer_steps"] == summary["total_optimizer_steps"] and summary["final_lr"] <= floor_lr * 1.001
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"wall": wall, "cpu": cpu, "test_acc": summary["test_acc"], "max_lr": summary["max_lr"], "final_lr": summary["final_lr"],
            "floor_lr": floor_lr, "annealed": annealed, "optimizer_steps": summary["optimizer_steps"],
            "total_optimizer_steps": summary["total_optimizer_steps"], "epochs_completed": summary["epochs_completed"],
            "budget": summary["budget"], "epoch_seconds": [e["seconds"] for e in epochs]}  # fmt: skip


def peer(system: str, python: str, work: Path, **options: float | int) -> dict:
    """A peers.py runner in its own process tree (1 thread in each of Lightning's 2 DDP processes, 2 in the seed loop's one)."""
    out = work / "result.json"
    command = [python, "-m", "benchmarks.speed.peers", "--system", system, "--out", str(out)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    env = {**base_env(), "OMP_NUM_THREADS": "1" if system == "lightning" else "2"}
    wall, cpu = measured(command, env, log=work / "log.txt")
    return {**json.loads(out.read_text()), "wall": wall, "cpu": cpu}


def careful_epochs(budget: float, timing: dict, ceiling: int) -> int:
    """(b)'s rule: the most whole epochs N whose estimate W1 + (N - 1) E fits the budget; 1 to the ceiling."""
    return max(1, min(ceiling, math.floor((budget - timing["wall"]) / timing["epoch_seconds"][0]) + 1))


def attempt(label: str, run, *args, **kwargs) -> dict:
    """One run; a failure is recorded (and printed), not the end of the benchmark."""
    load = os.getloadavg()[0]  # the machine's other work, for the report
    try:
        result = {**run(*args, **kwargs), "load": load}
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        result = {"error": str(e)[-1500:], "load": load}
    print(label, json.dumps(result), flush=True)
    return result


def one_budget(budget: float, round_index: int, ceiling: int, pythons: dict[str, str | None], systems: list[str]) -> dict:
    base = WORK / f"r{round_index}-b{budget:g}"
    timing = {"error": "not run (neither (b) nor (c) asked for)"}
    if {"careful", "seed_loop"} & set(systems):
        timing = attempt(f"round {round_index} budget {budget:g}s timing", product, fresh(base / "timing"), ["trainer.epochs=1"])
    n = None if "error" in timing else careful_epochs(budget, timing, ceiling)
    ceiling_override = [] if ceiling == EPOCHS else [f"trainer.epochs={ceiling}"]
    runs = {
        "product": lambda work: product(work, [f"trainer.budget={budget:g}s", *ceiling_override]),
        "lightning": lambda work: peer("lightning", pythons["lightning"], work, max_time=budget),
        "careful": lambda work: product(work, [f"trainer.epochs={n}"]),
        "seed_loop": lambda work: peer("seed_loop", pythons["seed_loop"], work, epochs=n),
    }
    order = SYSTEMS if round_index % 2 == 0 else tuple(reversed(SYSTEMS))
    results: dict = {"timing": timing, "n": n}
    for system in (s for s in order if s in systems):
        if system in PEER_MODULES and pythons[system] is None:
            continue
        if system in ("careful", "seed_loop") and n is None:
            results[system] = {"error": "the 1-epoch timing run failed"}
            continue
        results[system] = attempt(f"round {round_index} budget {budget:g}s {system}", runs[system], fresh(base / system))
    return results


# ---- the report ----


def pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def lightning_epochs(run: dict) -> float:
    """Epochs Lightning trained before ``max_time`` stopped it (its cycle: EPOCHS epochs)."""
    return EPOCHS * run["optimizer_steps"] / run["total_optimizer_steps"]


def describe(system: str, runs: list[dict], budget: float, ceiling: int) -> str:
    """The last column: what each round's run did."""
    ok = [r for r in runs if "error" not in r]
    if system == "product":
        parts = []
        for r in ok:
            plan = r["budget"] or {}
            capped = " (the epoch ceiling)" if plan.get("epochs", 0) >= ceiling else ""
            if plan.get("spent_seconds", 0) + plan.get("end_seconds", 0) >= budget:
                capped += f" (too short a budget: {plan['spent_seconds']:.1f} s spent before the plan, {plan['end_seconds']:.1f} s the end)"
            annealed = f"{'annealed' if r['annealed'] else 'NOT annealed'} (final lr {r['final_lr']:.2e}, floor {r['floor_lr']:.2e})"
            used = f"used {plan.get('used_seconds', 0):.1f} s"
            parts.append(f"{plan.get('steps')} steps = {plan.get('epochs', 0):.2f} epochs{capped}, {used}, {annealed}")
        return "; ".join(parts)
    if system == "lightning":
        return "; ".join(f"{r['optimizer_steps']} of {r['total_optimizer_steps']} steps ({lightning_epochs(r):.2f} epochs), "
                         f"max_lr {r['max_lr']:.2e}, stopped at lr {r['final_lr']:.2e}" for r in ok)  # fmt: skip
    if system == "careful":
        return "; ".join(f"N = {r['epochs_completed']}, {'annealed' if r['annealed'] else 'NOT annealed'}" for r in ok)
    return "; ".join(f"max_lr {r['max_lr']:.2e}, range test {r['range_test_seconds']:.1f} s" for r in ok)


def budget_section(budget: float, rounds: list[dict], ceiling: int) -> tuple[list[str], dict]:
    lines = [f"## Budget {budget:g} s", "", "| system | test acc per round | mean | wall s per round | mean | wall / budget | runs |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    means = {}
    for system in SYSTEMS:
        runs = [r[system] for r in rounds if system in r]
        if not runs:
            continue
        ok = [r for r in runs if "error" not in r]
        accs = ", ".join(pct(r["test_acc"]) if "error" not in r else "failed" for r in runs)
        walls = ", ".join(f"{r['wall']:.1f}" if "error" not in r else "failed" for r in runs)
        acc, wall = mean([r["test_acc"] for r in ok]), mean([r["wall"] for r in ok])
        means[system] = (acc, wall)
        cells = [pct(acc) if acc is not None else "-", f"{wall:.1f}" if wall is not None else "-",
                 f"{100 * wall / budget:.1f} %" if wall is not None else "-"]  # fmt: skip
        what = describe(system, runs, budget, ceiling)
        lines.append(f"| {NAMES[system]} | {accs} | {cells[0]} | {walls} | {cells[1]} | {cells[2]} | {what} |")
    timings = [r["timing"] for r in rounds if "error" not in r["timing"]]
    if timings:
        lines += ["", "(b)'s 1-epoch timing runs (not charged to the budget): "
                  + "; ".join(f"W1 {t['wall']:.1f} s, E {t['epoch_seconds'][0]:.2f} s -> N = {careful_epochs(budget, t, ceiling)}"
                              + (" (1 epoch alone is over the budget)" if t["wall"] > budget else "") for t in timings)]  # fmt: skip
    # The verdicts, per round and on the means.
    product_runs = [r["product"] for r in rounds if "error" not in r.get("product", {"error": ""})]
    lines.append("")
    if product_runs:
        devs = [r["wall"] / budget - 1 for r in product_runs]
        capped = all((r["budget"] or {}).get("epochs", 0) >= ceiling for r in product_runs)
        verdict = "n/a (the plan hit the epoch ceiling)" if capped else ("yes" if abs(statistics.mean(devs)) <= WITHIN else "no")
        over = f"over the budget in {sum(d > 0 for d in devs)} of {len(devs)}"
        lines.append(f"- product wall within 5 % of the budget: **{verdict}** (mean {100 * statistics.mean(devs):+.1f} %; per round "
                     + ", ".join(f"{100 * d:+.1f} %" for d in devs) + f"; {over})")  # fmt: skip
    pairs = [(r["product"]["test_acc"], r["careful"]["test_acc"]) for r in rounds
             if "error" not in r.get("product", {"error": ""}) and "error" not in r.get("careful", {"error": ""})]  # fmt: skip
    if pairs:
        diff = statistics.mean(p - c for p, c in pairs)
        lines.append(f"- product accuracy ≥ (b)'s: **{'yes' if diff >= 0 else 'no'}** (mean {100 * diff:+.2f} points; per round "
                     + ", ".join(f"{100 * (p - c):+.2f}" for p, c in pairs) + ")")  # fmt: skip
    return lines, means


def report(records: dict, rounds: int, ceiling: int, skipped: list[str]) -> str:
    budgets = sorted(records, key=float)
    lines = ["# Time to accuracy: the default job in a wall-clock budget", "", machine_header(),
             f"Date: {datetime.now(timezone.utc):%Y-%m-%d}. {rounds} round(s), the systems alternated within each.", "",
             "Fashion-MNIST (the product's split), small_cnn, AdamW (wd 0.05), global batch 256, flips, max_lr from each system's "
             f"own range test. The budget is the whole command's wall on this machine; the cycle's epoch ceiling is {ceiling}. "
             "The product sizes its one cycle to the budget (`trainer.budget`); (a) Lightning stops at `max_time` (counted from "
             "its training loop's start) inside a cycle sized for 10 epochs; (b) a careful user times a 1-epoch run (wall W1, "
             "epoch E) and runs N = floor((B - W1) / E) + 1 whole epochs; (c) the seed blog's loop runs the same N. See the "
             "script's docstring (`benchmarks/speed/time_to_accuracy.py`).", ""]  # fmt: skip
    lines += [f"- skipped: {note}" for note in skipped] + ([""] if skipped else [])
    runs = [run for rounds_ in records.values() for r in rounds_ for run in r.values() if isinstance(run, dict)]
    loads = [run["load"] for run in runs if "load" in run]
    if loads:
        lines += [f"The 1-minute load average before each run: {min(loads):.2f} to {max(loads):.2f} (other work on the machine).", ""]
    summary = ["| budget | " + " | ".join(NAMES[s] for s in SYSTEMS) + " |", "|---|" + "---|" * len(SYSTEMS)]
    sections = []
    for budget in budgets:
        section, means = budget_section(float(budget), records[budget], ceiling)
        sections += ["", *section]
        cells = [f"{pct(means[s][0])}, {means[s][1]:.1f} s" if s in means and means[s][0] is not None else "-" for s in SYSTEMS]
        summary.append(f"| {float(budget):g} s | " + " | ".join(cells) + " |")
    lines += ["Mean test accuracy and wall seconds:", "", *summary, *sections]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[30.0, 60.0, 120.0], help="seconds of the whole command")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--peers-python", help="an interpreter that has Lightning (and torch-lr-finder), if this one lacks them")
    parser.add_argument("--max-epochs", type=int, default=EPOCHS, help="the cycle's epoch ceiling for the product and N (default: 10)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="which systems to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "time_to_accuracy.md")
    parser.add_argument("--rebuild", action="store_true", help="only the report, from the last run's records")
    args = parser.parse_args()
    saved = WORK / f"{args.out.stem}.records.json"  # one per report
    if args.rebuild:
        records = json.loads(saved.read_text())
        args.out.write_text(report(records, max(len(r) for r in records.values()), args.max_epochs, []))
        print(args.out.read_text())
        return
    pythons = {system: interpreter(system, args.peers_python) for system in PEER_MODULES}
    skipped = [f"{NAMES[s]}: no `{PEER_MODULES[s]}` in {sys.executable} or --peers-python ({args.peers_python})"
               for s, python in pythons.items() if python is None]  # fmt: skip
    for note in skipped:
        print("skipped:", note, flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    records: dict[str, list[dict]] = {f"{b:g}": [] for b in args.budgets}
    for round_index in range(args.rounds):
        for budget in args.budgets:
            records[f"{budget:g}"].append(one_budget(budget, round_index, args.max_epochs, pythons, args.systems))
            saved.write_text(json.dumps(records, indent=1))
    text = report(records, args.rounds, args.max_epochs, skipped)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
