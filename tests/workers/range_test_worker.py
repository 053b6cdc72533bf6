"""Runs the product's range test on the prepared model and checks it left model and optimizer as they were.

Usage: range_test_worker.py EXPECTED_WORLD_SIZE REPORT_DIR lr_find.py-arguments...
"""

import copy
import sys
from pathlib import Path

import torch
from reporting import check_world, write_report

from superconverge.cli import prepare_inputs
from superconverge.console import RunConsole
from superconverge.lr_finder import find_max_lr
from superconverge.schedule import build_optimizer
from superconverge.startup import make_accelerator
from superconverge.trainer import prepare_model


def main() -> None:
    expected, report_dir, argv = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    cfg, task = prepare_inputs(argv, forced=("schedule.max_lr=auto", "trainer.resume=none"))
    accelerator = make_accelerator(cfg)
    # Proves this is one distributed job, not N independent single-process runs.
    check_world(accelerator, expected)
    assert torch.distributed.is_initialized() == (expected > 1)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    model = prepare_model(cfg, accelerator, task.model)
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel) == (expected > 1)
    before = copy.deepcopy(accelerator.unwrap_model(model).state_dict())
    choice = find_max_lr(cfg, accelerator, task, model, RunConsole(cfg.console, accelerator.is_main_process))
    after = accelerator.unwrap_model(model).state_dict()
    # The trainer's optimizer is built after the test from the restored parameters.
    optimizer = build_optimizer(cfg.optimizer, model, lr=1e-3)
    report = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "weights_restored_exactly": all(torch.equal(before[k], after[k]) for k in before),
        "no_gradients_left": all(p.grad is None for p in model.parameters()),  # training's first step starts clean
        "optimizer_params_are_the_model": all(a is b for a, b in zip(optimizer.param_groups[0]["params"], model.parameters(), strict=True)),
        "max_lr": choice.max_lr,
        "batches_per_rank": choice.range_test.batches_per_rank,
        "iterations": choice.range_test.iterations,
        "iterations_run": choice.range_test.iterations_run,
        "raw_losses": choice.range_test.raw_losses,
        "suggestions": choice.rule.suggestions,
        "probe_losses": choice.probe.losses,
        "policy": choice.policy,
    }
    write_report(report_dir, accelerator, report)
    accelerator.end_training()


if __name__ == "__main__":
    main()
