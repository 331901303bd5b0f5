"""YAML -> typed dataclass tree, with overrides, validation and dumping.

Every error names the dotted key and the file it came from, so a typo in a config is reported at load
time instead of silently becoming a default (the failure mode of the original Box-based loader).
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the source."""


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming key and source."""
    where = f"'{key}' in {source}"
    origin = get_origin(tp)

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: null is not allowed, expected {_type_name(tp)}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} does not match {tp}; " + "; ".join(errors))
    if value is None:
        raise ConfigError(f"{where}: null is not allowed, expected {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, str):
            for choice in choices:  # case-insensitive match for string choices
                if isinstance(choice, str) and choice.lower() == value.lower():
                    return choice
        if value in choices:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping (section {tp.__name__}), got {value!r}")
        return _build(tp, value, key, source)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        ktp, vtp = get_args(tp) or (Any, Any)
        return {
            _coerce(k, ktp, f"{key}.{k}", source): _coerce(v, vtp, f"{key}.{k}", source)
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # the reference configs write raw_augment: 0/1
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 3e-5 (no decimal point) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: cannot interpret {value!r} as {_type_name(tp)}")


def _build(cls: type, data: dict, prefix: str, source: str) -> Any:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    aliases: dict[str, str] = getattr(cls, "__aliases__", {})
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        name = aliases.get(raw_key, raw_key)
        dotted = f"{prefix}.{raw_key}" if prefix else str(raw_key)
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key '{dotted}' in {source}; known keys here: {known}")
        if name in kwargs:
            raise ConfigError(f"'{dotted}' in {source} is given twice (directly and through an alias)")
        kwargs[name] = _coerce(value, hints[name], dotted, source)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            dotted = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"missing required key '{dotted}' in {source}")
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{prefix or 'config'} in {source}: {exc}") from exc
    return obj


def from_dict(cls: type, data: dict | None, source: str = "<dict>") -> Any:
    """Build dataclass ``cls`` from a plain mapping, validating every key and type."""
    return _build(cls, data or {}, "", source)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"training.optimizer.lr=1e-4"`` -> (["training", "optimizer", "lr"], 1e-4) (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``section.key=value`` overrides to a raw mapping (before validation)."""
    for text in overrides or []:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


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


def dump_yaml(obj: Any, path: str | Path | None = None) -> str:
    """Serialise a config (dataclass) to YAML; write it to ``path`` atomically when given."""
    text = yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None)
    if path is not None:
        from ls.utils.io import atomic_write_text

        atomic_write_text(path, text)
    return text


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


__all__ = [
    "ConfigError",
    "apply_overrides",
    "dump_yaml",
    "flatten",
    "from_dict",
    "parse_override",
    "read_yaml",
    "to_dict",
]
