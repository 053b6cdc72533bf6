"""Typed config: defaults, overrides, and errors that name the key and the file."""

from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from superconverge.config import Config, ConfigError, load_config, save_config


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    assert isinstance(load_config(path), Config)


def test_overrides_are_typed_and_nested():
    cfg = load_config(ROOT / "configs" / "digits.yaml", ["trainer.epochs=3", "data.limit_train=100", "schedule.max_lr=0.5",
                                                         "trainer.early_stopping.patience=2", "trainer.mixed_precision=bf16"])  # fmt: skip
    assert cfg.trainer.epochs == 3 and cfg.data.limit_train == 100 and cfg.schedule.max_lr == 0.5
    assert cfg.trainer.early_stopping.patience == 2 and cfg.trainer.mixed_precision == "bf16"
    assert load_config(ROOT / "configs" / "digits.yaml", ["data.limit_train=null"]).data.limit_train is None


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs" / "fashion_mnist.yaml", ["trainer.epochs=2"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["trainer"]["epochs"] == 2


@pytest.mark.parametrize(
    ("override", "key"),
    [("data.batch_size=-1", "data.batch_size"), ("schedule.pct_start=0", "schedule.pct_start"),
     ("schedule.pct_start=1", "schedule.pct_start"), ("trainer.epochs=0", "trainer.epochs"),
     ("schedule.max_lr=0", "schedule.max_lr"), ("schedule.max_lr=-0.1", "schedule.max_lr"), ("data.batch_size=0", "data.batch_size"),
     ("schedule.pct_start=1.5", "schedule.pct_start"), ("data.val_fraction=1.0", "data.val_fraction"),
     ("optimizer.name=lion", "optimizer.name"), ("trainer.mixed_precision=fp8", "trainer.mixed_precision"),
     ("lr_finder.probe_factors=[1]", "lr_finder.probe_factors"), ("lr_finder.probe_factors=[1,-2]", "lr_finder.probe_factors"),
     ("nonsense=1", "nonsense")],
)  # fmt: skip
def test_errors_name_the_key_and_the_source(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "digits.yaml", [override])
    assert f"{key}:" in str(info.value) and "[command line]" in str(info.value)


def test_a_range_test_that_ends_below_its_start_names_both_keys():
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "digits.yaml", ["lr_finder.start_lr=1", "lr_finder.end_lr=0.1"])
    assert "lr_finder.start_lr (1.0) must be below lr_finder.end_lr (0.1) [command line]" in str(info.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [("trainer.epohcs=3", "trainer.epohcs: unknown key (did you mean trainer.epochs?) [command line]"),
     ("data.batchsize=3", "data.batchsize: unknown key (did you mean data.batch_size?) [command line]"),
     ("trianer.epochs=3", "trianer: unknown key (did you mean trainer?) [command line]"),  # a typo in the section
     ("tracking.wandb.projct=x", "tracking.wandb.projct: unknown key (did you mean tracking.wandb.project?) [command line]"),
     ("data.batch_size.x=3", "data.batch_size: Input should be a valid integer [command line]"),
     ("zzz=1", "zzz: unknown key [command line]")],
)  # fmt: skip
def test_unknown_keys_suggest_the_nearest_and_blame_the_command_line(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "digits.yaml", [override])
    assert str(info.value).splitlines()[1].strip() == expected


