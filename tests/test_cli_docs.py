"""The command line's own help, print-config, and the configuration reference generated from the schema."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT

from superconverge.cli import COMMANDS, entry
from superconverge.config import Config, ConfigError, load_config, resume_changes
from superconverge.reference import config_reference, sections


def test_the_committed_configuration_reference_is_what_the_schema_generates():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == config_reference(), "docs/configuration.md is stale: run `make docs`"


def test_every_key_has_a_meaning_and_appears_in_the_reference():
    reference = config_reference()
    for name, _, keys in sections(Config):
        for key, field in keys:
            dotted = f"{name}.{key}" if name else key
            assert field.description and field.description.strip(), f"{dotted} has no Field(description=...)"
            assert f"| `{dotted}` |" in reference


def test_help_lists_every_command_and_points_to_the_reference(capsys):
    assert entry(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS) and "docs/configuration.md" in out


def test_print_config_prints_what_would_run_and_touches_nothing(tmp_path, capsys):
    args = ["--config", str(ROOT / "configs" / "digits.yaml"), "trainer.epochs=3", f"output_dir={tmp_path / 'never'}"]
    assert entry(["print-config", *args]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = load_config(ROOT / "configs" / "digits.yaml", args[2:])
    assert printed == expected.model_dump(mode="json")
    assert printed["trainer"]["epochs"] == 3 and printed["lr_finder"]["policy"] == "floor_edge"  # defaults included
    assert not (tmp_path / "never").exists()
    saved = tmp_path / "printed.yaml"
    saved.write_text(yaml.safe_dump(printed))
    assert load_config(saved) == expected  # what it prints runs as the same config


def test_print_config_refuses_a_bad_key_in_one_line(capsys):
    assert entry(["print-config", "--config", str(ROOT / "configs" / "digits.yaml"), "trainer.epoch=3"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "trainer.epoch: unknown key (did you mean trainer.epochs?) [command line]" in captured.err


def test_a_moved_key_names_its_new_place_and_an_old_checkpoint_config_still_resumes():
    with pytest.raises(ConfigError, match="optimizer.label_smoothing: moved to loss.label_smoothing"):
        load_config(None, ["optimizer.label_smoothing=0.1"])
    assert load_config(None, ["loss.label_smoothing=0.1"]).loss.label_smoothing == 0.1
    older = load_config(ROOT / "configs" / "digits.yaml").model_dump(mode="json")
    older["optimizer"]["label_smoothing"] = older["loss"].pop("label_smoothing")
    assert resume_changes(older, load_config(ROOT / "configs" / "digits.yaml")) == ({}, {})
    assert set(resume_changes(older, load_config(ROOT / "configs" / "digits.yaml", ["loss.label_smoothing=0.2"]))[1]) == {
        "loss.label_smoothing"
    }
