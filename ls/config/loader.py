"""YAML -> typed dataclass tree, with overrides, validation and dumping.

Every problem in a file is collected and reported at once, each naming the dotted key and where it came from
(the file, or the ``--set`` override that wrote it), with the nearest known key for a typo. Nothing becomes a
silent default (the failure mode of the original Box-based loader).

A dataclass can declare, as class attributes:

- ``__aliases__ = {"old_key": "typed.key"}``: key names of the original configs; a dotted target sets a key of
  a nested section (``"lr": "optimizer.lr"``) or one entry of a mapping field (``"dev_emb_dim":
  "factor_emb_dims.device"``);
- ``__builders__ = {"field": fn}``: a function ``fn(value, dotted_key, ctx)`` that builds that field itself
  (``models``, whose blocks are read into each variant's own options class).

A mapping field whose default is a non-empty dict is merged over that default (keys given replace entries).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from ls.utils.credentials import is_credential_key
from ls.utils.fields import field_default
from ls.utils.trees import flatten, to_dict


class ConfigError(ValueError):
    """A config file or override is invalid; the message names every bad key and where it came from."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class _Bad(Exception):
    """A value does not fit its type (the detail; the context adds key and source)."""


#: Returned by a builder when the section had problems (already recorded); its parent is not built.
FAILED = object()


