"""Classification metrics for respiratory-cycle predictions: pure functions on numpy arrays.

Every function takes integer class arrays (``y_true``, ``y_pred``: ``[N]``, class 0 = normal) and, where
useful, class probabilities ``[N, K]``. Results are plain ``dict[str, float]`` with the stable keys documented
in :func:`classification_metrics`; all values are fractions in ``[0, 1]`` (``format_metrics`` shows percent).

The ICBHI challenge definitions:

- specificity ``Sp`` = normal cycles predicted normal / normal cycles;
- sensitivity ``Se`` = abnormal cycles predicted as exactly their class / abnormal cycles. In 4-class a
  'both' cycle predicted 'crackle' is a miss, not half a hit;
- ``icbhi_score`` = (Sp + Se) / 2.

The SPRSound (BioCAS 2022) challenge scores the same Sp and Se further: ``harmonic_score`` = 2 Sp Se / (Sp + Se)
and ``sprsound_score`` = (icbhi_score + harmonic_score) / 2 (the challenge's "average" and "harmonic" scores).

A denominator of zero (no normal or no abnormal cycle) gives 0.0, the reference's convention, so the keys
are always present; ``group_metrics`` instead omits what a group cannot define.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from ls.types import FOUR_CLASS_NAMES, TWO_CLASS_NAMES

#: Class names by number of classes (index = class id), used for per-class keys.
CLASS_NAMES: dict[int, tuple[str, ...]] = {2: TWO_CLASS_NAMES, 4: FOUR_CLASS_NAMES}

#: The keys ``format_metrics`` shows by default, in order, with their short labels.
SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("specificity", "Sp"),
    ("sensitivity", "Se"),
    ("icbhi_score", "Score"),
    ("binary_icbhi_score", "2cls"),
    ("accuracy", "Acc"),
    ("f1_macro", "F1"),
    ("auroc_macro", "AUROC"),
    ("auroc", "AUROC"),
)


def _as_classes(y: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64, copy=False)


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    t = _as_classes(y_true, "y_true")
    p = _as_classes(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} has class ids outside [0, {n_classes - 1}]: {np.unique(arr).tolist()}")
    return t, p


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


def class_names(n_classes: int) -> tuple[str, ...]:
    """Metric-key class names: ``normal, crackle, wheeze, both`` (4) or ``normal, abnormal`` (2)."""
    if n_classes in CLASS_NAMES:
        return CLASS_NAMES[n_classes]
    return tuple(f"class{k}" for k in range(n_classes))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[K, K]`` (int64), rows = true class, columns = predicted class, every class present."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix  # deferred: ~1 s off every CLI start

    t, p = _check_pair(y_true, y_pred, n_classes)
    return sk_confusion_matrix(t, p, labels=np.arange(n_classes)).astype(np.int64)


def icbhi_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> dict[str, float]:
    """ICBHI ``specificity``, ``sensitivity`` (exact class match on abnormal cycles) and ``icbhi_score``.

    Works for any number of classes with class 0 = normal (4-class and 2-class alike).
    """
    k = n_classes if n_classes is not None else _infer_n_classes(y_true, y_pred)
    t, p = _check_pair(y_true, y_pred, k)
    normal = t == 0
    hits = t == p
    sp = _ratio(np.sum(hits & normal), np.sum(normal))
    se = _ratio(np.sum(hits & ~normal), np.sum(~normal))
    return {"specificity": sp, "sensitivity": se, "icbhi_score": (sp + se) / 2.0}


def sprsound_scores(sp: float, se: float) -> dict[str, float]:
    """The SPRSound challenge's ``harmonic_score`` and ``sprsound_score`` from specificity and sensitivity."""
    harmonic = _ratio(2.0 * sp * se, sp + se)
    return {"harmonic_score": harmonic, "sprsound_score": ((sp + se) / 2.0 + harmonic) / 2.0}


