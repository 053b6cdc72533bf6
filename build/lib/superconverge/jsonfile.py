"""Strict JSON for the run's files: no NaN or Infinity (null instead), which strict parsers reject."""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    return value


def dumps(value: Any, **kwargs) -> str:
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