class BuildContext:
    """Collects problems while a config is built. ``overrides`` maps dotted keys to the ``--set`` text that
    wrote them; ``alias_of`` maps a typed key to the alias it was written as."""

    def __init__(self, source: str, overrides: dict[str, str] | None = None) -> None:
        self.source = source
        self.overrides = dict(overrides or {})
        self.alias_of: dict[str, str] = {}
        self.problems: list[str] = []

    def _origin(self, dotted: str) -> str:
        for key, text in self.overrides.items():
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                return f"--set {text}"
        return self.source

    def error(self, dotted: str, detail: str) -> None:
        shown = f"'{self.alias_of[dotted]}' (= '{dotted}')" if dotted in self.alias_of else f"'{dotted}'"
        if is_credential_key(dotted.rsplit(".", 1)[-1]):  # a credential's value is never repeated
            detail = re.sub(r"got .*$", "got a value of another type (not shown)", detail, flags=re.DOTALL)
        self.problems.append(f"{shown} in {self._origin(self.alias_of.get(dotted, dotted))}: {detail}")

    def note(self, message: str) -> None:
        """A problem that is not about one key (e.g. a cross-section check)."""
        self.problems.append(message)

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        if len(self.problems) == 1:
            raise ConfigError(self.problems[0], self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        raise ConfigError(f"{len(self.problems)} problems in {self.source}:\n{lines}", self.problems)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _coerce(value: Any, tp: Any, key: str, ctx: BuildContext, default: Any = dataclasses.MISSING) -> Any:
    """Convert a YAML value to the annotated type; leaf problems raise ``_Bad``, section problems are
    recorded in ``ctx`` (and ``FAILED`` is returned)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if _is_union(tp):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Bad(f"null is not allowed, expected {_type_name(tp)}")
        choices = [a for a in args if a is not type(None)]
        if len(choices) == 1:
            return _coerce(value, choices[0], key, ctx, default)
        errors = []
        for arg in choices:
            try:
                return _coerce(value, arg, key, ctx, default)
            except _Bad as exc:
                errors.append(str(exc))
        raise _Bad(f"{value!r} fits none of {' | '.join(_type_name(a) for a in choices)} ({'; '.join(errors)})")
    if value is None:
        raise _Bad(f"null is not allowed, expected {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, str):
            for choice in choices:  # case-insensitive match for string choices
                if isinstance(choice, str) and choice.lower() == value.lower():
                    return choice
        if value in choices and not isinstance(value, bool):
            return value
        raise _Bad(f"{value!r} is not one of {', '.join(repr(c) for c in choices)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _Bad(f"expected a mapping (section {tp.__name__}), got {value!r}")
        return build_section(tp, value, key, ctx)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Bad(f"expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = []
        for i, v in enumerate(value):
            try:
                items.append(_coerce(v, item_tp, f"{key}[{i}]", ctx))
            except _Bad as exc:
                ctx.error(f"{key}[{i}]", str(exc))
                items.append(FAILED)
        if any(item is FAILED for item in items):
            return FAILED
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Bad(f"expected a mapping, got {value!r}")
        ktp, vtp = get_args(tp) or (Any, Any)
        out = dict(default) if isinstance(default, dict) else {}  # merged over a non-empty default
        for k, v in value.items():
            out[_coerce(k, ktp, f"{key}.{k}", ctx)] = _coerce(v, vtp, f"{key}.{k}", ctx)
        return out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # the reference configs write raw_augment: 0/1
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise _Bad(f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise _Bad(f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise _Bad(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise _Bad(f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 3e-5 (no decimal point) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _Bad(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Bad(f"expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Bad(f"cannot interpret {value!r} as {_type_name(tp)}")


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _apply_aliases(cls: type, data: dict, prefix: str, ctx: BuildContext) -> dict:
    """``data`` with alias keys moved to their typed (possibly nested) keys; the input is not modified."""
    aliases: dict[str, str] = getattr(cls, "__aliases__", {})
    if not aliases or not any(k in aliases for k in data):
        return data
    out = {k: v for k, v in data.items() if k not in aliases}
    for alias, value in ((k, v) for k, v in data.items() if k in aliases):
        target = aliases[alias]
        parts = target.split(".")
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = {}
            elif not isinstance(nxt, dict):
                ctx.error(_join(prefix, part), f"expected a mapping, got {nxt!r}")
                break
            node[part] = nxt = dict(nxt)
            node = nxt
        else:
            if parts[-1] in node:
                ctx.error(_join(prefix, alias), f"given twice: as '{alias}' and as '{target}'")
                continue
            node[parts[-1]] = value
            ctx.alias_of[_join(prefix, target)] = _join(prefix, alias)
    return out


def _unknown_key(cls: type, key: str, known: list[str], hint: Callable[[str], str | None] | None) -> str:
    aliases = list(getattr(cls, "__aliases__", {}))
    close = difflib.get_close_matches(str(key), known + aliases, n=1, cutoff=0.6)
    text = "unknown key"
    if close:
        text += f"; did you mean '{close[0]}'?"
    extra = hint(str(key)) if hint is not None else None
    if extra:
        text += f" ({extra})"
    elif not close:
        text += f"; known keys here: {', '.join(sorted(known))}"
    return text


def build_section(cls: type, data: dict, prefix: str, ctx: BuildContext,
                  unknown_hint: Callable[[str], str | None] | None = None) -> Any:
    """Build dataclass ``cls`` from ``data``; problems are recorded in ``ctx`` and give ``FAILED``."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    builders: dict[str, Callable] = getattr(cls, "__builders__", {})
    data = _apply_aliases(cls, data, prefix, ctx)
    kwargs: dict[str, Any] = {}
    failed = False
    unknown = False  # an unknown key does not stop the section's own checks from reporting their problems
    for raw_key, value in data.items():
        dotted = _join(prefix, raw_key)
        if raw_key not in fields:
            ctx.error(dotted, _unknown_key(cls, raw_key, list(fields), unknown_hint))
            unknown = True
            continue
        try:
            if raw_key in builders:
                built = builders[raw_key](value, dotted, ctx)
            else:
                built = _coerce(value, hints[raw_key], dotted, ctx, field_default(fields[raw_key]))
        except _Bad as exc:
            ctx.error(dotted, str(exc))
            failed = True
            continue
        if built is FAILED:
            failed = True
            continue
        kwargs[raw_key] = built
    for name, f in fields.items():
        if name not in kwargs and field_default(f) is dataclasses.MISSING and name not in data:
            ctx.error(_join(prefix, name), "missing required key")
            failed = True
    if failed:
        return FAILED
    try:
        built = cls(**kwargs)
    except (ValueError, TypeError) as exc:
        key = getattr(exc, "key", None)
        where = _join(prefix, key) if key else (prefix or "config")
        ctx.error(where, str(exc))
        return FAILED
    return FAILED if unknown else built


def from_dict(cls: type, data: dict | None, source: str = "<dict>", overrides: dict[str, str] | None = None) -> Any:
    """Build dataclass ``cls`` from a plain mapping, validating every key and type; raises ``ConfigError``
    listing every problem."""
    ctx = BuildContext(source, overrides)
    obj = build_section(cls, data or {}, "", ctx)
    ctx.raise_if_any()
    return obj


def _shown(text: str) -> str:
    """An override as messages show it: the value of a credential-like key masked."""
    key, sep, _ = text.partition("=")
    return f"{key}=***" if sep and is_credential_key(key) else text


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"training.optimizer.lr=1e-4"`` -> (["training", "optimizer", "lr"], 1e-4) (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: an override must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {_shown(text)}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        detail = f" ({exc})" if _shown(text) == text else ""  # YAML's message quotes the value
        raise ConfigError(f"--set {_shown(text)}: the value is not valid YAML{detail}") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> tuple[dict, dict[str, str]]:
    """Apply ``section.key=value`` overrides to a raw mapping (before validation).

    Returns the new mapping and ``{dotted key: override text}`` so errors can say which ``--set`` caused them.
    """
    provenance: dict[str, str] = {}
    for text in overrides or []:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {_shown(text)}: '{'.'.join(path[: i + 1])}' is not a section")
            node = nxt
        node[path[-1]] = value
        provenance[".".join(path)] = _shown(text)  # what error messages quote
    return data, provenance


def builtin_configs() -> dict[str, Path]:
    """``{name: path}`` of the configs shipped with ls, read through ``importlib.resources`` so that an
    installed ls finds them as well as a clone: ``quickstart``, ``ast_film_soft`` (``ast_film_soft_config.yaml``),
    ``quickstart_study``, ... A local file such as ``mlflow.local.yaml`` is never one of them."""
    from importlib.resources import files

    root = files("ls") / "configs"
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        name = entry.name
        if not name.endswith(".yaml") or name.endswith(".local.yaml"):
            continue
        stem = name[: -len(".yaml")]
        found[stem] = Path(str(entry))
        if stem.endswith("_config"):
            found.setdefault(stem[: -len("_config")], Path(str(entry)))
    return found


def resolve_config_path(path: str | Path) -> Path:
    """The file a ``--config`` value names: the file itself when it exists, else for a bare name (no folder,
    no ``.yaml``) the built-in config of that name (:func:`builtin_configs`). Raises ConfigError when neither
    exists, listing the built-in names."""
    given = Path(path)
    if given.is_file():
        return given
    text = str(path)
    if given.suffix == "" and "/" not in text and "\\" not in text:
        builtin = builtin_configs().get(text)
        if builtin is not None:
            return builtin
    names = ", ".join(n for n in builtin_configs() if not n.endswith("_config"))
    raise ConfigError(f"config file not found: {given}" + (f" (or a built-in config's name: {names})" if names else ""))


def read_yaml(path: str | Path) -> dict:
    path = resolve_config_path(path)
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:  # e.g. a binary file given by mistake
        raise ConfigError(f"{path} is not a UTF-8 text file (byte {exc.start}: {exc.reason}); expected a YAML "
                          "config") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def dump_yaml(obj: Any, path: str | Path | None = None) -> str:
    """Serialise a config (dataclass or plain mapping) to YAML; write it to ``path`` atomically when given."""
    text = yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None)
    if path is not None:
        from ls.utils.io import atomic_write_text

        atomic_write_text(path, text)
    return text


__all__ = [
    "FAILED",
    "BuildContext",
    "ConfigError",
    "apply_overrides",
    "build_section",
    "builtin_configs",
    "dump_yaml",
    "flatten",
    "from_dict",
    "parse_override",
    "read_yaml",
    "resolve_config_path",
    "to_dict",
]
