"""Cycle labels from the annotation bits (crackles c, wheezes w).

Three label modes, chosen by ``dataset.n_cls`` and ``dataset.multi_label``:

=============  ===========  ================================================  ============================
n_cls          multi_label  label                                             classes
=============  ===========  ================================================  ============================
4              false        int64 ``[N]``: ``c + 2 w``                        normal, crackle, wheeze, both
2              false        int64 ``[N]``: ``c or w``                         normal, abnormal
4              true         float32 ``[N, 2]``: ``[c, w]``                    (evaluated as the 4 classes)
2              true         error                                             --
=============  ===========  ================================================  ============================

Multi-label targets are taken from the bits directly. The reference instead mapped an integer class to bits,
which with ``n_cls=2`` turned every abnormal cycle into "crackle" (defect 11.2-2). ``multi_label`` with
``n_cls=2`` is rejected: a normal-vs-abnormal task has one target, so "multi-label" has no meaning there (use
``n_cls=2, multi_label=false``; a binary model may still use one logit with BCE on the 0/1 label).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ls.data.tasks import Task
from ls.types import FOUR_CLASS_NAMES, TWO_CLASS_NAMES

#: Columns of a multi-label target / logit vector.
MULTI_LABEL_NAMES = ("crackle", "wheeze")


def resolve_task(cfg: Any) -> Task:
    """The task of a ``dataset`` section (``ls.data.tasks``), filling ``task``, ``n_cls`` and ``multi_label``.

    Unset ``task``: ICBHI and the other bit datasets take ``icbhi4`` (``icbhi2`` when ``n_cls`` is 2); a manifest
    with ``classes`` takes ``labels``. ``n_cls`` and ``multi_label`` follow the task (``multi_label`` is the
    paper's two-sigmoid setting of 4-class bit tasks); values given for them must agree. Raises ValueError naming
    the key and what the dataset can give.
    """
    from ls.data.tasks import DATASET_TASKS, LABELS, get_task
    from ls.utils.fields import FieldError

    kinds = [part.name for part in cfg.parts] if cfg.name == "combined" and cfg.parts else [cfg.name]
    name = cfg.task
    if name is None:
        if cfg.name == "manifest" and cfg.classes:
            name = LABELS
        else:
            if cfg.n_cls not in (None, 2, 4):
                raise FieldError("n_cls", f"{cfg.n_cls} is not one of 2, 4 (normal/crackle/wheeze/both or "
                                 "normal/abnormal); other class sets come from dataset.task")
            name = "icbhi2" if cfg.n_cls == 2 else "icbhi4"
    for kind in {cfg.name, *kinds}:
        if name not in DATASET_TASKS[kind]:
            raise FieldError("task", f"{name!r} is not available for dataset kind {kind} (it gives: "
                             f"{', '.join(DATASET_TASKS[kind])})")
    try:
        task = get_task(name, cfg.classes)
    except ValueError as exc:
        raise FieldError("classes" if name == LABELS else "task", str(exc)) from None
    if cfg.classes is not None and name != LABELS:
        raise FieldError("classes", f"is for task 'labels' (a manifest's label column), not {name!r}")
    if cfg.n_cls is None:
        cfg.n_cls = task.n_classes
    elif cfg.n_cls != task.n_classes:
        raise FieldError("n_cls", f"{cfg.n_cls}, but task {name} has {task.n_classes} classes "
                         f"({', '.join(task.classes)}); leave n_cls out")
    four_bits = task.bits and task.n_classes == 4
    if cfg.multi_label is None:
        cfg.multi_label = four_bits
    elif cfg.multi_label and not four_bits:
        raise FieldError(
            "multi_label", f"true needs a 4-class crackle/wheeze task (icbhi4): multi-label targets are the "
            f"[crackle, wheeze] bits, evaluated as 4 classes; task {name} has {task.n_classes} classes "
            "(for normal-vs-abnormal set n_cls=2 and multi_label=false)")
    cfg.task = name
    return task


def check_label_mode(n_cls: int, multi_label: bool) -> None:
    """Raise ValueError for an unsupported (n_cls, multi_label) combination (see the module docstring)."""
    if n_cls not in (2, 4):
        raise ValueError(
            f"dataset.n_cls must be 2 (normal/abnormal) or 4 (normal/crackle/wheeze/both), got {n_cls}"
        )
    if multi_label and n_cls != 4:
        raise ValueError(
            "dataset.multi_label=true needs dataset.n_cls=4: multi-label targets are the [crackle, wheeze] "
            "bits, "
            "evaluated as 4 classes; for normal-vs-abnormal set n_cls=2 and multi_label=false"
        )


def _bits(values: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} flags must be 1-D, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))][:3]
        raise ValueError(f"{what} flags must be 0 or 1, got e.g. {bad.tolist()}")
    return arr.astype(np.int64)


def four_class_from_bits(
    crackles: Sequence[int] | np.ndarray, wheezes: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """4-class label ``c + 2 w`` (0 normal, 1 crackle, 2 wheeze, 3 both), int64 ``[N]``.

    Accepts two 0/1 vectors ``[N]``, or one ``[N, 2]`` array of ``[crackle, wheeze]`` bits (e.g. thresholded
    multi-label predictions).
    """
    if wheezes is None:
        pair = np.asarray(crackles)
        if pair.ndim != 2 or pair.shape[1] != 2:
            raise ValueError(f"expected [N, 2] crackle/wheeze bits, got shape {pair.shape}")
        crackles, wheezes = pair[:, 0], pair[:, 1]
    c, w = _bits(crackles, "crackles"), _bits(wheezes, "wheezes")
    if c.shape != w.shape:
        raise ValueError(f"crackles {c.shape} and wheezes {w.shape} differ in length")
    return c + 2 * w


def bits_from_four_class(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Inverse of :func:`four_class_from_bits`: float32 ``[N, 2]`` ``[crackle, wheeze]``."""
    y = np.asarray(labels)
    if y.size and not np.isin(y, (0, 1, 2, 3)).all():
        raise ValueError(
            f"4-class labels must be in 0..3, got e.g. {y[~np.isin(y, (0, 1, 2, 3))][:3].tolist()}"
        )
    y = y.astype(np.int64)
    return np.stack([y & 1, y >> 1], axis=-1).astype(np.float32)


def binary_from_four_class(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Normal (0) vs abnormal (1) from 4-class labels, int64 ``[N]``."""
    y = np.asarray(labels)
    if y.size and not np.isin(y, (0, 1, 2, 3)).all():
        raise ValueError("4-class labels must be in 0..3")
    return (y != 0).astype(np.int64)


def cycle_labels(
    crackles: Sequence[int] | np.ndarray, wheezes: Sequence[int] | np.ndarray, n_cls: int, multi_label: bool
) -> np.ndarray:
    """Training targets of cycles from their annotation bits.

    Returns:
        int64 ``[N]`` class indices (single-label) or float32 ``[N, 2]`` ``[crackle, wheeze]`` (multi-label).
    """
    check_label_mode(n_cls, multi_label)
    four = four_class_from_bits(crackles, wheezes)
    if multi_label:
        return bits_from_four_class(four)
    return four if n_cls == 4 else binary_from_four_class(four)


def class_names(n_cls: int, multi_label: bool = False) -> list[str]:
    """Names of the evaluation classes, index = class id. Multi-label models are evaluated on the 4 classes,
    so this is the 4-class list for them too (their output columns are :func:`target_names`)."""
    check_label_mode(n_cls, multi_label)
    return list(FOUR_CLASS_NAMES if n_cls == 4 else TWO_CLASS_NAMES)


def target_names(n_cls: int, multi_label: bool) -> list[str]:
    """Columns of a target/logit vector: ``[crackle, wheeze]`` for multi-label, else the class names."""
    check_label_mode(n_cls, multi_label)
    return list(MULTI_LABEL_NAMES) if multi_label else class_names(n_cls)


def task_class_ids(table: Any, task: Task) -> np.ndarray:
    """Class ids (int64 ``[N]``) of a segment table's rows for ``task`` (``ls.data.tasks``): from the
    ``Crackles``/``Wheezes`` columns for the bit tasks, from ``Label`` otherwise. Unknown or missing labels raise
    ValueError naming them."""
    if task.bits:
        for column in ("Crackles", "Wheezes"):
            if column not in table.columns:
                raise ValueError(f"task {task.name} needs the crackle/wheeze bits (column {column!r}); this table "
                                 f"has {', '.join(map(str, table.columns))}")
        four = four_class_from_bits(table["Crackles"].to_numpy(), table["Wheezes"].to_numpy())
        return four if task.n_classes == 4 else binary_from_four_class(four)
    labels = table["Label"]
    unknown = sorted(set(labels.dropna()) - set(task.class_of), key=str)
    if labels.isna().any():
        unknown.append("<missing>")
    if unknown:
        raise ValueError(f"task {task.name}: label(s) {unknown} are not among {', '.join(task.class_of)}")
    return labels.map(task.class_of).to_numpy(dtype=np.int64)


def task_targets(table: Any, task: Task, multi_label: bool) -> np.ndarray:
    """Training targets: float32 ``[N, 2]`` crackle/wheeze bits when ``multi_label`` (4-class bit tasks),
    else the int64 class ids of :func:`task_class_ids`."""
    if multi_label:
        if not (task.bits and task.n_classes == 4):
            raise ValueError(f"multi_label targets are the crackle/wheeze bits of a 4-class task, not {task.name}")
        return bits_from_four_class(task_class_ids(table, task))
    return task_class_ids(table, task)
