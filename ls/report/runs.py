"""Loading finished runs (a folder tree or an MLflow experiment) and aligning their test predictions.

A run is described by ``run.json`` (``variant``, ``display_name``, ``seed``, ``selection``, optional ``fold``
and ``run_id``, ``class_names`` with class 0 = normal, ``factors``, the final test metrics under ``test``, and
optionally the protocol card under ``protocol``: :mod:`ls.report.protocol`) and ``test_predictions.csv`` (one row per test cycle: ``filename``, ``cycle_index``, ``patient``,
``true``, ``pred`` as class names, and one column per factor). Problems are :class:`ReportError` with one
line naming the file or run and what is wrong.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import ls.utils.telemetry  # noqa: F401 - before anything imports mlflow: it turns MLflow's telemetry off
from ls.report.protocol import PROTOCOL_KEY, parse_card
from ls.report.stats import ReportError, TestSet

RUN_FILE = "run.json"
PREDICTIONS_FILE = "test_predictions.csv"
REQUIRED_FIELDS = ("variant", "seed", "selection", "class_names", "factors", "test")
PREDICTION_COLUMNS = ("filename", "cycle_index", "patient", "true", "pred")


@dataclass(frozen=True, eq=False)
class Run:
    """One finished run: its identity, class names, factors, logged test metrics and test predictions."""

    variant: str
    display_name: str
    seed: int
    selection: str
    class_names: tuple[str, ...]
    factors: tuple[str, ...]
    test: Mapping[str, float]
    predictions: pd.DataFrame = field(repr=False)
    fold: int | None = None
    run_id: str | None = None
    source: str = ""
    protocol: Mapping[str, object] | None = None  # the protocol card (ls.report.protocol), None when not recorded

    @property
    def key(self) -> tuple[int, int | None]:
        """What pairs runs of two variants: the seed (and the fold, for k-fold runs)."""
        return (self.seed, self.fold)


# =================================================================================================
# One run from its two files
# =================================================================================================
def _as_int(value: object, what: str, where: str) -> int:
    if isinstance(value, bool):
        raise ReportError(f"{where}: {what} must be an integer, got {value!r}")
    try:
        number = float(value)  # "42", 42, 42.0
    except (TypeError, ValueError):
        raise ReportError(f"{where}: {what} must be an integer, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ReportError(f"{where}: {what} must be an integer, got {value!r}")
    return int(number)


def parse_run(meta: Mapping, predictions: pd.DataFrame, where: str, csv_name: str = PREDICTIONS_FILE) -> Run:
    """A :class:`Run` from the ``run.json`` content and the raw predictions table (all columns as strings).

    ``where`` names the run in messages (a path or an MLflow run id).
    """
    if not isinstance(meta, Mapping):
        raise ReportError(f"{where}: {RUN_FILE} must hold a JSON object, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        raise ReportError(f"{where}: {RUN_FILE} lacks field(s) {', '.join(missing)}")
    variant = str(meta["variant"]).strip()
    selection = str(meta["selection"]).strip()
    if not variant or not selection:
        raise ReportError(f"{where}: {RUN_FILE} has an empty 'variant' or 'selection'")
    names = meta["class_names"]
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise ReportError(f"{where}: 'class_names' must be a list of at least 2 names, got {names!r}")
    if len(set(names)) != len(names):
        raise ReportError(f"{where}: 'class_names' has duplicates: {names}")
    factors = meta["factors"]
    if not isinstance(factors, list) or not all(isinstance(f, str) for f in factors):
        raise ReportError(f"{where}: 'factors' must be a list of column names, got {factors!r}")
    test = meta["test"]
    if not isinstance(test, Mapping):
        raise ReportError(f"{where}: 'test' must be an object of metrics, got {type(test).__name__}")
    fold = meta.get("fold")
    fold = None if fold is None or fold == "" else _as_int(fold, "'fold'", where)
    protocol = meta.get(PROTOCOL_KEY)
    if protocol is not None:
        try:
            protocol = parse_card(protocol, f"{where}: {RUN_FILE}")
        except TypeError as exc:
            raise ReportError(str(exc)) from None
        if protocol.get("selection", selection) != selection:
            raise ReportError(f"{where}: {RUN_FILE} has selection {selection!r} but its protocol card says "
                              f"{protocol['selection']!r}")
    run = Run(
        variant=variant,
        display_name=str(meta.get("display_name") or variant),
        seed=_as_int(meta["seed"], "'seed'", where),
        selection=selection,
        class_names=tuple(names),
        factors=tuple(factors),
        test={str(k): float(v) for k, v in test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        predictions=_check_predictions(predictions, names, factors, f"{where}/{csv_name}"),
        fold=fold,
        run_id=str(meta["run_id"]) if meta.get("run_id") else None,
        source=where,
        protocol=protocol or None,
    )
    return run


def _check_predictions(table: pd.DataFrame, class_names: Sequence[str], factors: Sequence[str],
                       where: str) -> pd.DataFrame:
    missing = [c for c in (*PREDICTION_COLUMNS, *factors) if c not in table.columns]
    if missing:
        raise ReportError(f"{where}: missing column(s) {', '.join(missing)}")
    if table.empty:
        raise ReportError(f"{where}: no prediction rows")
    table = table[[*PREDICTION_COLUMNS, *factors]].copy()
    for col in ("filename", "patient", "true", "pred", *factors):
        empty = table[col].astype(str).str.strip() == ""
        if empty.any():
            raise ReportError(f"{where}: {int(empty.sum())} empty value(s) in column {col!r}")
    try:
        table["cycle_index"] = table["cycle_index"].astype(float)
        if not np.all(np.mod(table["cycle_index"], 1) == 0):
            raise ValueError
        table["cycle_index"] = table["cycle_index"].astype(np.int64)
    except ValueError:
        raise ReportError(f"{where}: column 'cycle_index' must hold integers") from None
    for col in ("true", "pred"):
        unknown = sorted(set(table[col]) - set(class_names))
        if unknown:
            raise ReportError(f"{where}: column {col!r} has labels not in class_names {list(class_names)}: "
                              f"{unknown[:5]}")
    dup = table.duplicated(["filename", "cycle_index"])
    if dup.any():
        first = table.loc[dup, ["filename", "cycle_index"]].iloc[0].tolist()
        raise ReportError(f"{where}: {int(dup.sum())} duplicated (filename, cycle_index) row(s), e.g. {first}")
    return table.reset_index(drop=True)


def read_predictions(path: Path) -> pd.DataFrame:
    """The predictions CSV with every column as text (no NA guessing: 'NA' stays a value)."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read CSV ({str(exc).splitlines()[0]})") from None


