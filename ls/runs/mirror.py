"""MLflow as a mirror of run records: :func:`sync` uploads what a folder's event log holds and the store lacks.

A record (:mod:`ls.runs.record`) is the truth; a store only ever gets a copy. Syncing is idempotent: each folder
remembers, per store, which MLflow run mirrors it and how many of its events are uploaded (``mlflow.json``), so
syncing twice uploads nothing twice, and a run that was never created (the store was away when it started) is
created by the sync that first reaches the store, nested under its parent's run. The same :func:`sync` runs

- during training, after each event, within a time budget (:class:`Mirror`): a store that is away costs a
  bounded stall, then the run goes on and the next attempt waits longer (20 s, doubling to 5 min, none once
  failed attempts have cost 30 s in all);
- at the end of a run (one last attempt); when records are left, the command that syncs them is printed;
- as a command: ``python -m ls.tracking sync DIR`` (any folder: every record below it).

Where the store is, in order of precedence: ``--mlflow-config`` (flat YAML: ``tracking_uri``,
``experiment_name``, ``tracking_username``, ``tracking_password``), the run config's ``mlflow:`` section, the
``MLFLOW_*`` environment variables, else ``sqlite:///mlflow.db`` in the working directory (what ``mlflow ui``
opens). A wrong URI or wrong credentials fail in :func:`check_connection`, before any training.

Privacy: MLflow's usage telemetry is off (:mod:`ls.utils.telemetry`). Credentials are held in memory only;
``mlflow.json`` and every message hold the URI without them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ls.runs.record import EVENTS_FILE, EventLog, parse_event
from ls.runs.secrets import holds_secret, redacted_text, scrub, split_userinfo, strip_userinfo
from ls.utils.errors import LsError
from ls.utils.io import atomic_write_text, file_lock
from ls.utils.telemetry import configure_telemetry

_log = logging.getLogger(__name__)

#: Store used when neither the config nor the environment names one: what ``mlflow ui`` opens by default.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "ls"
#: Per folder: which MLflow run mirrors its record in which store, and how far it is synced.
STATE_FILE = "mlflow.json"
_LOCK_FILE = ".mlflow.lock"
#: MLflow caps one log_batch call at 1000 metrics / 100 params / 100 tags.
_BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}
_MAX_PARAM_CHARS = 6000


class TrackingError(LsError, RuntimeError):
    """The tracking store cannot be used (wrong URI, unreachable server, rejected credentials)."""


# =================================================================================================
# Environment: telemetry off, short HTTP timeouts
# =================================================================================================
def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


_HTTP_ENV_WRITTEN: dict[str, str] = {}


def _apply_http_env(settings: TrackingSettings) -> None:
    """Short MLflow HTTP timeouts, no MLflow-level retries (the mirror retries itself), and no "View run" lines
    printed by MLflow at each run's end (ls says once where the runs are). A value the user set is kept: only
    values this module wrote are updated."""
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(settings.http_timeout_s))),
              "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    for key, value in wanted.items():
        current = os.environ.get(key)
        if current is None or current == _HTTP_ENV_WRITTEN.get(key):
            os.environ[key] = value
            _HTTP_ENV_WRITTEN[key] = value


# =================================================================================================
# Settings
# =================================================================================================
@dataclass(frozen=True)
class TrackingSettings:
    """Where the mirror goes and what a store that is away may cost a run.

    One failed call costs at most ``http_timeout_s`` (a refused connection is retried ``attempts`` times
    ``backoff_s`` apart, a timeout is not); after a failed sync the next waits ``retry_interval_s`` (doubling
    up to ``max_retry_interval_s``), starts with a ``probe_timeout_s`` health probe, and none is made once
    failures have cost ``max_stall_s`` in all, until the run's end. A sync during training stops after
    ``sync_budget_s`` and goes on at the next event.
    """

    tracking_uri: str
    experiment_name: str = "ls"
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    http_timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: float = 0.25
    retry_interval_s: float = 20.0
    max_retry_interval_s: float = 300.0
    probe_timeout_s: float = 2.0
    max_stall_s: float = 30.0
    sync_budget_s: float = 10.0

    @property
    def is_remote(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    @property
    def safe_uri(self) -> str:
        """The tracking URI without any ``user:password@`` part (for messages and ``mlflow.json``)."""
        return strip_userinfo(self.tracking_uri)

    @property
    def store(self) -> str:
        """The store's key in ``mlflow.json``: the safe URI with local paths made absolute."""
        return absolute_store_uri(self.safe_uri)

    def secrets(self) -> list[str | None]:
        return [self.password, os.environ.get("MLFLOW_TRACKING_TOKEN")]

    def replace(self, **changes: Any) -> TrackingSettings:
        return dataclasses.replace(self, **changes)


