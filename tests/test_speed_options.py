"""trainer.channels_last and trainer.compile: off by default, and the same training when on (CPU)."""

import json
import shutil

import pytest
from conftest import DIGITS, history, lr_trace, run, summary

from superconverge.config import load_config

WORKER = "tests/workers/report_worker.py"
HAS_COMPILER = any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++"))


def train(root, name: str, *overrides: str, env: dict | None = None) -> dict:
    """One single-process run through the product's path with a fixed max_lr; what it reported."""
    args = [*DIGITS, f"output_dir={root / name}", "trainer.epochs=2", "schedule.max_lr=0.01", *overrides]
    run(["1", str(root / f"{name}-reports"), *args], script=WORKER, timeout=420, env=env)
    report = json.loads((root / f"{name}-reports" / "rank0.json").read_text())
    return {"report": report, "summary": summary(root / name), "history": history(root / name), "lr": lr_trace(root / name)["lr"]}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("speed"), "default")


def assert_same_training(option: dict, default: dict) -> None:
    assert option["lr"] == default["lr"], "the schedule must not depend on a speed option"
    for mine, theirs in zip(option["history"], default["history"], strict=True):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=0.02)
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=0.05)
    assert abs(option["summary"]["test_acc"] - default["summary"]["test_acc"]) < 0.03


def test_speed_options_are_off_by_default(default_run):
    defaults = load_config(None).trainer
    assert not defaults.channels_last and not defaults.compile
    assert not default_run["report"]["compiled"] and not default_run["report"]["conv_output_channels_last"]
    assert default_run["summary"]["test_acc"] > 0.8


def test_channels_last_trains_like_the_default_layout(default_run, tmp_path):
    option = train(tmp_path, "channels_last", "trainer.channels_last=true")
    assert option["report"]["conv_output_channels_last"] and option["summary"]["channels_last"]
    assert_same_training(option, default_run)


@pytest.mark.skipif(not HAS_COMPILER, reason="inductor needs a C++ compiler on the CPU (make test-deps installs g++)")
def test_compile_trains_like_eager(default_run, tmp_path):
    # A private inductor cache: the test measures a real compilation, not a warm cache from an earlier run.
    option = train(tmp_path, "compiled", "trainer.compile=true", env={"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")})
    assert option["report"]["compiled"] and option["summary"]["compiled"]
    assert any((tmp_path / "inductor").rglob("*.py")), "inductor generated no kernels"
    assert_same_training(option, default_run)


def test_compile_without_a_cpu_compiler_fails_before_any_work(tmp_path):
    no_tools = tmp_path / "bin"
    no_tools.mkdir()
    env = {"PATH": str(no_tools), "CXX": None}
    proc = run([*DIGITS, f"output_dir={tmp_path / 'run'}", "trainer.compile=true", "trainer.cpu=true"], env=env, check=False, timeout=120)
    assert proc.returncode == 2
    assert "trainer.compile" in proc.stderr and "C++ compiler" in proc.stderr
    assert not (tmp_path / "run").exists()
