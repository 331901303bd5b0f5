"""Task losses for the three output modes, built from the config and training-label counts.

| mode (``ls.engine.modes.OutputMode``) | logits | target | losses |
|---|---|---|---|
| ``multilabel`` | ``[B, 2]`` | float ``[B, 2]`` (crackle, wheeze) | bce, focal, asymmetric, hierarchical, composite |
| ``binary`` | ``[B, 1]`` or ``[B]`` | int/float ``[B]`` (1 = abnormal) | bce, focal, asymmetric |
| ``multiclass`` | ``[B, K]`` | int ``[B]`` | ce, weighted_ce, focal, label_smoothing |

``bce`` is the paper's loss: BCE-with-logits with ``pos_weight = n_neg / n_pos * sensitivity_bias`` per sigmoid
output. Counts come from the training labels array (``LabelStats``), not from a pass over an augmenting loader
(docs/fixes.md 11.6-3). Every loss computes in float32 (safe under fp16 autocast) and returns the batch mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ls.engine.config import TrainingConfig
from ls.engine.modes import LOSSES, OutputMode, canonical_loss, check_loss_name
from ls.engine.predict_rules import target_classes

# ----------------------------------------------------------------------------- label statistics


@dataclass(frozen=True)
class LabelStats:
    """Training-label counts per evaluation class (multilabel: composite normal, crackle, wheeze, both)."""

    class_counts: tuple[int, ...]

    @property
    def n(self) -> int:
        return int(sum(self.class_counts))

    def positives(self, mode: OutputMode) -> np.ndarray:
        """Positive count per sigmoid output: multilabel ``[crackle, wheeze]``, binary ``[abnormal]``."""
        c = np.asarray(self.class_counts, dtype=np.float64)
        if mode.kind == "multilabel":
            return np.array([c[1] + c[3], c[2] + c[3]])
        if mode.kind == "binary":
            return np.array([c[1:].sum()])
        raise ValueError("positives are defined for sigmoid outputs only")


def label_stats(labels: Any, mode: OutputMode) -> LabelStats:
    """Counts from the training labels (int ``[N]`` or multilabel float ``[N, 2]``)."""
    y = target_classes(labels, mode)
    if y.size and (y.min() < 0 or y.max() >= mode.n_classes):
        raise ValueError(
            f"training labels hold classes {np.unique(y).tolist()}, expected 0..{mode.n_classes - 1}"
        )
    return LabelStats(tuple(int(v) for v in np.bincount(y, minlength=mode.n_classes)))


def _names(mode: OutputMode) -> tuple[str, ...]:
    return ("crackle", "wheeze") if mode.kind == "multilabel" else ("abnormal",)


def pos_weight(stats: LabelStats, mode: OutputMode, sensitivity_bias: float = 1.0) -> Tensor:
    """``n_neg / n_pos * sensitivity_bias`` per sigmoid output (``[2]`` multilabel, ``[1]`` binary)."""
    pos = stats.positives(mode)
    for name, count in zip(_names(mode), pos):
        if count == 0 or count == stats.n:
            raise ValueError(
                f"cannot weight the {name} output: the training labels have {int(count)} positive "
                f"of {stats.n} cycles (need both positives and negatives)"
            )
    return torch.tensor((stats.n - pos) / pos * sensitivity_bias, dtype=torch.float32)


def class_weights(stats: LabelStats) -> Tensor:
    """Balanced class weights ``n / (K * n_k)`` ``[K]`` (each class contributes equally on average)."""
    counts = np.asarray(stats.class_counts, dtype=np.float64)
    if np.any(counts == 0):
        missing = [k for k, c in enumerate(counts) if c == 0]
        raise ValueError(f"cannot compute class weights: classes {missing} have no training cycles")
    return torch.tensor(counts.sum() / (counts.size * counts), dtype=torch.float32)


# ----------------------------------------------------------------------------- sigmoid losses


def _sigmoid_pair(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """float32 logits and float targets of the same shape (binary: ``[B]`` labels vs ``[B, 1]`` logits)."""
    z = logits.float()
    y = target.to(z.dtype)
    if z.dim() == 2 and z.shape[1] == 1 and y.dim() == 1:
        y = y.unsqueeze(1)
    if z.shape != y.shape:
        raise ValueError(f"logits {tuple(z.shape)} and targets {tuple(y.shape)} do not match")
    return z, y


class PosWeightedBCE(nn.Module):
    """Mean over elements of ``-[pw * y * log s(z) + (1 - y) * log(1 - s(z))]``; ``pos_weight`` ``[L]``."""

    def __init__(self, pos_weight: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight if pos_weight is None else pos_weight.float())

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        z, y = _sigmoid_pair(logits, target)
        return F.binary_cross_entropy_with_logits(z, y, pos_weight=self.pos_weight)


class SigmoidFocalLoss(nn.Module):
    """Focal BCE: ``alpha_t * (1 - p_t)^gamma * BCE`` with ``alpha_t = alpha`` (y = 1) or ``1 - alpha``."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        z, y = _sigmoid_pair(logits, target)
        bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        p = torch.sigmoid(z)
        p_t = y * p + (1 - y) * (1 - p)
        alpha_t = y * self.alpha + (1 - y) * (1 - self.alpha)
        return (alpha_t * (1 - p_t).pow(self.gamma) * bce).mean()


