"""Experiment tracking: a thin layer over MLflow that never loses a metric and never stalls training for long.

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

A wrong URI or wrong credentials fail in :meth:`Tracker.check_connection`, before any training.

Failures during the run heal themselves:

* each call is tried a few times with a short back-off (``TrackingSettings.attempts`` / ``backoff_s``); a
  call that times out (a hung server) is not retried;
* after that the tracker is *offline*: every record is appended, in order, to a local buffer
  (``<buffer_dir>/mlflow_buffer/<run>/``: ``buffer.json``, ``records.jsonl``, ``artifacts/``) and training
  goes on. ``buffer_dir`` is the run's own folder, set by the application (``Tracker(settings,
  buffer_dir=run_dir)`` or :meth:`Tracker.set_buffer_dir`); without one it is ``settings.fallback_dir``;
* at later calls, at most one probe every ``probe_interval_s`` (doubling while the server stays away),
  the tracker checks the server; when it is back, the buffered records are replayed in order into the run
  and logging goes online again. A run created while the server was away is created at that moment;
* a hung server costs a bounded total stall: a short HTTP timeout per call, no retry after a timeout, and
  once failures have cost ``max_stall_s`` seconds in total the tracker stops probing until ``end_run``;
* :meth:`Tracker.end_run` makes a last attempt (probe, replay, terminate). If the server is still away it
  prints the exact command that uploads the buffer later: ``python -m ls.tracking replay DIR``
  (see :func:`replay_buffer`). A buffer remembers how far it was replayed, so nothing is uploaded twice.

Privacy: ``import ls.engine.tracking`` turns MLflow's telemetry off (``MLFLOW_DISABLE_TELEMETRY=true``)
unless ``LS_MLFLOW_TELEMETRY=1`` opts in or the user set ``MLFLOW_DISABLE_TELEMETRY`` (or ``DO_NOT_TRACK``)
themselves; see :func:`configure_telemetry`. Credentials never go into params, tags, buffer files or
messages: :func:`redact_params` masks credential-like keys, the password is scrubbed from every value,
warning and URI, and an artifact that contains it is redacted (text) or refused (binary).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import mmap
import os
import re
import shlex
import shutil
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ls.utils.errors import LsError

_log = logging.getLogger(__name__)

#: Store used when neither the config nor the environment names one: what ``mlflow ui`` opens by default.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "ls"
#: Sub-folder of a run folder that holds the run's offline buffer(s).
BUFFER_FOLDER = "mlflow_buffer"
#: Set to 1/true to let MLflow send its usage telemetry (off by default: no network at run time).
TELEMETRY_OPT_IN_ENV = "LS_MLFLOW_TELEMETRY"
#: Replaces credentials in params, tags, messages and redacted artifacts.
REDACTED = "***"
#: MLflow caps one log_batch call at 1000 metrics / 100 params / 100 tags.
_MAX_BATCH_METRICS = 1000
_MAX_BATCH_PARAMS = 100
_MAX_BATCH_TAGS = 100
_MAX_PARAM_CHARS = 6000
_META = "buffer.json"
_RECORDS = "records.jsonl"
_LOCK = "replay.lock"
_BUFFER_FORMAT = 1
_MIN_SECRET_CHARS = 4  # shorter "secrets" would be scrubbed out of unrelated text
_TEXT_SUFFIXES = {".yaml", ".yml", ".json", ".jsonl", ".txt", ".csv", ".tsv", ".md", ".log", ".cfg", ".ini",
                  ".toml", ".py", ".sh"}


# =================================================================================================
# Environment: telemetry off, short HTTP timeouts
# =================================================================================================
def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def configure_telemetry() -> bool:
    """Turn MLflow's usage telemetry off unless the user opted in; return True if it is off.

    MLflow 3 starts a telemetry client at ``import mlflow`` (and contacts its config host, a DNS lookup even
    with a local sqlite store) unless ``MLFLOW_DISABLE_TELEMETRY`` is true or ``DO_NOT_TRACK=true``.
    Here ``MLFLOW_DISABLE_TELEMETRY=true`` is set unless ``LS_MLFLOW_TELEMETRY=1`` (opt in) or the user set
    ``MLFLOW_DISABLE_TELEMETRY`` explicitly (respected either way). If mlflow was imported earlier with
    telemetry on and ls turns it off, its telemetry client is stopped.
    """
    if not _truthy(os.environ.get(TELEMETRY_OPT_IN_ENV)) and "MLFLOW_DISABLE_TELEMETRY" not in os.environ:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    off = _truthy(os.environ.get("MLFLOW_DISABLE_TELEMETRY")) or _truthy(os.environ.get("DO_NOT_TRACK"))
    if off and "mlflow.telemetry" in sys.modules:  # imported before ls could set the variable
        with contextlib.suppress(Exception):
            from mlflow.telemetry import get_telemetry_client, set_telemetry_client

            client = get_telemetry_client()
            if client is not None:
                client.flush(terminate=True)
                set_telemetry_client()  # re-reads the variables: no client
    return off


configure_telemetry()  # before anything in ls can import mlflow

_HTTP_ENV_WRITTEN: dict[str, str] = {}


def _apply_http_env(settings: TrackingSettings) -> None:
    """Short MLflow HTTP timeouts, no MLflow-level retries (the tracker retries itself).

    MLflow reads these variables at every request. A value the user set is kept (only values this module
    wrote itself are updated), so ``MLFLOW_HTTP_REQUEST_TIMEOUT=120`` still means what it says.
    """
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(settings.http_timeout_s))),  # MLflow wants an int
    }
    for key, value in wanted.items():
        current = os.environ.get(key)
        if current is None or current == _HTTP_ENV_WRITTEN.get(key):
            os.environ[key] = value
            _HTTP_ENV_WRITTEN[key] = value


# =================================================================================================
# Settings
# =================================================================================================
class TrackingError(LsError, RuntimeError):
    """The tracking backend cannot be used (wrong URI, unreachable server, rejected credentials)."""


@dataclass(frozen=True)
class TrackingSettings:
    """Resolved tracking settings (config file > mlflow config section > environment > default).

    The fields after ``fallback_dir`` tune failure handling; their defaults bound what a dead or hung server
    can cost a run: at most ``http_timeout_s`` for the call that meets it, then probes of at most
    ``probe_timeout_s`` no more often than every ``probe_interval_s`` (doubling up to
    ``max_probe_interval_s``) and none once failures have cost ``max_stall_s`` in total, plus one last
    probe at ``end_run``.
    """

    tracking_uri: str
    experiment_name: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Where buffers go when the application sets no run folder (relative to the working directory).
    fallback_dir: str = "mlflow_fallback"
    http_timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: float = 0.25
    probe_interval_s: float = 20.0
    max_probe_interval_s: float = 300.0
    probe_timeout_s: float = 2.0
    max_stall_s: float = 30.0

    @property
    def is_remote(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    @property
    def safe_uri(self) -> str:
        """The tracking URI without any ``user:password@`` part (for messages and buffer files)."""
        return strip_userinfo(self.tracking_uri)


def resolve_settings(mlflow_cfg: Any = None, mlflow_yaml: str | Path | None = None) -> TrackingSettings:
    """Merge ``--mlflow-config`` (flat YAML), the config's ``mlflow`` section and ``MLFLOW_*`` env vars.

    ``mlflow_cfg`` is an ``ls.engine.config.MlflowConfig`` (or None). A key given in the YAML file wins over
    the config section, which wins over the environment; empty values (YAML null) count as unset, so a
    missing password never crashes (fix of 11.2-15).
    """
    values = _configured_values(mlflow_cfg, mlflow_yaml)
    env = os.environ
    uri = str(values.get("tracking_uri") or env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)
    # Credentials written into the URI (http://user:password@host) become the username/password (the keys
    # given explicitly win), so that the URI MLflow prints and ls logs holds none.
    uri, uri_user, uri_password = _split_userinfo(uri)
    return TrackingSettings(
        tracking_uri=uri,
        experiment_name=str(
            values.get("experiment_name") or env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        ),
        username=_opt_str(values.get("tracking_username") or env.get("MLFLOW_TRACKING_USERNAME") or uri_user),
        password=_opt_str(values.get("tracking_password") or env.get("MLFLOW_TRACKING_PASSWORD") or uri_password),
        fallback_dir=str(values.get("fallback_dir") or "mlflow_fallback"),
    )


def _split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """``http://user:pw@host/x`` -> (``http://host/x``, ``user``, ``pw``), percent-decoded; other URIs as they are."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri, None, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    return (urlunsplit(parts._replace(netloc=host)), unquote(user) or None,
            unquote(password) if password else None)