def read_run_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: invalid JSON ({exc})") from None


def load_run_dir(path: str | Path) -> Run:
    """The run stored in folder ``path`` (``run.json`` + ``test_predictions.csv``)."""
    path = Path(path)
    meta_path, csv_path = path / RUN_FILE, path / PREDICTIONS_FILE
    if not meta_path.is_file():
        raise ReportError(f"{path}: no {RUN_FILE}")
    if not csv_path.is_file():
        raise ReportError(f"{path}: {RUN_FILE} but no {PREDICTIONS_FILE} beside it")
    return parse_run(read_run_json(meta_path), read_predictions(csv_path), str(path))


def load_runs(root: str | Path) -> tuple[list[Run], list[str]]:
    """Every run folder under ``root`` (searched recursively for ``run.json``), sorted by path.

    Returns the runs and notes (none today; the same shape as :func:`load_mlflow_runs`).
    """
    root = Path(root)
    if not root.exists():
        raise ReportError(f"runs folder {root} does not exist")
    if not root.is_dir():
        raise ReportError(f"runs folder {root} is not a folder")
    found = sorted(p.parent for p in root.rglob(RUN_FILE))
    if not found:
        raise ReportError(f"no {RUN_FILE} under {root}")
    return [load_run_dir(p) for p in found], []


