"""Console output (live in a terminal, plain lines elsewhere, main process only) and offline W&B."""

import itertools
import json
import os
import pty
import re
import shutil
import subprocess
import time
from pathlib import Path

import wandb_reader
from conftest import ROOT, history, launch_command, run, summary

OFFLINE = {"WANDB_MODE": None, "WANDB_API_KEY": None, "WANDB_DIR": None}


def wandb_file(run_dir: Path, index: int) -> Path:
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    return next(runs[index].glob("*.wandb"))


def test_offline_wandb_run_goes_on_across_resumes_and_its_steps_never_go_back(digits_args, tmp_path):
    """Two processes, three invocations of one run: epoch 1; epoch 2 (resumed); then, from the epoch-1 checkpoint
    kept aside, epochs 2 and 3 again. One W&B run throughout, its step counter only going up."""
    run_dir, older = tmp_path / "run", tmp_path / "older"
    args = digits_args("tracking.wandb.log_every_steps=2", "tracking.wandb.tags=[cpu,test]", "trainer.epochs=3")
    first = run([*args, "trainer.stop_after_epochs=1"], nproc=2, env=OFFLINE)
    assert first.stderr.count("no W&B API key found: logging offline") == 1
    shutil.copytree((run_dir / "checkpoints" / "last").resolve(), older)  # the epoch-1 checkpoint, kept aside
    run([*args, "trainer.stop_after_epochs=1"], nproc=2, env=OFFLINE)  # epoch 2
    run([*args, f"trainer.resume={older}"], nproc=2, env=OFFLINE)  # back to epoch 1: epoch 2 again, then 3
    info = summary(run_dir)
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert info["wandb_run_id"] == run_id and info["wandb_mode"] == "offline" and info["resumed"]
    files = [wandb_file(run_dir, i) for i in range(3)]
    assert all(wandb_reader.run_ids(f) == {run_id} for f in files)
    assert {"data", "model", "schedule", "trainer", "lr_finder"} <= wandb_reader.config_keys(files[0])
    chunks = [wandb_reader.history(f) for f in files]
    train_steps = [r["_step"] for r in chunks[0] if "train/loss" in r]
    assert train_steps and all(step % 2 == 0 for step in train_steps)
    assert all(k in chunks[0][-1] for k in ("train/lr", "train/momentum", "train/images_per_second"))
    assert any("lr_finder/curve_table/_type" in r for r in chunks[0]) and any("lr_finder/plot/_type" in r for r in chunks[0])
    assert [[r["epoch/epoch"] for r in chunk if "epoch/val_acc" in r] for chunk in chunks] == [[1], [2], [2, 3]]
    for before, after in itertools.pairwise(chunks):
        assert min(r["_step"] for r in after) > max(r["_step"] for r in before)  # W&B would drop anything else
    steps_per_epoch = history(run_dir)[0]["optimizer_steps"]
    assert all(r["trainer/step"] == r["_step"] for chunk in chunks[:2] for r in chunk if "train/loss" in r)
    first_time, again = ([r["trainer/step"] for r in chunk if "train/loss" in r and r["trainer/step"] <= 2 * steps_per_epoch]
                         for chunk in chunks[1:])  # fmt: skip
    assert first_time == again and first_time[0] == steps_per_epoch + 2  # epoch 2 twice, every row kept, on the same x-axis
    assert wandb_reader.summary(files[2])["test_acc"] == info["test_acc"] and wandb_reader.summary(files[2])["max_lr"] == info["max_lr"]


def test_api_key_is_never_printed_or_written(digits_args, tmp_path):
    secret = "k" * 28 + "5ecret0123ab"
    proc = run(digits_args("trainer.epochs=1", "tracking.wandb.mode=offline"), env={**OFFLINE, "WANDB_API_KEY": secret})
    assert secret not in proc.stdout + proc.stderr
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_plain_output_of_a_two_process_run(digits_args, tmp_path):
    proc = run(digits_args("console.log_every_steps=5"), nproc=2)
    out = proc.stdout
    assert "\x1b[" not in out + proc.stderr  # no colour, no cursor movement
    assert "it/s" not in out + proc.stderr  # torch-lr-finder's tqdm bar stays hidden
    lines = out.splitlines()
    assert sum("start world_size=2" in line for line in lines) == 1
    assert sum("LR range test" in line for line in lines) == 1
    # 10 batches per process and epoch, a line every 5: exactly 2 per epoch, none from rank 1.
    for epoch in (1, 2):
        step_lines = [line for line in lines if f"train {epoch}/2 step" in line]
        assert len(step_lines) == 2, out
        assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d train", line) for line in step_lines)
        assert all(" loss " in line and " lr " in line and " mom " in line and " img/s " in line for line in step_lines)
    assert re.search(r"^\s+epoch\s+train_loss\s+train_acc\s+val_loss\s+val_acc", out, re.M)
    assert "finished best_val_acc=" in out and "test_acc=" in out


def test_quiet_prints_nothing(digits_args):
    proc = run([*digits_args("trainer.epochs=1"), "--quiet"])
    assert proc.stdout == ""


def test_terminal_shows_the_live_display(digits_args, tmp_path):
    primary, secondary = pty.openpty()
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen(launch_command(1) + digits_args("trainer.epochs=1"), cwd=ROOT, env=env, stdout=secondary,
                            stderr=secondary, stdin=subprocess.DEVNULL)  # fmt: skip
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in screen  # live redraw
    assert "━" in screen and "train 1/1" in screen and "eta" in screen  # a progress bar for the phase
    assert "superconverge" in screen and "world_size" in screen  # the start banner
    assert "finished" in screen and "test acc" in screen  # the summary panel
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["completed"]


def test_a_wandb_server_that_refuses_falls_back_to_offline_at_once(digits_args, tmp_path):
    env = {**OFFLINE, "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}  # port 9: connection refused
    started = time.monotonic()
    proc = run(digits_args("trainer.epochs=1", "tracking.wandb.init_timeout_seconds=60", "tracking.wandb.log_every_steps=5"), env=env)
    assert time.monotonic() - started < 45, "a refused connection must not cost the whole init_timeout_seconds"
    assert proc.stderr.count("W&B server not reachable") == 1 and "logging offline" in proc.stderr, proc.stderr[-3000:]
    info = summary(tmp_path / "run")
    assert info["completed"] and info["wandb_mode"] == "offline"
    rows = wandb_reader.history(wandb_file(tmp_path / "run", 0))
    assert any("train/loss" in r for r in rows) and [r["epoch/epoch"] for r in rows if "epoch/epoch" in r] == [1]