_SETTINGS_KEYS = ("tracking_uri", "experiment_name", "tracking_username", "tracking_password")


def resolve_settings(mlflow_section: dict[str, Any] | None = None,
                     mlflow_yaml: str | Path | None = None) -> TrackingSettings:
    """Merge ``--mlflow-config`` (flat YAML), the config's ``mlflow`` section (a plain dict) and ``MLFLOW_*``
    variables; empty values count as unset. Credentials written into the URI (``http://user:pw@host``) become
    the username/password (keys given explicitly win), so that no URI ls prints or stores holds them."""
    values = configured_values(mlflow_section, mlflow_yaml)
    env = os.environ
    uri = str(values.get("tracking_uri") or env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)
    uri, uri_user, uri_password = split_userinfo(uri)
    return TrackingSettings(
        tracking_uri=uri,
        experiment_name=str(values.get("experiment_name") or env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT),
        username=_opt_str(values.get("tracking_username") or env.get("MLFLOW_TRACKING_USERNAME") or uri_user),
        password=_opt_str(values.get("tracking_password") or env.get("MLFLOW_TRACKING_PASSWORD") or uri_password),
    )


def configured_values(mlflow_section: dict[str, Any] | None = None,
                      mlflow_yaml: str | Path | None = None) -> dict[str, Any]:
    """The keys the config section and the YAML file set (the file wins)."""
    values = {k: v for k, v in (mlflow_section or {}).items() if k in _SETTINGS_KEYS and v not in (None, "")}
    if mlflow_yaml is not None:
        values.update({k: v for k, v in read_mlflow_yaml(mlflow_yaml).items() if v not in (None, "")})
    return values


