"""Optimizer and the one-cycle schedule, sized in optimizer steps."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import OneCycleLR

from superconverge import registry
from superconverge.config import OptimizerConfig, ScheduleConfig

LR_SCALE = "lr_scale"  # a param group's LR as a fraction of the head's (group 0, always 1)


def param_groups(cfg: OptimizerConfig, model: torch.nn.Module, head: torch.nn.Module | None) -> list[dict]:
    """One group per (head or backbone, decayed or not) that has parameters, head first.

    Written here because the rule is two lines and timm, which has one, is optional. Norm weights and
    biases are the 1-D parameters and the ``*.bias`` ones (timm's ``param_groups_weight_decay`` rule).
    """
    head_ids = {id(p) for p in head.parameters()} if head is not None and cfg.backbone_lr_ratio is not None else None
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        in_head = head_ids is None or id(param) in head_ids
        decayed = cfg.decay_norm_and_bias or not (param.ndim <= 1 or name.endswith(".bias"))
        groups.setdefault((not in_head, not decayed), []).append(param)
    ratio = cfg.backbone_lr_ratio or 1.0
    return [{"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay, LR_SCALE: ratio if backbone else 1.0}
            for (backbone, no_decay), params in sorted(groups.items())]  # fmt: skip


def build_optimizer(cfg: OptimizerConfig, model: torch.nn.Module, lr: float, head: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """``lr`` is the head's; every group gets its LR_SCALE of it."""
    groups = param_groups(cfg, model, head)
    for group in groups:
        group["lr"] = lr * group[LR_SCALE]
    return registry.resolve("optimizer.name", cfg.name, registry.OPTIMIZERS)(groups, lr, cfg)


# The builders registered in registry.OPTIMIZERS (per-group weight decay is in the groups).
def adamw(groups: list[dict], lr: float, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def adam(groups: list[dict], lr: float, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def sgd(groups: list[dict], lr: float, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def follow_head_lr(optimizer: torch.optim.Optimizer) -> None:
    """Every group at its LR_SCALE of group 0's LR (the range test's sweep sets one LR in every group)."""
    head_lr = optimizer.param_groups[0]["lr"]
    for group in optimizer.param_groups[1:]:
        group["lr"] = head_lr * group[LR_SCALE]


def group_max_lrs(optimizer: torch.optim.Optimizer, max_lr: float) -> list[float]:
    return [max_lr * group[LR_SCALE] for group in optimizer.param_groups]


class ResizableOneCycle(OneCycleLR):
    """torch's OneCycleLR whose remaining length can be changed in flight (``trainer.budget``'s re-plan).

    Written here because no scheduler re-sizes a cycle under way: restarting OneCycleLR with a new
    ``total_steps`` would make the LR jump. Here the rest of the cycle is stretched or squeezed over the
    new remaining steps (from the current step on, the cycle's position moves ``rate`` per step instead
    of 1), so LR and momentum stay continuous, warm-up and annealing keep their shapes, and the last
    step is at the final LR. The map is in ``state_dict`` (a resumed run keeps it).
    """

    warp: tuple[int, float, float] = (0, 0.0, 1.0)  # (step s0, position p0, rate): position = p0 + (step - s0) * rate

    def position(self, step: int) -> float:
        s0, p0, rate = self.warp
        return min(p0 + (step - s0) * rate, float(self.total_steps))  # past the end only after the last step

    def resize(self, total: int) -> None:
        """The cycle ends after ``total`` optimizer steps in all: at least 2 more, since the next step's LR is already set."""
        step, end = self.last_epoch, self.total_steps - 1  # OneCycleLR reaches its final LR at position total_steps - 1
        if total < step + 2:
            raise ValueError(f"a cycle resized after {step} steps needs at least {step + 2} in all, not {total}")
        here = self.position(step)
        self.warp = (step, here, (end - here) / (total - 1 - step))

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        self.last_epoch = self.position(step)  # OneCycleLR's formula takes a fractional position as it is
        try:
            return super().get_lr()
        finally:
            self.last_epoch = step


def build_one_cycle(cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int) -> ResizableOneCycle:
    """OneCycleLR over exactly ``total_steps`` optimizer steps.

    The trainer steps it itself once per optimizer step (the Accelerator is built with
    ``step_scheduler_with_optimizer=False``), so its length does not depend on the process count.
    """
    return ResizableOneCycle(
        optimizer,
        max_lr=group_max_lrs(optimizer, max_lr),  # one peak per group, the head's at max_lr
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
