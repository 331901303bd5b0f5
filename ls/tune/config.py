"""The tune file: a run config with a ``tune:`` section, read and checked before any trial.

Everything that is wrong with a file is reported at once (:class:`ls.config.ConfigError` with every problem):
the ``tune:`` section's keys and types, the run config, the space (unknown keys with the nearest known one,
empty ranges, log ranges that include 0, choices the key's type refuses), the variants, the metric, the
enqueued trials and ``training.selection: paper``, which would select on the test split.
"""

from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ls.config import Config
from ls.tune.space import Param, check_enqueued, check_values, parse_space, with_values
from ls.utils.errors import LsError
from ls.utils.fields import option

#: Where trials' run folders go inside the tune folder.
TRIALS_FOLDER = "trials"
REPORT_FOLDER = "report"
BEST_CONFIG = "best_config.yaml"
#: The default storage: a SQLite file in the tune folder.
DEFAULT_DB = "optuna.db"


class TuneError(LsError, ValueError):
    """A problem with a tune file, its folder, its storage or its search (one ``error:`` line)."""


@dataclass
class SamplerConfig:
    """How a trial's parameters are proposed (Optuna's samplers)."""

    type: Literal["tpe", "random"] = option(
        "tpe", "tpe: the tree-structured Parzen estimator (proposals near the best trials so far); random")
    n_startup_trials: int = option(10, "tpe: trials sampled at random before the estimator takes over")

    def __post_init__(self) -> None:
        if self.n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be >= 0, got {self.n_startup_trials}")


@dataclass
class PrunerConfig:
    """When a trial stops early, judged on its validation metric after each epoch (Optuna's pruners)."""

    type: Literal["median", "successive_halving", "none"] = option(
        "median", "median: stop a trial whose epoch value is worse than the median of earlier trials at that "
        "epoch; successive_halving: keep the best 1/reduction_factor at each rung of epochs; none")
    n_startup_trials: int = option(5, "median: trials that finish before any trial is stopped")
    n_warmup_steps: int = option(0, "median: no trial is stopped before this epoch")
    min_resource: int | None = option(
        None, "successive_halving: epochs of the first rung; null: estimated from the first finished trial")
    reduction_factor: int = option(3, "successive_halving: one trial in reduction_factor goes on at each rung")

    def __post_init__(self) -> None:
        if self.n_startup_trials < 0 or self.n_warmup_steps < 0:
            raise ValueError("n_startup_trials and n_warmup_steps must be >= 0")
        if self.min_resource is not None and self.min_resource < 1:
            raise ValueError(f"min_resource must be >= 1 (or null), got {self.min_resource}")
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor must be >= 2, got {self.reduction_factor}")