class AsymmetricLoss(nn.Module):
    """The reference's asymmetric loss (ast_train variant), p = s(z):
    positives ``-log(max(p, 1e-8)) * (1 - p)^gamma_pos``, negatives ``-log(max(1 - p, clip)) * p^gamma_neg``."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05) -> None:
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        z, y = _sigmoid_pair(logits, target)
        p = torch.sigmoid(z)
        loss_pos = -y * torch.log(p.clamp(min=1e-8)) * (1 - p).pow(self.gamma_pos)
        loss_neg = -(1 - y) * torch.log((1 - p).clamp(min=self.clip)) * p.pow(self.gamma_neg)
        return (loss_pos + loss_neg).mean()


class HierarchicalBCE(nn.Module):
    """Pos-weighted BCE on (crackle, wheeze) with per-cycle weights from the current 0.5-predictions:
    ``partial_credit`` for a true 'both' predicted with exactly one bit, ``miss_penalty`` for an abnormal cycle
    predicted normal (both applied to the two labels of that cycle)."""

    def __init__(self, pos_weight: Tensor, partial_credit: float = 0.5, miss_penalty: float = 2.0) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight.float())
        self.partial_credit, self.miss_penalty = partial_credit, miss_penalty

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        z, y = _sigmoid_pair(logits, target)
        bce = F.binary_cross_entropy_with_logits(z, y, pos_weight=self.pos_weight, reduction="none")
        with torch.no_grad():
            bits = (z >= 0).float()  # sigmoid(z) >= 0.5
            true_both = y.sum(dim=1) == 2
            one_bit = bits.sum(dim=1) == 1
            abnormal, predicted_normal = y.sum(dim=1) > 0, bits.sum(dim=1) == 0
            w = torch.ones_like(z[:, 0])
            w = torch.where(true_both & one_bit, w * self.partial_credit, w)
            w = torch.where(abnormal & predicted_normal, w * self.miss_penalty, w)
        return (bce * w[:, None]).mean()


def composite_cost_matrix(
    stats: LabelStats, partial_credit: float = 0.5, over_pred_cost: float = 0.3, sensitivity_bias: float = 1.0
) -> Tensor:
    """Cost ``[4, 4]`` (rows true N, C, W, B; columns predicted) scaled per row by class weights.

    Class weight ``w_k = n / (4 n_k + 1e-6)`` normalised to sum 4, abnormal rows then times the bias.
    """
    pc, o = partial_credit, over_pred_cost
    base = torch.tensor(
        [[0.0, 1.0, 1.0, 1.5], [2.0, 0.0, 1.2, o], [2.0, 1.2, 0.0, o], [2.5, pc, pc, 0.0]],
        dtype=torch.float64,
    )
    counts = torch.tensor(stats.class_counts, dtype=torch.float64)
    w = counts.sum() / (4 * counts + 1e-6)
    w = w * 4 / w.sum()
    w[1:] = w[1:] * sensitivity_bias
    return (base * w[:, None]).float()


class CompositeCostLoss(nn.Module):
    """Expected misclassification cost of the composite prediction: ``mean_i sum_j p_ij C[k_i, j]`` with
    p_N = (1-p_c)(1-p_w), p_C = p_c(1-p_w), p_W = (1-p_c)p_w, p_B = p_c p_w and true class k = c + 2w."""

    def __init__(self, cost: Tensor) -> None:
        super().__init__()
        self.register_buffer("cost", cost.float())

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        z, y = _sigmoid_pair(logits, target)
        pc, pw = torch.sigmoid(z[:, 0]), torch.sigmoid(z[:, 1])
        probs = torch.stack([(1 - pc) * (1 - pw), pc * (1 - pw), (1 - pc) * pw, pc * pw], dim=1)
        k = (y[:, 0] > 0.5).long() + 2 * (y[:, 1] > 0.5).long()
        return (probs * self.cost[k]).sum(dim=1).mean()


# ----------------------------------------------------------------------------- softmax losses


class SoftmaxFocalLoss(nn.Module):
    """Multi-class focal loss ``-w_y (1 - p_y)^gamma log p_y``, normalised by ``sum w_y`` like weighted CE."""

    def __init__(self, gamma: float = 2.0, weight: Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight if weight is None else weight.float())

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logp = F.log_softmax(logits.float(), dim=1).gather(1, target.long()[:, None])[:, 0]
        loss = -(1 - logp.exp()).pow(self.gamma) * logp
        if self.weight is None:
            return loss.mean()
        w = self.weight[target.long()]
        return (w * loss).sum() / w.sum()


class CrossEntropy(nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` on float32 logits ``[B, K]`` and int targets ``[B]``."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(logits.float(), target.long())


# ----------------------------------------------------------------------------- builder


def build_loss(
    training_cfg: TrainingConfig,
    mode: OutputMode,
    train_labels: LabelStats | Sequence | np.ndarray | Tensor | None,
) -> nn.Module:
    """The task loss named by ``training_cfg.loss`` for ``mode``.

    Args:
        training_cfg: ``loss``, ``sensitivity_bias`` and the loss parameters (focal_*, label_smoothing, ...).
        mode: from ``ls.engine.modes.resolve_output_mode``.
        train_labels: ``LabelStats`` or the training labels array (int ``[N]`` / float ``[N, 2]``); needed by
            bce, hierarchical, composite, weighted_ce and by any loss with ``use_class_weights``.

    Raises:
        ValueError for an unknown loss or one that does not fit the output mode (naming the valid ones).
    """
    name = check_loss_name(training_cfg.loss, mode)
    needs_stats = name in ("bce", "hierarchical", "composite", "weighted_ce") or (
        mode.kind == "multiclass" and training_cfg.use_class_weights
    )
    stats: LabelStats | None = None
    if train_labels is not None:
        stats = train_labels if isinstance(train_labels, LabelStats) else label_stats(train_labels, mode)
    if needs_stats and stats is None:
        raise ValueError(f"loss {name!r} needs the training label counts (pass the training labels)")
    t = training_cfg
    if mode.kind == "multiclass":
        weight = class_weights(stats) if (name == "weighted_ce" or t.use_class_weights) else None  # type: ignore[arg-type]
        if name == "focal":
            return SoftmaxFocalLoss(t.focal_gamma, weight)
        smoothing = t.label_smoothing if name == "label_smoothing" else 0.0
        return CrossEntropy(weight=weight, label_smoothing=smoothing)
    if name == "bce":
        return PosWeightedBCE(pos_weight(stats, mode, t.sensitivity_bias))  # type: ignore[arg-type]
    if name == "focal":
        return SigmoidFocalLoss(t.focal_alpha, t.focal_gamma)
    if name == "asymmetric":
        return AsymmetricLoss(t.asymmetric_gamma_neg, t.asymmetric_gamma_pos, t.asymmetric_clip)
    if name == "hierarchical":
        return HierarchicalBCE(pos_weight(stats, mode, t.sensitivity_bias), t.partial_credit, t.miss_penalty)  # type: ignore[arg-type]
    # composite
    return CompositeCostLoss(
        composite_cost_matrix(stats, t.partial_credit, t.over_pred_cost, t.sensitivity_bias)  # type: ignore[arg-type]
    )


__all__ = [
    "LOSSES",
    "AsymmetricLoss",
    "CompositeCostLoss",
    "CrossEntropy",
    "HierarchicalBCE",
    "LabelStats",
    "PosWeightedBCE",
    "SigmoidFocalLoss",
    "SoftmaxFocalLoss",
    "build_loss",
    "canonical_loss",
    "check_loss_name",
    "class_weights",
    "composite_cost_matrix",
    "label_stats",
    "pos_weight",
]
