"""The search space of a tune file: ``tune.space`` maps config keys to ranges or lists of choices.

    training.optimizer.lr: {log_uniform: [1.0e-5, 1.0e-3]}
    models.ast_film_soft.mask_overlap_lambda: {uniform: [0, 0.05]}
    models.ast_film_soft.conditioned_layers: {choice: [[10, 11], [8, 9, 10, 11], all]}
    dataset.batch_size: {int: [8, 32], step: 8}

Kinds: ``uniform`` and ``log_uniform`` (floats; ``uniform`` takes a ``step``), ``int`` and ``log_int`` (integers;
``int`` takes a ``step``), ``choice`` (any values the key accepts, lists included). A key is any key of the
typed run config (``ls.config``); every value a range can produce and every choice is checked against the key's
type and checks by building the config with it (:func:`check_values`), so a search never starts a trial with
a value that the config loader would refuse. The Optuna parameter of a key is named by the key; a choice that is
not a plain scalar (a list, a mapping) appears in Optuna, its figures and tables as its YAML text
(``[10, 11]``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

KINDS = ("uniform", "log_uniform", "int", "log_int", "choice")
#: Kinds that take a ``step``.
STEPPED = ("uniform", "int")
#: Keys a search may not vary: ``training.selection`` (``paper`` selects on the test split, which a search
#: never reads), ``training.monitor_test`` (trials never evaluate the test split) and ``models.<v>.variant``
#: (``tune.variants`` says which variants are searched).
FORBIDDEN = ("training.selection", "training.monitor_test")
#: Where a fractional probe lies inside a float range (any fraction whose products are rarely integers).
_INSIDE = 0.37123


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: choices may be lists
class Param:
    """One dimension of the search: ``key`` (the config key, also the Optuna parameter's name), ``path`` (where
    the value goes in the raw config mapping: ``key`` with a variant block named as the base config names
    it), ``variant`` (the canonical variant of a ``models.<variant>.`` key, else None)."""

    key: str
    kind: str
    path: tuple[str, ...]
    variant: str | None = None
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def labels(self) -> tuple[Any, ...]:
        """The choices as Optuna's categorical values: scalars as they are, anything else as its YAML text."""
        return tuple(label(c) for c in self.choices)

    def suggest(self, trial: Any) -> Any:
        """The value of this key in ``trial`` (an ``optuna.Trial``), as the config takes it."""
        if self.kind == "choice":
            return self.value_of(trial.suggest_categorical(self.key, list(self.labels)))
        if self.kind in ("uniform", "log_uniform"):
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.kind == "log_uniform")
        return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.kind == "log_int")

    def value_of(self, optuna_value: Any) -> Any:
        """The config value of an Optuna parameter value (a choice's label -> the choice)."""
        if self.kind != "choice":
            return optuna_value
        return self.choices[self.labels.index(optuna_value)]

    def describe(self) -> str:
        """``log_uniform [1e-05, 0.001]``, ``int [8, 32] step 8``, ``choice [10, 11] | all``."""
        if self.kind == "choice":
            return "choice " + " | ".join(str(lb) for lb in self.labels)
        return f"{self.kind} [{self.low:g}, {self.high:g}]" + (f" step {self.step:g}" if self.step else "")

    def probes(self) -> list[Any]:
        """Values that stand for everything this dimension can produce: both ends of a range and, for float
        ranges, a fractional value inside; every choice."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "uniform":
            return [self.low, self.high, self.low + _INSIDE * (self.high - self.low)]
        if self.kind == "log_uniform":
            return [self.low, self.high, self.low * (self.high / self.low) ** _INSIDE]
        return [self.low, self.high]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this dimension can produce (enqueued trials)."""
        if self.kind == "choice":
            return label(value) in self.labels
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind in ("int", "log_int") and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def applies_to(self, variant: str) -> bool:
        return self.variant is None or self.variant == variant


