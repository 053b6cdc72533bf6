"""The one-cycle LR trace is exact for any process count, accumulation and drop_last (real runs)."""

import math

import pytest
from conftest import history, lr_trace, run, summary

from superconverge.config import load_config
from superconverge.data import build_data

MAX_LR, DIV, FINAL_DIV, BATCH, EPOCHS = 0.02, 10.0, 100.0, 48, 2


def expected_steps_per_epoch(n_train: int, world: int, accum: int, drop_last: bool) -> int:
    """One optimizer step per global batch; drop_last drops a short last global batch."""
    global_batch = BATCH * world * accum
    return n_train // global_batch if drop_last else math.ceil(n_train / global_batch)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("accum", [1, 3])
@pytest.mark.parametrize("world", [1, 2])
def test_one_cycle_trace_is_exact(digits_args, tmp_path, world, accum, drop_last):
    overrides = [f"schedule.max_lr={MAX_LR}", f"schedule.div_factor={DIV}", f"schedule.final_div_factor={FINAL_DIV}",
                 f"data.batch_size={BATCH}", f"trainer.epochs={EPOCHS}", f"trainer.grad_accum_steps={accum}",
                 f"data.drop_last={str(drop_last).lower()}", "optimizer.name=sgd"]  # fmt: skip
    args = digits_args(*overrides)
    run(args, nproc=world)
    run_dir = tmp_path / "run"
    n_train = len(build_data(load_config(args[1], args[2:]).data).train)
    steps = EPOCHS * expected_steps_per_epoch(n_train, world, accum, drop_last)
    trace, info = lr_trace(run_dir), summary(run_dir)

    assert info["world_size"] == world
    assert info["global_batch_size"] == BATCH * world * accum
    assert info["optimizer_steps"] == steps == len(trace["lr"]) == trace["total_steps"]
    lrs = trace["lr"]
    assert lrs[0] == pytest.approx(MAX_LR / DIV, rel=1e-9)
    assert max(lrs) <= MAX_LR * (1 + 1e-9)
    peak = lrs.index(max(lrs))
    # The peak lands on max_lr when 0.3 * steps is a whole step; otherwise it is within half a step of it.
    half_step = 1 - math.cos(math.pi / (2 * 0.3 * steps))
    assert max(lrs) >= MAX_LR * (1 - half_step) - 1e-12
    assert abs(peak - (0.3 * steps - 1)) <= 1
    assert lrs[-1] == pytest.approx(MAX_LR / (DIV * FINAL_DIV), rel=1e-6)
    assert info["final_lr"] == lrs[-1]
    # Cyclic momentum moves opposite to the LR: 0.95 at both ends, 0.85 at the peak.
    momentum = trace["momentum"]
    assert momentum[0] == pytest.approx(0.95) and momentum[-1] == pytest.approx(0.95)
    assert momentum[peak] == min(momentum) <= 0.85 + 0.10 * half_step + 1e-9
    # Train metrics count every training image once (drop_last aside), validation exactly its split.
    records = history(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    if not drop_last:
        assert all(r["train_samples"] == n_train for r in records)


def test_adam_family_cycles_beta1(digits_args, tmp_path):
    run(digits_args("optimizer.name=adamw", "trainer.epochs=1"))
    momentum = lr_trace(tmp_path / "run")["momentum"]
    assert momentum[0] == pytest.approx(0.95) and min(momentum) == pytest.approx(0.85, abs=1e-3)
