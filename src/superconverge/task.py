"""The task: what the config asks to train (data, model, loss), built once on every rank before any work.

Like torchtitan's ``TrainSpec``, but built: the built-ins and the user's own classes come through
the same registries (``registry``), and the result is checked on one batch of training data, so a
model that does not fit its data or a loss that does not return a scalar fails before the process
group forms, on every rank, naming the key.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import default_collate

from superconverge import registry
from superconverge.config import Config
from superconverge.data import DataBundle, build_data
from superconverge.models import build_model
from superconverge.records import Metric
from superconverge.registry import TaskError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The default loss (registered as ``cross_entropy``): class indices or class probabilities."""
    return F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)


@dataclass
class Task:
    data: DataBundle
    model: nn.Module
    head: nn.Module | None  # the parameters optimizer.backbone_lr_ratio leaves at the full LR
    loss: Loss  # (outputs, targets) -> the batch's mean loss
    classifies: bool  # cross-entropy on class-index targets: accuracy is a metric, else the loss is
    monitor: Metric  # the early-stopping and `best` checkpoint metric, resolved
    probe_metric: Metric  # what judges the LR probe's candidates, resolved


def build_task(cfg: Config) -> Task:
    data = build_data(cfg.data)
    set_seed(cfg.seed)  # the model's initial weights depend on the seed alone
    built = build_model(cfg.model, data.num_classes, data.in_channels)
    loss = build_loss(cfg)
    classifies = cfg.loss.name == "cross_entropy" and _class_indices(data.train[0][1])
    accuracy_or_loss = Metric.VAL_ACC if classifies else Metric.VAL_LOSS
    monitor = _metric("trainer.early_stopping.metric", cfg.trainer.early_stopping.metric, classifies, accuracy_or_loss)
    probe_metric = _metric("lr_finder.probe_metric", cfg.lr_finder.probe_metric, classifies, monitor)
    task = Task(data, built.module, built.head, loss, classifies, monitor, probe_metric)
    if cfg.optimizer.backbone_lr_ratio is not None and task.head is None:
        raise TaskError(f"optimizer.backbone_lr_ratio: model '{cfg.model.name}' has no known head; name its head submodule in model.head")
    check_task(task, cfg)
    return task


def build_loss(cfg: Config) -> Loss:
    """``loss.name`` with ``loss.kwargs`` bound: a function is called per batch, an ``nn.Module`` class built once."""
    found = registry.resolve("loss.name", cfg.loss.name, registry.LOSSES)
    kwargs = dict(cfg.loss.kwargs)
    if cfg.loss.name == "cross_entropy":
        kwargs.setdefault("label_smoothing", cfg.loss.label_smoothing)
    if inspect.isclass(found):
        loss = registry.call_factory("loss.name", cfg.loss.name, found, kwargs)
        if not callable(loss):
            raise TaskError(f"loss.name: {cfg.loss.name}(...) built a {type(loss).__name__}, which cannot be called on (outputs, targets)")
        return loss
    registry.check_arguments("loss.name", cfg.loss.name, found, f"(outputs, targets, {', '.join(kwargs)})", None, None, **kwargs)
    return functools.partial(found, **kwargs) if kwargs else found


def _class_indices(target: object) -> bool:
    value = torch.as_tensor(target)
    return value.ndim == 0 and not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool


def _metric(key: str, metric: str, classifies: bool, auto: Metric) -> Metric:
    if metric == "auto":
        return auto
    if Metric(metric).maximize and not classifies:
        raise TaskError(f"{key}: {metric} needs accuracy, which only cross-entropy on class-index targets has; use val_loss (or auto)")
    return Metric(metric)


def check_task(task: Task, cfg: Config) -> None:
    """The model and the loss on two training samples (eval mode, no gradients: nothing changes)."""
    data = task.data
    try:
        inputs, targets = default_collate([data.train[i] for i in range(min(2, len(data.train)))])
    except Exception as exc:  # noqa: BLE001 - a data set whose samples do not stack
        raise TaskError(f"data.name: two training samples of {cfg.data.name} do not form a batch ({type(exc).__name__}: {exc})") from None
    if data.eval_transform is not None:
        inputs = data.eval_transform(inputs)
    was_training = task.model.training
    task.model.eval()
    try:
        with torch.no_grad():
            outputs = _guarded("model.name", cfg.model.name, "on a batch of the training data", lambda: task.model(inputs))
            loss = _guarded("loss.name", cfg.loss.name, "on the model's outputs", lambda: task.loss(outputs.float(), targets))
    finally:
        task.model.train(was_training)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else f"a {type(loss).__name__}"
        raise TaskError(f"loss.name: {cfg.loss.name} returned {shape}; it must return the batch's mean loss (a scalar tensor)")


def _guarded(key: str, name: str, where: str, call: Callable):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the user's code failing on real data: one line naming the key
        raise TaskError(f"{key}: {name} failed {where} ({type(exc).__name__}: {' '.join(str(exc).split())[:400]})") from None