@dataclass
class TuneConfig:
    """The ``tune:`` section of a tune file."""

    variants: list[str] = option(help="variants searched (each needs a models.<variant> block); more than one "
                                 "makes the variant a parameter of the search")
    space: dict[str, Any] = option(help="config key -> {uniform|log_uniform|int|log_int: [low, high]} or "
                                   "{choice: [...]} (ls.tune.space)")
    n_trials: int = option(20, "trials of the search, all workers together (complete, pruned or failed; a "
                           "trial whose worker died is retried and counts once)")
    metric: str | None = option(None, "validation metric the search optimises, at the epoch each trial selects; "
                                "null: the run's selection metric (training.selection_metric, else the dataset's "
                                "score: icbhi_score, sprsound_score)")
    direction: Literal["maximize", "minimize"] | None = option(
        None, "null: minimize for loss, maximize for every other metric")
    sampler: SamplerConfig = option(SamplerConfig, "how parameters are proposed")
    pruner: PrunerConfig = option(PrunerConfig, "which trials stop early")
    seed: int | None = option(0, "sampler seed: the proposals of trial k follow from (seed, k) and the trials "
                              "finished before it; null: unseeded")
    name: str | None = option(None, "name of the search (Optuna study, MLflow parent run); null: the file's stem")
    out: str | None = option(None, "tune folder (trials, storage, report, best_config.yaml); null: runs/<name>")
    config: str | None = option(None, "base run config, relative to the tune file; the file's other sections are "
                                "laid over it")
    enqueue: list[dict[str, Any]] = option([], "trials run first, each {key: value} of tune.space (keys left out "
                                           "are sampled), e.g. the values a paper used")
    threads: int | None = option(None, "intra-op threads per trial on CPU; null: the cores shared out among the "
                                 "workers of this machine (a trial's numbers depend on it)")
    heartbeat_interval: int = option(60, "seconds between a running trial's heartbeats in a database storage; a "
                                     "trial silent for twice as long is failed and retried")
    max_retries: int = option(3, "times a trial whose worker died or was interrupted is retried (from its "
                              "last.pt, with the same parameters)")

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("variants is empty: name the variant(s) to search")
        if self.n_trials < 1:
            raise ValueError(f"n_trials must be >= 1, got {self.n_trials}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or null), got {self.threads}")
        if self.heartbeat_interval < 1:
            raise ValueError(f"heartbeat_interval must be >= 1 second, got {self.heartbeat_interval}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


@dataclass
class Search:
    """A loaded, checked search: its settings, the base run config and where everything goes."""

    settings: TuneConfig
    variants: list[str]
    params: list[Param]
    base_raw: dict[str, Any]  # the run config as a mapping (overrides applied): trials lay their values over it
    base: Config
    source: Path
    name: str
    out: Path
    metric: str
    direction: str
    overrides: list[str] = field(default_factory=list)

    @property
    def trials_dir(self) -> Path:
        return self.out / TRIALS_FOLDER

    @property
    def report_dir(self) -> Path:
        return self.out / REPORT_FOLDER

    def trial_dir(self, number: int) -> Path:
        """The run folder of the trial numbered ``number`` (a retried trial keeps its original's)."""
        return self.trials_dir / f"trial{number}"

    def params_of(self, variant: str) -> list[Param]:
        return [p for p in self.params if p.applies_to(variant)]

    def raw_config(self, variant: str, values: dict[Param, Any]) -> dict[str, Any]:
        """The run config mapping of a trial of ``variant`` with ``values``."""
        return with_values(self.base_raw, {p: v for p, v in values.items() if p.applies_to(variant)})

    def trial_config(self, variant: str, values: dict[Param, Any]) -> Config:
        """The typed config of a trial: its values laid over the base, built and checked like any config. It
        never reads the test split: ``training.monitor_test`` is off (and the trial skips its final test)."""
        from ls.config import build_config

        cfg, _ = build_config(self.raw_config(variant, values), f"{self.source} (trial)")
        cfg.training.monitor_test = False
        cfg.training.checkpoint_dir = str(self.trials_dir)
        return cfg

    def fingerprint(self) -> dict[str, Any]:
        """What makes two commands the same search (kept in the Optuna study; a command that joins a search
        with other settings is refused): variants, space, metric, direction and the run config."""
        from ls.runs.run import stored_config

        return {"variants": list(self.variants), "metric": self.metric, "direction": self.direction,
                "space": {p.key: p.describe() for p in self.params}, "config": stored_config(self.base)}


def _merge(base: dict, over: dict) -> dict:
    """``over`` laid over ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def validation_metrics(cfg: Config) -> list[str]:
    """Every metric name a run of ``cfg`` logs on its validation split each epoch (``val/<name>``): the loss
    and what :func:`ls.engine.predict_rules.evaluate_outputs` computes for the run's output mode (which
    ``ls.engine.metrics`` defines), found by evaluating made-up outputs in which every class occurs."""
    import numpy as np

    from ls.engine.predict_rules import evaluate_outputs, fixed_thresholds

    mode = cfg.output_mode
    rng = np.random.default_rng(0)
    if mode.kind == "multilabel":
        labels = np.array([[c & 1, c >> 1] for c in range(4)] * 4, dtype=np.float32)
    else:
        labels = np.tile(np.arange(mode.n_classes), 4)
    logits = rng.standard_normal((len(labels), mode.label_dim)).astype(np.float32)
    thresholds = fixed_thresholds(cfg.training.thresholds, mode) if mode.uses_thresholds else None
    return ["loss", *sorted(evaluate_outputs(logits, labels, mode, thresholds=thresholds).metrics)]


def load_search(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, out: str | Path | None = None,
                n_trials: int | None = None) -> Search:
    """Read and check a tune file; ``overrides`` (``section.key=value``) change the run config, ``out`` and
    ``n_trials`` replace the file's. Raises :class:`TuneError` or ``ls.config.ConfigError`` (every problem of
    the file at once)."""
    import warnings

    from ls.config import ConfigError, OriginalConfigWarning, build_config, load_config_plugins
    from ls.config.loader import apply_overrides, from_dict, read_yaml, resolve_config_path
    from ls.models.variants import canonical_variant
    from ls.runs.run import selection_metric

    path = resolve_config_path(path)  # a file, or a built-in tune file's name (quickstart_tune)
    data = read_yaml(path)
    if not isinstance(data.get("tune"), dict):
        raise TuneError(f"{path}: no 'tune:' section (a mapping with at least 'variants' and 'space'); see "
                        "python -m ls.tune --help")
    raw_tune = dict(data["tune"])
    if out is not None:
        raw_tune["out"] = str(out)
    if n_trials is not None:
        raw_tune["n_trials"] = n_trials
    problems: list[str] = []
    settings: TuneConfig | None
    try:
        settings = from_dict(TuneConfig, raw_tune, f"{path} (tune section)")
    except ConfigError as exc:
        problems += exc.problems
        settings = None

    sections = {k: v for k, v in data.items() if k != "tune"}
    source = str(path)
    base_file = raw_tune.get("config")
    if isinstance(base_file, str) and base_file:
        base_path = Path(base_file) if Path(base_file).is_absolute() else path.parent / base_file
        if not base_path.is_file():
            raise TuneError(f"{path}: tune.config {base_file!r} not found (looked for {base_path})")
        sections = _merge(read_yaml(base_path), sections)
        source = f"{path} over {base_path}"
    load_config_plugins(sections, source)  # before tune.variants are looked up: a plugin's variant may be one
    base_raw, _ = apply_overrides(copy.deepcopy(sections), list(overrides))
    base: Config | None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OriginalConfigWarning)
            base, _ = build_config(copy.deepcopy(sections), source, list(overrides))
        if base.translation.notes:
            warnings.warn(OriginalConfigWarning(base.translation.report()), stacklevel=2)
    except ConfigError as exc:
        problems += exc.problems
        base = None

    variants: list[str] = []
    for v in raw_tune.get("variants") or []:
        try:
            variants.append(canonical_variant(str(v)))
        except ValueError as exc:
            problems.append(f"tune.variants in {path}: {exc}")
    if len(set(variants)) != len(variants):
        problems.append(f"tune.variants in {path} names a variant twice (aliases count): {variants}")
    if base is not None:
        for v in variants:
            try:
                base.model(v)
            except ConfigError as exc:
                problems.append(f"{source}: {exc} (tune.variants lists {v!r})")
        if base.training.selection != "strict":
            problems.append(f"training.selection is {base.training.selection!r} in {source}: a search selects on "
                            "the validation split and never reads the test split; paper selection would select "
                            "on the test split. Use training.selection: strict")

    blocks = base_raw.get("models") if isinstance(base_raw.get("models"), dict) else {}
    params, space_problems = parse_space(raw_tune.get("space"), variants, blocks)
    problems += [f"{p} ({path})" for p in space_problems]
    if base is not None and params:
        problems += check_values(params, base_raw, source)
        problems += [f"{p} ({path})" for p in check_enqueued(raw_tune.get("enqueue") or [], params, variants)]
    if settings is not None and len(settings.enqueue) > settings.n_trials:
        problems.append(f"tune.enqueue in {path} lists {len(settings.enqueue)} trials, more than n_trials "
                        f"({settings.n_trials})")

    metric = direction = ""
    if base is not None and settings is not None:
        metric = settings.metric or selection_metric(base)
        known = validation_metrics(base)
        if metric not in known:
            close = difflib.get_close_matches(metric, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(f"tune.metric '{metric}' in {path} is not a metric that runs of this config log on "
                            f"their validation split; {hint}known: {', '.join(known)}")
        direction = settings.direction or ("minimize" if metric == "loss" else "maximize")

    if problems:
        unique = list(dict.fromkeys(problems))
        if len(unique) == 1:
            raise ConfigError(unique[0], unique)
        raise ConfigError(f"{len(unique)} problems in {path}:\n" + "\n".join(f"  - {p}" for p in unique), unique)
    assert settings is not None and base is not None
    name = settings.name or path.stem
    out_dir = Path(settings.out) if settings.out else Path("runs") / name
    return Search(settings=settings, variants=variants, params=params, base_raw=base_raw, base=base, source=path,
                  name=name, out=out_dir, metric=metric, direction=direction, overrides=list(overrides))


# =================================================================================================
# Storage
# =================================================================================================
@dataclass(frozen=True)
class StorageSpec:
    """Where the Optuna study lives: an RDB URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``) or a
    journal file (a path; on a shared filesystem for several machines)."""

    kind: Literal["rdb", "journal"]
    target: str

    @property
    def safe(self) -> str:
        """For messages and records: a URL without its password."""
        from ls.runs.secrets import strip_userinfo

        return strip_userinfo(self.target) if self.kind == "rdb" else self.target

    @property
    def sqlite_file(self) -> Path | None:
        if self.kind == "rdb" and self.target.startswith("sqlite:///"):
            return Path(self.target[len("sqlite:///"):])
        return None


def resolve_storage(search: Search, given: str | None) -> StorageSpec:
    """``--storage``: an RDB URL (anything with ``://``) or a journal file path; None: the SQLite file
    ``<tune folder>/optuna.db``. Local paths become absolute, so that every worker finds the same file."""
    if given is None:
        return StorageSpec("rdb", "sqlite:///" + str((search.out / DEFAULT_DB).resolve()))
    if "://" in given:
        if given.startswith("sqlite:///") and not given.startswith("sqlite:////"):
            rel = given[len("sqlite:///"):]
            if rel and rel != ":memory:":
                given = "sqlite:///" + str(Path(rel).resolve())
        return StorageSpec("rdb", given)
    return StorageSpec("journal", str(Path(os.path.expanduser(given)).resolve()))


__all__ = [
    "BEST_CONFIG",
    "DEFAULT_DB",
    "REPORT_FOLDER",
    "TRIALS_FOLDER",
    "PrunerConfig",
    "SamplerConfig",
    "Search",
    "StorageSpec",
    "TuneConfig",
    "TuneError",
    "load_search",
    "resolve_storage",
    "validation_metrics",
]
