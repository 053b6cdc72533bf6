"""A user's own model, data set and loss, named by import path, started from their own folder."""

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, history, run, summary

from superconverge.config import load_config
from superconverge.errors import UserError
from superconverge.task import build_task

EXAMPLE = ROOT / "examples" / "own_task"
FAST_TEST = ["lr_finder.num_iter=60", "lr_finder.sweep_iter=60"]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """The example task copied to a folder outside the repository, plus a module of broken factories."""
    folder = tmp_path_factory.mktemp("user") / "project"
    shutil.copytree(EXAMPLE, folder)
    (folder / "broken.py").write_text(
        textwrap.dedent("""
        import torch

        def not_a_module(num_classes, in_channels, **kwargs):
            return [num_classes]

        def not_a_mapping(root, **kwargs):
            return [1, 2]

        def per_sample(outputs, targets):
            return (outputs - targets) ** 2

        def wrong_width(num_classes, in_channels, **kwargs):
            return torch.nn.Linear(in_channels + 1, num_classes)
    """)
    )
    return folder


@pytest.fixture(scope="module")
def regression_run(user_folder):
    """`accelerate launch -m superconverge` on 2 processes, from the user's folder."""
    return run(["--config", "regression.yaml", *FAST_TEST], nproc=2, module="superconverge", cwd=user_folder, timeout=300)


def test_users_regression_task_trains_on_two_processes(regression_run, user_folder):
    run_dir = user_folder / "runs" / "diabetes_regression"
    info, found = summary(run_dir), json.loads((run_dir / "lr_finder.json").read_text())
    assert info["completed"] and info["world_size"] == 2 and info["global_batch_size"] == 128
    assert found["batches_per_rank"] == [found["iterations_run"]] * 2  # both ranks of one process group ran the test
    assert info["lr_policy"] == "floor_edge" and info["max_lr"] == found["max_lr"] < found["lr_at_minimum"]
    assert info["monitor"] == "val_loss" and info["test_acc"] is None and info["best_val_acc"] is None
    assert 0 < info["test_loss"] < 0.9 and info["best_val_loss"] == min(r["val_loss"] for r in history(run_dir))  # targets have variance 1
    assert all(r["train_acc"] is None and r["val_acc"] is None for r in history(run_dir))
    assert "train_acc" not in regression_run.stdout and "best_val_loss=" in regression_run.stdout


def test_the_same_data_as_class_labels_reports_accuracy(user_folder):
    run(["--config", "classification.yaml", *FAST_TEST, "trainer.epochs=8"], module="superconverge", cwd=user_folder)
    info = summary(user_folder / "runs" / "diabetes_classification")
    assert info["completed"] and info["monitor"] == "val_acc" and info["lr_policy"] == "floor_edge"
    assert info["test_acc"] > 0.4 and info["test_loss"] > 0  # three classes: chance is 1/3


def test_range_test_alone_from_the_users_folder_through_the_console_script(user_folder):
    script = Path(sys.executable).parent / "superconverge"
    assert script.is_file(), "the [project.scripts] entry is installed"
    proc = run(["lr-find", "--config", "regression.yaml", *FAST_TEST, "output_dir=runs/lr_only"], cwd=user_folder, module=None,
               script=script)  # fmt: skip
    assert "floor_edge" in proc.stdout and (user_folder / "runs" / "lr_only" / "lr_finder.json").is_file()
    assert not (user_folder / "runs" / "lr_only" / "summary.json").exists()


