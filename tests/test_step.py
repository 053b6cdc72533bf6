"""One training step for the loop and the range test: the same clipping, accumulation and parameter groups."""

import json

import pytest
import torch
import torchvision
from conftest import FAST, run, summary

from superconverge.config import OptimizerConfig
from superconverge.models import small_cnn
from superconverge.schedule import param_groups

WORKER = "tests/workers/step_worker.py"


def report(folder, rank: int = 0) -> dict:
    return json.loads((folder / f"rank{rank}.json").read_text())


def test_accumulation_all_reduces_once_per_optimizer_step_in_the_range_test_and_in_training(digits_args, tmp_path):
    args = digits_args(*FAST, "data.batch_size=32", "trainer.grad_accum_steps=2", "trainer.epochs=1")
    run(["2", str(tmp_path / "reports"), *args], nproc=2, script=WORKER)
    found = json.loads((tmp_path / "run" / "lr_finder.json").read_text())
    for rank in (0, 1):
        seen = report(tmp_path / "reports", rank)
        assert seen["world_size"] == 2
        buckets = max(seen["allreduces"]["range_test"]) + 1  # DDP's gradient buckets per synchronised backward
        # Each range-test iteration is 2 micro-batches per rank; only the second all-reduces.
        assert found["batches_per_rank"] == [2 * found["iterations_run"]] * 2
        assert len(seen["allreduces"]["range_test"]) == found["iterations_run"] * buckets
        assert len(seen["allreduces"]["train"]) == seen["optimizer_steps"] * buckets > 0
        assert len(seen["group_lrs"]["range_test"]) == found["iterations_run"]  # one optimizer step per iteration


@pytest.fixture(scope="module")
def clip_curves(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    curves = {}
    for name, extra in (("free", []), ("clipped", ["trainer.grad_clip_norm=0.05"])):
        args = ["--config", "configs/digits.yaml", *FAST, f"output_dir={root / name}", *extra]
        run(args, script="lr_find.py")
        curves[name] = json.loads((root / name / "lr_finder.json").read_text())
    return curves


def test_a_strong_gradient_clip_changes_the_range_test_curve(clip_curves):
    free, clipped = clip_curves["free"]["raw_losses"], clip_curves["clipped"]["raw_losses"]
    assert free[0] == pytest.approx(clipped[0])  # the same first batch, before any step
    n = min(len(free), len(clipped))
    assert sum(abs(a - b) for a, b in zip(free[:n], clipped[:n], strict=True)) / n > 0.01
    # At the top of the sweep a clipped step is bounded: the clipped curve diverges later, if at all.
    assert clip_curves["clipped"]["lrs"][-1] >= clip_curves["free"]["lrs"][-1]


def test_norm_and_bias_parameters_can_be_kept_out_of_weight_decay():
    model = small_cnn(num_classes=10, in_channels=1)
    (everything,) = param_groups(OptimizerConfig(weight_decay=0.1), model, None)
    assert everything["weight_decay"] == 0.1 and len(everything["params"]) == len(list(model.parameters()))
    decayed, free = param_groups(OptimizerConfig(weight_decay=0.1, decay_norm_and_bias=False), model, None)
    assert decayed["weight_decay"] == 0.1 and all(p.ndim > 1 for p in decayed["params"])
    assert free["weight_decay"] == 0.0 and all(p.ndim == 1 for p in free["params"])  # BN weights and biases, conv and linear biases


def test_a_pretrained_backbone_keeps_its_lr_ratio_in_the_range_test_and_the_cycle(digits_args, tmp_path):
    weights = torchvision.models.get_model("mobilenet_v2", weights=None).state_dict()
    torch.save(weights, tmp_path / "mobilenet_v2.pth")
    args = digits_args(*FAST, "model.name=mobilenet_v2", f"model.weights_file={tmp_path / 'mobilenet_v2.pth'}", "data.image_size=32",
                       "optimizer.backbone_lr_ratio=0.1", "optimizer.decay_norm_and_bias=false", "trainer.epochs=1",
                       "lr_finder.fallback_max_lr=0.01")  # fmt: skip
    run(["1", str(tmp_path / "reports"), *args], script=WORKER, timeout=400)
    seen = report(tmp_path / "reports")
    wd = 0.01  # configs/digits.yaml
    assert [(g["weight_decay"], g["lr_scale"]) for g in seen["groups"]] == [(wd, 1.0), (0.0, 1.0), (wd, 0.1), (0.0, 0.1)]
    assert [g["params"] for g in seen["groups"][:2]] == [1, 1]  # the new head: its weight, then its bias
    for stage in ("range_test", "train"):
        steps = seen["group_lrs"][stage]
        assert steps and all(lrs[2] == pytest.approx(0.1 * lrs[0]) and lrs[3] == pytest.approx(0.1 * lrs[0]) for lrs in steps), stage
        assert all(lrs[1] == lrs[0] for lrs in steps)
    head_lrs = [lrs[0] for lrs in seen["group_lrs"]["range_test"]]
    assert max(head_lrs) / min(head_lrs) > 100  # a sweep, with every group moving together
    info = summary(tmp_path / "run")
    assert info["max_lr_per_group"] == pytest.approx([info["max_lr"]] * 2 + [0.1 * info["max_lr"]] * 2)
    assert max(lrs[2] for lrs in seen["group_lrs"]["train"]) == pytest.approx(0.1 * info["max_lr"], rel=1e-3)
    restored = torch.load(tmp_path / "reports" / "weights_after_range_test0.pt", weights_only=True)
    body = [k for k in weights if not k.startswith("classifier.")]
    assert all(torch.equal(restored["1." + k], weights[k]) for k in body)  # "1.": behind the grey-to-RGB stem


def test_a_timm_model_trains_with_its_classifier_as_the_head(digits_args, tmp_path):
    run(digits_args(*FAST, "model.name=timm/resnet10t", "data.image_size=32", "trainer.epochs=1", "optimizer.backbone_lr_ratio=0.5"))
    info = summary(tmp_path / "run")
    assert info["completed"] and info["lr_policy"] == "floor_edge"
    assert info["max_lr_per_group"] == pytest.approx([info["max_lr"], 0.5 * info["max_lr"]])  # timm's fc, then the rest
