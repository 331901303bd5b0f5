"""Dataclass trees -> plain Python: what configs become in checkpoints, YAML files and MLflow params."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain Python (lists, dicts, scalars), suitable for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dataclass/dict tree -> {"section.key": value} (lists of scalars kept as lists)."""
    out: dict[str, Any] = {}
    data = to_dict(obj)
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                for i, item in enumerate(v):
                    out.update(flatten(item, f"{key}.{i}"))
            else:
                out[key] = v
    return out