def label(value: Any) -> Any:
    """A choice as Optuna stores it: ``None``, bool, int, float and str as they are; lists and mappings as flow
    YAML (``[10, 11]``)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False).strip()


def _number(value: Any, integer: bool) -> float | int:
    """A range end: a number (YAML reads ``1e-5`` without a decimal point as a string, accepted too)."""
    if isinstance(value, bool):  # a user's value: a ValueError, as every config problem
        raise ValueError(f"expected a number, got {value!r}")  # noqa: TRY004
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    if integer:
        if not float(value).is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    return float(value)


def _variant_of(key: str, base_blocks: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...], str | None]:
    """For ``models.<block>.<option>``: the canonical variant, the raw path (the block named as the base config
    names that variant's block) and a problem; for other keys (None, the key's path, None)."""
    from ls.models.variants import canonical_variant

    parts = tuple(key.split("."))
    if parts[0] != "models":
        return None, parts, None
    if len(parts) < 3:
        return None, parts, "a models key names a variant block and an option, e.g. models.ast_film_soft.dropout"
    try:
        variant = canonical_variant(parts[1])
    except ValueError as exc:
        return None, parts, str(exc)
    for block in base_blocks:
        try:
            if canonical_variant(str(block)) == variant:
                return variant, ("models", str(block), *parts[2:]), None
        except ValueError:
            continue
    return variant, parts, None


def parse_space(raw: Any, variants: Sequence[str], base_blocks: Mapping[str, Any]) -> tuple[list[Param], list[str]]:
    """``tune.space`` -> its dimensions and every problem of its form (kinds, ranges, choices, keys a search may
    not vary, a variant the search does not train). Types are checked by :func:`check_values`."""
    problems: list[str] = []
    if raw is None:  # a missing tune.space is reported with the section's other keys
        return [], []
    if not isinstance(raw, Mapping) or not raw:
        return [], [("tune.space: expected a mapping of config keys to ranges or choices, e.g. "
                     "'training.optimizer.lr: {log_uniform: [1.0e-5, 1.0e-3]}'")]
    params = []
    for key, spec in raw.items():
        key = str(key)
        where = f"tune.space '{key}'"
        if key in FORBIDDEN or key.split(".")[-1] == "variant" and key.startswith("models."):
            why = {"training.selection": "a search selects on the validation split (strict); paper selection "
                                         "would select on the test split, which no trial may read",
                   "training.monitor_test": "trials never evaluate the test split"}.get(
                key, "tune.variants says which variants are searched")
            problems.append(f"{where}: this key cannot be searched: {why}")
            continue
        variant, path, problem = _variant_of(key, base_blocks)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if variant is not None and variant not in variants:
            problems.append(f"{where}: it sets an option of variant {variant}, which tune.variants "
                            f"({', '.join(variants)}) does not search")
            continue
        try:
            params.append(_parse_one(key, spec, path, variant))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    return params, problems


_FORM = ("expected one of {uniform: [low, high]}, {log_uniform: [low, high]}, {int: [low, high]}, "
         "{log_int: [low, high]}, {choice: [value, ...]} (uniform and int also take 'step')")


def _parse_one(key: str, spec: Any, path: tuple[str, ...], variant: str | None) -> Param:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{_FORM}, got {spec!r}")  # noqa: TRY004 - a user's value, reported as config problems are
    kinds = [k for k in spec if k in KINDS]
    extra = sorted(str(k) for k in spec if k not in KINDS and k != "step")
    if len(kinds) != 1 or extra:
        raise ValueError(f"{_FORM}, got {dict(spec)!r}")
    kind = kinds[0]
    value = spec[kind]
    if "step" in spec and kind not in STEPPED:
        raise ValueError(f"'step' goes with uniform and int ranges, not with {kind}")
    if kind == "choice":
        if not isinstance(value, list) or len(value) < 2:
            raise ValueError(f"choice needs a list of at least two values, got {value!r}")
        labels = [label(v) for v in value]
        twice = sorted({str(lb) for lb in labels if labels.count(lb) > 1})
        if twice:
            raise ValueError(f"choice lists {', '.join(twice)} more than once")
        return Param(key, kind, path, variant, choices=tuple(copy.deepcopy(value)))
    integer = kind in ("int", "log_int")
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{kind} needs [low, high], got {value!r}")
    low, high = (_number(v, integer) for v in value)
    if not low < high:
        raise ValueError(f"empty range [{value[0]}, {value[1]}]: low must be below high")
    if kind.startswith("log_") and low <= 0:
        raise ValueError(f"a log range must lie above 0, got [{value[0]}, {value[1]}] (it includes 0 or less)")
    step = None
    if "step" in spec:
        step = _number(spec["step"], integer)
        if step <= 0:
            raise ValueError(f"step must be > 0, got {spec['step']!r}")
    return Param(key, kind, path, variant, low, high, step)


def set_value(data: dict, path: Sequence[str], value: Any) -> None:
    """Set ``value`` at ``path`` of a raw config mapping (sections created as needed; a digit indexes a list,
    such as ``audio.wave_aug.0.p``). Raises ValueError when a step of the path is a value, not a section."""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):  # a key that goes below a value: the user's key, a ValueError
            raise ValueError(f"'{'.'.join(path[:i])}' is not a section")  # noqa: TRY004
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = path[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ValueError(f"'{'.'.join(path[:-1])}' is not a section")


def with_values(base_raw: dict, values: Mapping[Param, Any]) -> dict:
    """A copy of the raw run config with each dimension's value set."""
    data = copy.deepcopy(base_raw)
    for param, value in values.items():
        set_value(data, param.path, copy.deepcopy(value))
    return data


