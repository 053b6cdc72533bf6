"""Weight decay on norm weights and biases, or not (optimizer.decay_norm_and_bias)? Paired real runs.

    .venv/bin/python -m benchmarks.lr_selection.decay_norm_bias    # ~20 min on 2 cores after lr_probe (whose runs it reuses)

For every task x seed of ``lr_tasks.py``: the product as a user runs it with ``decay_norm_and_bias=false``
(its own range test, then one cycle at its pick), against the same with the default ``true`` (the
``-rule`` runs of ``lr_probe.py``: same task, seed and data order). A default is chosen on the tune half.
"""

from __future__ import annotations

import os
import statistics

from benchmarks.common import machine_header, write_paired_report
from benchmarks.lr_selection.lr_tasks import TASKS
from benchmarks.lr_selection.runs import Job, accuracy, run_all, seeds

OFF = ("optimizer.decay_norm_and_bias=false",)


def pick(record: dict) -> float | None:
    return None if record.get("error") else round(record["suggestions"][record["policy"]], 8)


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["WANDB_MODE"] = "disabled"
    pairs = [(task, seed) for task in TASKS for seed in seeds(task)]
    on = run_all([Job("curve", t.name, s, label="-probe", extra=("lr_finder.probe=true",)) for t, s in pairs])
    off = run_all([Job("curve", t.name, s, label="-nodecay", extra=OFF) for t, s in pairs])
    runs = {}
    for job, record in [*on.items(), *off.items()]:
        lr, default = pick(record), job.label == "-probe"
        if lr is not None:
            label, extra = ("-rule", ()) if default else ("-nodecay", OFF)
            runs[job.task, job.seed, job.label] = Job("verify", job.task, job.seed, lr, label=label, extra=extra)
    done = run_all(list(runs.values()))
    lines = [
        "# Weight decay on norm weights and biases: on (default) or off, paired real runs",
        "",
        machine_header(),
        "",
        "For every task x seed of `benchmarks/lr_selection/lr_tasks.py`: the range test and a one-cycle run at its `floor_edge` pick, with "
        "`optimizer.decay_norm_and_bias` true (the default) and false. Test accuracy, mean over seeds; difference = off - on.",
        "",
        "| half | task | weight decay | max_lr on (geo-mean) | max_lr off | acc % on | acc % off | difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    diffs: dict[str, list[float]] = {"tune": [], "held_out": []}
    for task in TASKS:
        both = [(runs[task.name, s, "-probe"], runs[task.name, s, "-nodecay"]) for s in seeds(task)
                if (task.name, s, "-probe") in runs and (task.name, s, "-nodecay") in runs]  # fmt: skip
        if not both:
            continue
        acc_on = statistics.mean(accuracy(a, done[a]) for a, _ in both)
        acc_off = statistics.mean(accuracy(b, done[b]) for _, b in both)
        diff = 100 * (acc_off - acc_on)
        diffs[task.half].append(diff)
        decay = next((o.split("=")[1] for o in task.overrides if o.startswith("optimizer.weight_decay=")), "0.01")
        lines.append(
            f"| {task.half} | {task.name} | {decay} | {statistics.geometric_mean([a.max_lr for a, _ in both]):.2e} | "
            f"{statistics.geometric_mean([b.max_lr for _, b in both]):.2e} | {100 * acc_on:.2f} | {100 * acc_off:.2f} | {diff:+.2f} |"
        )
    write_paired_report("decay_norm_bias", lines, diffs, " (off - on)")


if __name__ == "__main__":
    main()
