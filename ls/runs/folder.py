"""The run folder, the unit of work: where a run's files go, how a folder is made, and what state it is in.

    <run folder>/
        config.yaml            the resolved config, without credentials (written first: proves the folder writable)
        events.jsonl           the run's record (ls.runs.record); mlflow.json: how far it is mirrored
        last.pt, best.pt       checkpoints (resume from last.pt)
        run.json               what the run was and how it did on test, with its protocol card (the run finished)
        test_predictions.csv   one row per test cycle
        confusion_matrix.*, training_curves.*
        train.log              the run's output when it ran in a worker process, and a failed run's traceback

A folder is created exclusively: two runs never share one. Its state is read from its files alone
(:func:`folder_state`), so any process can tell what is left to do.
"""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from ls.runs.record import status_of
from ls.utils.io import WriteError, write_failure_reason

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
LAST = "last.pt"
BEST = "best.pt"
PREDICTIONS_FILE = "test_predictions.csv"
LOG_FILE = "train.log"

FolderState = Literal["new", "resumable", "finished", "failed"]


def folder_state(folder: str | Path) -> FolderState:
    """``finished`` (``run.json``), ``resumable`` (``last.pt``: interrupted, or failed after a checkpoint),
    ``failed`` (its record ended FAILED before any checkpoint) or ``new``."""
    folder = Path(folder)
    if (folder / RUN_FILE).is_file():
        return "finished"
    if (folder / LAST).is_file():
        return "resumable"
    if status_of(folder) == "FAILED":
        return "failed"
    return "new"


def create_run_dir(parent: str | Path, run_name: str) -> Path:
    """A new, empty folder ``<parent>/<run_name>_<YYYYmmdd-HHMMSS>`` created exclusively: when another run
    took that name (runs started in the same second), ``_2``, ``_3``, ... are tried. Never a shared folder."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(exc.errno or errno.EIO, f"cannot create the folder {parent}: "
                         f"{write_failure_reason(exc, parent)}") from None
    base = f"{run_name}_{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 10_000):
        path = parent / (base if i == 1 else f"{base}_{i}")
        try:
            path.mkdir()  # atomic: exactly one process creates a given folder
        except FileExistsError:
            continue
        except OSError as exc:
            raise WriteError(exc.errno or errno.EIO, f"cannot create a run folder in {parent}: "
                             f"{write_failure_reason(exc, parent)}") from None
        return path
    raise WriteError(errno.EEXIST, f"no free run folder name {base}_N in {parent}")


def prepare_run_dir(folder: Path, stored_config: dict[str, Any], need_bytes: int, *, what: str,
                    remove_on_failure: bool) -> Path:
    """Make ``folder`` ready before the work: it exists, has room for ``need_bytes`` of checkpoints (those
    already there count as room) and holds ``config.yaml``, whose write proves it writable. A failure names
    the folder and says "no space left" or "read-only"; ``remove_on_failure`` removes a folder made for it."""
    from ls.config import dump_yaml

    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WriteError(exc.errno or errno.EIO, f"cannot create the run folder {folder}: "
                             f"{write_failure_reason(exc, folder)}") from None
        have = sum(f.stat().st_size for f in (folder / BEST, folder / LAST) if f.is_file())
        free = shutil.disk_usage(folder).free
        if free + have < need_bytes:
            raise WriteError(errno.ENOSPC, (
                f"not enough space for the checkpoints in {folder}: {_mb(free)} free, about "
                f"{_mb(need_bytes - have)} needed (best.pt + last.pt of {what} with optimiser state); no space "
                "left for this run: free some or set training.checkpoint_dir"))
        dump_yaml(stored_config, folder / CONFIG_FILE)
    except BaseException:
        if remove_on_failure:
            remove_if_unused(folder)
        raise
    return folder


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n < 1e10 else f"{n / 1e9:,.1f} GB"


def remove_if_unused(folder: Path) -> None:
    """Remove a run folder that holds no checkpoint (a run that stopped before its first epoch leaves nothing
    behind). The caller keeps one whose record is the only copy of what happened (not yet mirrored)."""
    try:
        if not any(folder.glob("*.pt")):
            shutil.rmtree(folder, ignore_errors=True)
    except OSError:
        pass


__all__ = [
    "BEST",
    "CONFIG_FILE",
    "LAST",
    "LOG_FILE",
    "PREDICTIONS_FILE",
    "RUN_FILE",
    "FolderState",
    "create_run_dir",
    "folder_state",
    "prepare_run_dir",
    "remove_if_unused",
]
