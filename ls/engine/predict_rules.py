"""From model outputs to class predictions: probabilities, decision thresholds and their grid search.

The output modes themselves (``multilabel``, ``binary``, ``multiclass``) and how a run's mode is decided live
in :mod:`ls.engine.modes`; this module turns logits of a mode into probabilities and class ids, and tunes
the decision thresholds of sigmoid outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ls.engine.config import ThresholdConfig
from ls.engine.metrics import classification_metrics, icbhi_scores
from ls.engine.modes import MODE_KINDS, OutputMode

# ----------------------------------------------------------------------------- outputs -> classes


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (kept import-free: metrics and rules are numpy-only)
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    # exp of a negative argument only: no overflow warnings for large |z|
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def probabilities(logits: Any, mode: OutputMode) -> np.ndarray:
    """Logits ``[N, label_dim]`` -> multilabel ``[N, 2]`` (p_crackle, p_wheeze), binary ``[N]`` (p_abnormal),
    multiclass ``[N, K]`` (softmax). float64."""
    z = _numpy(logits).astype(np.float64)
    if mode.kind == "binary":
        if z.ndim == 2 and z.shape[1] == 1:
            z = z[:, 0]
        if z.ndim != 1:
            raise ValueError(f"binary mode expects logits [N] or [N, 1], got {z.shape}")
        return _sigmoid(z)
    if z.ndim != 2 or z.shape[1] != mode.label_dim:
        raise ValueError(f"{mode.kind} mode expects logits [N, {mode.label_dim}], got {z.shape}")
    if mode.kind == "multilabel":
        return _sigmoid(z)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def bits_to_classes(bits: np.ndarray) -> np.ndarray:
    """(crackle, wheeze) bits ``[N, 2]`` -> composite class ``[N]`` = crackle + 2 wheeze: 0 normal, 1 crackle,
    2 wheeze, 3 both (the multilabel mode's classes, ``ls.engine.modes``)."""
    b = _numpy(bits)
    if b.ndim != 2 or b.shape[1] != 2:
        raise ValueError(f"expected (crackle, wheeze) bits [N, 2], got {b.shape}")
    on = (b > 0.5).astype(np.int64)
    return on[:, 0] + 2 * on[:, 1]


def target_classes(labels: Any, mode: OutputMode) -> np.ndarray:
    """Batch labels (int ``[N]``, or float ``[N, 2]`` bits in multilabel mode) -> class ids ``[N]``."""
    y = _numpy(labels)
    if mode.kind == "multilabel":
        return bits_to_classes(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{mode.kind} mode expects integer labels [N], got shape {y.shape}")
    return np.rint(y).astype(np.int64)


def _threshold_tuple(thresholds: Sequence[float] | float | None, mode: OutputMode) -> tuple[float, ...]:
    n = len(mode.threshold_names)
    if thresholds is None:
        return (0.5,) * n
    values = [float(thresholds)] if np.isscalar(thresholds) else [float(t) for t in thresholds]  # type: ignore[union-attr]
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise ValueError(f"{mode.kind} mode takes {n} threshold(s) {mode.threshold_names}, got {values}")
    return tuple(values)


def predict_classes(
    probs: np.ndarray, mode: OutputMode, thresholds: Sequence[float] | float | None = None
) -> np.ndarray:
    """Probabilities (from ``probabilities``) -> class ids ``[N]``.

    ``thresholds``: multilabel ``(t_crackle, t_wheeze)``, binary ``(t,)``, a single value for all, or None
    for 0.5 (what training metrics use). Ignored in multiclass mode (argmax).
    """
    p = _numpy(probs)
    if mode.kind == "multiclass":
        return p.argmax(axis=1).astype(np.int64)
    t = _threshold_tuple(thresholds, mode)
    if mode.kind == "binary":
        return (p >= t[0]).astype(np.int64)
    return ((p[:, 0] >= t[0]).astype(np.int64) + 2 * (p[:, 1] >= t[1]).astype(np.int64)).astype(np.int64)


def class_probabilities(probs: np.ndarray, mode: OutputMode) -> np.ndarray:
    """Per-class probabilities ``[N, n_classes]`` for AUROC.

    Multilabel: composite probabilities assuming independent bits, p_N = (1-p_c)(1-p_w), p_C = p_c(1-p_w),
    p_W = (1-p_c)p_w, p_B = p_c p_w (as the reference's composite loss); binary: ``[1-p, p]``.
    """
    p = _numpy(probs).astype(np.float64)
    if mode.kind == "multiclass":
        return p
    if mode.kind == "binary":
        return np.stack([1.0 - p, p], axis=1)
    pc, pw = p[:, 0], p[:, 1]
    return np.stack([(1 - pc) * (1 - pw), pc * (1 - pw), (1 - pc) * pw, pc * pw], axis=1)


def probability_columns(probs: np.ndarray, mode: OutputMode, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-cycle probability columns: ``p_<class>`` for every class and, for sigmoid outputs, the raw
    outputs the thresholds apply to (``sigmoid_crackle``/``sigmoid_wheeze``; binary: ``sigmoid_abnormal``).

    Multilabel composite class probabilities assume independent crackle/wheeze bits
    (:func:`class_probabilities`).
    """
    probs = _numpy(probs)
    cols = {f"p_{name.lower()}": col for name, col in zip(class_names, class_probabilities(probs, mode).T)}
    if mode.kind == "multilabel":
        cols["sigmoid_crackle"], cols["sigmoid_wheeze"] = probs[:, 0], probs[:, 1]
    elif mode.kind == "binary":
        cols["sigmoid_abnormal"] = probs
    return cols


# ----------------------------------------------------------------------------- threshold search


@dataclass(frozen=True)
class ThresholdSearch:
    """Grid (start, stop inclusive, step), sensitivity floor and fallback threshold of one search, and its two
    edge rules: ``ties`` (``first``: of grid points with exactly the same best score, the first in grid order
    wins; ``last``: the last) and ``floor`` (``inclusive``: Se >= floor qualifies; ``exclusive``: Se > floor).

    The defaults, ``first`` and ``exclusive``, are what the original code does: a side-by-side run of its
    search and this one on 601 multi-label and 601 binary cases agreed on the thresholds in all but 4 + 4
    cases (none with a different score), while ``ties="last"`` chose other thresholds in 190 and 89 of them.
    The written description of the original says "Se >= floor"; the code rejects a sensitivity exactly on the
    floor. ``inclusive`` and ``last`` stay available for other protocols (``tune_thresholds(..., search=)``).
    """

    grid: tuple[float, float, float]
    min_sensitivity: float
    fallback: float
    ties: str = "first"
    floor: str = "exclusive"

    def __post_init__(self) -> None:
        if self.ties not in ("first", "last") or self.floor not in ("inclusive", "exclusive"):
            raise ValueError(f"ThresholdSearch: ties must be first|last and floor inclusive|exclusive, got "
                             f"{self.ties!r}, {self.floor!r}")


#: The original's searches (both selection protocols use them; ``paper`` on the test split, ``strict`` on the
#: validation split): grid, sensitivity floor and fallback per output mode, first-maximum ties, Se > floor.
PAPER_SEARCH: dict[str, ThresholdSearch] = {
    "multilabel": ThresholdSearch((0.10, 0.60, 0.05), min_sensitivity=0.45, fallback=0.10),
    "binary": ThresholdSearch((0.10, 0.90, 0.05), min_sensitivity=0.40, fallback=0.5),
}


def threshold_grid(start: float, stop: float, step: float) -> np.ndarray:
    """``start, start + step, ..., stop`` (inclusive), rounded so 0.15 is 0.15, not 0.15000000000000002."""
    n = int(np.floor((stop - start) / step + 1e-9)) + 1
    return np.round(start + step * np.arange(n), 10)


def search_settings(cfg: ThresholdConfig | None, mode: OutputMode) -> ThresholdSearch:
    """The paper's search for ``mode`` with any of grid / min_sensitivity / fallback overridden by ``cfg``."""
    if not mode.uses_thresholds:
        raise ValueError("multiclass (softmax) outputs have no decision thresholds to tune")
    base = PAPER_SEARCH[mode.kind]
    if cfg is None:
        return base
    return ThresholdSearch(
        grid=tuple(cfg.grid) if cfg.grid is not None else base.grid,  # type: ignore[arg-type]
        min_sensitivity=cfg.min_sensitivity if cfg.min_sensitivity is not None else base.min_sensitivity,
        fallback=cfg.fallback if cfg.fallback is not None else base.fallback,
        ties=base.ties,
        floor=base.floor,
    )


@dataclass(frozen=True)
class ThresholdResult:
    """Outcome of a search: the chosen thresholds and the ICBHI scores they give on the tuning data."""

    thresholds: tuple[float, ...]
    specificity: float
    sensitivity: float
    icbhi_score: float
    found: bool  # False: no grid point met the sensitivity floor, the fallback was used


def tune_thresholds(
    probs: np.ndarray, y_true: np.ndarray, mode: OutputMode, cfg: ThresholdConfig | None = None,
    search: ThresholdSearch | None = None,
) -> ThresholdResult:
    """The original's grid search: maximise the ICBHI score over grid points whose Se is above the floor
    (strictly, ``floor="exclusive"``); of equal best scores the first grid point wins (``ties="first"``).
    :class:`ThresholdSearch` (``search``) states both edge rules and offers the other readings.

    Multilabel: every (t_c, t_w) pair of the grid (t_c outer, t_w inner), scored on the 4-class composite
    prediction; binary: every t. All grid points are scored at once: for pair (i, j) the hits of each true
    class are products of per-threshold bit indicators, i.e. four ``[G, N_k] @ [N_k, G]`` products.

    Args:
        probs: ``probabilities(logits, mode)``: ``[N, 2]`` (multilabel) or ``[N]`` (binary).
        y_true: class ids ``[N]``.
        search: the whole search (grid, floor, fallback, edge rules) instead of the paper's with ``cfg``.
    """
    s = search if search is not None else search_settings(cfg, mode)
    grid = threshold_grid(*s.grid)
    p = _numpy(probs).astype(np.float64)
    y = np.asarray(y_true).astype(np.int64)
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"probs have {p.shape[0]} rows for {y.shape[0]} labels")
    n_normal, n_abnormal = int(np.sum(y == 0)), int(np.sum(y > 0))
    if mode.kind == "binary":
        on = (p[:, None] >= grid[None, :]).astype(np.int64)  # [N, G]: predicted abnormal
        normal_hits = (1 - on[y == 0]).sum(axis=0)
        abnormal_hits = on[y > 0].sum(axis=0)
    else:
        # float64 0/1 indicators: BLAS matmul, and counts stay exact integers (< 2^53)
        c = (p[:, 0:1] >= grid[None, :]).astype(np.float64)  # [N, G] crackle bit per t_c
        w = (p[:, 1:2] >= grid[None, :]).astype(np.float64)  # [N, G] wheeze bit per t_w
        nc, nw = 1 - c, 1 - w

        def hits(k: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            sel = y == k
            return a[sel].T @ b[sel]  # [G, G]: cycles of class k whose (i, j) prediction is k

        normal_hits = hits(0, nc, nw)
        abnormal_hits = hits(1, c, nw) + hits(2, nc, w) + hits(3, c, w)
    sp = normal_hits / n_normal if n_normal else np.zeros(normal_hits.shape)
    se = abnormal_hits / n_abnormal if n_abnormal else np.zeros(abnormal_hits.shape)
    score = (sp + se) / 2.0
    # Se is a ratio of counts: "exactly on the floor" is decided with a tolerance for division noise.
    if s.floor == "inclusive":
        ok = se >= s.min_sensitivity - 1e-12
    else:
        ok = se > s.min_sensitivity + 1e-12
    if not ok.any():
        t = _threshold_tuple(s.fallback, mode)
        m = icbhi_scores(y, predict_classes(p, mode, t), mode.n_classes)
        return ThresholdResult(t, m["specificity"], m["sensitivity"], m["icbhi_score"], found=False)
    flat = np.where(ok, score, -np.inf).ravel()
    if s.ties == "first":
        best = int(np.argmax(flat))  # first maximum in grid order (t_c outer)
    else:
        best = flat.size - 1 - int(np.argmax(flat[::-1]))  # last maximum in grid order
    idx = np.unravel_index(best, score.shape)
    t = tuple(float(grid[i]) for i in idx)
    return ThresholdResult(t, float(sp[idx]), float(se[idx]), float(score[idx]), found=True)


def fixed_thresholds(cfg: ThresholdConfig | None, mode: OutputMode) -> tuple[float, ...]:
    """``thresholds.value`` expanded to one value per sigmoid output (``()`` in multiclass mode)."""
    if not mode.uses_thresholds:
        return ()
    return _threshold_tuple(None if cfg is None else cfg.value, mode)


# ----------------------------------------------------------------------------- one-call evaluation


@dataclass
class Evaluation:
    """Everything one evaluation pass produced (arrays are ``[N]`` unless noted)."""

    metrics: dict[str, float]
    thresholds: tuple[float, ...]
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray  # as ``probabilities``: [N, 2], [N] or [N, K]
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate_outputs(
    logits: Any,
    labels: Any,
    mode: OutputMode,
    *,
    thresholds: Sequence[float] | float | None = None,
    threshold_cfg: ThresholdConfig | None = None,
) -> Evaluation:
    """Logits ``[N, label_dim]`` + batch labels -> predictions and ``classification_metrics``.

    Thresholds, in order of precedence: the explicit ``thresholds`` (e.g. stored in a checkpoint); else
    ``threshold_cfg`` (``tuned``: grid search on these very outputs; ``fixed``: its value); else 0.5.
    The chosen thresholds are added to the metrics (``threshold_crackle``/``threshold_wheeze`` or
    ``threshold``).
    """
    probs = probabilities(logits, mode)
    y_true = target_classes(labels, mode)
    if not mode.uses_thresholds:
        chosen: tuple[float, ...] = ()
    elif thresholds is not None:
        chosen = _threshold_tuple(thresholds, mode)
    elif threshold_cfg is not None and threshold_cfg.mode == "tuned":
        chosen = tune_thresholds(probs, y_true, mode, threshold_cfg).thresholds
    else:
        chosen = fixed_thresholds(threshold_cfg, mode)
    y_pred = predict_classes(probs, mode, chosen)
    metrics = classification_metrics(y_true, y_pred, class_probabilities(probs, mode), mode.n_classes,
                                     mode.class_names)
    metrics.update(zip(mode.threshold_names, chosen))
    return Evaluation(metrics, chosen, y_true, y_pred, probs)


__all__ = [
    "MODE_KINDS",
    "PAPER_SEARCH",
    "Evaluation",
    "OutputMode",
    "ThresholdResult",
    "ThresholdSearch",
    "bits_to_classes",
    "class_probabilities",
    "evaluate_outputs",
    "fixed_thresholds",
    "predict_classes",
    "probabilities",
    "probability_columns",
    "search_settings",
    "target_classes",
    "threshold_grid",
    "tune_thresholds",
]