def _configured_values(mlflow_cfg: Any = None, mlflow_yaml: str | Path | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if mlflow_cfg is not None:
        from ls.config import to_dict

        values.update({k: v for k, v in to_dict(mlflow_cfg).items() if v not in (None, "")})
    if mlflow_yaml is not None:
        values.update({k: v for k, v in _read_mlflow_yaml(mlflow_yaml).items() if v not in (None, "")})
    return values


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
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in {path}; known keys: {', '.join(sorted(known))}"
        )
    return data


# =================================================================================================
# Secrets
# =================================================================================================
#: Keys that look like credentials (case-insensitive, anywhere in the key). ``tokens``/``tokenizer`` are
#: model words, not secrets; ``partial_credit`` is a metric option: neither matches.
_CREDENTIAL_KEY = re.compile(
    r"password|passwd|secret|credential|username|api[_-]?key|access[_-]?key|private[_-]?key|token(?!s|iz)",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def is_credential_key(key: str) -> bool:
    """True for keys such as ``mlflow.tracking_password``, ``hf_token``, ``aws_secret_access_key``."""
    return bool(_CREDENTIAL_KEY.search(str(key)))


def strip_userinfo(text: str, replacement: str = REDACTED + "@") -> str:
    """``text`` with the ``user:password@`` part of every URI in it replaced by ``replacement``."""
    return _USERINFO.sub(lambda m: m.group("scheme") + replacement, text)


def redact_params(params: Mapping[str, Any], secrets: Iterable[str | None] = ()) -> dict[str, Any]:
    """A copy of ``params`` that is safe to log: credential-like keys (:func:`is_credential_key`) get
    ``"***"`` (unset values stay as they are), ``user:password@`` is cut out of URIs in values, and any of
    ``secrets`` (e.g. the tracking password) is masked wherever it occurs in a string value."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if is_credential_key(key) and value not in (None, ""):
            out[key] = REDACTED
        elif isinstance(value, str):
            out[key] = _scrub(value, secrets)
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value, default=str)
            clean = _scrub(text, secrets)
            out[key] = value if clean == text else clean
        else:
            out[key] = value
    return out


def _secret_values(secrets: Iterable[str | None]) -> list[str]:
    return sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True)


def _scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    text = strip_userinfo(str(text))
    for secret in _secret_values(secrets):
        text = text.replace(secret, REDACTED)
    return text


def _file_contains(path: Path, needles: list[bytes]) -> bool:
    if not needles or path.stat().st_size == 0:
        return False
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return any(data.find(n) != -1 for n in needles)


# =================================================================================================
# Hints for the application
# =================================================================================================
def open_hint(
    settings: TrackingSettings, *, run_id: str | None = None, experiment_id: str | None = None
) -> str:
    """How to look at the runs: a URL to open for a tracking server, an ``mlflow ui`` command (absolute
    paths, valid from any directory) for a local store. Relative local paths are resolved against the
    current directory, i.e. call this from the process that tracked."""
    uri = settings.tracking_uri
    if settings.is_remote:
        base = strip_userinfo(uri, "").rstrip("/")
        if run_id and experiment_id:
            return f"open {base}/#/experiments/{experiment_id}/runs/{run_id} in a browser"
        return f"open {base} in a browser"
    if uri.startswith("databricks"):
        return "open the experiment in your Databricks workspace"
    store = _absolute_store_uri(uri)
    return f"mlflow ui --backend-store-uri {shlex.quote(strip_userinfo(store))}"


def _absolute_store_uri(uri: str) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db``; ``mlruns`` / ``file:rel`` -> absolute ``file:``."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:" and not path.startswith("/"):
            return "sqlite:///" + str(Path(path).resolve())
        return uri
    if uri.startswith("file:"):
        path = re.sub(r"^file:(//)?", "", uri)
        return Path(path).resolve().as_uri()
    if "://" not in uri:  # a plain directory (file store)
        return Path(uri).resolve().as_uri()
    return uri


def replay_command(buffer: str | Path) -> str:
    """The exact shell command that uploads ``buffer`` (a buffer or run folder) later."""
    python = shlex.quote(sys.executable or "python")
    return f"{python} -m ls.tracking replay {shlex.quote(str(Path(buffer).resolve()))}"


# =================================================================================================
# Failure classification and retries
# =================================================================================================
def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 12:
        yield cur
        cur = cur.__cause__ or cur.__context__
        seen += 1


def _failure_kind(exc: BaseException) -> str:
    """``rejected``: the server answered and refused this record (a 4xx other than auth/rate limit), so
    retrying or buffering cannot help; ``timeout``: no answer in time (hung server), do not retry;
    ``transient``: anything else (refused connection, 5xx, auth, database locked...): retry, then buffer."""
    status = _http_status(exc)
    if status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429):
        return "rejected"
    for e in _chain(exc):
        if isinstance(e, TimeoutError) or "Timeout" in type(e).__name__:
            return "timeout"
        if "timed out" in str(e).lower():
            return "timeout"
    return "transient"


def _http_status(exc: BaseException) -> int | None:
    get_status = getattr(exc, "get_http_status_code", None)
    if callable(get_status) and type(exc).__module__.startswith("mlflow"):
        with contextlib.suppress(Exception):
            return int(get_status())
    return None


def _is_auth_failure(exc: BaseException) -> bool:
    """The server answered 401/403 (by status, not by digits that may be part of a port or a run id)."""
    if _http_status(exc) in (401, 403):
        return True
    return bool(re.search(r"\b(Unauthorized|Forbidden|PERMISSION_DENIED|UNAUTHENTICATED)\b", str(exc)))


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


@dataclass
class _Link:
    """Health of the connection to one tracking store, shared by a run and its nested child runs."""

    down: bool = False
    next_probe: float = 0.0
    interval: float = 0.0
    stall_s: float = 0.0  # seconds lost to failed calls, back-off sleeps and failed probes
    failed_probes: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)


def _attempt(fn: Callable[[], Any], settings: TrackingSettings, link: _Link) -> BaseException | None:
    """Call ``fn`` up to ``settings.attempts`` times with exponential back-off; return the last failure.

    A ``rejected`` failure is returned at once (the caller drops the record), a timeout is not retried, and
    no retry happens once the run's stall budget is spent.
    """
    t0 = time.monotonic()
    for i in range(max(1, settings.attempts)):
        t_call = time.monotonic()
        try:
            fn()
            return None
        except Exception as exc:  # noqa: BLE001 -- MlflowException, requests/sqlalchemy errors, ...
            kind = _failure_kind(exc)
            slow = time.monotonic() - t_call >= 0.8 * settings.http_timeout_s
            last = i == max(1, settings.attempts) - 1
            if kind == "rejected":
                return exc
            over_budget = link.stall_s + (time.monotonic() - t0) >= settings.max_stall_s
            if kind == "timeout" or slow or last or over_budget:
                link.stall_s += time.monotonic() - t0
                return exc
            time.sleep(settings.backoff_s * (2**i))
    return None  # pragma: no cover


# =================================================================================================
# The on-disk buffer of one run
# =================================================================================================
class _Buffer:
    """``buffer.json`` (run identity + replay cursor), ``records.jsonl`` (one record a line, in order) and
    ``artifacts/<seq>/`` (copies of artifacts logged while offline). No credentials are ever written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._appended: int | None = None  # line count known to this (the only appending) process

    @property
    def meta_path(self) -> Path:
        return self.path / _META

    @property
    def records_path(self) -> Path:
        return self.path / _RECORDS

    def exists(self) -> bool:
        return self.meta_path.is_file()

    def read_meta(self) -> dict[str, Any]:
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: a file cut or overwritten
            raise TrackingError(f"{self.meta_path}: not a readable MLflow buffer file ({exc})") from exc
        if not isinstance(meta, dict):
            raise TrackingError(f"{self.meta_path}: not a readable MLflow buffer file (not a JSON object)")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.meta_path.with_name(f".{_META}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.meta_path)

    def create(self, meta: dict[str, Any]) -> None:
        if not self.exists():
            self.write_meta({"format": _BUFFER_FORMAT, "replayed": 0, "state": "pending", **meta})

    def lines(self) -> list[str]:
        if not self.records_path.is_file():
            return []
        return self.records_path.read_text(encoding="utf-8").splitlines()

    def count(self) -> int:
        return len(self.lines())

    def append(self, record: dict[str, Any]) -> int:
        self.path.mkdir(parents=True, exist_ok=True)
        seq = self.count() if self._appended is None else self._appended
        with self.records_path.open("a+", encoding="utf-8") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:  # a line cut by a crash must not swallow this record
                fh.seek(fh.tell() - 1)
                if fh.read(1) != "\n":
                    fh.write("\n")
            fh.write(json.dumps({"seq": seq, "time": time.time(), **record}) + "\n")
            fh.flush()
        self._appended = seq + 1
        return seq

    def pending(self) -> int:
        return max(0, self.count() - int(self.read_meta().get("replayed", 0))) if self.exists() else 0

    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        """Exclusive replay lock (released when the process dies); yields False if someone else holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        fh = (self.path / _LOCK).open("a")
        try:
            try:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # pragma: no cover -- Windows: no cross-process lock
                pass
            except OSError:
                yield False
                return
            yield True
        finally:
            fh.close()


def find_buffers(path: str | Path) -> list[Path]:
    """Buffer folders in ``path``: ``path`` itself if it is one, else every one below it (run folders,
    ``mlflow_buffer`` folders, a whole checkpoint tree or the default fallback folder)."""
    path = Path(path)
    if (path / _META).is_file():
        return [path]
    return sorted(p.parent for p in path.rglob(_META))


# =================================================================================================
# Replay (in process after a reconnection, and from ``python -m ls.tracking replay``)
# =================================================================================================
@dataclass
class ReplayReport:
    """What one replay of one buffer did."""

    buffer: Path
    run_id: str | None
    uploaded: int = 0
    rejected: int = 0
    remaining: int = 0
    ended: str | None = None
    error: str | None = None
    already: bool = False

    @property
    def complete(self) -> bool:
        return self.error is None and self.remaining == 0

    def describe(self, uri: str) -> str:
        if self.already:
            return f"{self.buffer}: already replayed into run {self.run_id} at {uri}; nothing to upload"
        text = f"{self.buffer}: uploaded {self.uploaded} record(s) into run {self.run_id} at {uri}"
        if self.rejected:
            text += f"; {self.rejected} record(s) rejected by the server (see warnings)"
        if self.ended:
            text += f"; run ended {self.ended}"
        if self.error:
            text += f"; stopped with {self.remaining} record(s) left: {self.error}"
        return text


def _send_record(client: Any, run_id: str, rec: dict[str, Any], base: Path) -> None:
    from mlflow.entities import Metric, Param, RunTag

    if "metrics" in rec:
        ts = int(rec.get("ts") or rec.get("time", time.time()) * 1000)
        items = [Metric(k, float(v), ts, int(rec.get("step") or 0)) for k, v in rec["metrics"].items()]
        for i in range(0, len(items), _MAX_BATCH_METRICS):
            client.log_batch(run_id, metrics=items[i : i + _MAX_BATCH_METRICS])
    elif "params" in rec:
        items = [Param(str(k), str(v)) for k, v in rec["params"].items()]
        for i in range(0, len(items), _MAX_BATCH_PARAMS):
            client.log_batch(run_id, params=items[i : i + _MAX_BATCH_PARAMS])
    elif "tags" in rec:
        items = [RunTag(str(k), str(v)) for k, v in rec["tags"].items()]
        for i in range(0, len(items), _MAX_BATCH_TAGS):
            client.log_batch(run_id, tags=items[i : i + _MAX_BATCH_TAGS])
    elif "artifact" in rec:
        client.log_artifact(run_id, str(base / rec["artifact"]), rec.get("artifact_path"))
    elif "resume" in rec:
        client.update_run(run_id, status="RUNNING")
    elif "end" in rec:
        end_time = rec.get("end_time")
        client.set_terminated(run_id, status=rec["end"], end_time=int(end_time) if end_time else None)


def _create_run(
    client: Any, spec: dict[str, Any], experiment_id: str | None, experiment_name: str | None
) -> str:
    if experiment_id is None:
        exp = client.get_experiment_by_name(experiment_name or DEFAULT_EXPERIMENT)
        experiment_id = exp.experiment_id if exp is not None else client.create_experiment(experiment_name)
    run = client.create_run(
        experiment_id,
        start_time=spec.get("start_time"),
        tags=spec.get("tags") or {},
        run_name=spec.get("run_name"),
    )
    return run.info.run_id


def _replay(
    buf: _Buffer,
    client: Any,
    settings: TrackingSettings,
    link: _Link,
    *,
    experiment_id: str | None = None,
    experiment_name: str | None = None,
    secrets: Iterable[str | None] = (),
) -> ReplayReport:
    """Upload the records of ``buf`` after its cursor, in order, moving the cursor after each one.

    A run that was never created is created in ``experiment_id``, else in the experiment named
    ``experiment_name`` (default: the recorded name). Call with the buffer's lock held. A record the server rejects is skipped (with a warning); a record
    that cannot be sent (server away again) stops the replay, to be continued later from that record.
    """
    meta = buf.read_meta()
    lines = buf.lines()
    cursor = int(meta.get("replayed", 0))
    report = ReplayReport(buf.path, meta.get("run_id"), remaining=max(0, len(lines) - cursor))
    if cursor >= len(lines):
        report.already = meta.get("state") == "replayed"
        return report
    for index in range(cursor, len(lines)):
        try:
            rec = json.loads(lines[index])
        except json.JSONDecodeError:
            warnings.warn(
                f"{buf.records_path}: line {index + 1} is not valid JSON (cut by a crash?); skipped",
                stacklevel=2,
            )
            rec = {}
        if "create" in rec and meta.get("run_id") is None:
            spec = rec["create"]
            holder: dict[str, str] = {}

            def make(spec=spec, holder=holder):
                holder["id"] = _create_run(
                    client, spec, experiment_id, experiment_name or meta.get("experiment_name")
                )

            err = _attempt(make, settings, link)
            if err is None:
                meta["run_id"] = report.run_id = holder["id"]
        elif meta.get("run_id") is None and rec:
            err = TrackingError("the buffer names no run and starts with no run-creation record")
        else:
            err = None if not rec or "create" in rec else _attempt(
                lambda rec=rec: _send_record(client, meta["run_id"], rec, buf.path), settings, link
            )
        if err is not None and _failure_kind(err) != "rejected":
            report.error = _scrub(_first_line(err), secrets)
            break
        if err is not None:
            report.rejected += 1
            warnings.warn(f"MLflow rejected buffered record {index + 1} of {buf.records_path} "
                          f"({_scrub(_first_line(err), secrets)}); skipped", stacklevel=2)
        elif rec and "create" not in rec:
            report.uploaded += 1
            if "end" in rec:
                report.ended = rec["end"]
        meta["replayed"] = index + 1
        buf.write_meta(meta)
    report.remaining = max(0, len(lines) - int(meta["replayed"]))
    meta["state"] = "replayed" if report.remaining == 0 else "pending"
    if report.remaining == 0:
        meta["replayed_at"] = time.time()
        meta["replayed_to"] = settings.safe_uri
    buf.write_meta(meta)
    return report


def replay_buffer(
    path: str | Path,
    settings: TrackingSettings | None = None,
    *,
    explicit_uri: bool = False,
    explicit_experiment: bool = False,
) -> list[ReplayReport]:
    """Upload every buffer in ``path`` (a buffer folder, or a folder holding some) that is not uploaded yet.

    ``settings`` (default :func:`resolve_settings`) give credentials and timeouts. The tracking URI and
    experiment are the ones recorded in each buffer unless ``explicit_uri`` / ``explicit_experiment`` say
    that ``settings`` name them on purpose. Idempotent: each buffer remembers how far it was uploaded.
    """
    base = settings or resolve_settings()
    buffers = find_buffers(path)
    if not buffers:
        raise TrackingError(f"no MLflow buffer (a folder with {_META}) in {path}")
    reports = []
    clients: dict[str, Any] = {}
    for folder in buffers:
        buf = _Buffer(folder)
        meta = buf.read_meta()
        uri = base.tracking_uri if explicit_uri or not meta.get("tracking_uri") else meta["tracking_uri"]
        experiment = base.experiment_name if explicit_experiment else meta.get("experiment_name")
        settings_b = _replace(base, tracking_uri=uri, experiment_name=experiment or base.experiment_name)
        with buf.lock() as locked:
            if not locked:
                reports.append(ReplayReport(folder, meta.get("run_id"), remaining=buf.pending(),
                                            error="another process is replaying this buffer"))
                continue
            if int(meta.get("replayed", 0)) >= buf.count():
                reports.append(ReplayReport(folder, meta.get("run_id"), already=True))
                continue
            if uri not in clients:
                clients[uri] = _make_client(settings_b)
            # The recorded experiment id is only meaningful in the recorded store and experiment.
            same = uri == meta.get("tracking_uri") and not explicit_experiment
            reports.append(_replay(buf, clients[uri], settings_b, _Link(),
                                   experiment_id=meta.get("experiment_id") if same else None,
                                   experiment_name=settings_b.experiment_name,
                                   secrets=[base.password]))
    return reports


def _replace(settings: TrackingSettings, **changes: Any) -> TrackingSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)


def _make_client(settings: TrackingSettings) -> Any:
    configure_telemetry()
    _apply_http_env(settings)
    # MLflow reads credentials for HTTP servers from these variables only.
    if settings.username is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.username
    if settings.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.password
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri)


def replay_fallback(path: str | Path, tracker: Tracker) -> int:
    """Upload the data records (params, tags, metrics, artifacts) of a buffer folder, its ``records.jsonl``
    or an old-style ``<run_id>.jsonl`` into ``tracker``'s run; return how many. Run creation/termination
    records are left to ``tracker`` (use :func:`replay_buffer` to replay a buffer into its own run)."""
    path = Path(path)
    if path.is_dir():
        path = path / _RECORDS
    base = path.parent
    n = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "metrics" in rec:
            tracker.log_metrics(rec["metrics"], step=rec.get("step"), timestamp_ms=rec.get("ts"))
        elif "params" in rec:
            tracker.log_params(rec["params"])
        elif "tags" in rec:
            tracker.set_tags(rec["tags"])
        elif "artifact" in rec:
            tracker.log_artifact(base / rec["artifact"], rec.get("artifact_path"))
        else:
            continue
        n += 1
    return n


# =================================================================================================
# Trackers
# =================================================================================================
class NullTracker:
    """Tracker that records nothing: used on non-zero DDP ranks and where tracking is off."""

    run_id: str | None = None
    fallback_path: Path | None = None
    buffer_dir: Path | None = None
    offline: bool = False
    replay_command: str | None = None

    def check_connection(self) -> None:
        pass

    def set_buffer_dir(self, path: str | Path | None) -> None:
        pass

    def start_run(self, run_name: str | None = None, **_: Any) -> str | None:
        return None

    def end_run(self, status: str = "FINISHED") -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, **_: Any) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> NullTracker:
        return NullTracker()

    def open_hint(self) -> str | None:
        return None


class Tracker:
    """One MLflow run (or a parent run whose :meth:`child` trackers are nested runs).

    >>> tracker = Tracker(resolve_settings(mlflow_yaml="configs/mlflow.yaml"), buffer_dir=run_dir)
    >>> tracker.check_connection()          # raises TrackingError before training on a bad URI/credentials
    >>> tracker.start_run("ast_film_soft_seed42", tags={"variant": "ast_film_soft"})
    >>> tracker.log_metrics({"train/loss": 0.7, "val/icbhi_score": 0.55}, step=1)
    >>> tracker.end_run()
    >>> print(tracker.open_hint())
    """

    def __init__(
        self,
        settings: TrackingSettings,
        *,
        parent_run_id: str | None = None,
        buffer_dir: str | Path | None = None,
    ) -> None:
        self.settings = settings
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        #: True while this run has records that are only in its local buffer.
        self.offline = False
        #: The command that uploads this run's buffer, set by :meth:`end_run` if the server stayed away.
        self.replay_command: str | None = None
        self.buffer_dir: Path | None = Path(buffer_dir) if buffer_dir is not None else None
        self._client = None
        self._link = _Link(interval=settings.probe_interval_s)
        self._buffer: _Buffer | None = None
        self._run_key: str | None = None  # buffer folder name: the run id, or pending-<hex> before creation
        self._started = False
        self._warned = False

    # -- connection -------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = _make_client(self.settings)
        return self._client

    @property
    def fallback_path(self) -> Path | None:
        """The records file of this run's buffer (it exists once something was buffered)."""
        return None if self._run_key is None else self._buffer_path() / _RECORDS

    @property
    def buffer_path(self) -> Path | None:
        """This run's buffer folder (it exists once something was buffered)."""
        return None if self._run_key is None else self._buffer_path()

    def set_buffer_dir(self, path: str | Path | None) -> None:
        """Keep this run's offline buffer under ``path`` (the run's own folder) in ``path/mlflow_buffer/``.

        Records already buffered elsewhere are moved along, unless a replay is running on them.
        """
        old = self.buffer_path
        self.buffer_dir = Path(path) if path is not None else None
        new = self.buffer_path
        if old is not None and new is not None and old.resolve() != new.resolve() and (old / _META).is_file():
            with self._link.lock:
                if not (new / _META).exists():
                    new.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(old), str(new))
                    self._buffer = _Buffer(new)

    def _buffer_path(self) -> Path:
        if self.buffer_dir is not None:
            root = self.buffer_dir / BUFFER_FOLDER
        else:
            root = Path(self.settings.fallback_dir)
        return (root / str(self._run_key)).absolute()

    def check_connection(self) -> None:
        """Reach the store and get-or-create the experiment; raise :class:`TrackingError` if impossible."""
        uri = self.settings.safe_uri
        try:
            name = self.settings.experiment_name
            exp = self.client.get_experiment_by_name(name)
            self.experiment_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        except Exception as exc:  # noqa: BLE001 -- MlflowException, requests, sqlalchemy errors...
            if _is_auth_failure(exc):
                why = (
                    "the server rejected the credentials; check tracking_username/tracking_password in the "
                    "mlflow config or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD"
                )
            else:
                why = "the tracking store is unreachable or invalid; check tracking_uri / MLFLOW_TRACKING_URI"
            raise TrackingError(
                f"MLflow tracking at {uri!r} cannot be used: {why}. ({self._clean(_first_line(exc))})"
            ) from None

    # -- runs -------------------------------------------------------------------------------------
    def start_run(
        self,
        run_name: str | None = None,
        *,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Create a run (nested under ``parent_run_id`` if set), or reopen ``run_id`` to resume it.

        The store must be reachable when the tracker has never reached it (a bad URI fails here, before
        training). Once it has, a server that is away only makes the run *pending*: it is created, with
        everything logged meanwhile, when the server is back (``run_id`` is None until then).
        """
        if self.experiment_id is None:
            self.check_connection()
        self._started = True
        if run_id is not None:
            self.run_id = self._run_key = run_id
            self._call(lambda: self.client.update_run(run_id, status="RUNNING"), {"resume": "RUNNING"},
                       raise_rejected=True)
            return self.run_id
        all_tags = {k: str(v) for k, v in redact_params(tags or {}, self._secrets()).items()}
        if self.parent_run_id is not None:
            all_tags["mlflow.parentRunId"] = self.parent_run_id
        spec = {"run_name": run_name, "tags": all_tags, "start_time": int(time.time() * 1000)}
        holder: dict[str, Any] = {}

        def create() -> None:
            holder["run"] = self.client.create_run(
                self.experiment_id, start_time=spec["start_time"], tags=all_tags, run_name=run_name
            )

        with self._link.lock:
            if self._link.down:
                err: BaseException | None = TrackingError("server unreachable")
            else:
                err = _attempt(create, self.settings, self._link)
            if err is None:
                self.run_id = self._run_key = holder["run"].info.run_id
                return self.run_id
            if _failure_kind(err) == "rejected":
                raise TrackingError(
                    f"MLflow refused to create run {run_name!r}: {self._clean(_first_line(err))}"
                )
            self._run_key = f"pending-{uuid.uuid4().hex[:12]}"
            self._go_offline(err if not isinstance(err, TrackingError) else None)
            self._buffer_record({"create": spec})
        return self.run_id

    def end_run(self, status: str = "FINISHED") -> None:
        """Terminate the run with ``status``; first reconnect and upload the buffer if the server is back.

        If the server is still away, the end is buffered too and the command that uploads everything later
        is printed (and kept in :attr:`replay_command`).
        """
        if not self._started:
            return
        with self._link.lock:
            self._reconnect(force=True)
            if self._link.down:
                self._go_offline(None)
            elif not self.offline and self.run_id is not None:
                err = _attempt(lambda: self.client.set_terminated(self.run_id, status=status), self.settings,
                               self._link)
                if err is None:
                    return
                if _failure_kind(err) == "rejected":
                    self._warn(f"MLflow refused to end run {self.run_id} ({self._clean(_first_line(err))})")
                    return
                self._go_offline(err)
            self._buffer_record({"end": status, "end_time": int(time.time() * 1000)})
            self.replay_command = replay_command(self.buffer_path)
            run = self.run_id or "(not created yet)"
            print(
                f"MLflow: {self.settings.safe_uri} is unreachable; run {run} is kept in {self.buffer_path}. "
                f"Upload it when the server is back with:\n  {self.replay_command}",
                file=sys.stderr,
                flush=True,
            )

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> Tracker:
        """A tracker for a nested run of this one (multi-seed members, k-fold folds).

        It shares this run's client and connection health (probes, stall budget); its buffer goes under
        this run's ``buffer_dir`` until the application gives it its own (:meth:`set_buffer_dir`).
        """
        if not self._started:
            raise TrackingError("start the parent run before creating nested runs")
        child = Tracker(self.settings, parent_run_id=self.run_id, buffer_dir=self.buffer_dir)
        child.experiment_id = self.experiment_id
        child._client = self._client
        child._link = self._link
        child.start_run(run_name, tags=tags)
        return child

    def open_hint(self) -> str:
        """How to look at this run: see :func:`open_hint`."""
        return open_hint(self.settings, run_id=self.run_id, experiment_id=self.experiment_id)

    # -- logging ----------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log config values as params (stringified; long values truncated as MLflow requires).

        Credential-like keys are masked and the tracking password is scrubbed from values
        (:func:`redact_params`), so ``log_params(flatten(cfg))`` is safe.
        """
        from mlflow.entities import Param

        safe = redact_params(params, self._secrets())
        items = [Param(str(k), _param_value(v)) for k, v in safe.items()]
        for i in range(0, len(items), _MAX_BATCH_PARAMS):
            chunk = items[i : i + _MAX_BATCH_PARAMS]
            self._call(
                lambda c=chunk: self.client.log_batch(self.run_id, params=c),
                {"params": {p.key: p.value for p in chunk}},
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        safe = redact_params(tags, self._secrets())
        items = [RunTag(str(k), str(v)) for k, v in safe.items()]
        for i in range(0, len(items), _MAX_BATCH_TAGS):
            chunk = items[i : i + _MAX_BATCH_TAGS]
            self._call(lambda c=chunk: self.client.log_batch(self.run_id, tags=c),
                       {"tags": {t.key: t.value for t in chunk}})

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, *, timestamp_ms: int | None = None
    ) -> None:
        """Log many metrics in one batched call (fix of 11.6-6); non-finite values are skipped."""
        from mlflow.entities import Metric

        ts = int(timestamp_ms) if timestamp_ms is not None else int(time.time() * 1000)
        clean = {_metric_key(k): float(v) for k, v in metrics.items() if _is_finite_number(v)}
        items = [Metric(k, v, ts, step or 0) for k, v in clean.items()]
        for i in range(0, len(items), _MAX_BATCH_METRICS):
            chunk = items[i : i + _MAX_BATCH_METRICS]
            self._call(
                lambda c=chunk: self.client.log_batch(self.run_id, metrics=c),
                {"metrics": {m.key: m.value for m in chunk}, "step": step, "ts": ts},
            )

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file. One that contains the tracking password is uploaded redacted (text) or not at
        all (binary, with a warning): strip credentials from configs before saving them."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {path}")
        with contextlib.ExitStack() as stack:
            upload = self._safe_artifact(path, stack)
            if upload is None:
                return
            self._call(
                lambda: self.client.log_artifact(self.run_id, str(upload), artifact_path),
                {"artifact": str(upload), "artifact_path": artifact_path},
                artifact=upload,
            )

    def _safe_artifact(self, path: Path, stack: contextlib.ExitStack) -> Path | None:
        secrets = _secret_values(self._secrets())
        if path.is_dir() or not _file_contains(path, [s.encode() for s in secrets]):
            return path
        if path.suffix.lower() in _TEXT_SUFFIXES:
            import tempfile

            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ls-redacted-"))) / path.name
            text = path.read_text(encoding="utf-8", errors="replace")
            tmp.write_text(_scrub(text, secrets), encoding="utf-8")
            self._warn(f"{path} contains the MLflow tracking password; uploading a redacted copy")
            return tmp
        self._warn(
            f"{path} contains the MLflow tracking password; NOT uploaded to MLflow (remove credentials "
            "from the config before it is saved, e.g. set mlflow.tracking_password to null)"
        )
        return None

    # -- failure handling -------------------------------------------------------------------------
    def _secrets(self) -> list[str | None]:
        return [self.settings.password, os.environ.get("MLFLOW_TRACKING_TOKEN")]

    def _clean(self, text: str) -> str:
        return _scrub(text, self._secrets())

    def _warn(self, message: str) -> None:
        warnings.warn(self._clean(message), stacklevel=4)

    def _call(self, fn: Callable[[], Any], record: dict, artifact: Path | None = None, *,
              raise_rejected: bool = False) -> None:
        if not self._started:
            raise TrackingError("no MLflow run started: call start_run() first")
        with self._link.lock:
            self._reconnect()
            if self._link.down:  # known to be away (maybe through a sibling run): no call, no timeout
                self._go_offline(None)
            elif not self.offline and self.run_id is not None:
                err = _attempt(fn, self.settings, self._link)
                if err is None:
                    return
                if _failure_kind(err) == "rejected":
                    what = next(iter(record))
                    if raise_rejected:
                        raise TrackingError(f"MLflow refused {what} of run {self.run_id} at "
                                            f"{self.settings.safe_uri}: {self._clean(_first_line(err))}")
                    self._warn(
                        f"MLflow rejected {what} of run {self.run_id} ({_first_line(err)}); not logged"
                    )
                    return
                self._go_offline(err)
            self._buffer_record(record, artifact)

    def _go_offline(self, err: BaseException | None) -> None:
        if not self._link.down:
            self._link.down = True
            self._link.interval = self.settings.probe_interval_s
            self._link.next_probe = time.monotonic() + self._link.interval
        first = not self.offline
        self.offline = True
        if first and not self._warned:
            self._warned = True
            why = f" ({_first_line(err)})" if err is not None else ""
            run = self.run_id or "(not created yet)"
            self._warn(
                f"MLflow logging to {self.settings.safe_uri} failed{why}; training continues and run {run} "
                f"is recorded locally in {self.buffer_path}; it is uploaded when the server is back"
            )

    def _reconnect(self, force: bool = False) -> None:
        """If the server was away: probe it (rate-limited unless ``force``), then upload this run's buffer."""
        link = self._link
        if link.down:
            now = time.monotonic()
            if not force and (now < link.next_probe or link.stall_s >= self.settings.max_stall_s):
                return
            if not self._probe():
                link.failed_probes += 1
                link.interval = min(max(link.interval, self.settings.probe_interval_s) * 2,
                                    self.settings.max_probe_interval_s)
                link.next_probe = time.monotonic() + link.interval
                return
            link.down = False
            link.interval = self.settings.probe_interval_s
        if self.offline:
            self._upload_buffer()

    def _probe(self) -> bool:
        t0 = time.monotonic()
        ok = False
        try:
            if self.settings.is_remote:
                ok = self._http_health()
            else:
                self.client.get_experiment(self.experiment_id)
                ok = True
        except Exception:  # noqa: BLE001 -- any failure means: still away
            ok = False
        if not ok:
            self._link.stall_s += time.monotonic() - t0
        return ok

    def _http_health(self) -> bool:
        import requests

        headers = {}
        auth = None
        if self.settings.username and self.settings.password:
            auth = (self.settings.username, self.settings.password)
        elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
            headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
        verify: bool | str = not _truthy(os.environ.get("MLFLOW_TRACKING_INSECURE_TLS"))
        if os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        url = self.settings.tracking_uri.rstrip("/") + "/health"
        resp = requests.get(
            url, auth=auth, headers=headers, timeout=self.settings.probe_timeout_s, verify=verify
        )
        # Any answer but a 5xx means something is serving (a reverse proxy may not route /health); the
        # replay that follows tells whether the tracking API works.
        return resp.status_code < 500

    def _upload_buffer(self) -> None:
        buf = self._ensure_buffer()
        with buf.lock() as locked:
            if not locked:  # `python -m ls.tracking replay` is uploading it right now
                return
            report = _replay(buf, self.client, self.settings, self._link, experiment_id=self.experiment_id,
                             secrets=self._secrets())
        if report.run_id is not None and self.run_id is None:
            self.run_id = report.run_id
        if report.complete:
            self.offline = False
            self._warned = False
            _log.warning("MLflow server %s is back: uploaded %d buffered record(s) of run %s",
                         self.settings.safe_uri, report.uploaded, self.run_id)
        else:
            self._link.down = True
            self._link.next_probe = time.monotonic() + self._link.interval

    def _ensure_buffer(self) -> _Buffer:
        path = self._buffer_path()
        if self._buffer is None or self._buffer.path != path:
            self._buffer = _Buffer(path)
        self._buffer.create({
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "experiment_name": self.settings.experiment_name,
            "tracking_uri": _absolute_store_uri(self.settings.safe_uri),
            "parent_run_id": self.parent_run_id,
            "created": time.time(),
        })
        return self._buffer

    def _buffer_record(self, record: dict, artifact: Path | None = None) -> None:
        buf = self._ensure_buffer()
        if artifact is not None:
            rel = Path("artifacts") / uuid.uuid4().hex[:8] / artifact.name
            (buf.path / rel).parent.mkdir(parents=True, exist_ok=True)
            if artifact.is_dir():
                shutil.copytree(artifact, buf.path / rel)
            else:
                shutil.copy2(artifact, buf.path / rel)
            record = {**record, "artifact": rel.as_posix()}
        buf.append(record)
        meta = buf.read_meta()
        if meta.get("state") != "pending":
            meta["state"] = "pending"
            buf.write_meta(meta)


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
    mlflow_cfg: Any = None,
    mlflow_yaml: str | Path | None = None,
    *,
    enabled: bool = True,
    buffer_dir: str | Path | None = None,
) -> Tracker | NullTracker:
    """The tracker for this process: a checked :class:`Tracker`, or :class:`NullTracker` if disabled."""
    if not enabled:
        return NullTracker()
    tracker = Tracker(resolve_settings(mlflow_cfg, mlflow_yaml), buffer_dir=buffer_dir)
    tracker.check_connection()
    return tracker


__all__ = [
    "BUFFER_FOLDER",
    "DEFAULT_TRACKING_URI",
    "TELEMETRY_OPT_IN_ENV",
    "NullTracker",
    "ReplayReport",
    "Tracker",
    "TrackingError",
    "TrackingSettings",
    "build_tracker",
    "configure_telemetry",
    "find_buffers",
    "is_credential_key",
    "open_hint",
    "redact_params",
    "replay_buffer",
    "replay_command",
    "replay_fallback",
    "resolve_settings",
    "strip_userinfo",
]
