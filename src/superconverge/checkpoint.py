"""Crash-safe checkpoints on top of ``Accelerator.save_state``.

Accelerate writes a state folder but does not make the write atomic, so each save goes to a
hidden temporary folder that is renamed into place, and ``last``/``best`` are symlinks swapped
with ``os.replace``. A kill at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import load as weights_only_load
from safetensors import safe_open
from safetensors.torch import load_file

from superconverge.errors import UserError

STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
CHECKPOINTS_DIR = "checkpoints"  # in the run directory
LAST, BEST = "last", "best"  # the links to the newest checkpoint and to the one best by the monitored metric


class CheckpointError(UserError):
    """A checkpoint to resume from is missing or unreadable."""


class CheckpointStore:
    def __init__(self, root: Path) -> None:
        # Absolute, so folder names compare equal to the resolved targets of `last` and `best`.
        self.root = Path(root).resolve()

    def link(self, name: str) -> Path | None:
        path = self.root / name
        return path.resolve() if path.is_symlink() and path.resolve().is_dir() else None

    def save(self, accelerator: Accelerator, trainer_state: dict, links: list[str]) -> Path:
        """Save on every rank into a fresh folder, then point ``links`` at it (main process)."""
        name = f"step-{trainer_state['optimizer_steps']:08d}-epoch-{trainer_state['epoch']:04d}"
        staging = self.root / f".staging-{name}"
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(staging))
            if accelerator.is_main_process:
                (staging / STATE_FILE).write_text(json.dumps(trainer_state))
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if not disk_full(exc, self.root):
                raise
            raise CheckpointError(
                f"no space left on the device of {self.root} while saving a checkpoint; the previous one "
                f"({self.link('last') or 'none yet'}) is whole: free some space and rerun to resume from it"
            ) from None
        accelerator.wait_for_everyone()
        final = self.root / name
        if accelerator.is_main_process:
            if final.exists() and final in {self.link(n) for n in (LAST, BEST)}:  # never delete what a link points to
                final = self.root / f"{name}-{os.getpid()}"
            shutil.rmtree(final, ignore_errors=True)
            os.rename(staging, final)
            for link in links:
                self._point(link, final.name)
            self._prune()
        accelerator.wait_for_everyone()
        return final

    def _point(self, link: str, target: str) -> None:
        temporary = self.root / f".{link}.new"
        temporary.unlink(missing_ok=True)
        os.symlink(target, temporary)
        os.replace(temporary, self.root / link)

    def _prune(self) -> None:
        keep = {self.link(n) for n in (LAST, BEST)}
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.is_symlink() and entry.resolve() not in keep:
                shutil.rmtree(entry, ignore_errors=True)


def disk_full(exc: BaseException | None, where: Path) -> bool:
    """ENOSPC, however the writer reports it: OSError (json, pickle), SafetensorError, or torch.save's RuntimeError."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if any(sign in str(exc) for sign in ("No space left", "StorageFull", "os error 28")):
            return True
        # torch.save's zip writer says only "file write failed", or "unexpected pos" when a write came up
        # short mid-file: then the free space decides.
        if "file write failed" in str(exc) or "unexpected pos" in str(exc):
            return shutil.disk_usage(where).free < 64 * 2**20
        exc = exc.__cause__ or exc.__context__
    return False


def resolve_resume(resume: str, run_dir: Path) -> Path | None:
    """Turn ``trainer.resume`` into a checkpoint folder (or None to start fresh)."""
    if resume == "none":
        return None
    if resume == "auto":
        last = run_dir / CHECKPOINTS_DIR / LAST
        if last.is_symlink() and not last.resolve().is_dir():
            raise CheckpointError(
                f"{last} points to {os.readlink(last)}, which no longer exists: restore it, or set trainer.resume=none "
                "(starts over and replaces this run's history), or use another output_dir"
            )
        return CheckpointStore(run_dir / CHECKPOINTS_DIR).link(LAST)
    path = Path(resume)
    if (path / CHECKPOINTS_DIR / LAST).is_symlink():
        path = (path / CHECKPOINTS_DIR / LAST).resolve()
    if not path.is_dir():
        raise CheckpointError(f"trainer.resume: checkpoint folder not found: {path}")
    return path


def validate_checkpoint(path: Path) -> dict:
    """Read every file of a checkpoint safely before any work starts; return its trainer state."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
        with safe_open(str(path / MODEL_FILE), framework="pt") as handle:
            list(handle.keys())
        for name in sorted(os.listdir(path)):
            if name.endswith((".bin", ".pkl", ".pt")):
                weights_only_load(path / name, map_location="cpu", mmap=True)  # weights_only + numpy RNG types; lazy
    except Exception as exc:  # noqa: BLE001 - any failure means the checkpoint cannot be used
        raise CheckpointError(
            f"checkpoint {path} is corrupt or incomplete ({type(exc).__name__}: {exc}). Delete it or set trainer.resume=none."
        ) from None
    return state


def check_fits(path: Path, model: torch.nn.Module) -> None:
    """The checkpoint's weights have this model's names and shapes (checked lazily, before any work)."""
    with safe_open(str(path / MODEL_FILE), framework="pt") as handle:
        saved = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 - safe_open has no iterator
    own = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    if saved != own:
        differ = sorted(set(saved) ^ set(own)) or sorted(k for k in own if saved[k] != own[k])
        raise CheckpointError(
            f"checkpoint {path} holds another model's weights (first differences: {', '.join(differ[:3])}): resume with the "
            "model.name it was trained with, or set trainer.resume=none or another output_dir"
        )


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(load_file(str(path / MODEL_FILE)))
