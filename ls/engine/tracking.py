"""Experiment tracking: a thin layer over MLflow that never loses a metric.

The Trainer talks to a :class:`Tracker` (or the no-op :class:`NullTracker` on non-zero DDP ranks and in
unit tests) and never imports mlflow itself. Every call addresses an explicit run id through
``MlflowClient``, so parent runs (multi-seed, k-fold) and their nested child runs never depend on
MLflow's global "active run".

Where the tracking server lives, in order of precedence:

1. ``tracking_uri`` / ``experiment_name`` / credentials in ``configs/mlflow.yaml`` (``--mlflow-config``)
   or the ``mlflow:`` section of the run config;
2. the standard ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``, ``MLFLOW_TRACKING_USERNAME`` and
   ``MLFLOW_TRACKING_PASSWORD`` environment variables;
3. ``sqlite:///mlflow.db`` in the working directory, the store that ``mlflow ui`` opens by default in
   MLflow 3 (so ``mlflow ui`` run in the same directory shows the runs).

A wrong URI or wrong credentials fail in :meth:`Tracker.check_connection`, before any training. If the
server becomes unreachable mid-run, the tracker warns once and from then on appends every record to a
local JSON-lines file (``<fallback_dir>/<run_id>.jsonl``, artifacts copied beside it); nothing is lost,
and :func:`replay_fallback` uploads the file later.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Store used when neither the config nor the environment names one: what ``mlflow ui`` opens by default.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "ls"
#: MLflow caps one log_batch call at 1000 metrics / 100 params / 100 tags.
_MAX_BATCH_METRICS = 1000
_MAX_BATCH_PARAMS = 100
_MAX_PARAM_CHARS = 6000

# MLflow's HTTP defaults (7 retries, exponential back-off, 120 s timeout) make one call to a dead server
# block for minutes. Training must not stall on tracking, so unless the user chose otherwise we fail fast
# and fall back to the local buffer.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


class TrackingError(RuntimeError):
    """The tracking backend cannot be used (wrong URI, unreachable server, rejected credentials)."""


@dataclass(frozen=True)
class TrackingSettings:
    """Resolved tracking settings (config file > mlflow config section > environment > default)."""

    tracking_uri: str
    experiment_name: str
    username: str | None = None
    password: str | None = None
    fallback_dir: str = "mlflow_fallback"

    @property
    def is_remote(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))


def resolve_settings(mlflow_cfg: Any = None, mlflow_yaml: str | Path | None = None) -> TrackingSettings:
    """Merge ``--mlflow-config`` (flat YAML), the config's ``mlflow`` section and ``MLFLOW_*`` env vars.

    ``mlflow_cfg`` is an ``ls.engine.config.MlflowConfig`` (or None). A key given in the YAML file wins over
    the config section, which wins over the environment; empty values (YAML null) count as unset, so a
    missing password never crashes (fix of 11.2-15).
    """
    values: dict[str, Any] = {}
    if mlflow_cfg is not None:
        from ls.config import to_dict

        values.update({k: v for k, v in to_dict(mlflow_cfg).items() if v not in (None, "")})
    if mlflow_yaml is not None:
        values.update({k: v for k, v in _read_mlflow_yaml(mlflow_yaml).items() if v not in (None, "")})
    env = os.environ
    return TrackingSettings(
        tracking_uri=str(values.get("tracking_uri") or env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI),
        experiment_name=str(
            values.get("experiment_name") or env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        ),
        username=_opt_str(values.get("tracking_username") or env.get("MLFLOW_TRACKING_USERNAME")),
        password=_opt_str(values.get("tracking_password") or env.get("MLFLOW_TRACKING_PASSWORD")),
        fallback_dir=str(values.get("fallback_dir") or "mlflow_fallback"),
    )


def _opt_str(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def _read_mlflow_yaml(path: str | Path) -> dict[str, Any]:
    """Read the flat credentials file; an optional top-level ``mlflow:`` section is accepted too."""
    from ls.config import ConfigError
    from ls.config.loader import read_yaml

    data = read_yaml(path)
    if set(data) == {"mlflow"} and isinstance(data["mlflow"], dict):
        data = data["mlflow"]
    known = {"tracking_uri", "experiment_name", "tracking_username", "tracking_password", "fallback_dir"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {path}; known keys: {', '.join(sorted(known))}")
    return data


class NullTracker:
    """Tracker that records nothing: used on non-zero DDP ranks and where tracking is off."""

    run_id: str | None = None
    fallback_path: Path | None = None

    def check_connection(self) -> None:
        pass

    def start_run(self, run_name: str | None = None, **_: Any) -> str | None:
        return None

    def end_run(self, status: str = "FINISHED") -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> NullTracker:
        return NullTracker()


class Tracker:
    """One MLflow run (or a parent run whose :meth:`child` trackers are nested runs).

    >>> tracker = Tracker(resolve_settings(mlflow_yaml="configs/mlflow.yaml"))
    >>> tracker.check_connection()          # raises TrackingError before training on a bad URI/credentials
    >>> tracker.start_run("ast_film_soft_seed42", tags={"variant": "ast_film_soft"})
    >>> tracker.log_metrics({"train/loss": 0.7, "val/icbhi_score": 0.55}, step=1)
    >>> tracker.end_run()
    """

    def __init__(self, settings: TrackingSettings, *, parent_run_id: str | None = None) -> None:
        self.settings = settings
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.offline = False
        self.fallback_path: Path | None = None
        self._client = None

    # -- connection -------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            for key, value in _HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
            # MLflow reads credentials for HTTP servers from these variables only.
            if self.settings.username is not None:
                os.environ["MLFLOW_TRACKING_USERNAME"] = self.settings.username
            if self.settings.password is not None:
                os.environ["MLFLOW_TRACKING_PASSWORD"] = self.settings.password
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.settings.tracking_uri)
        return self._client

    def check_connection(self) -> None:
        """Reach the store and get-or-create the experiment; raise :class:`TrackingError` if impossible."""
        uri = self.settings.tracking_uri
        try:
            exp = self.client.get_experiment_by_name(self.settings.experiment_name)
            self.experiment_id = (
                exp.experiment_id if exp is not None else self.client.create_experiment(self.settings.experiment_name)
            )
        except Exception as exc:  # mlflow raises MlflowException, requests errors, sqlalchemy errors, ...
            text = str(exc)
            if any(s in text for s in ("401", "403", "Unauthorized", "Permission", "credentials")):
                why = (
                    "the server rejected the credentials; check tracking_username/tracking_password in the "
                    "mlflow config or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD"
                )
            else:
                why = "the tracking store is unreachable or invalid; check tracking_uri / MLFLOW_TRACKING_URI"
            raise TrackingError(f"MLflow tracking at {uri!r} cannot be used: {why}. ({type(exc).__name__}: "
                                f"{text.splitlines()[0] if text else ''})") from exc

    # -- runs -------------------------------------------------------------------------------------
    def start_run(
        self,
        run_name: str | None = None,
        *,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str:
        """Create a run (nested under ``parent_run_id`` if set), or reopen ``run_id`` to resume it."""
        if self.experiment_id is None:
            self.check_connection()
        if run_id is not None:
            try:
                self.client.update_run(run_id, status="RUNNING")
            except Exception as exc:
                raise TrackingError(
                    f"cannot resume MLflow run {run_id!r} at {self.settings.tracking_uri!r}: {exc}"
                ) from exc
            self.run_id = run_id
        else:
            all_tags = {k: str(v) for k, v in (tags or {}).items()}
            if self.parent_run_id is not None:
                all_tags["mlflow.parentRunId"] = self.parent_run_id
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
            self.run_id = run.info.run_id
        self.fallback_path = Path(self.settings.fallback_dir) / f"{self.run_id}.jsonl"
        return self.run_id

    def end_run(self, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        if not self.offline:
            self._call(lambda: self.client.set_terminated(self.run_id, status=status), {"end": status})
        if self.offline:
            warnings.warn(
                f"MLflow server {self.settings.tracking_uri} was unreachable; run {self.run_id} records are "
                f"kept in {self.fallback_path} (upload them later with ls.engine.tracking.replay_fallback)",
                stacklevel=2,
            )

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> Tracker:
        """A tracker for a nested run of this one (multi-seed members, k-fold folds)."""
        if self.run_id is None:
            raise TrackingError("start the parent run before creating nested runs")
        child = Tracker(self.settings, parent_run_id=self.run_id)
        child.experiment_id = self.experiment_id
        child._client = self._client
        child.start_run(run_name, tags=tags)
        return child

    # -- logging ----------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log config values as params (stringified; long values truncated as MLflow requires)."""
        from mlflow.entities import Param

        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _MAX_BATCH_PARAMS):
            chunk = items[i : i + _MAX_BATCH_PARAMS]
            self._call(
                lambda c=chunk: self.client.log_batch(self.run_id, params=c),
                {"params": {p.key: p.value for p in chunk}},
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        self._call(lambda: self.client.log_batch(self.run_id, tags=items), {"tags": dict(tags)})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log many metrics in one batched call (fix of 11.6-6); non-finite values are skipped."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        clean = {_metric_key(k): float(v) for k, v in metrics.items() if _is_finite_number(v)}
        items = [Metric(k, v, ts, step or 0) for k, v in clean.items()]
        for i in range(0, len(items), _MAX_BATCH_METRICS):
            chunk = items[i : i + _MAX_BATCH_METRICS]
            self._call(
                lambda c=chunk: self.client.log_batch(self.run_id, metrics=c),
                {"metrics": {m.key: m.value for m in chunk}, "step": step},
            )

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {path}")
        self._call(
            lambda: self.client.log_artifact(self.run_id, str(path), artifact_path),
            {"artifact": str(path), "artifact_path": artifact_path},
            artifact=path,
        )

    # -- failure handling -------------------------------------------------------------------------
    def _call(self, fn, record: dict, artifact: Path | None = None) -> None:
        if self.run_id is None:
            raise TrackingError("no MLflow run started: call start_run() first")
        if not self.offline:
            try:
                fn()
                return
            except Exception as exc:  # noqa: BLE001 -- any failure (HTTP, DB, auth) means: buffer locally
                self.offline = True
                warnings.warn(
                    f"MLflow logging to {self.settings.tracking_uri} failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); training continues and run "
                    f"{self.run_id} is recorded locally in {self.fallback_path}",
                    stacklevel=3,
                )
        self._buffer(record, artifact)

    def _buffer(self, record: dict, artifact: Path | None) -> None:
        assert self.fallback_path is not None
        self.fallback_path.parent.mkdir(parents=True, exist_ok=True)
        if artifact is not None:
            dest = self.fallback_path.with_suffix("") / "artifacts" / (record.get("artifact_path") or "")
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(artifact, dest / artifact.name)
            record = {**record, "artifact": str(dest / artifact.name)}
        with self.fallback_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": time.time(), **record}) + "\n")


def replay_fallback(path: str | Path, tracker: Tracker) -> int:
    """Upload records buffered in ``path`` (a fallback JSONL) into ``tracker``'s run; returns #records."""
    n = 0
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "metrics" in rec:
            tracker.log_metrics(rec["metrics"], step=rec.get("step"))
        elif "params" in rec:
            tracker.log_params(rec["params"])
        elif "tags" in rec:
            tracker.set_tags(rec["tags"])
        elif "artifact" in rec:
            tracker.log_artifact(rec["artifact"], rec.get("artifact_path"))
        n += 1
    return n


def _param_value(v: Any) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."


def _metric_key(k: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / : -- device/site names may carry other characters.
    return "".join(c if (c.isalnum() or c in "_-. /:") else "_" for c in str(k))


def _is_finite_number(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def build_tracker(
    mlflow_cfg: Any = None, mlflow_yaml: str | Path | None = None, *, enabled: bool = True
) -> Tracker | NullTracker:
    """The tracker for this process: a checked :class:`Tracker`, or :class:`NullTracker` if disabled."""
    if not enabled:
        return NullTracker()
    tracker = Tracker(resolve_settings(mlflow_cfg, mlflow_yaml))
    tracker.check_connection()
    return tracker


def iter_fallback_files(fallback_dir: str | Path) -> Iterable[Path]:
    return sorted(Path(fallback_dir).glob("*.jsonl"))


__all__ = [
    "DEFAULT_TRACKING_URI",
    "NullTracker",
    "Tracker",
    "TrackingError",
    "TrackingSettings",
    "build_tracker",
    "iter_fallback_files",
    "replay_fallback",
    "resolve_settings",
]