def read_mlflow_yaml(path: str | Path) -> dict[str, Any]:
    """The flat credentials file; a top-level ``mlflow:`` section is accepted too. An unknown key is an error."""
    from ls.config import ConfigError
    from ls.config.loader import read_yaml

    data = read_yaml(path)
    if set(data) == {"mlflow"} and isinstance(data["mlflow"], dict):
        data = data["mlflow"]
    unknown = sorted(set(data) - set(_SETTINGS_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {path}; known keys: {', '.join(_SETTINGS_KEYS)}")
    return data


def _opt_str(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def absolute_store_uri(uri: str) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db``; ``mlruns`` / ``file:rel`` -> absolute ``file:``."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:" and not path.startswith("/"):
            return "sqlite:///" + str(Path(path).resolve())
        return uri
    if uri.startswith("file:"):
        return Path(re.sub(r"^file:(//)?", "", uri)).resolve().as_uri()
    if "://" not in uri:  # a plain directory (file store)
        return Path(uri).resolve().as_uri()
    return uri


def open_hint(settings: TrackingSettings, *, run_id: str | None = None, experiment_id: str | None = None) -> str:
    """How to look at the runs: a URL for a tracking server, an ``mlflow ui`` command with absolute paths for
    a local store."""
    if settings.is_remote:
        base = strip_userinfo(settings.tracking_uri, "").rstrip("/")
        if run_id and experiment_id:
            return f"open {base}/#/experiments/{experiment_id}/runs/{run_id} in a browser"
        return f"open {base} in a browser"
    if settings.tracking_uri.startswith("databricks"):
        return "open the experiment in your Databricks workspace"
    return f"mlflow ui --backend-store-uri {shlex.quote(settings.store)}"


def sync_command(folder: str | Path) -> str:
    """The exact shell command that syncs ``folder`` (and every record below it) later."""
    python = shlex.quote(sys.executable or "python")
    return f"{python} -m ls.tracking sync {shlex.quote(str(Path(folder).resolve()))}"


# =================================================================================================
# The store
# =================================================================================================
_CLIENTS: dict[tuple[str, str | None], Any] = {}


def client_for(settings: TrackingSettings) -> Any:
    """An ``MlflowClient`` for the store (one per store and user in this process). A new SQLite store is
    created once, under a lock on its folder (made first when it does not exist yet, as MLflow would): MLflow's
    table creation races when several processes start on a store that does not exist yet."""
    key = (settings.tracking_uri, settings.username)
    if key in _CLIENTS:
        return _CLIENTS[key]
    configure_telemetry()
    _apply_http_env(settings)
    from mlflow.tracking import MlflowClient

    db = _sqlite_path(settings.tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(db.parent, wait_s=120):
            client = MlflowClient(tracking_uri=settings.tracking_uri)
            client.search_experiments(max_results=1)  # creates and migrates a new store, inside the lock
    else:
        client = MlflowClient(tracking_uri=settings.tracking_uri)
    _CLIENTS[key] = client
    return client


_CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@contextlib.contextmanager
def credentials_for(settings: TrackingSettings) -> Iterator[None]:
    """MLflow reads a server's basic-auth credentials from these variables at each request: while the block
    runs they hold exactly ``settings``' (none for a store given none), so that one store's credentials never
    reach another store's host; afterwards they are as they were."""
    before = {key: os.environ.get(key) for key in _CREDENTIAL_ENV}
    try:
        for key, value in zip(_CREDENTIAL_ENV, (settings.username, settings.password)):
            _set_env(key, value)
        yield
    finally:
        for key, value in before.items():
            _set_env(key, value)


def _set_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):]
    return None if not path or path == ":memory:" else Path(path).resolve()


def check_connection(settings: TrackingSettings) -> str:
    """Reach the store and get or create the experiment; its id. Raises :class:`TrackingError` naming the URI
    and what to check, before any training."""
    try:
        with credentials_for(settings):
            return experiment_id(client_for(settings), settings.experiment_name)
    except Exception as exc:  # noqa: BLE001 - MlflowException, requests, sqlalchemy errors...
        if _is_auth_failure(exc):
            why = ("the server rejected the credentials; check tracking_username/tracking_password in the mlflow "
                   "config or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD")
        else:
            why = "the tracking store is unreachable or invalid; check tracking_uri / MLFLOW_TRACKING_URI"
        _CLIENTS.pop((settings.tracking_uri, settings.username), None)
        raise TrackingError(f"MLflow tracking at {settings.safe_uri!r} cannot be used: {why}. "
                            f"({scrub(_first_line(exc), settings.secrets())})") from None


def experiment_id(client: Any, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it just now
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _http_status(exc: BaseException) -> int | None:
    get_status = getattr(exc, "get_http_status_code", None)
    if callable(get_status) and type(exc).__module__.startswith("mlflow"):
        with contextlib.suppress(Exception):
            return int(get_status())
    return None


def _is_auth_failure(exc: BaseException) -> bool:
    if _http_status(exc) in (401, 403):
        return True
    return bool(re.search(r"\b(Unauthorized|Forbidden|PERMISSION_DENIED|UNAUTHENTICATED)\b", str(exc)))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    cur: BaseException | None = exc
    for _ in range(12):
        if cur is None:
            return
        yield cur
        cur = cur.__cause__ or cur.__context__


def failure_kind(exc: BaseException) -> str:
    """``rejected``: the store answered and refused this record (a 4xx other than auth/rate limit): skip it;
    ``timeout``: no answer in time (a hung server): do not retry; ``transient``: anything else: retry."""
    status = _http_status(exc)
    if status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429):
        return "rejected"
    if any(isinstance(e, TimeoutError) or "Timeout" in type(e).__name__ or "timed out" in str(e).lower()
           for e in _chain(exc)):
        return "timeout"
    return "transient"


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _call(fn: Callable[[], Any], settings: TrackingSettings) -> Any:
    """``fn()``, retried with exponential back-off on a transient failure (not after a timeout or a refusal)."""
    for i in range(max(1, settings.attempts)):
        t0 = time.monotonic()
        try:
            return fn()
        except Exception as exc:
            slow = time.monotonic() - t0 >= 0.8 * settings.http_timeout_s
            if failure_kind(exc) != "transient" or slow or i == max(1, settings.attempts) - 1:
                raise
            time.sleep(settings.backoff_s * 2**i)
    return None  # pragma: no cover


def reachable(settings: TrackingSettings) -> bool:
    """A quick health probe of a tracking server (``probe_timeout_s``); local stores are always there."""
    if not settings.is_remote:
        return True
    import requests

    headers, auth = {}, None
    if settings.username and settings.password:
        auth = (settings.username, settings.password)
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
    verify: bool | str = not _truthy(os.environ.get("MLFLOW_TRACKING_INSECURE_TLS"))
    if os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    try:
        resp = requests.get(settings.tracking_uri.rstrip("/") + "/health", auth=auth, headers=headers,
                            timeout=settings.probe_timeout_s, verify=verify)
    except Exception:  # noqa: BLE001 - any failure means: still away
        return False
    # Any answer but a 5xx means something serves (a proxy may not route /health); the sync then tells.
    return resp.status_code < 500


# =================================================================================================
# The per-folder state: which run, how far
# =================================================================================================
def read_state(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``{store: {"experiment_name", "experiment_id", "run_id", "synced"}}`` of ``folder`` ({} if none)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TrackingError(f"{path}: not a readable mirror state file ({exc})") from None
    stores = data.get("stores") if isinstance(data, dict) else None
    if not isinstance(stores, dict):
        raise TrackingError(f"{path}: not a readable mirror state file (no 'stores' mapping)")
    return stores


def _write_state(folder: Path, stores: dict[str, dict[str, Any]]) -> None:
    atomic_write_text(folder / STATE_FILE, json.dumps({"stores": stores}, indent=2) + "\n")


def stores_of(folder: str | Path) -> list[str]:
    """The stores ``folder``'s record is meant for (where its runs wanted to go)."""
    return list(read_state(folder))


# =================================================================================================
# Sync
# =================================================================================================
@dataclass
class SyncReport:
    """What one sync of one folder did."""

    folder: Path
    store: str
    run_id: str | None = None
    uploaded: int = 0
    rejected: int = 0
    remaining: int = 0
    created: bool = False
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.remaining == 0

    def describe(self) -> str:
        if self.error is None and not self.uploaded and not self.created and not self.remaining:
            return f"{self.folder}: already in run {self.run_id} at {self.store}; nothing to upload"
        text = f"{self.folder}: uploaded {self.uploaded} event(s) into run {self.run_id} at {self.store}"
        if self.created:
            text += " (created now)"
        if self.rejected:
            text += f"; {self.rejected} event(s) rejected by the store (see warnings)"
        if self.error:
            text += f"; stopped with {self.remaining} event(s) left: {self.error}"
        elif self.remaining:
            text += f"; {self.remaining} event(s) left for the next sync"
        return text


def find_records(path: str | Path) -> list[Path]:
    """Folders holding a record: ``path`` itself and every folder below it, parents before children."""
    path = Path(path)
    found = sorted({p.parent for p in path.rglob(EVENTS_FILE)} | ({path} if (path / EVENTS_FILE).is_file() else set()),
                   key=lambda p: (len(p.parts), str(p)))
    return found


def sync(path: str | Path, settings: TrackingSettings, *, explicit_store: bool = False,
         explicit_experiment: bool = False) -> list[SyncReport]:
    """Sync every record in ``path`` (a run folder, a study or group folder, a whole checkpoint tree). Each goes
    to the store(s) recorded in it, with ``settings``' credentials, or to ``settings``' store when
    ``explicit_store`` (or when it names none); runs not created yet go to the recorded experiment unless
    ``explicit_experiment``."""
    folders = find_records(path)
    if not folders:
        raise TrackingError(f"no run record (a folder with {EVENTS_FILE}) in {path}")
    reports = []
    for folder in folders:
        recorded = stores_of(folder)
        # A recorded store is named without credentials: the one these settings name is reached with their URI
        # (a database URI keeps its user:password@, which the record never holds). Without an explicit store
        # the settings' credentials name no store (the environment's, or a file's without a URI): they go with
        # the recorded URI, as MLflow itself would send them.
        targets = [settings] if explicit_store or not recorded else [
            settings.replace(tracking_uri=settings.tracking_uri if uri == settings.store else uri,
                             experiment_name=settings.experiment_name if explicit_experiment
                             else read_state(folder)[uri].get("experiment_name") or settings.experiment_name)
            for uri in recorded]
        for target in targets:
            reports.append(sync_folder(folder, target))
    return reports


def sync_folder(folder: str | Path, settings: TrackingSettings, *, budget_s: float | None = None,
                parents_seen: Sequence[Path] = ()) -> SyncReport:
    """Upload the events of ``folder`` that ``settings``' store lacks, in order; create its run first (nested
    under the parent record's run, synced first when needed). Stops at the first failure (the rest waits for
    the next sync) or after ``budget_s`` seconds; an event the store refuses is skipped with a warning."""
    folder = Path(folder).resolve()
    report = SyncReport(folder, settings.store)
    with file_lock(folder / _LOCK_FILE, wait_s=10) as locked, credentials_for(settings):
        if not locked:
            report.error = "another process is syncing this folder"
            return report
        stores = read_state(folder)
        state = stores.setdefault(settings.store, {"experiment_name": settings.experiment_name})
        if state.get("run_id") is None and state.get("experiment_name") != settings.experiment_name:
            state.update(experiment_name=settings.experiment_name, experiment_id=None)
        lines = EventLog(folder).lines()
        report.run_id = state.get("run_id")
        cursor = int(state.get("synced", 0))
        t0 = time.monotonic()
        try:
            client = client_for(settings)
            if state.get("run_id") is None:
                state.setdefault("experiment_id", None)
                if state["experiment_id"] is None:
                    state["experiment_id"] = _call(lambda: experiment_id(client, settings.experiment_name), settings)
                start = next((e for e in map(parse_event, lines) if e and e.get("event") == "start"), None)
                if start is None:
                    raise TrackingError("the record starts with no 'start' event")
                parent_id = _parent_run_id(folder, start.get("parent"), settings, parents_seen)
                tags = dict(start.get("tags") or {})
                if parent_id is not None:
                    tags["mlflow.parentRunId"] = parent_id
                run = _call(lambda: client.create_run(state["experiment_id"], start_time=int(start["time"] * 1000),
                                                      tags=tags, run_name=start.get("name")), settings)
                state["run_id"] = report.run_id = run.info.run_id
                report.created = True
                _write_state(folder, stores)
            while cursor < len(lines):
                if budget_s is not None and time.monotonic() - t0 > budget_s:
                    break
                batch, end = _next_batch(lines, cursor)
                try:
                    _send(client, state["run_id"], batch, folder, settings)
                    report.uploaded += len(batch)
                except Exception as exc:
                    if failure_kind(exc) != "rejected":
                        raise
                    report.rejected += len(batch)
                    warnings.warn(f"MLflow rejected event(s) {cursor + 1}-{end} of {folder / EVENTS_FILE} "
                                  f"({scrub(_first_line(exc), settings.secrets())}); skipped", stacklevel=2)
                cursor = end
                state["synced"] = cursor
                _write_state(folder, stores)
        except Exception as exc:  # noqa: BLE001 - the store is away or broken: the rest waits for the next sync
            report.error = scrub(_first_line(exc), settings.secrets())
        report.remaining = len(lines) - cursor
    return report


def _parent_run_id(folder: Path, parent: str | None, settings: TrackingSettings,
                   seen: Sequence[Path]) -> str | None:
    if not parent:
        return None
    parent_folder = (folder / parent).resolve()
    if parent_folder in seen or parent_folder == folder:
        raise TrackingError(f"{folder}: its record's parent chain loops through {parent_folder}")
    state = read_state(parent_folder).get(settings.store, {})
    if state.get("run_id") is None:
        report = sync_folder(parent_folder, settings, parents_seen=[*seen, folder])
        if report.run_id is None:
            raise TrackingError(f"the parent record {parent_folder} is not in the store yet ({report.error})")
        return report.run_id
    return state["run_id"]


def _next_batch(lines: list[str], cursor: int) -> tuple[list[dict[str, Any]], int]:
    """The events from ``cursor`` that go in one call: consecutive metrics, params or tags events up to
    MLflow's batch limits, or one other event. Unreadable lines (cut by a crash) ride along and are dropped.
    A param logged again ends the batch: merged into one call, its later value would silently win, where the
    store (params are immutable) refuses it with a warning."""
    first = parse_event(lines[cursor]) or {}
    kind = first.get("event")
    batch, i, size = [first], cursor + 1, _size(first)
    params = set(first.get("params") or {}) if kind == "params" else set()
    if kind in _BATCH_LIMITS:
        while i < len(lines):
            nxt = parse_event(lines[i])
            if nxt is None:
                i += 1
                continue
            if nxt.get("event") != kind or size + _size(nxt) > _BATCH_LIMITS[kind]:
                break
            if kind == "params":
                if params & set(nxt.get("params") or {}):
                    break
                params |= set(nxt.get("params") or {})
            batch.append(nxt)
            size += _size(nxt)
            i += 1
    return batch, i


def _size(event: dict[str, Any]) -> int:
    return len(event.get(str(event.get("event")), {}) or {}) if event.get("event") in _BATCH_LIMITS else 1


def _send(client: Any, run_id: str, batch: list[dict[str, Any]], folder: Path, settings: TrackingSettings) -> None:
    from mlflow.entities import Metric, Param, RunTag

    kind = batch[0].get("event")
    if kind in _BATCH_LIMITS:
        if kind == "metrics":
            items = [Metric(_metric_key(k), float(v), int(e["time"] * 1000), int(e.get("step") or 0))
                     for e in batch for k, v in e["metrics"].items()]
        elif kind == "params":
            merged = {str(k): _param_value(v) for e in batch for k, v in e["params"].items()}
            items = [Param(k, v) for k, v in merged.items()]
        else:
            merged = {str(k): str(v) for e in batch for k, v in e["tags"].items()}
            items = [RunTag(k, v) for k, v in merged.items()]
        size = _BATCH_LIMITS[kind]
        for i in range(0, len(items), size):  # one event may hold more than one call may carry
            chunk = items[i:i + size]
            _call(lambda chunk=chunk: client.log_batch(run_id, **{kind: chunk}), settings)
    elif kind == "artifact":
        event = batch[0]
        with contextlib.ExitStack() as stack:
            path = _safe_artifact(folder / event["path"], settings, stack)
            if path is not None:
                _call(lambda: client.log_artifact(run_id, str(path), event.get("artifact_path")), settings)
    elif kind == "resume":
        _call(lambda: client.update_run(run_id, status="RUNNING"), settings)
    elif kind == "end":
        event = batch[0]
        _call(lambda: client.set_terminated(run_id, status=event["status"], end_time=int(event["time"] * 1000)),
              settings)
    # "start" (the run exists by now) and unreadable lines: nothing to send


def _safe_artifact(path: Path, settings: TrackingSettings, stack: contextlib.ExitStack) -> Path | None:
    """``path``, or a redacted copy of a text file that holds the tracking password; None (with a warning) for
    a missing file or a binary one that holds it."""
    if not path.exists():
        warnings.warn(f"artifact {path} is gone; not uploaded", stacklevel=3)
        return None
    if path.is_dir() or not holds_secret(path, settings.secrets()):
        return path
    text = redacted_text(path, settings.secrets())
    if text is None:
        warnings.warn(f"{path} contains the MLflow tracking password; NOT uploaded to MLflow", stacklevel=3)
        return None
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ls-redacted-"))) / path.name
    tmp.write_text(text, encoding="utf-8")
    warnings.warn(f"{path} contains the MLflow tracking password; uploading a redacted copy", stacklevel=3)
    return tmp


def _param_value(v: Any) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."


def _metric_key(k: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / : -- device/site names may carry other characters.
    return "".join(c if (c.isalnum() or c in "_-. /:") else "_" for c in str(k))


# =================================================================================================
# The live mirror of a run
# =================================================================================================
class Mirror:
    """Syncs records to one store while they are written; what a store that is away may cost is bounded (see
    :class:`TrackingSettings`). Shared by the records of one process (a group's parent and its members), so
    that they back off together."""

    def __init__(self, settings: TrackingSettings, *, experiment_id: str | None = None) -> None:
        self.settings = settings
        self.experiment_id = experiment_id
        self.down = False
        self.stall_s = 0.0
        self._next_try = 0.0
        self._interval = 0.0
        self._warned: set[Path] = set()
        self.unsynced: dict[Path, str] = {}  # folder -> the command that syncs it, for records left behind

    def secrets(self) -> list[str | None]:
        return self.settings.secrets()

    def attach(self, folder: Path) -> None:
        """``folder``'s record is meant for this store: say so in its ``mlflow.json``."""
        folder = Path(folder).resolve()
        stores = read_state(folder)
        if self.settings.store not in stores:
            stores[self.settings.store] = {"experiment_name": self.settings.experiment_name,
                                           "experiment_id": self.experiment_id}
            _write_state(folder, stores)

    def adopt(self, folder: Path, run_id: str) -> None:
        """A run recorded before records existed (its checkpoint names its MLflow run): mirror into that run."""
        folder = Path(folder).resolve()
        stores = read_state(folder)
        entry = stores.setdefault(self.settings.store, {"experiment_name": self.settings.experiment_name,
                                                        "experiment_id": self.experiment_id})
        if entry.get("run_id") is None:
            entry.update(run_id=run_id, synced=0)
            _write_state(folder, stores)

    def run_id(self, folder: Path) -> str | None:
        return read_state(folder).get(self.settings.store, {}).get("run_id")

    def pending(self, folder: Path) -> int:
        state = read_state(folder).get(self.settings.store, {})
        return len(EventLog(folder).lines()) - int(state.get("synced", 0)) if state.get("run_id") else \
            len(EventLog(folder).lines())

    def poke(self, folder: Path, final: bool = False) -> SyncReport | None:
        """Sync ``folder`` now if the store is not known to be away (or ``final``: the run's last attempt)."""
        folder = Path(folder).resolve()
        now = time.monotonic()
        if not final and (now < self._next_try or self.stall_s >= self.settings.max_stall_s):
            return None
        t0 = time.monotonic()
        if self.down and not reachable(self.settings):
            report = SyncReport(folder, self.settings.store, error="the tracking server does not answer")
        else:
            report = sync_folder(folder, self.settings, budget_s=None if final else self.settings.sync_budget_s)
        if report.error is not None:
            self.stall_s += time.monotonic() - t0
            self._interval = min(max(2 * self._interval, self.settings.retry_interval_s),
                                 self.settings.max_retry_interval_s)
            self._next_try = time.monotonic() + self._interval
            if not self.down or folder not in self._warned:
                self._warned.add(folder)
                warnings.warn(f"MLflow at {self.settings.safe_uri} is out of reach ({report.error}); the run goes "
                              f"on and its record in {folder} is synced when the store is back", stacklevel=3)
            self.down = True
        elif self.down:
            self.down, self._interval, self._next_try = False, 0.0, 0.0
            _log.warning("MLflow at %s is back: synced %d event(s) of %s", self.settings.safe_uri,
                         report.uploaded, folder)
        if final:
            if report.complete:
                self.unsynced.pop(folder, None)
            else:
                self.unsynced[folder] = sync_command(folder)
                print(f"MLflow: {self.settings.safe_uri} is out of reach; {folder} keeps the run's record. Sync "
                      f"it when the store is back with:\n  {self.unsynced[folder]}", file=sys.stderr, flush=True)
        return report

    def mark_unsynced(self, folder: Path) -> str:
        """``folder`` keeps events the store lacks and this process makes no further attempt (its last sync was
        interrupted, or events came after it): listed as unsynced; returns the command that syncs it."""
        folder = Path(folder).resolve()
        self.unsynced[folder] = sync_command(folder)
        return self.unsynced[folder]

    def open_hint(self, folder: Path | None = None) -> str:
        return open_hint(self.settings, run_id=None if folder is None else self.run_id(folder),
                         experiment_id=self.experiment_id)


def start_mirror(mlflow_section: dict[str, Any] | None = None, mlflow_yaml: str | Path | None = None) -> Mirror:
    """The mirror of this process: settings resolved and the store checked (a bad URI or bad credentials fail
    here, before any data is built)."""
    settings = resolve_settings(mlflow_section, mlflow_yaml)
    return Mirror(settings, experiment_id=check_connection(settings))


__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "STATE_FILE",
    "Mirror",
    "SyncReport",
    "TrackingError",
    "TrackingSettings",
    "absolute_store_uri",
    "check_connection",
    "client_for",
    "credentials_for",
    "find_records",
    "open_hint",
    "reachable",
    "read_mlflow_yaml",
    "read_state",
    "resolve_settings",
    "start_mirror",
    "sync",
    "sync_command",
    "sync_folder",
]
