"""Watches the optimizer steps and DDP's gradient all-reduces of a whole run, range test included.

A DDP comm hook on the prepared model counts every gradient all-reduce (bucket) and torch's global
optimizer step pre-hook records every step's per-group LRs, each tagged with the stage it ran in.

Usage: step_worker.py EXPECTED_WORLD_SIZE REPORT_DIR train.py-arguments...
"""

import sys
from pathlib import Path

import torch
from reporting import check_world, write_report
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

import superconverge.cli as cli
import superconverge.startup as startup
from superconverge.signals import StopSignals

stage = {"now": "range_test"}
allreduces: dict[str, list[int]] = {"range_test": [], "train": []}
group_lrs: dict[str, list[list[float]]] = {"range_test": [], "train": []}


def counting_hook(state, bucket):
    allreduces[stage["now"]].append(bucket.index())
    return allreduce_hook(None, bucket)


def record_lrs(optimizer, args, kwargs) -> None:
    group_lrs[stage["now"]].append([group["lr"] for group in optimizer.param_groups])


def prepare_and_watch(cfg, accelerator, model):
    prepared = prepare_model(cfg, accelerator, model)
    if isinstance(prepared, torch.nn.parallel.DistributedDataParallel):
        prepared.register_comm_hook(None, counting_hook)
    return prepared


prepare_model, startup.prepare_model = startup.prepare_model, prepare_and_watch


def main() -> None:
    expected, report_dir, argv = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    register_optimizer_step_pre_hook(record_lrs)
    with StopSignals() as stop:
        trainer = startup.build_trainer(*cli.start_run(argv, stop), stop)
        accelerator = trainer.accelerator
        check_world(accelerator, expected)
        groups = [{"weight_decay": g["weight_decay"], "lr_scale": g["lr_scale"], "params": len(g["params"])}
                  for g in trainer.optimizer.param_groups]  # fmt: skip
        weights = {k: v.clone() for k, v in accelerator.unwrap_model(trainer.model).state_dict().items()}
        stage["now"] = "train"
        summary = trainer.fit()
        report = {
            "world_size": accelerator.num_processes,
            "allreduces": allreduces,
            "group_lrs": group_lrs,
            "groups": groups,
            "optimizer_steps": summary.optimizer_steps,
            "max_lr": summary.max_lr,
        }
        write_report(report_dir, accelerator, report)
        torch.save(weights, report_dir / f"weights_after_range_test{accelerator.process_index}.pt")
        trainer.close()


if __name__ == "__main__":
    main()