def metric_key(name: str) -> str:
    """A class name as part of a metric key: lower case, runs of other characters than letters and digits as one
    ``_`` (``CAS & DAS`` -> ``cas_das``; tracking servers refuse ``&`` and ``+``)."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "class"


def binary_view(y: np.ndarray) -> np.ndarray:
    """Normal (0) vs abnormal (1) view of class ids ``[N]``: any adventitious sound is abnormal."""
    return (_as_classes(y, "y") > 0).astype(np.int64)


def binary_icbhi_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``binary_specificity``, ``binary_sensitivity``, ``binary_icbhi_score`` after merging abnormal classes.

    A 'both' cycle predicted 'crackle' is a hit here (it is abnormal either way), unlike in ``icbhi_scores``.
    """
    s = icbhi_scores(binary_view(y_true), binary_view(y_pred), n_classes=2)
    return {f"binary_{key}": value for key, value in s.items()}


def _infer_n_classes(*arrays: np.ndarray) -> int:
    top = max((int(np.max(a)) for a in arrays if np.asarray(a).size), default=0)
    return 2 if top <= 1 else 4 if top <= 3 else top + 1


def _auroc(y_true: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """AUROC keys that are defined on this data (NaN-free: undefined ones are left out)."""
    from sklearn.metrics import roc_auc_score

    n_classes = len(names)
    probs = np.asarray(probs, dtype=np.float64)
    if n_classes == 2 and probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=1)
    if probs.shape != (y_true.shape[0], n_classes):
        raise ValueError(
            f"probs must have shape [N, {n_classes}] = {(y_true.shape[0], n_classes)}, got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs contain NaN or Inf")
    out: dict[str, float] = {}
    present = np.unique(y_true)
    if n_classes == 2:
        if present.size == 2:
            out["auroc"] = float(roc_auc_score(y_true, probs[:, 1]))
        return out
    for k, name in enumerate(names):
        positive = y_true == k
        if 0 < positive.sum() < y_true.size:
            out[f"auroc_{name}"] = float(roc_auc_score(positive, probs[:, k]))
    if present.size == n_classes:
        # Macro one-vs-rest over every class (only when all are present, else it is undefined).
        out["auroc_macro"] = float(np.mean([out[f"auroc_{n}"] for n in names]))
    abnormal = y_true > 0
    if 0 < abnormal.sum() < y_true.size:
        out["binary_auroc"] = float(roc_auc_score(abnormal, 1.0 - probs[:, 0]))
    return out


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray | None = None,
    n_classes: int | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, float]:
    """All scalar metrics of one evaluation, as fractions in ``[0, 1]``.

    Args:
        y_true, y_pred: class ids ``[N]`` (0 = normal).
        probs: optional class probabilities ``[N, K]`` (``[N]`` = P(abnormal) also accepted when K = 2).
        n_classes: K (4 or 2 for ICBHI); inferred from the labels when omitted.
        names: class names, in keys as :func:`metric_key` writes them (default ``class_names(K)``).

    Keys:
        ``specificity, sensitivity, icbhi_score`` (ICBHI, exact class match); ``harmonic_score,
        sprsound_score`` (SPRSound challenge);
        ``binary_specificity, binary_sensitivity, binary_icbhi_score`` (normal vs abnormal view);
        ``accuracy, balanced_accuracy, f1_macro, f1_weighted, precision_macro, recall_macro``;
        ``precision_<c>, recall_<c>, f1_<c>`` for every class ``c``;
        with ``probs``: ``auroc`` (K = 2), or ``auroc_<c>``, ``auroc_macro`` (every class present) and
        ``binary_auroc`` (P(abnormal) = 1 - P(normal)) for K > 2, each only where defined.
    """
    from sklearn.metrics import precision_recall_fscore_support

    k = n_classes if n_classes is not None else _infer_n_classes(y_true, y_pred)
    names = tuple(map(metric_key, names)) if names is not None else class_names(k)
    if len(names) != k:
        raise ValueError(f"got {len(names)} class names for {k} classes: {names}")
    if len(set(names)) != k:
        raise ValueError(f"class names {names} are not distinct as metric keys")
    t, p = _check_pair(y_true, y_pred, k)
    if t.size == 0:
        raise ValueError("cannot compute metrics on an empty set of cycles")

    out = icbhi_scores(t, p, k)
    out.update(sprsound_scores(out["specificity"], out["sensitivity"]))
    out.update(binary_icbhi_scores(t, p))
    out["accuracy"] = float(np.mean(t == p))
    # sklearn warns and returns 0 for classes absent from y_true; recall over present classes only.
    present = np.unique(t)
    out["balanced_accuracy"] = float(np.mean([np.mean(p[t == c] == c) for c in present]))
    labels = np.arange(k)
    prec, rec, f1, support = precision_recall_fscore_support(t, p, labels=labels, zero_division=0.0)
    out["precision_macro"] = float(np.mean(prec))
    out["recall_macro"] = float(np.mean(rec))
    out["f1_macro"] = float(np.mean(f1))
    out["f1_weighted"] = float(np.average(f1, weights=support)) if support.sum() else 0.0
    for c, name in enumerate(names):
        out[f"precision_{name}"] = float(prec[c])
        out[f"recall_{name}"] = float(rec[c])
        out[f"f1_{name}"] = float(f1[c])
    if probs is not None:
        out.update(_auroc(t, probs, names))
    return out


