"""Monitoring through Accelerate's trackers: W&B (offline without a key) and TensorBoard, resumable, never fatal."""

from __future__ import annotations

import netrc
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse
from urllib.request import getproxies

from accelerate import Accelerator

from superconverge.config import Config
from superconverge.errors import say

if TYPE_CHECKING:
    from superconverge.lr_finder import MaxLRChoice

RUN_ID_FILE = "wandb_run_id.txt"
LAST_STEP_FILE = "wandb_last_step.txt"  # the highest W&B step this run directory has logged, across resumes
STEP_METRIC = "trainer/step"  # the x-axis of every chart: the optimizer step, which a resume can rewind
TENSORBOARD_DIR = "tensorboard"  # under the run directory


@dataclass
class Tracking:
    """What the rest of the run needs to know: which trackers are on, W&B's mode and run id.

    W&B drops a row whose step is not above the last one it has, so the W&B step never goes back:
    a run resumed from an older checkpoint logs its (rewound) optimizer step as ``trainer/step``,
    the charts' x-axis, under W&B steps that continue past the last one logged. TensorBoard logs at
    the optimizer step itself; a resumed run's writer hides what was logged after its checkpoint.
    """

    mode: str  # W&B's: online | offline | disabled
    run_id: str | None = None  # W&B's
    accelerator: Accelerator | None = None  # set when any tracker is on
    run_dir: Path | None = None
    step_floor: int = 0  # the lowest W&B step this process may log at
    step_offset: int | None = None  # W&B step - optimizer step, fixed at this process's first log
    tensorboard_dir: Path | None = None  # set when TensorBoard is on
    last_step: int = 0  # the last optimizer step logged: where TensorBoard puts the summary

    @property
    def active(self) -> bool:
        """Any tracker on (W&B, TensorBoard)."""
        return self.accelerator is not None and bool(self.accelerator.trackers)

    def _trackers(self) -> list:
        return list(self.accelerator.trackers) if self.active and self.accelerator.is_main_process else []

    def log(self, values: dict, step: int) -> None:
        self.last_step = step
        for tracker in self._trackers():
            if tracker.name == "wandb":
                self._log_wandb(tracker, values, step)
            else:
                try:
                    tracker.log(values, step=step)
                except Exception as exc:  # noqa: BLE001 - monitoring must never stop training
                    warn(f"{tracker.name} logging failed ({type(exc).__name__}); training goes on")

    def _log_wandb(self, tracker, values: dict, step: int) -> None:
        if self.step_offset is None:
            self.step_offset = max(0, self.step_floor - step)
        wandb_step = step + self.step_offset
        try:
            tracker.log({**values, STEP_METRIC: step}, step=wandb_step)
        except Exception as exc:  # noqa: BLE001 - monitoring must never stop training
            warn(f"W&B logging failed ({type(exc).__name__}); training goes on")
        (self.run_dir / LAST_STEP_FILE).write_text(str(wandb_step))

    def log_image(self, name: str, path: Path, step: int) -> None:
        """A PNG as a W&B image and a TensorBoard image, at optimizer step ``step`` (main process)."""
        for tracker in self._trackers():
            try:
                if tracker.name == "wandb":
                    import wandb

                    self._log_wandb(tracker, {name: wandb.Image(str(path))}, step)
                elif tracker.name == "tensorboard":
                    from matplotlib.image import imread

                    tracker.writer.add_image(name, imread(path)[..., :3], step, dataformats="HWC")
                    tracker.writer.flush()
            except Exception as exc:  # noqa: BLE001 - monitoring must never stop training
                warn(f"{tracker.name} could not log {path.name} ({type(exc).__name__}); training goes on")

    def wandb_run(self):
        return self.accelerator.get_tracker("wandb", unwrap=True) if self.active and self.mode != "disabled" else None

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
        """W&B's run summary; in TensorBoard, ``summary/*`` at the last step logged."""
        run = self.wandb_run()
        if run is not None and self.accelerator.is_main_process:
            run.summary.update(values)
        scalars = {f"summary/{k}": float(v) if isinstance(v, bool) else v for k, v in values.items() if v is not None}
        for tracker in self._trackers():
            if tracker.name == "tensorboard":
                try:
                    tracker.log(scalars, step=self.last_step)
                except Exception as exc:  # noqa: BLE001 - monitoring must never stop training
                    warn(f"TensorBoard logging failed ({type(exc).__name__}); training goes on")


