"""The record of a run, local first: every param, tag, metric, artifact and end of a run is appended to an event
log in its folder (``events.jsonl``, one JSON object a line), whether an MLflow store is configured or not.

MLflow is a mirror of that log (:mod:`ls.runs.mirror`): a :class:`RunRecord` given a mirror asks it to sync
after each event, and a store that is away only means "synced later". Nothing but the log is the truth, so no
run fails or loses a number because of its mirror.

Events (``seq`` is the line's index, ``time`` seconds since the epoch)::

    {"event": "start", "name": ..., "tags": {...}, "parent": "<folder of the parent record, relative>" | null}
    {"event": "resume"}                                   # a run continued from its last.pt
    {"event": "params", "params": {...}}                  # credential-like keys masked
    {"event": "tags", "tags": {...}}
    {"event": "metrics", "metrics": {...}, "step": N}     # finite values only
    {"event": "artifact", "path": "<file in the folder, relative>", "artifact_path": ... | null}
    {"event": "end", "status": "FINISHED" | "FAILED" | "KILLED"}
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ls.runs.secrets import holds_secret, redact_params, redacted_text, without_credentials
from ls.utils.io import atomic_copy, atomic_write_text

EVENTS_FILE = "events.jsonl"
#: Where artifacts that lie outside the record's folder are copied (the log names files inside it only).
ARTIFACTS_FOLDER = "artifacts"


class EventLog:
    """``<folder>/events.jsonl``: appended by the process that owns the run (or by each command working on a
    shared parent record, such as a search run from several machines: appends hold a lock on the file, so that
    events keep whole lines and distinct ``seq``), read by anyone."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / EVENTS_FILE

    def exists(self) -> bool:
        return self.path.is_file()

    def append(self, event: Mapping[str, Any]) -> int:
        """Append one event; returns its ``seq``. A line cut by a crash stays a line of its own."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as fh:
            _lock(fh)  # released when the file is closed
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size:
                fh.seek(size - 1)
                if fh.read(1) != "\n":
                    fh.write("\n")
            fh.seek(0)
            seq = sum(1 for _ in fh)
            fh.write(json.dumps({"seq": seq, "time": round(time.time(), 3), **event}, default=str) + "\n")
            fh.flush()
        return seq

    def lines(self) -> list[str]:
        """The complete lines (a last line without its newline is still being written: not yet an event)."""
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        return lines[:-1]  # the part after the last newline is empty or incomplete

    def events(self) -> list[dict[str, Any]]:
        """Every readable event (a line cut by a crash is skipped)."""
        out = []
        for line in self.lines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out


def _lock(fh: Any) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one process per record
        return
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)


def parse_event(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def status_of(folder: str | Path) -> str | None:
    """How the record in ``folder`` last ended (``FINISHED``, ``FAILED``, ``KILLED``), ``RUNNING`` when it started
    or resumed after its last end, None without a record."""
    status = None
    for event in EventLog(folder).events():
        kind = event.get("event")
        if kind in ("start", "resume"):
            status = "RUNNING"
        elif kind == "end":
            status = str(event.get("status"))
    return status


class SyncInterrupted(KeyboardInterrupt):
    """Ctrl-C during the last sync of a record that had ended: nothing to resume, only to sync."""

    def __init__(self, folder: Path, command: str) -> None:
        super().__init__(f"interrupted while syncing the finished run {folder} to MLflow; nothing to resume. "
                         f"Sync it with: {command}")
        self.folder, self.command = folder, command

    def __str__(self) -> str:
        return str(self.args[0])


class RunRecord:
    """The record of one run (or of a group's parent run) in ``folder``; the engine's ``Tracker``.

    >>> record = RunRecord(run_dir, mirror=Mirror(resolve_settings()))   # mirror=None: local only
    >>> record.start("ast_film_soft_seed42", tags={"variant": "ast_film_soft"})
    >>> record.log_metrics({"train/loss": 0.7}, step=1)
    >>> record.end()
    """

    def __init__(self, folder: str | Path, mirror: Any = None, secrets: Iterable[str | None] = ()) -> None:
        """``mirror``: an ``ls.runs.mirror.Mirror`` that syncs the record as it grows (None: local only)."""
        self.folder = Path(folder)
        self.log = EventLog(self.folder)
        self.mirror = mirror
        self._secrets = [*secrets, *(mirror.secrets() if mirror is not None else [])]
        self.ended: str | None = None

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, name: str, *, tags: Mapping[str, Any] | None = None, parent: str | Path | None = None) -> None:
        """A new run, or the same run continued when the folder already holds its record (a resume)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.mirror is not None:
            self.mirror.attach(self.folder)
        if any(e.get("event") == "start" for e in self.log.events()):
            self._append({"event": "resume"})
            return
        rel = None if parent is None else os.path.relpath(Path(parent).resolve(), self.folder.resolve())
        self._append({"event": "start", "name": name,
                      "tags": {k: str(v) for k, v in redact_params(tags or {}, self._secrets).items()},
                      "parent": rel})

    def end(self, status: str = "FINISHED") -> None:
        """The run ended with ``status``; the mirror then makes its last sync attempt of this process."""
        if self.ended is not None:
            return
        self.log.append({"event": "end", "status": status})
        self.ended = status  # only once the end is written: an interrupted append leaves the record to end again
        if self.mirror is not None:
            try:
                self.mirror.poke(self.folder, final=True)
            except KeyboardInterrupt:  # Ctrl-C during the last sync: the record is whole, the store waits
                command = self.mirror.mark_unsynced(self.folder)
                if status == "FINISHED":
                    raise SyncInterrupted(self.folder, command) from None
                # A run already ending KILLED or FAILED (a second Ctrl-C): its own error goes on, with its
                # --resume advice; the sync is only postponed.
                print(f"MLflow: the last sync of {self.folder.resolve()} was interrupted; sync it with:\n  {command}",
                      file=sys.stderr, flush=True)

    # -- what a run records ---------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Config values (flat); credential-like keys are masked, secrets scrubbed from values."""
        self._append({"event": "params", "params": redact_params(without_credentials(dict(params)), self._secrets)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._append({"event": "tags", "tags": {k: str(v) for k, v in redact_params(tags, self._secrets).items()}})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Finite values only (MLflow rejects NaN; an undefined metric is simply absent at that step)."""
        clean = {str(k): float(v) for k, v in metrics.items() if _is_finite(v)}
        if clean:
            self._append({"event": "metrics", "metrics": clean, "step": step})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Record a file of the run; one outside the folder is copied into ``artifacts/`` first, so that the
        record stays whole when the file it came from changes or goes. A copy keeps no secret the record knows:
        a text file is copied redacted, another file holding one is not recorded (a warning says which)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact to record does not exist: {path}")
        try:
            rel = path.resolve().relative_to(self.folder.resolve())
        except ValueError:
            dest = self.folder / ARTIFACTS_FOLDER / (artifact_path or "") / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, dest, dirs_exist_ok=True,
                                copy_function=lambda src, dst: self._copy_without_secrets(Path(src), Path(dst)))
            elif not self._copy_without_secrets(path, dest):
                return
            rel = dest.relative_to(self.folder)
        self._append({"event": "artifact", "path": rel.as_posix(), "artifact_path": artifact_path})

    def _copy_without_secrets(self, src: Path, dest: Path) -> bool:
        """Copy ``src`` to ``dest`` unless it holds a secret: then a redacted copy of a text file, and nothing
        (False) for another file."""
        if not holds_secret(src, self._secrets):
            atomic_copy(src, dest)
            return True
        text = redacted_text(src, self._secrets)
        if text is None:
            warnings.warn(f"{src} contains a credential; NOT recorded with the run", stacklevel=3)
            return False
        atomic_write_text(dest, text)
        warnings.warn(f"{src} contains a credential; the run records a redacted copy", stacklevel=3)
        return True

    # -- what the mirror knows ----------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        """The MLflow run this record is mirrored to (None without a mirror or before its first sync)."""
        return None if self.mirror is None else self.mirror.run_id(self.folder)

    @property
    def synced(self) -> bool:
        """Everything recorded so far is in the mirror (True without a mirror)."""
        return self.mirror is None or self.mirror.pending(self.folder) == 0

    def _append(self, event: dict[str, Any]) -> None:
        self.log.append(event)
        if self.mirror is not None:
            self.mirror.poke(self.folder)


def _is_finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


__all__ = ["ARTIFACTS_FOLDER", "EVENTS_FILE", "EventLog", "RunRecord", "SyncInterrupted", "parse_event", "status_of"]
