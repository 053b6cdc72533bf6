"""metrics.png, redrawn each epoch from the whole run; TensorBoard beside W&B (or alone), across resumes."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import wandb_reader
from conftest import DIGITS, history, run, summary
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from superconverge.config import load_config
from superconverge.plots import draw_metrics, refresh_metrics
from superconverge.run_dir import RunDir
from superconverge.tracking import Tracking, start_tracking

WANDB_OFFLINE = {"WANDB_MODE": "offline", "WANDB_API_KEY": None, "WANDB_DIR": None}


@dataclass
class Runs:
    run_dir: Path
    pngs: list[bytes]  # metrics.png after each of the three invocations
    boards: list[Path]  # the tensorboard folder after each (the last: the run's own)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    """One run in three invocations, W&B offline and TensorBoard on: epoch 1; epoch 2 (resumed); then epoch 2 again
    from the epoch-1 checkpoint kept aside (a rewound resume)."""
    base = tmp_path_factory.mktemp("pictures")
    run_dir, older = base / "run", base / "older"
    args = [*DIGITS, f"output_dir={run_dir}", "trainer.epochs=2", "tracking.tensorboard=true", "tracking.wandb.log_every_steps=2"]
    pngs, boards = [], []

    def keep(index: int) -> None:
        pngs.append((run_dir / "metrics.png").read_bytes())
        boards.append(shutil.copytree(run_dir / "tensorboard", base / f"tensorboard-{index}"))

    run([*args, "trainer.stop_after_epochs=1"], env=WANDB_OFFLINE)
    shutil.copytree((run_dir / "checkpoints" / "last").resolve(), older)
    keep(1)
    run(args, env=WANDB_OFFLINE)
    keep(2)
    run([*args, f"trainer.resume={older}"], env=WANDB_OFFLINE)
    pngs.append((run_dir / "metrics.png").read_bytes())
    boards.append(run_dir / "tensorboard")
    return Runs(run_dir, pngs, boards)


def png_description(data: bytes) -> str:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
    image.load()  # the whole file decodes
    return image.text["Description"]


def board(path: Path) -> EventAccumulator:
    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_metrics_png_is_redrawn_each_epoch_from_the_whole_run(runs):
    steps = history(runs.run_dir)[0]["optimizer_steps"]
    descriptions = [png_description(data) for data in runs.pngs]
    assert descriptions == [f"epochs 1, optimizer steps {steps}"] + [f"epochs 2, optimizer steps {2 * steps}"] * 2
    assert runs.pngs[0] != runs.pngs[1]


def test_tensorboard_holds_what_metrics_jsonl_holds_across_resumes(runs):
    records = history(runs.run_dir)
    steps = records[0]["optimizer_steps"]
    for events, epochs in zip(map(board, runs.boards), (1, 2, 2), strict=True):
        expected = records[:epochs]
        for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            got = scalars(events, f"epoch/{key}")
            assert [step for step, _ in got] == [r["optimizer_steps"] for r in expected], key  # a rewound epoch: once
            assert [value for _, value in got] == pytest.approx([r[key] for r in expected], rel=1e-6), key
        assert [step for step, _ in scalars(events, "train/loss")] == list(range(2, epochs * steps + 1, 2))
        assert {"train/lr", "train/momentum", "train/images_per_second"} <= set(events.Tags()["scalars"])
        assert [image.step for image in events.Images("metrics/plot")] == [r["optimizer_steps"] for r in expected]
    final = board(runs.boards[-1])
    info = summary(runs.run_dir)
    assert info["completed"] and scalars(final, "summary/test_acc")[-1] == (2 * steps, pytest.approx(info["test_acc"], rel=1e-6))


def test_wandb_gets_the_picture_and_keeps_its_steps(runs):
    files = [next(d.glob("*.wandb")) for d in sorted((runs.run_dir / "wandb").glob("offline-run-*"))]
    chunks = [wandb_reader.history(f) for f in files]
    assert [[r["epoch/epoch"] for r in chunk if "epoch/val_acc" in r] for chunk in chunks] == [[1], [2], [2]]
    assert [sum("metrics/plot/_type" in r for r in chunk) for chunk in chunks] == [1, 1, 1]


def test_a_picture_that_cannot_be_drawn_warns_and_training_goes_on(tmp_path, capsys):
    run_dir = RunDir(tmp_path, is_main=True)
    run_dir.trace.start(0)
    run_dir.trace.record(0.1, 0.9)
    (tmp_path / "metrics.png").mkdir()  # in the way of the picture
    record = {"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5, "optimizer_steps": 1}
    refresh_metrics(run_dir, [record], Tracking("disabled"))
    assert "metrics.png could not be drawn (IsADirectoryError" in capsys.readouterr().err


def test_a_task_without_accuracy_gets_no_accuracy_panel(tmp_path):
    regression = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": None, "val_loss": 1.5 / e, "val_acc": None, "optimizer_steps": 3 * e}
                  for e in (1, 2)]  # fmt: skip
    classification = [{**r, "train_acc": 0.5, "val_acc": 0.6} for r in regression]
    widths = []
    for name, records in (("regression", regression), ("classification", classification)):
        draw_metrics(records, [0.1] * 6, [0.9] * 6, tmp_path / f"{name}.png")
        widths.append(Image.open(tmp_path / f"{name}.png").size[0])
    assert widths[0] * 3 == widths[1] * 2  # two panels against three


def test_tensorboard_without_wandb_and_one_that_cannot_start(tmp_path, monkeypatch, capsys):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    monkeypatch.setenv("WANDB_MODE", "disabled")
    blocked = tmp_path / "blocked"
    (blocked / "tensorboard").parent.mkdir()
    (blocked / "tensorboard").write_text("in the way")
    try:
        accelerator = Accelerator(cpu=True)
        tracking = start_tracking(load_config(None, [f"output_dir={tmp_path / 'ok'}", "tracking.tensorboard=true"]), accelerator)
        assert tracking.active and tracking.mode == "disabled" and tracking.wandb_run() is None
        tracking.log({"train/loss": 0.5}, step=3)
        tracking.summarize({"test_acc": 0.75, "stopped_early": False, "test_loss": None})
        accelerator.end_training()
        accelerator = Accelerator(cpu=True)
        failed = start_tracking(load_config(None, [f"output_dir={blocked}", "tracking.tensorboard=true"]), accelerator)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    events = board(tmp_path / "ok" / "tensorboard")
    assert scalars(events, "train/loss") == [(3, 0.5)] and scalars(events, "summary/test_acc") == [(3, 0.75)]
    assert scalars(events, "summary/stopped_early") == [(3, 0.0)] and "summary/test_loss" not in events.Tags()["scalars"]
    assert not failed.active and "TensorBoard could not start" in capsys.readouterr().err