def warn(message: str) -> None:
    say(message)


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


def start_tracking(cfg: Config, accelerator: Accelerator, resumed_at: int | None = None) -> Tracking:
    """Start (or continue, on resume) W&B and TensorBoard on the main process; either may be off, or fail, alone.

    ``resumed_at``: the optimizer step of the checkpoint this run continues from (None: a new run).
    """
    run_dir = Path(cfg.output_dir)
    fresh = cfg.trainer.resume == "none"
    mode, run_id = _start_wandb(cfg, accelerator, run_dir, fresh)
    # TensorBoard after W&B: accelerator.init_trackers (W&B's start) starts every tracker already in accelerator.trackers.
    tensorboard_dir = _start_tensorboard(accelerator, run_dir, resumed_at) if cfg.tracking.tensorboard else None
    if not accelerator.trackers:
        return Tracking("disabled")
    return Tracking(mode, run_id, accelerator, run_dir, step_floor=_step_floor(run_dir, fresh), tensorboard_dir=tensorboard_dir)


def _start_wandb(cfg: Config, accelerator: Accelerator, run_dir: Path, fresh: bool) -> tuple[str, str | None]:
    """W&B's mode and run id once started; ("disabled", None) when off or failed."""
    mode = resolve_mode(cfg)
    if mode == "disabled" or not accelerator.log_with:
        return "disabled", None
    run_id = _run_id(run_dir, accelerator, fresh=fresh)
    if mode == "offline" and cfg.tracking.wandb.mode == "online" and accelerator.is_main_process:
        warn(f"no W&B API key found: logging offline to {run_dir / 'wandb'} (upload later with `wandb sync {run_dir / 'wandb'}`)")
    try:
        if mode == "online" and accelerator.is_main_process:
            _check_server_reachable(cfg.tracking.wandb.init_timeout_seconds)
        _init_wandb(cfg, accelerator, run_id, mode)
    except Exception as exc:  # noqa: BLE001 - a network or W&B failure never stops training
        mode = _fall_back(cfg, accelerator, run_id, mode, exc)  # main process only: no collective in here
    return (mode, run_id) if mode != "disabled" else ("disabled", None)


def _start_tensorboard(accelerator: Accelerator, run_dir: Path, resumed_at: int | None) -> Path | None:
    """Accelerate's TensorBoard tracker, writing into ``run_dir/tensorboard`` at optimizer steps; its directory, or None."""
    from accelerate.tracking import TensorBoardTracker

    # TensorBoard hides the events at or past purge_step that came before it: a resumed run's are those logged after its
    # checkpoint (a rewound resume logs them again), a new run's are any an earlier run left in this directory.
    purge_step = 0 if resumed_at is None else resumed_at + 1
    tracker = TensorBoardTracker(TENSORBOARD_DIR, run_dir, purge_step=purge_step)
    try:
        tracker.start()  # main process only
    except Exception as exc:  # noqa: BLE001 - a tracker that cannot start never stops training
        warn(f"TensorBoard could not start ({type(exc).__name__}: {_one_line(exc)}); training goes on without it")
        return None
    accelerator.trackers.append(tracker)
    return run_dir / TENSORBOARD_DIR


def _fall_back(cfg: Config, accelerator: Accelerator, run_id: str, mode: str, exc: Exception) -> str:
    """An online start that failed (unreachable server, timeout) logs offline instead; anything else, nowhere."""
    accelerator.trackers = [t for t in accelerator.trackers if t.name != "wandb"]  # a half-started one would fail in end_training()
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
            accelerator.trackers, exc = [t for t in accelerator.trackers if t.name != "wandb"], offline_exc
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