# =================================================================================================
# MLflow
# =================================================================================================
def load_mlflow_runs(tracking_uri: str, experiment: str, parent: str | None = None) -> tuple[list[Run], list[str]]:
    """Runs of MLflow ``experiment`` (only children of ``parent`` when given) that carry the tags ``variant``,
    ``seed``, ``selection`` and the artifacts ``run.json``, ``test_predictions.csv`` at the artifact root.

    Tags (``variant``, ``seed``, ``selection``, ``display_name``, ``fold``) and ``test/<key>`` metrics take
    precedence over ``run.json``; a tag that contradicts ``run.json`` is an error. Other runs (e.g. parents
    of seed sweeps) are skipped with a note.
    """
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        # MLflow would create an empty database there and then report a missing experiment
        raise ReportError(f"MLflow at {tracking_uri}: no database file {tracking_uri[len('sqlite:///'):]}")
    with _quiet_mlflow():
        return _load_mlflow_runs(tracking_uri, experiment, parent)


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's INFO logs and deprecation warnings would break the one-line error contract of the CLI."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _load_mlflow_runs(tracking_uri: str, experiment: str, parent: str | None) -> tuple[list[Run], list[str]]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
    except MlflowException as exc:
        raise ReportError(f"MLflow at {tracking_uri}: {_first_line(exc)}") from None
    if exp is None:
        raise ReportError(f"MLflow at {tracking_uri}: no experiment named {experiment!r}")
    filter_string = f"tags.`mlflow.parentRunId` = '{parent}'" if parent else ""
    found, token = [], None
    try:
        while True:
            page = client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000,
                                      order_by=["attributes.start_time ASC"], page_token=token)
            found += list(page)
            token = page.token
            if not token:
                break
    except MlflowException as exc:
        raise ReportError(f"MLflow at {tracking_uri}: {_first_line(exc)}") from None
    if not found:
        scope = f" with parent run {parent}" if parent else ""
        raise ReportError(f"MLflow at {tracking_uri}: experiment {experiment!r} has no runs{scope}")
    runs, notes = [], []
    with tempfile.TemporaryDirectory(prefix="ls_report_") as tmp:
        for mrun in found:
            rid = mrun.info.run_id
            name = f"MLflow run {rid}" + (f" ({mrun.info.run_name})" if mrun.info.run_name else "")
            tags = mrun.data.tags
            lacking = [t for t in ("variant", "seed", "selection") if not tags.get(t)]
            if lacking:
                notes.append(f"{name}: skipped, no tag(s) {', '.join(lacking)}")
                continue
            try:
                names = {a.path for a in client.list_artifacts(rid)}
            except MlflowException as exc:
                raise ReportError(f"{name}: cannot list artifacts ({_first_line(exc)})") from None
            absent = [f for f in (RUN_FILE, PREDICTIONS_FILE) if f not in names]
            if absent:
                notes.append(f"{name}: skipped, no artifact(s) {', '.join(absent)}")
                continue
            dst = Path(tmp) / rid
            dst.mkdir()
            try:
                meta_path = Path(client.download_artifacts(rid, RUN_FILE, str(dst)))
                csv_path = Path(client.download_artifacts(rid, PREDICTIONS_FILE, str(dst)))
            except (MlflowException, OSError) as exc:
                raise ReportError(f"{name}: cannot download artifacts ({_first_line(exc)})") from None
            meta = read_run_json(meta_path)
            if not isinstance(meta, dict):
                raise ReportError(f"{name}: {RUN_FILE} must hold a JSON object")
            meta = _merge_tags(meta, tags, mrun.data.metrics, rid, name)
            runs.append(parse_run(meta, read_predictions(csv_path), name))
    return runs, notes


def _merge_tags(meta: dict, tags: Mapping[str, str], metrics: Mapping[str, float], run_id: str,
                where: str) -> dict:
    meta = dict(meta)
    for tag in ("variant", "seed", "selection", "display_name", "fold"):
        if not tags.get(tag):
            continue
        value = tags[tag]
        if tag in meta and meta[tag] is not None and str(meta[tag]) != value:
            if tag in ("seed", "fold") and _same_int(meta[tag], value):
                continue
            raise ReportError(f"{where}: tag {tag}={value!r} contradicts {RUN_FILE} {tag}={meta[tag]!r}")
        meta[tag] = value
    logged = {k[len("test/"):]: float(v) for k, v in metrics.items() if k.startswith("test/")}
    if logged:
        meta["test"] = logged
    meta.setdefault("test", {})
    meta.setdefault("run_id", run_id)
    return meta