def test_unknown_key_in_a_file_is_blamed_on_the_file_even_with_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("trainer:\n  epoch: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["trainer.epochs=3"])
    assert str(info.value).splitlines()[1].strip() == f"trainer.epoch: unknown key (did you mean trainer.epochs?) [{path}]"


def test_error_in_file_names_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("trainer:\n  epochs: -2\n")
    with pytest.raises(ConfigError, match=r"trainer\.epochs: .*\[.*exp\.yaml\]"):
        load_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_blog_reproduction_config_turns_early_stopping_on():
    cfg = load_config(ROOT / "configs" / "cifar10_mobilenetv2.yaml")
    assert cfg.data.name == "cifar10" and cfg.model.name == "mobilenet_v2" and cfg.model.pretrained
    assert cfg.trainer.early_stopping.patience == 5 and cfg.trainer.epochs == 50 and cfg.data.image_size == 224
    assert load_config(ROOT / "configs" / "fashion_mnist.yaml").trainer.early_stopping.patience is None


def test_default_config_is_the_fashion_mnist_job():
    assert Path(ROOT / "configs" / "fashion_mnist.yaml").is_file()


def test_bare_no_means_no_mixed_precision(tmp_path):
    # YAML and OmegaConf read `no` as false; the key's own word must still work, in a file and on the command line.
    assert load_config(None, ["trainer.mixed_precision=no"]).trainer.mixed_precision == "no"
    (tmp_path / "plain.yaml").write_text("trainer:\n  mixed_precision: no\n")
    assert load_config(tmp_path / "plain.yaml").trainer.mixed_precision == "no"
    with pytest.raises(ConfigError, match="trainer.mixed_precision"):
        load_config(None, ["trainer.mixed_precision=yes"])


def test_a_resume_applies_only_changes_that_leave_the_checkpoint_valid():
    from superconverge.config import resume_changes

    saved = load_config(ROOT / "configs" / "digits.yaml").model_dump(mode="json")
    watches = ["trainer.stall_timeout=30", "trainer.heartbeat_timeout_seconds=60"]  # how long to wait on a peer: no effect on the run
    overrides = ["data.mirror=http://mirror", "console.mode=plain", "schedule.max_lr=0.1", *watches]
    changed = load_config(ROOT / "configs" / "digits.yaml", overrides)
    applied, refused = resume_changes(saved, changed)
    assert set(applied) == {"data.mirror", "console.mode", "trainer.stall_timeout", "trainer.heartbeat_timeout_seconds"}
    assert set(refused) == {"schedule.max_lr"}


def test_a_checkpoint_from_before_an_lr_finder_default_changed_still_resumes():
    from superconverge.config import resume_changes

    older = load_config(ROOT / "configs" / "digits.yaml").model_dump(mode="json")
    older["lr_finder"]["policy"] = "near_minimum"  # the default before, and a key that did not exist yet
    del older["lr_finder"]["peak_momentum"]
    applied, refused = resume_changes(older, load_config(ROOT / "configs" / "digits.yaml"))
    assert set(applied) == {"lr_finder.policy"} and not refused  # a key it lacks, at its default, is no change


def test_a_checkpoint_from_before_the_task_keys_resumes_unless_they_change():
    from superconverge.config import resume_changes

    older = load_config(ROOT / "configs" / "digits.yaml").model_dump(mode="json")
    del older["loss"]
    for section, key in [("model", "kwargs"), ("model", "head"), ("data", "kwargs"), ("optimizer", "decay_norm_and_bias"),
                         ("optimizer", "backbone_lr_ratio")]:  # fmt: skip
        del older[section][key]
    assert resume_changes(older, load_config(ROOT / "configs" / "digits.yaml")) == ({}, {})
    changed = load_config(
        ROOT / "configs" / "digits.yaml", ["optimizer.decay_norm_and_bias=false", "trainer.early_stopping.metric=val_loss"]
    )
    assert set(resume_changes(older, changed)[1]) == {"optimizer.decay_norm_and_bias", "trainer.early_stopping.metric"}


def test_plain_sgd_asked_for_is_not_cycled_silently():
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "digits.yaml", ["optimizer.name=sgd", "optimizer.momentum=0"])
    assert "optimizer.momentum=0 (plain SGD) with schedule.cycle_momentum=true" in str(info.value)
    assert "Value error" not in str(info.value)
    plain = load_config(ROOT / "configs" / "digits.yaml", ["optimizer.name=sgd", "optimizer.momentum=0", "schedule.cycle_momentum=false"])
    assert plain.optimizer.momentum == 0 and not plain.schedule.cycle_momentum
    assert load_config(None, ["optimizer.momentum=0"]).optimizer.name == "adamw"  # Adam's cycled beta1 is not this key