def check_values(params: Sequence[Param], base_raw: dict, source: str) -> list[str]:
    """Every problem the config loader finds with a value a dimension can produce (:meth:`Param.probes`):
    unknown keys (with the nearest known key), wrong types, values the key's checks refuse. Each problem once."""
    from ls.config import ConfigError, build_config

    problems: list[str] = []
    for param in params:
        for value in param.probes():
            try:
                data = with_values(base_raw, {param: value})
                build_config(data, f"{source} (tune.space)")
            except ValueError as exc:
                found = exc.problems if isinstance(exc, ConfigError) else [f"tune.space '{param.key}': {exc}"]
                if param.kind in ("uniform", "log_uniform") and value not in (param.low, param.high):
                    found = [f"{p} ({param.kind} [{param.low:g}, {param.high:g}] samples fractional values such as "
                             f"{value:g})" for p in found]
                problems += [p for p in found if p not in problems]
                if any("unknown key" in p or "is not a section" in p for p in found):
                    break  # the key itself is wrong: its other values say the same
    return problems


def check_enqueued(entries: Sequence[Any], params: Sequence[Param], variants: Sequence[str]) -> list[str]:
    """``tune.enqueue``: each entry a mapping of space keys (or ``variant``) to values the space can produce."""
    by_key = {p.key: p for p in params}
    problems = []
    for i, entry in enumerate(entries):
        where = f"tune.enqueue[{i}]"
        if not isinstance(entry, Mapping) or not entry:
            problems.append(f"{where}: expected a mapping of tune.space keys to values, got {entry!r}")
            continue
        for key, value in entry.items():
            if key == "variant":
                if value not in variants:
                    problems.append(f"{where}: variant {value!r} is not among tune.variants ({', '.join(variants)})")
            elif key not in by_key:
                problems.append(f"{where}: '{key}' is not a key of tune.space ({', '.join(by_key)})")
            elif not by_key[key].contains(value):
                problems.append(f"{where}: {value!r} is not a value of '{key}' ({by_key[key].describe()})")
    return problems


def optuna_values(entry: Mapping[str, Any], params: Sequence[Param]) -> dict[str, Any]:
    """An enqueued entry as Optuna's parameter values (choices as their labels)."""
    by_key = {p.key: p for p in params}
    return {k: (label(v) if k in by_key and by_key[k].kind == "choice" else v) for k, v in entry.items()}


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """The shortest trailing part of each key that tells it apart from the others (figure labels):
    ``training.optimizer.lr`` -> ``lr``, ``models.ast_film_soft.dropout`` and ``models.ast.dropout`` keep their
    variant."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if sum(1 for other in keys if other == name or other.endswith("." + name)) == 1:
                break
        out[key] = name
    return out


__all__ = [
    "FORBIDDEN",
    "KINDS",
    "Param",
    "check_enqueued",
    "check_values",
    "label",
    "optuna_values",
    "parse_space",
    "set_value",
    "short_names",
    "with_values",
]
