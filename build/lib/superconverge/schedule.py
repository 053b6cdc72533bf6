"""Optimizer and the one-cycle schedule, sized in optimizer steps."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import OneCycleLR

from superconverge.config import OptimizerConfig, ScheduleConfig


def build_optimizer(cfg: OptimizerConfig, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def optimizer_steps_per_epoch(batches_per_process: int, grad_accum_steps: int) -> int:
    """Accelerate syncs every ``grad_accum_steps`` batches and always at the end of the loader."""
    return math.ceil(batches_per_process / grad_accum_steps)


def build_one_cycle(cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int) -> OneCycleLR:
    """OneCycleLR over exactly ``total_steps`` optimizer steps.

    The trainer steps it itself once per optimizer step (the Accelerator is built with
    ``step_scheduler_with_optimizer=False``), so its length does not depend on the process count.
    """
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=cfg.pct_start,
        anneal_strategy=cfg.anneal_strategy,
        cycle_momentum=cfg.cycle_momentum,
        base_momentum=cfg.base_momentum,
        max_momentum=cfg.max_momentum,
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
    )


def current_momentum(optimizer: torch.optim.Optimizer) -> float:
    group = optimizer.param_groups[0]
    return float(group["betas"][0] if "betas" in group else group.get("momentum", 0.0))
