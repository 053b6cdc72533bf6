"""W&B monitoring through Accelerate's trackers: offline without a key, resumable, never fatal."""

from __future__ import annotations

import netrc
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from accelerate import Accelerator

from superconverge.config import Config

if TYPE_CHECKING:
    from superconverge.lr_finder import RangeTestResult

RUN_ID_FILE = "wandb_run_id.txt"


@dataclass
class Tracking:
    """What the rest of the run needs to know: is W&B on, in which mode, under which run id."""

    mode: str  # online | offline | disabled
    run_id: str | None = None
    accelerator: Accelerator | None = None

    @property
    def active(self) -> bool:
        return self.accelerator is not None

    def log(self, values: dict, step: int) -> None:
        if self.active:
            try:
                self.accelerator.log(values, step=step)
            except Exception as exc:  # noqa: BLE001 - monitoring must never stop training
                warn(f"W&B logging failed ({type(exc).__name__}); training goes on")

    def wandb_run(self):
        return self.accelerator.get_tracker("wandb", unwrap=True) if self.active else None

    def describe(self) -> str:
        return "disabled" if self.run_id is None else f"{self.mode} run {self.run_id}"

    def log_range_test(self, result: RangeTestResult, plot_path: Path) -> None:
        """The LR test curve as a W&B plot and its PNG as an image (main process)."""
        run = self.wandb_run()
        if run is None or not self.accelerator.is_main_process:
            return
        import wandb

        rows = [[lr, raw, smooth] for lr, raw, smooth in zip(result.lrs, result.raw_losses, result.smoothed_losses, strict=True)]
        table = wandb.Table(columns=["lr", "loss", "smoothed_loss"], data=rows)
        images = {"lr_finder/plot": wandb.Image(str(plot_path))} if plot_path.is_file() else {}
        run.log({
            "lr_finder/curve": wandb.plot.line(table, "lr", "smoothed_loss", title="LR range test"),
            **images,
            **{f"lr_finder/{name}": value for name, value in result.suggestions.items()},
            "lr_finder/max_lr": result.max_lr,
            "lr_finder/seconds": result.seconds,
        }, step=0)  # fmt: skip

    def summarize(self, values: dict) -> None:
        run = self.wandb_run()
        if run is not None and self.accelerator.is_main_process:
            run.summary.update(values)


def warn(message: str) -> None:
    print(f"superconverge: {message}", file=sys.stderr, flush=True)


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(cfg: Config) -> str:
    wanted = os.environ.get("WANDB_MODE") or cfg.tracking.wandb.mode
    if wanted in ("disabled", "dryrun"):
        return "disabled" if wanted == "disabled" else "offline"
    if wanted == "online" and not has_api_key():
        return "offline"
    return wanted


def wants_wandb(cfg: Config) -> bool:
    return resolve_mode(cfg) != "disabled"


def start_tracking(cfg: Config, accelerator: Accelerator) -> Tracking:
    """Start (or continue, on resume) the W&B run on the main process."""
    mode = resolve_mode(cfg)
    if mode == "disabled" or not accelerator.log_with:
        return Tracking("disabled")
    run_dir = Path(cfg.output_dir)
    run_id = _run_id(run_dir, accelerator, fresh=cfg.trainer.resume == "none")
    if mode == "offline" and cfg.tracking.wandb.mode == "online" and accelerator.is_main_process:
        warn(f"no W&B API key found: logging offline to {run_dir / 'wandb'} (upload later with `wandb sync {run_dir / 'wandb'}`)")
    wb = cfg.tracking.wandb
    import wandb

    # W&B's own banner and stdout capture would interleave with the console; it stays silent.
    settings = wandb.Settings(silent=True, console="off")
    init = {"id": run_id, "resume": "allow", "dir": str(run_dir), "mode": mode, "name": wb.name, "entity": wb.entity, "tags": wb.tags,
            "settings": settings}  # fmt: skip
    try:
        accelerator.init_trackers(wb.project, config=cfg.model_dump(mode="json"), init_kwargs={"wandb": init})
    except Exception as exc:  # noqa: BLE001 - a network or W&B failure never stops training
        warn(f"W&B could not start ({type(exc).__name__}: {exc}); training goes on without it")
        accelerator.trackers = []  # a half-started tracker would fail again in end_training()
        return Tracking("disabled")
    return Tracking(mode, run_id, accelerator)


def _run_id(run_dir: Path, accelerator: Accelerator, fresh: bool) -> str:
    """The run id lives in the run directory, so a resumed or requeued job continues the same run."""
    path = run_dir / RUN_ID_FILE
    if accelerator.is_main_process and (fresh or not path.is_file()):
        path.write_text(secrets.token_hex(4))  # W&B run ids: lower-case letters and digits
    accelerator.wait_for_everyone()
    return path.read_text().strip()
