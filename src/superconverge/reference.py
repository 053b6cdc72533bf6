"""The configuration reference, generated from the schema in ``config.py`` (its ``Field`` descriptions are the one source).

``python -m superconverge.reference > docs/configuration.md`` (``make docs``) writes it; a test fails when the committed
file differs from what this generates.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from superconverge.config import Config

HEADER = """# Configuration reference

Generated from `src/superconverge/config.py` by `make docs`; do not edit by hand.

A run's configuration is a YAML file (`--config X.yaml`) plus `key.sub=value` overrides on the command line, checked
against this schema before any work: an unknown key, a wrong type or a value out of range stops the run on every rank
with exit code 2 and one line naming the key and where it came from. `superconverge print-config --config X.yaml
key=value ...` prints the configuration a command would run, defaults included.
"""


BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def type_name(annotation: object, metadata: list | tuple = ()) -> str:
    """A key's type as a user reads it: `int`, `float > 0`, `float \\| null`, `exp` \\| `linear`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        inner = [item for arg in args[1:] for item in (arg.metadata if isinstance(arg, FieldInfo) else [arg])]
        return type_name(args[0], [*metadata, *inner])
    bounds = [f"{sign} {getattr(item, name)}" for item in metadata for name, sign in BOUNDS.items() if hasattr(item, name)]
    if bounds:
        return f"{type_name(annotation)} {', '.join(bounds)}"
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin in (Union, types.UnionType):
        return " \\| ".join("null" if arg is type(None) else type_name(arg) for arg in args)
    if origin in (list, tuple, dict):
        return {list: "list", tuple: "pair", dict: "mapping"}[origin]
    return {Path: "path", str: "string", bool: "bool", int: "int", float: "float"}.get(annotation, str(annotation))


def default_text(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    value = str(value) if isinstance(value, Path) else value
    return f"`{json.dumps(value)}`"


def sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel], list[tuple[str, FieldInfo]]]]:
    """(dotted name, model, its own keys) for the model and every nested section, in schema order."""
    keys = [(name, f) for name, f in model.model_fields.items() if not _is_section(f.annotation)]
    yield prefix.rstrip("."), model, keys
    for name, f in model.model_fields.items():
        if _is_section(f.annotation):
            yield from sections(f.annotation, f"{prefix}{name}.")


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def config_reference() -> str:
    parts = [HEADER]
    for name, model, keys in sections(Config):
        title = f"`{name}`" if name else "Top level"
        rows = [f"| `{name + '.' if name else ''}{key}` | {type_name(f.annotation, f.metadata)} | {default_text(f)} | {f.description} |"
                for key, f in keys]  # fmt: skip
        table = ["| key | type | default | meaning |", "|---|---|---|---|", *rows] if rows else []
        parts.append("\n".join([f"## {title}", "", _first_line(model.__doc__), "", *table]).rstrip() + "\n")
    return "\n".join(parts)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


if __name__ == "__main__":
    print(config_reference(), end="")
