"""W&B monitoring through Accelerate's trackers: offline without a key, resumable, never fatal."""

from __future__ import annotations

import netrc
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse
from urllib.request import getproxies

from accelerate import Accelerator

from superconverge.config import Config

if TYPE_CHECKING:
    from superconverge.lr_finder import MaxLRChoice

RUN_ID_FILE = "wandb_run_id.txt"
LAST_STEP_FILE = "wandb_last_step.txt"  # the highest W&B step this run directory has logged, across resumes
STEP_METRIC = "trainer/step"  # the x-axis of every chart: the optimizer step, which a resume can rewind


@dataclass
class Tracking:
    """What the rest of the run needs to know: is W&B on, in which mode, under which run id.

    W&B drops a row whose step is not above the last one it has, so the W&B step never goes back:
    a run resumed from an older checkpoint logs its (rewound) optimizer step as ``trainer/step``,
    the charts' x-axis, under W&B steps that continue past the last one logged.
    """

    mode: str  # online | offline | disabled
    run_id: str | None = None
    accelerator: Accelerator | None = None
    run_dir: Path | None = None
    step_floor: int = 0  # the lowest W&B step this process may log at
    step_offset: int | None = None  # W&B step - optimizer step, fixed at this process's first log

    @property
    def active(self) -> bool:
        return self.accelerator is not None

    def log(self, values: dict, step: int) -> None:
        if not self.active:
            return
        if self.step_offset is None:
            self.step_offset = max(0, self.step_floor - step)
        wandb_step = step + self.step_offset
        try:
            self.accelerator.log({**values, STEP_METRIC: step}, step=wandb_step)
        except Exception as exc:  # noqa: BLE001 - monitoring must never stop training
            warn(f"W&B logging failed ({type(exc).__name__}); training goes on")
        if self.accelerator.is_main_process:
            (self.run_dir / LAST_STEP_FILE).write_text(str(wandb_step))

    def wandb_run(self):
        return self.accelerator.get_tracker("wandb", unwrap=True) if self.active else None

    def describe(self) -> str:
        return "disabled" if self.run_id is None else f"{self.mode} run {self.run_id}"

    def log_range_test(self, choice: MaxLRChoice, plot_path: Path) -> None:
        """The LR test curve as a W&B plot and its PNG as an image (main process)."""
        run = self.wandb_run()
        if run is None or not self.accelerator.is_main_process:
            return
        import wandb

        curve = choice.range_test
        rows = [[lr, raw, smooth] for lr, raw, smooth in zip(curve.lrs, curve.raw_losses, curve.smoothed_losses, strict=True)]
        table = wandb.Table(columns=["lr", "loss", "smoothed_loss"], data=rows)
        images = {"lr_finder/plot": wandb.Image(str(plot_path))} if plot_path.is_file() else {}
        run.log({
            "lr_finder/curve": wandb.plot.line(table, "lr", "smoothed_loss", title="LR range test"),
            **images,
            **{f"lr_finder/{name}": value for name, value in choice.suggestions.items()},
            "lr_finder/max_lr": choice.max_lr,
            "lr_finder/seconds": curve.seconds,
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
    try:
        if mode == "online" and accelerator.is_main_process:
            _check_server_reachable(cfg.tracking.wandb.init_timeout_seconds)
        _init_wandb(cfg, accelerator, run_id, mode)
    except Exception as exc:  # noqa: BLE001 - a network or W&B failure never stops training
        mode = _fall_back(cfg, accelerator, run_id, mode, exc)  # main process only: no collective in here
    if mode == "disabled":
        return Tracking("disabled")
    return Tracking(mode, run_id, accelerator, run_dir, step_floor=_step_floor(run_dir, fresh=cfg.trainer.resume == "none"))


def _fall_back(cfg: Config, accelerator: Accelerator, run_id: str, mode: str, exc: Exception) -> str:
    """An online start that failed (unreachable server, timeout) logs offline instead; anything else, nowhere."""
    accelerator.trackers = []  # a half-started tracker would fail again in end_training()
    wandb_dir = Path(cfg.output_dir) / "wandb"
    if mode == "online":
        warn(f"W&B server not reachable ({type(exc).__name__}: {_one_line(exc)}): logging offline to {wandb_dir} instead "
             f"(upload later with `wandb sync {wandb_dir}`)")  # fmt: skip
        try:
            import wandb

            wandb.teardown()  # the failed start still holds the run id in W&B's service
            _init_wandb(cfg, accelerator, run_id, "offline")
            return "offline"
        except Exception as offline_exc:  # noqa: BLE001
            accelerator.trackers, exc = [], offline_exc
    warn(f"W&B could not start ({type(exc).__name__}: {_one_line(exc)}); training goes on without it")
    return "disabled"


def _check_server_reachable(timeout: float) -> None:
    """One TCP connection to the W&B server: refused, unresolvable or silent is known in at most a few seconds,
    where wandb.init would wait its whole init_timeout (wandb has no such check of its own)."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    if url.scheme in getproxies():
        return  # through a proxy a direct connection proves nothing; wandb.init's own timeout bounds the wait
    port = url.port or (443 if url.scheme == "https" else 80)
    socket.create_connection((url.hostname, port), timeout=min(timeout, 5.0)).close()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _init_wandb(cfg: Config, accelerator: Accelerator, run_id: str, mode: str) -> None:
    wb = cfg.tracking.wandb
    import wandb

    # W&B's own banner and stdout capture would interleave with the console; it stays silent.
    # init_timeout bounds the wait for an unreachable server (W&B's default is 90 s).
    settings = wandb.Settings(silent=True, console="off", init_timeout=wb.init_timeout_seconds)
    init = {"id": run_id, "resume": "allow", "dir": str(cfg.output_dir), "mode": mode, "name": wb.name, "entity": wb.entity,
            "tags": wb.tags, "settings": settings}  # fmt: skip
    accelerator.init_trackers(wb.project, config=cfg.model_dump(mode="json"), init_kwargs={"wandb": init})
    run = accelerator.get_tracker("wandb", unwrap=True) if accelerator.is_main_process else None
    if run is not None:
        run.define_metric(STEP_METRIC)
        for group in ("train/*", "epoch/*"):
            run.define_metric(group, step_metric=STEP_METRIC)


def _step_floor(run_dir: Path, fresh: bool) -> int:
    """One above the last W&B step logged into this run directory's W&B run, 0 for a new run."""
    path = run_dir / LAST_STEP_FILE
    if fresh or not path.is_file():
        return 0
    try:
        return int(path.read_text()) + 1
    except ValueError:
        return 0


def _run_id(run_dir: Path, accelerator: Accelerator, fresh: bool) -> str:
    """The run id lives in the run directory, so a resumed or requeued job continues the same run."""
    path = run_dir / RUN_ID_FILE
    if accelerator.is_main_process and (fresh or not path.is_file()):
        path.write_text(secrets.token_hex(4))  # W&B run ids: lower-case letters and digits
    accelerator.wait_for_everyone()
    return path.read_text().strip()
