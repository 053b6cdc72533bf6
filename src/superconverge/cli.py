"""Entry point: ``accelerate launch train.py --config configs/X.yaml key=value ...``.

Everything that can be wrong with the user's input is checked on every rank before the
process group forms, so a bad key fails every rank at once instead of leaving one in a barrier.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs, set_seed

from superconverge.checkpoint import resolve_resume, validate_checkpoint
from superconverge.config import Config, ConfigError, load_config, save_config
from superconverge.data import build_data
from superconverge.errors import UserError
from superconverge.models import build_model
from superconverge.trainer import Trainer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train.py", description="One-cycle training with Accelerate.")
    parser.add_argument("--config", type=Path, help="YAML experiment file (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. trainer.epochs=3")
    return parser.parse_args(argv)


def resolve_max_lr(cfg: Config, resume_state: dict | None) -> float:
    if resume_state is not None:
        return float(resume_state["max_lr"])  # a resumed run continues the schedule it started
    if cfg.schedule.max_lr == "auto":
        raise ConfigError("schedule.max_lr: 'auto' (the LR range test) is not available yet; set a number, e.g. schedule.max_lr=0.01")
    return float(cfg.schedule.max_lr)


def make_accelerator(cfg: Config) -> Accelerator:
    # Accelerate forms a gloo process group only when told to use the CPU; without this a
    # CPU-only `--multi_gpu --num_processes 2` launch would start two independent runs.
    cpu = cfg.trainer.cpu if cfg.trainer.cpu is not None else not torch.cuda.is_available()
    return Accelerator(
        cpu=cpu,
        mixed_precision=cfg.trainer.mixed_precision,
        gradient_accumulation_steps=cfg.trainer.grad_accum_steps,
        step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(minutes=30))],
    )


def prepare_inputs(argv: list[str] | None):
    """Config, data, model and resume point, validated identically on every rank."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True)
    resume_from = resolve_resume(cfg.trainer.resume, Path(cfg.output_dir))
    resume_state = validate_checkpoint(resume_from) if resume_from else None
    max_lr = resolve_max_lr(cfg, resume_state)
    data = build_data(cfg.data)
    set_seed(cfg.seed)
    model = build_model(cfg.model, data.num_classes, data.in_channels)
    return cfg, data, model, max_lr, resume_from


def open_run_dir(cfg: Config, accelerator: Accelerator) -> None:
    if accelerator.is_main_process:
        run_dir = Path(cfg.output_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, data, model, max_lr, resume_from = prepare_inputs(argv)
        accelerator = make_accelerator(cfg)
        open_run_dir(cfg, accelerator)
        Trainer(cfg, accelerator, data, model, max_lr, resume_from).fit()
        accelerator.end_training()
    except UserError as exc:
        rank = os.environ.get("RANK")
        prefix = f"[rank {rank}] " if rank not in (None, "0") else ""
        print(f"{prefix}superconverge: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0
