"""Models by name: the registered built-ins, a user's factory, torchvision's classification models and timm's."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from superconverge import registry
from superconverge.config import ModelConfig
from superconverge.downloads import one_at_a_time
from superconverge.errors import UserError


class ModelError(UserError):
    """The model or its weights cannot be built as configured."""


@cache
def torchvision_models() -> frozenset[str]:
    return frozenset(torchvision.models.list_models(module=torchvision.models))


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def resnet9(num_classes: int, in_channels: int) -> nn.Sequential:
    """The DAWNBench CIFAR-10 ResNet-9 (Myrtle.ai, David Page)."""
    return nn.Sequential(
        conv_bn(in_channels, 64),
        conv_bn(64, 128),
        nn.MaxPool2d(2),
        Residual(conv_bn(128, 128), conv_bn(128, 128)),
        conv_bn(128, 256),
        nn.MaxPool2d(2),
        conv_bn(256, 512),
        nn.MaxPool2d(2),
        Residual(conv_bn(512, 512), conv_bn(512, 512)),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(512, num_classes, bias=False),
        Scale(0.125),
    )


def small_cnn(num_classes: int, in_channels: int) -> nn.Sequential:
    """Three conv-BN-ReLU stages of 16/32/64 channels (29k parameters) for 28x28 images on a CPU.

    Widths are powers of two on purpose: oneDNN runs 16/32/64 channels about three times faster
    per image than 24/48/96 on one core (measured, channels_last).
    """
    return nn.Sequential(
        conv_bn(in_channels, 16),
        nn.MaxPool2d(2),
        conv_bn(16, 32),
        nn.MaxPool2d(2),
        conv_bn(32, 64),
        nn.AdaptiveMaxPool2d(3),
        nn.Flatten(),
        nn.Linear(64 * 9, num_classes),
    )


class GrayToRGB(nn.Module):
    """Lets 3-channel torchvision models take 1-channel images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _head(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ModelError(f"model {type(model).__name__} has no nn.Linear classifier head to resize")
    return linears[-1]


def _replace_head(model: nn.Module, num_classes: int) -> None:
    name, old = _head(model)
    if old.out_features == num_classes:
        return
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Linear(old.in_features, num_classes, bias=old.bias is not None))


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"model.weights_file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ModelError(f"model.weights_file {path} cannot be read as a weights-only state dict: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"model.weights_file {path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_compatible(model: nn.Module, state: dict[str, torch.Tensor], source: str, head_name: str | None) -> None:
    """Load weights; a head (``head_name``) of another size is left freshly initialised (None: no head to skip)."""
    own = model.state_dict()
    skipped = {k for k, v in state.items() if head_name and k in own and own[k].shape != v.shape and k.startswith(head_name + ".")}
    state = {k: v for k, v in state.items() if k not in skipped}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in skipped]
    if missing or result.unexpected_keys:
        raise ModelError(f"weights from {source} do not fit the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")


