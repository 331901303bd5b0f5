"""Where a dataset's data lives, checked before anything is read: one check for every entry point (training,
evaluation, figures, studies), so they agree on what "the data folder" of a config is.

Light on purpose (no torch, pandas or audio libraries): it runs before any of them is needed.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any


def data_folders(dataset_cfg: Any) -> list[tuple[str, Path]]:
    """``(config key, folder)`` of every folder ``dataset_cfg`` reads data from: ``dataset.data_folder``, or
    for ``name: combined`` each ``dataset.parts[i].data_folder`` (the combined dataset's own ``data_folder``
    only receives the shared feature cache, so it need not exist yet)."""
    parts = getattr(dataset_cfg, "parts", None) if getattr(dataset_cfg, "name", "icbhi") == "combined" else None
    if parts:
        return [(f"dataset.parts[{i}].data_folder", Path(p.data_folder).expanduser()) for i, p in enumerate(parts)]
    return [("dataset.data_folder", Path(dataset_cfg.data_folder).expanduser())]


def check_data_folders(dataset_cfg: Any, *, source: str | None = None, fix: str | None = None) -> list[Path]:
    """The data folders of ``dataset_cfg`` (:func:`data_folders`), each checked to be a folder; returns them.

    A missing one raises FileNotFoundError: ``<key>='<path>' does not exist`` (or ``is not a folder``), for a
    relative path the working directory it was resolved against, and how to fix it. ``source`` says where
    the value came from (e.g. ``the checkpoint runs/x/best.pt``); ``fix`` replaces the default advice (pass
    ``--set dataset.data_folder=...``; for a part: correct it in the config).
    """
    folders = data_folders(dataset_cfg)
    for key, folder in folders:
        if folder.is_dir():
            continue
        what = "is not a folder" if folder.exists() else "does not exist"
        origin = f" (from {source})" if source else ""
        where = "" if folder.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        advice = fix or ("correct it in the config" if key != "dataset.data_folder"
                         else f"pass --set {key}=<the folder with the recordings>")
        raise FileNotFoundError(errno.ENOENT, f"{key}={str(folder)!r}{origin} {what}{where}; {advice}")
    return [folder for _, folder in folders]


__all__ = ["check_data_folders", "data_folders"]