def _same_int(a: object, b: object) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# =================================================================================================
# Grouping and alignment
# =================================================================================================
def split_by_selection(runs: Sequence[Run], selection: str | None = None) -> dict[str, list[Run]]:
    """Runs grouped by model-selection protocol (never mixed in one comparison); only ``selection`` if
    given. Duplicate runs (same variant, selection, seed and fold) are an error naming both."""
    if not runs:
        raise ReportError("no runs to report")
    seen: dict[tuple, Run] = {}
    for run in runs:
        ident = (run.variant, run.selection, run.seed, run.fold)
        if ident in seen:
            raise ReportError(f"two runs of {run.variant} with selection {run.selection}, seed {run.seed}"
                              + (f", fold {run.fold}" if run.fold is not None else "")
                              + f": {seen[ident].source} and {run.source}")
        seen[ident] = run
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.selection, []).append(run)
    if selection is not None:
        if selection not in groups:
            raise ReportError(f"no runs with selection {selection!r} (found: {', '.join(sorted(groups))})")
        return {selection: groups[selection]}
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != "strict", kv[0])))


@dataclass(frozen=True, eq=False)
class AlignedRuns:
    """Runs on one shared test set: ``preds[r]`` are run ``r``'s predicted class ids in ``test_set`` order;
    ``table`` has one row per run (variant, display_name, seed, fold, run_id, source)."""

    test_set: TestSet
    preds: np.ndarray
    table: pd.DataFrame
    runs: tuple[Run, ...]
    notes: tuple[str, ...] = ()


def align_runs(runs: Sequence[Run]) -> AlignedRuns:
    """Put runs on one test set (cycles sorted by patient, file, cycle index).

    Every run must have the same class names and predict the same cycles with the same true label, patient
    and factor values; factors missing from some runs are left out (noted).
    """
    if not runs:
        raise ReportError("no runs to align")
    first = runs[0]
    for run in runs[1:]:
        if run.class_names != first.class_names:
            raise ReportError(f"class names differ: {first.source} has {list(first.class_names)}, "
                              f"{run.source} has {list(run.class_names)}")
    notes = []
    factors = [f for f in first.factors if all(f in r.factors for r in runs)]
    dropped = sorted({f for r in runs for f in r.factors} - set(factors))
    if dropped:
        notes.append(f"factor(s) {', '.join(dropped)} left out: not listed by every run")
    key = ["filename", "cycle_index"]
    ref = first.predictions.sort_values(["patient", *key], kind="stable").set_index(key)
    shared = ["patient", "true", *factors]
    preds = np.empty((len(runs), len(ref)), dtype=np.int64)
    codes = {name: i for i, name in enumerate(first.class_names)}
    for r, run in enumerate(runs):
        table = run.predictions.set_index(key)
        if len(table) != len(ref) or not table.index.isin(ref.index).all():
            missing = int((~ref.index.isin(table.index)).sum())
            extra = int((~table.index.isin(ref.index)).sum())
            raise ReportError(f"{run.source}: its test predictions cover other cycles than {first.source} "
                              f"({missing} missing, {extra} extra): runs must share one test set")
        table = table.reindex(ref.index)
        for col in shared:
            differ = int((table[col].astype(str).to_numpy() != ref[col].astype(str).to_numpy()).sum())
            if differ:
                raise ReportError(f"{run.source}: column {col!r} differs from {first.source} on {differ} "
                                  f"cycle(s): runs must share one test set")
        preds[r] = table["pred"].map(codes).to_numpy()
    patient_codes, patient_names = pd.factorize(ref["patient"].astype(str), sort=True)
    test_set = TestSet(
        y_true=ref["true"].map(codes).to_numpy().astype(np.int64),
        clusters=patient_codes.astype(np.int64),
        cluster_names=tuple(str(p) for p in patient_names),
        groups={f: ref[f].astype(str).to_numpy() for f in factors},
        n_classes=len(first.class_names),
    )
    frame = pd.DataFrame({
        "variant": [r.variant for r in runs],
        "display_name": [r.display_name for r in runs],
        "seed": [r.seed for r in runs],
        "fold": pd.array([r.fold for r in runs], dtype="Int64"),
        "run_id": [r.run_id for r in runs],
        "source": [r.source for r in runs],
    })  # fmt: skip
    return AlignedRuns(test_set, preds, frame, tuple(runs), tuple(notes))


__all__ = [
    "PREDICTIONS_FILE",
    "RUN_FILE",
    "AlignedRuns",
    "Run",
    "align_runs",
    "load_mlflow_runs",
    "load_run_dir",
    "load_runs",
    "parse_run",
    "read_predictions",
    "split_by_selection",
]