def group_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: Mapping[str, Sequence] | Sequence,
    n_classes: int | None = None,
) -> dict[str, float]:
    """ICBHI Sp/Se/Score per group, e.g. per recording device and per auscultation site.

    Args:
        y_true, y_pred: class ids ``[N]``.
        groups: ``{factor: labels [N]}`` (e.g. ``{"device": devices, "site": sites}``; labels may be names
            or ids), or one label array (factor name ``group``).

    Returns:
        Flat ``{"<factor>/<group>/<metric>": value}`` with metrics ``n_cycles`` (a count), ``specificity``
        (if the group has normal cycles), ``sensitivity`` (if it has abnormal ones), ``icbhi_score`` and
        ``sprsound_score`` (if both), and ``binary_sensitivity`` / ``binary_icbhi_score`` likewise. Undefined
        values are omitted rather than reported as 0, so a device with no abnormal cycle does not look like a
        failure.
    """
    k = n_classes if n_classes is not None else _infer_n_classes(y_true, y_pred)
    t, p = _check_pair(y_true, y_pred, k)
    factors = dict(groups) if isinstance(groups, Mapping) else {"group": groups}
    out: dict[str, float] = {}
    for factor, labels in factors.items():
        labels = np.asarray(labels)
        if labels.shape != t.shape:
            raise ValueError(f"groups[{factor!r}] has {labels.shape[0]} labels for {t.shape[0]} cycles")
        for value in sorted(np.unique(labels).tolist(), key=str):
            sel = labels == value
            prefix = f"{factor}/{value}/"
            gt, gp = t[sel], p[sel]
            has_normal, has_abnormal = bool(np.any(gt == 0)), bool(np.any(gt > 0))
            out[prefix + "n_cycles"] = float(sel.sum())
            scores = icbhi_scores(gt, gp, k)
            binary = binary_icbhi_scores(gt, gp)
            if has_normal:
                out[prefix + "specificity"] = scores["specificity"]
            if has_abnormal:
                out[prefix + "sensitivity"] = scores["sensitivity"]
                out[prefix + "binary_sensitivity"] = binary["binary_sensitivity"]
            if has_normal and has_abnormal:
                out[prefix + "icbhi_score"] = scores["icbhi_score"]
                out[prefix + "sprsound_score"] = sprsound_scores(scores["specificity"], scores["sensitivity"])[
                    "sprsound_score"]
                out[prefix + "binary_icbhi_score"] = binary["binary_icbhi_score"]
    return out


def format_metrics(
    metrics: Mapping[str, float],
    keys: Sequence[tuple[str, str]] | None = None,
    prefix: str = "",
    loss_key: str = "loss",
) -> str:
    """One readable line, e.g. ``val loss 0.512 | Sp 74.47 | Se 47.91 | Score 61.19 | ...`` (percent).

    Keys absent from ``metrics`` are skipped; ``loss`` (if present) is shown unscaled first.
    """
    parts = [prefix] if prefix else []
    if loss_key in metrics:
        parts.append(f"loss {metrics[loss_key]:.4f}")
    shown: set[str] = set()
    for key, label in keys or SUMMARY_KEYS:
        if key in metrics and label not in shown and not math.isnan(metrics[key]):
            parts.append(f"{label} {100.0 * metrics[key]:.2f}")
            shown.add(label)
    return " | ".join(parts)


__all__ = [
    "CLASS_NAMES",
    "binary_icbhi_scores",
    "binary_view",
    "class_names",
    "classification_metrics",
    "confusion_matrix",
    "format_metrics",
    "group_metrics",
    "icbhi_scores",
    "metric_key",
    "sprsound_scores",
]