def _torchvision_pretrained(name: str, mirror: str | None) -> dict[str, torch.Tensor]:
    """torchvision's published weights for ``name``, fetched into the torch hub cache once per machine
    (torch.hub writes a partial file and renames it)."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    file_name = Path(urlparse(weights.url).path).name
    url = weights.url if mirror is None else f"{mirror.rstrip('/')}/{file_name}"
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    with one_at_a_time(cache):
        try:
            # The official file name carries its hash; a mirror is trusted to serve the same file.
            return torch.hub.load_state_dict_from_url(url, model_dir=str(cache), map_location="cpu", progress=False,
                                                      check_hash=mirror is None, file_name=file_name, weights_only=True)  # fmt: skip
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; a hash mismatch a RuntimeError
            raise ModelError(
                f"model.pretrained: torchvision weights for '{name}' are not in the local cache ({cache / file_name}) and "
                f"could not be downloaded from {url} ({type(exc).__name__}: {exc}). Copy the file there, set "
                "model.weights_mirror to a server that has it, or set model.weights_file to a local state dict."
            ) from None


@dataclass
class BuiltModel:
    module: nn.Module
    head: nn.Module | None  # what optimizer.backbone_lr_ratio leaves at the full LR


def build_model(cfg: ModelConfig, num_classes: int, in_channels: int) -> BuiltModel:
    """``model.name`` through one dispatch: a registered name or import path (the same call for both),
    ``timm/<name>``, or a torchvision classification model; anything else is an error naming the key."""
    if cfg.name in registry.MODELS or registry.is_import_path(cfg.name):
        built = _from_factory(cfg, num_classes, in_channels)
    elif cfg.name.startswith(registry.TIMM_PREFIX):
        built = _timm_model(cfg, cfg.name.removeprefix(registry.TIMM_PREFIX), num_classes, in_channels)
    elif cfg.name in torchvision_models():
        built = _torchvision_model(cfg, num_classes, in_channels)
    else:
        nearest = difflib.get_close_matches(cfg.name, [*registry.MODELS, *torchvision_models()], n=1)
        hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
        raise ModelError(f"model.name: unknown model {cfg.name!r}{hint}; use {', '.join(registry.MODELS)}, a torchvision "
                         "classification model, 'timm/<name>' or 'package.module:callable'")  # fmt: skip
    if cfg.head is not None:
        built.head = _named_head(built.module, cfg.head)
    return built


def _from_factory(cfg: ModelConfig, num_classes: int, in_channels: int) -> BuiltModel:
    factory = registry.resolve("model.name", cfg.name, registry.MODELS)
    module = registry.call_factory("model.name", cfg.name, factory, {"num_classes": num_classes, "in_channels": in_channels, **cfg.kwargs})
    if not isinstance(module, nn.Module):
        raise ModelError(f"model.name: {cfg.name} returned a {type(module).__name__}, expected a torch.nn.Module")
    if cfg.pretrained:
        raise ModelError(f"model.pretrained: model '{cfg.name}' has no published weights; use model.weights_file")
    # A user's head is named by model.head; the built-ins' is their classifier.
    head_name, head = (cfg.head, None) if registry.is_import_path(cfg.name) else _head(module)
    if cfg.weights_file is not None:
        load_compatible(module, _read_weights_file(Path(cfg.weights_file)), str(cfg.weights_file), head_name)
    return BuiltModel(module, head)


def _torchvision_model(cfg: ModelConfig, num_classes: int, in_channels: int) -> BuiltModel:
    model = torchvision.models.get_model(cfg.name, weights=None, **cfg.kwargs)
    if cfg.pretrained:
        load_compatible(model, _torchvision_pretrained(cfg.name, cfg.weights_mirror), f"torchvision's {cfg.name} weights",
                        _head(model)[0])  # fmt: skip
    _replace_head(model, num_classes)
    head_name, head = _head(model)
    if cfg.weights_file is not None:
        load_compatible(model, _read_weights_file(Path(cfg.weights_file)), str(cfg.weights_file), head_name)
    return BuiltModel(nn.Sequential(GrayToRGB(), model) if in_channels == 1 else model, head)


def _timm_model(cfg: ModelConfig, name: str, num_classes: int, in_channels: int) -> BuiltModel:
    """timm builds the head and adapts the stem itself; a local weights file goes through timm's own
    adaptation too (read here with weights_only=True, handed over as a state dict)."""
    try:
        import timm
    except ImportError:
        raise ModelError("model.name: timm models need the [timm] extra: pip install 'superconverge[timm]'") from None
    if not timm.is_model(name):
        nearest = difflib.get_close_matches(name, timm.list_models(), n=1)
        hint = f" (did you mean 'timm/{nearest[0]}'?)" if nearest else ""
        raise ModelError(f"model.name: timm has no model {name!r}{hint}")
    options: dict = {"num_classes": num_classes, "in_chans": in_channels, **cfg.kwargs}
    if cfg.weights_file is not None:
        options.update(pretrained=True, pretrained_cfg_overlay={"state_dict": _read_weights_file(Path(cfg.weights_file))})
    elif cfg.pretrained:
        options["pretrained"] = True
    try:
        model = timm.create_model(name, **options)
    except Exception as exc:  # noqa: BLE001 - timm's download and load errors differ by source (HF hub, URL, file)
        where = "model.weights_file" if cfg.weights_file is not None else "model.pretrained"
        raise ModelError(
            f"{where}: timm could not build {name!r} with its weights ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). "
            "Without internet, point model.weights_file at a local state dict, or set HF_HOME to a cache that holds them "
            "(and HF_HUB_OFFLINE=1, so nothing waits on the network)."
        ) from None
    return BuiltModel(model, model.get_classifier())


def _named_head(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        nearest = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
        raise ModelError(f"model.head: the model has no submodule {name!r}{hint}") from None
