"""Models by name, heads sized to the data, grayscale into RGB models, weights loaded safely."""

import pickle

import pytest
import torch
import torchvision

from superconverge.config import ModelConfig
from superconverge.models import ModelError, build_model


@pytest.mark.parametrize(("name", "channels", "size"), [("small_cnn", 1, 28), ("small_cnn", 1, 8), ("resnet9", 3, 32), ("resnet18", 1, 28)])
def test_models_take_the_data_shape(name, channels, size):
    built = build_model(ModelConfig(name=name), num_classes=7, in_channels=channels)
    assert built.module(torch.randn(2, channels, size, size)).shape == (2, 7)
    assert isinstance(built.head, torch.nn.Linear) and built.head.out_features == 7


def test_unknown_model_names_the_key_and_the_nearest_name():
    with pytest.raises(ModelError, match=r"model.name: unknown model 'resnet1B' \(did you mean 'resnet18'\?\)"):
        build_model(ModelConfig(name="resnet1B"), 10, 3)


def test_validating_a_config_imports_no_model_zoo():
    import subprocess
    import sys

    code = "import sys; from superconverge.config import load_config; load_config(None, ['model.name=resnet18']); print('torchvision' in sys.modules)"  # noqa: E501
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_timm_model_gets_the_data_shape_and_its_classifier_is_the_head():
    built = build_model(ModelConfig(name="timm/resnet10t"), num_classes=4, in_channels=1)
    assert built.module(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    assert built.head is built.module.get_classifier()


def test_timm_local_weights_file_is_adapted_by_timm(tmp_path):
    import timm

    reference = timm.create_model("resnet10t", num_classes=1000)
    torch.save(reference.state_dict(), tmp_path / "resnet10t.pth")
    built = build_model(ModelConfig(name="timm/resnet10t", weights_file=tmp_path / "resnet10t.pth"), num_classes=3, in_channels=3)
    assert torch.equal(built.module.conv1[0].weight, reference.conv1[0].weight)
    assert built.module.get_classifier().out_features == 3


def test_timm_pretrained_offline_is_one_clear_error(tmp_path):
    import os
    import subprocess
    import sys

    code = ("from superconverge.models import build_model; from superconverge.config import ModelConfig\n"
            "build_model(ModelConfig(name='timm/resnet10t', pretrained=True), num_classes=3, in_channels=3)")  # fmt: skip
    # huggingface_hub reads HF_HUB_OFFLINE when it is imported: a fresh process.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "ModelError: model.pretrained: timm could not build 'resnet10t'" in proc.stderr and "model.weights_file" in proc.stderr


def test_unknown_timm_model_suggests_one():
    with pytest.raises(ModelError, match="timm has no model 'resnet10x'"):
        build_model(ModelConfig(name="timm/resnet10x"), 10, 3)


def test_local_imagenet_weights_file_loads_with_a_new_head(tmp_path):
    reference = torchvision.models.get_model("resnet18", weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pt")
    model = build_model(ModelConfig(name="resnet18", weights_file=tmp_path / "resnet18.pt"), num_classes=5, in_channels=3).module
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 5


def test_pretrained_reads_torchvisions_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="not in the local cache"):
        build_model(ModelConfig(name="mobilenet_v2", pretrained=True), num_classes=10, in_channels=3)
    weights = torchvision.models.get_model_weights("mobilenet_v2").DEFAULT
    reference = torchvision.models.get_model("mobilenet_v2", weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1])
    model = build_model(ModelConfig(name="mobilenet_v2", pretrained=True), num_classes=10, in_channels=3).module
    assert torch.equal(model.features[0][0].weight, reference.features[0][0].weight)
    assert model.classifier[-1].out_features == 10


class Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_weights_files_are_loaded_weights_only(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"conv1.weight": Payload()}, handle)
    with pytest.raises(ModelError, match="weights-only"):
        build_model(ModelConfig(name="resnet18", weights_file=tmp_path / "evil.pt"), num_classes=5, in_channels=3)


def test_builtin_models_have_no_published_weights():
    with pytest.raises(ModelError, match="weights_file"):
        build_model(ModelConfig(name="resnet9", pretrained=True), num_classes=10, in_channels=3)


def test_an_unreachable_weights_server_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="could not be downloaded from http://127.0.0.1:9/") as caught:
        build_model(ModelConfig(name="shufflenet_v2_x0_5", pretrained=True, weights_mirror="http://127.0.0.1:9"), 10, 3)
    assert "model.weights_file" in str(caught.value) and "model.weights_mirror" in str(caught.value)