def build(folder: Path, monkeypatch, *overrides: str):
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    return build_task(load_config(folder / "regression.yaml", list(overrides)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["model.name=nosuch:Net"], "model.name: no module named 'nosuch'"),
     (["model.name=tabular:mpl"], "model.name: module 'tabular' has no attribute 'mpl'; did you mean tabular:mlp?"),
     (["data.name=tabular:diabetis"], "data.name: module 'tabular' has no attribute 'diabetis'; did you mean tabular:diabetes?"),
     (["loss.name=tabular:mes"], "loss.name: module 'tabular' has no attribute 'mes'"),
     (["data.kwargs.target=nonsense"], "data.name: tabular:diabetes(root=PosixPath('data'), target='nonsense') raised ValueError: "
                                       "target must be 'value' or 'label', not 'nonsense'"),
     (["model.kwargs.depth=3"], "model.name: tabular:mlp cannot take num_classes=1, in_channels=10, width=64, depth=3"),
     (["model.name=broken:not_a_module"], "model.name: broken:not_a_module returned a list, expected a torch.nn.Module"),
     (["data.name=broken:not_a_mapping"], "data.name: broken:not_a_mapping returned a list, expected a mapping with 'train'"),
     (["loss.name=broken:per_sample"], "loss.name: broken:per_sample returned a tensor of shape (2, 1); it must return the batch's "
                                       "mean loss (a scalar tensor)"),
     (["model.name=broken:wrong_width", "model.head=null"],
      "model.name: broken:wrong_width failed on a batch of the training data (RuntimeError"),
     (["model.head=last"], "model.head: the model has no submodule 'last'"),
     (["trainer.early_stopping.metric=val_acc"], "trainer.early_stopping.metric: val_acc needs accuracy"),
     (["lr_finder.probe_metric=val_acc"], "lr_finder.probe_metric: val_acc needs accuracy")],
)  # fmt: skip
def test_a_broken_user_task_is_one_line_naming_the_key(user_folder, monkeypatch, overrides, message):
    with pytest.raises(UserError) as caught:
        build(user_folder, monkeypatch, *overrides)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_unknown_registered_name_is_a_config_error_with_a_suggestion():
    from superconverge.config import ConfigError

    with pytest.raises(ConfigError, match=r"data.name: .*unknown name 'fashion_minst' \(did you mean 'fashion_mnist'\?\)"):
        load_config(None, ["data.name=fashion_minst"])


def test_a_broken_user_task_stops_every_rank_before_any_work(user_folder):
    proc = run(["--config", "regression.yaml", "loss.name=broken:per_sample", "output_dir=runs/broken"], nproc=2, module="superconverge",
               cwd=user_folder, check=False, timeout=120)  # fmt: skip
    assert proc.returncode != 0
    assert "[rank 1] superconverge: error: loss.name: broken:per_sample returned a tensor of shape" in proc.stderr
    assert "superconverge: error: loss.name" in proc.stderr.replace("[rank 1] ", "", 1)  # rank 0 too
    assert not (user_folder / "runs" / "broken").exists()  # nothing was written


def test_a_user_loss_class_is_built_with_its_kwargs(user_folder, monkeypatch):
    task = build(user_folder, monkeypatch, "loss.name=torch.nn:HuberLoss", "loss.kwargs.delta=0.5")
    assert type(task.loss).__name__ == "HuberLoss" and task.loss.delta == 0.5 and not task.classifies


def test_auto_loader_workers_are_none_for_a_users_tensor_data_set(user_folder, monkeypatch):
    task = build(user_folder, monkeypatch)  # regression.yaml leaves data.num_workers at auto
    assert task.data.workers == 0  # TensorDataset rows, carved into Subsets: a worker would only copy them
    assert build(user_folder, monkeypatch, "data.num_workers=2").data.workers == 2


def test_builtin_data_sets_take_no_kwargs():
    from superconverge.data import DataError, build_data

    with pytest.raises(DataError, match="data.kwargs: the built-in data set 'digits'"):
        build_data(load_config(None, ["data.name=digits", "data.kwargs.x=1"]).data)


@pytest.mark.parametrize("kind", ["MODELS", "DATASETS", "LOSSES", "OPTIMIZERS"])
def test_every_registered_name_has_its_builder(kind):
    from superconverge import registry

    table = getattr(registry, kind)
    assert table and all(callable(registry.resolve(kind, name, table)) for name in table)
