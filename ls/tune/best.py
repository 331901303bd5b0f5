"""``best_config.yaml``: the best trial's config as a complete ls YAML of only what differs from ls's defaults,
each tuned key commented with the range it was searched in; and the study file of ``--then-study``.

The file loads with :func:`ls.config.load_config` into exactly the config the best trial trained (the search's
own settings aside: ``training.monitor_test`` and the folders stay as the tune file has them), and trains with
the variant's root script or ``ls.study``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ls.config import Config
from ls.runs.secrets import without_credentials
from ls.tune.config import BEST_CONFIG, Search, TuneError
from ls.tune.space import Param
from ls.utils.io import atomic_write_text
from ls.utils.trees import to_dict

#: The study file ``--then-study`` writes into the tune folder, and the folder of its runs and report.
STUDY_FILE = "study.yaml"
STUDY_FOLDER = "study"


def trial_values(search: Search, params: dict[str, Any]) -> tuple[str, dict[Param, Any]]:
    """The variant and the config value of each dimension of a trial (Optuna's ``trial.params``)."""
    from ls.tune.trials import VARIANT_PARAM

    variant = params.get(VARIANT_PARAM, search.variants[0])
    values = {p: p.value_of(params[p.key]) for p in search.params_of(variant) if p.key in params}
    return variant, values


def _restrict(tree: dict[str, Any], variant: str) -> dict[str, Any]:
    """A config tree with only ``variant``'s model block, under its canonical name."""
    from ls.config import run_view

    return run_view(tree, variant)


def _diff(tree: Any, defaults: Any) -> Any:
    """The part of ``tree`` that differs from ``defaults``: mappings key by key, anything else whole."""
    if isinstance(tree, dict) and isinstance(defaults, dict):
        out = {}
        for key, value in tree.items():
            if key not in defaults:
                out[key] = value
                continue
            sub = _diff(value, defaults[key])
            if sub is not _SAME:
                out[key] = sub
        return out if out else _SAME
    return _SAME if tree == defaults else tree


_SAME = object()


def _leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in tree.items():
        path = (*prefix, key)
        out += _leaves(value, path) if isinstance(value, dict) and value else [path]
    return out


def _without(tree: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = copy.deepcopy(tree)
    node = out
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    for i in range(len(path) - 1, 0, -1):  # drop sections left empty
        node = out
        for part in path[: i - 1]:
            node = node[part]
        if node[path[i - 1]] == {}:
            del node[path[i - 1]]
    return out


def _has(tree: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _build(data: dict[str, Any]) -> dict[str, Any] | None:
    from ls.config import ConfigError, build_config

    try:
        return to_dict(build_config(copy.deepcopy(data), "best_config")[0])
    except ConfigError:
        return None


def minimal_config(search: Search, variant: str, values: dict[Param, Any]) -> tuple[dict[str, Any], Config]:
    """The best trial's config as the smallest mapping that loads into it: what differs from ls's defaults,
    without keys that follow from others (``dataset.h`` from ``audio.n_mels``, ...), tuned keys as the trial
    gave them (``conditioned_layers: all``). Returns the mapping and the config it loads into."""
    from ls.config import build_config

    raw = search.raw_config(variant, values)
    cfg, _ = build_config(copy.deepcopy(raw), f"{search.source} (best trial)")
    target = _restrict(without_credentials(to_dict(cfg)), variant)  # a file to share: no credential in it
    defaults = to_dict(build_config({"dataset": {"data_folder": cfg.dataset.data_folder}, "models": {variant: {}}},
                                    "ls defaults")[0])
    data = _diff(target, _restrict(defaults, variant))
    data = {} if data is _SAME else data
    data["dataset"] = {"data_folder": cfg.dataset.data_folder, **data.get("dataset", {})}  # required: stated first
    models = data.setdefault("models", {})
    models.setdefault(variant, {})
    tuned = {(p.path[0], variant, *p.path[2:]) if p.path[0] == "models" else p.path: v for p, v in values.items()}
    for path, value in tuned.items():
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = copy.deepcopy(value)
    keep = set(tuned) | {("dataset", "data_folder")}
    for path in _leaves(data):  # keys that follow from the others go, one at a time
        if path in keep or not _has(data, path):
            continue
        smaller = _without(data, path)
        rebuilt = _build(smaller)
        if rebuilt is not None and _restrict(rebuilt, variant) == target:
            data = smaller
    if _build(data) is None or _restrict(_build(data), variant) != target:
        raise TuneError("internal: the best configuration does not reload into the best trial's config")
    return _ordered(data), cfg


def _ordered(data: dict[str, Any]) -> dict[str, Any]:
    """Sections in the order of ls's configs."""
    order = ["dataset", "seed", "audio", "models", "training", "mlflow", "strict_config"]
    return {k: data[k] for k in sorted(data, key=lambda k: order.index(k) if k in order else len(order))}


def _flow(value: Any) -> str:
    """One value as YAML on one line (a scalar without the document end marker PyYAML adds)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False).strip()
    return text.removesuffix("\n...")


def _render(node: dict[str, Any], comments: dict[tuple[str, ...], str], indent: int = 0,
            prefix: tuple[str, ...] = ()) -> list[str]:
    lines = []
    pad = " " * indent
    for key, value in node.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value and path not in comments:
            lines.append(f"{pad}{key}:")
            lines += _render(value, comments, indent + 2, path)
        else:
            line = f"{pad}{key}: {_flow(value)}"
            if path in comments:
                line += f"  # {comments[path]}"
            lines.append(line)
    return lines


def best_config_text(search: Search, trial: Any, n_counted: int) -> str:
    """The text of ``best_config.yaml`` for ``trial`` (an Optuna ``FrozenTrial``, complete)."""
    from ls.models.variants import get_variant

    variant, values = trial_values(search, trial.params)
    data, _ = minimal_config(search, variant, values)
    comments = {((p.path[0], variant, *p.path[2:]) if p.path[0] == "models" else p.path):
                f"tuned: {p.describe()}; trial {trial.number}" for p in values}
    script = get_variant(variant).script or f"python -m ls.train  # variant {variant}"
    header = [
        f"# The best trial of the search {search.name!r} (python -m ls.tune {search.source}): trial {trial.number},",
        (f"# validation {search.metric} {trial.value:.6g} ({search.direction}), among {n_counted} trials. Only "
         "what differs from"),
        "# ls's defaults; each tuned key says the range it was searched in. No trial read the test split.",
        f"#   python {script} --config best_config.yaml",
    ]
    if len(search.variants) > 1:
        header.append(f"# Variant: {variant} (searched among {', '.join(search.variants)}).")
    text = "\n".join(header + _render(data, comments)) + "\n"
    if yaml.safe_load(text) != data:  # the comments and the flow style must not change what loads
        raise TuneError("internal: best_config.yaml does not read back as written")
    return text


def write_best_config(search: Search, study: Any) -> Path | None:
    """``<tune folder>/best_config.yaml`` of the study's best trial (None, and no file, before any trial is
    complete)."""
    from ls.tune.trials import counted

    try:
        best = study.best_trial
    except ValueError:
        return None
    path = search.out / BEST_CONFIG
    atomic_write_text(path, best_config_text(search, best, len(counted(study.get_trials(deepcopy=False)))))
    return path


def write_study_file(search: Search, variant: str, seeds: Sequence[int]) -> Path:
    """The study file of ``--then-study``: ``best_config.yaml`` trained once per seed (strict selection), each run
    tested once (at its end; no per-epoch test curves), into ``<tune folder>/study``."""
    text = "\n".join([
        (f"# The best configuration of the search {search.name!r} over seeds, each run tested once "
         "(python -m ls.tune --then-study)."),
        "study:",
        f"  name: {search.name}_best",
        f"  config: {BEST_CONFIG}",
        f"  variants: [{variant}]",
        f"  baseline: {variant}",
        f"  seeds: [{', '.join(str(int(s)) for s in seeds)}]",
        "  selections: [strict]",
        f"  out: {_flow(str(search.out / STUDY_FOLDER))}",
        "training:",
        "  monitor_test: false  # each run is tested once, at its end",
    ]) + "\n"
    path = search.out / STUDY_FILE
    atomic_write_text(path, text)
    return path


__all__ = ["STUDY_FILE", "STUDY_FOLDER", "best_config_text", "minimal_config", "trial_values", "write_best_config",
           "write_study_file"]
