"""One registry per kind of thing: short names for the built-ins, ``package.module:callable`` for the user's own.

A registered name is an import path under a short name, so a built-in is resolved, called and
checked exactly like a user's factory. Nothing heavy is imported until a name is resolved, so
validating a config imports no model zoo.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from superconverge.errors import UserError

MODELS = {
    "small_cnn": "superconverge.models:small_cnn",
    "resnet9": "superconverge.models:resnet9",
}
DATASETS = {
    "fashion_mnist": "superconverge.data:fashion_mnist",
    "mnist": "superconverge.data:mnist",
    "cifar10": "superconverge.data:cifar10",
    "cifar100": "superconverge.data:cifar100",
    "digits": "superconverge.data:digits",
    "fake": "superconverge.data:fake",
    "imagefolder": "superconverge.data:imagefolder",
}
LOSSES = {
    "cross_entropy": "superconverge.task:cross_entropy",
}
OPTIMIZERS = {  # built-ins only: each is called as builder(param_groups, lr, OptimizerConfig)
    "adamw": "superconverge.schedule:adamw",
    "adam": "superconverge.schedule:adam",
    "sgd": "superconverge.schedule:sgd",
}
TIMM_PREFIX = "timm/"


class TaskError(UserError):
    """A model, data set or loss named in the config cannot be imported, built or used."""


def is_import_path(name: str) -> bool:
    return ":" in name


def check_name(key: str, name: str, registry: Mapping[str, str], import_paths: bool = True) -> str:
    """A registered name or (where allowed) an import path, whose import waits for the build; else a did-you-mean error."""
    if name in registry or (import_paths and is_import_path(name)):
        return name
    nearest = difflib.get_close_matches(name, list(registry), n=1)
    hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
    also = " or 'package.module:callable'" if import_paths else ""
    raise ValueError(f"unknown name {name!r}{hint}; use one of {', '.join(sorted(registry))}{also}")


def importable_working_directory() -> None:
    """``python -m`` puts the working directory first on sys.path; a console script or ``train.py`` does not."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def resolve(key: str, name: str, registry: Mapping[str, str]) -> Callable:
    """The callable behind a registered name or ``module:attribute``; errors name the key and the nearest attribute."""
    target = registry.get(name, name)
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise TaskError(f"{key}: {name!r} must look like 'package.module:callable'")
    importable_working_directory()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and not module_name.startswith(exc.name):
            raise TaskError(f"{key}: importing {module_name!r} failed: {exc} (a module that {module_name!r} imports)") from None
        raise TaskError(f"{key}: no module named {module_name!r} (searched the working directory {os.getcwd()} and sys.path)") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failing at import time
        raise TaskError(f"{key}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            public = [n for n in dir(found) if not n.startswith("_")]
            nearest = difflib.get_close_matches(part, public, n=1)
            hint = f"; did you mean {module_name}:{nearest[0]}?" if nearest else ""
            raise TaskError(f"{key}: module {module_name!r} has no attribute {attribute!r}{hint}")
        found = getattr(found, part)
    if not callable(found):
        raise TaskError(f"{key}: {target} is a {type(found).__name__}, not a callable")
    return found


def check_arguments(key: str, name: str, function: Callable, what: str, *args: Any, **kwargs: Any) -> None:
    """The call ``function(*args, **kwargs)`` fits its signature (``what`` says it in the error), before any work."""
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError as exc:
        raise TaskError(f"{key}: {name} cannot take {what}: {exc}") from None
    except ValueError:
        pass  # no signature to check (a builtin): the call says what is wrong


def call_factory(key: str, name: str, factory: Callable, kwargs: dict) -> Any:
    """Call a user's (or a built-in's) factory; a failure is one line naming the key, the call and the exception."""
    check_arguments(key, name, factory, _call(kwargs), **kwargs)
    try:
        return factory(**kwargs)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the user's code raises becomes one clear line
        raise TaskError(f"{key}: {name}({_call(kwargs)}) raised {type(exc).__name__}: {exc}") from None


def _call(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
