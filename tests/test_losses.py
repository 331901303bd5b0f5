"""ls.engine.losses: each loss against its formula written out directly, counts, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ls.engine.config import TrainingConfig
from ls.engine.losses import (
    LabelStats,
    build_loss,
    class_weights,
    composite_cost_matrix,
    label_stats,
    pos_weight,
)
from ls.engine.predict_rules import OutputMode

MULTI = OutputMode("multilabel", 4, 2)
BINARY = OutputMode("binary", 2, 1)
MC4 = OutputMode("multiclass", 4, 4)

# Official-split training counts (spec 2.4): normal, crackle, wheeze, both
TRAIN_COUNTS = (2063, 1215, 501, 363)

torch.manual_seed(0)
Z2 = torch.randn(8, 2) * 2
BITS = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1], [0, 0], [1, 1], [1, 0], [0, 0]], dtype=torch.float32)
Z4 = torch.randn(8, 4)
Y4 = torch.tensor([0, 1, 2, 3, 0, 0, 1, 3])


def cfg(**kw) -> TrainingConfig:
    return TrainingConfig(**kw)


def test_label_stats_from_labels_array():
    stats = label_stats(BITS, MULTI)
    assert stats.class_counts == (3, 2, 1, 2)
    assert stats.positives(MULTI).tolist() == [4, 3]
    assert label_stats(np.array([0, 1, 1, 0, 1]), BINARY).class_counts == (2, 3)


def test_pos_weight_on_official_train_counts_matches_spec():
    stats = LabelStats(TRAIN_COUNTS)
    pw = pos_weight(stats, MULTI, sensitivity_bias=1.5)
    n = sum(TRAIN_COUNTS)
    crackle_pos = 1215 + 363
    assert pw[0].item() == pytest.approx((n - crackle_pos) / crackle_pos * 1.5, rel=1e-6)
    assert pw.tolist() == pytest.approx([2.44, 5.69], abs=0.005)  # the values quoted in spec 4.3
    binary = pos_weight(LabelStats((2063, 1215 + 501 + 363)), BINARY)
    assert binary.tolist() == pytest.approx([0.99], abs=0.005)


def test_bce_is_the_pos_weighted_formula():
    stats = label_stats(BITS, MULTI)
    loss = build_loss(cfg(loss="bce", sensitivity_bias=1.5), MULTI, stats)(Z2, BITS)
    pw = torch.tensor([(8 - 4) / 4 * 1.5, (8 - 3) / 3 * 1.5])
    s = torch.sigmoid(Z2)
    expected = -(pw * BITS * torch.log(s) + (1 - BITS) * torch.log(1 - s)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_binary_bce_takes_integer_labels_and_one_logit():
    z = torch.tensor([[0.3], [-1.2], [2.0], [0.0]])
    y = torch.tensor([0, 1, 1, 0])
    loss = build_loss(cfg(loss="bce"), BINARY, y.numpy())(z, y)
    pw, s, yf = 2 / 2, torch.sigmoid(z[:, 0]), y.float()
    expected = -(pw * yf * torch.log(s) + (1 - yf) * torch.log(1 - s)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sigmoid_focal_formula():
    loss = build_loss(cfg(loss="focal", focal_alpha=0.3, focal_gamma=2.0), MULTI, None)(Z2, BITS)
    p = torch.sigmoid(Z2)
    p_t = torch.where(BITS == 1, p, 1 - p)
    alpha_t = torch.where(BITS == 1, torch.tensor(0.3), torch.tensor(0.7))
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_asymmetric_formula():
    t = cfg(loss="asymmetric", asymmetric_gamma_neg=4.0, asymmetric_gamma_pos=1.0, asymmetric_clip=0.05)
    loss = build_loss(t, MULTI, None)(Z2, BITS)
    p = torch.sigmoid(Z2)
    pos = -BITS * torch.log(p.clamp(min=1e-8)) * (1 - p)
    neg = -(1 - BITS) * torch.log((1 - p).clamp(min=0.05)) * p**4
    assert loss.item() == pytest.approx((pos + neg).mean().item(), rel=1e-5)


def test_cross_entropy_variants():
    logp = torch.log_softmax(Z4, dim=1)
    nll = -logp[torch.arange(8), Y4]
    ce = build_loss(cfg(loss="ce"), MC4, None)(Z4, Y4)
    assert ce.item() == pytest.approx(nll.mean().item(), rel=1e-5)

    stats = label_stats(Y4.numpy(), MC4)  # counts 3, 2, 1, 2
    w = torch.tensor([8 / (4 * 3), 8 / (4 * 2), 8 / (4 * 1), 8 / (4 * 2)])
    assert class_weights(stats).tolist() == pytest.approx(w.tolist())
    wce = build_loss(cfg(loss="weighted_ce"), MC4, stats)(Z4, Y4)
    assert wce.item() == pytest.approx(((w[Y4] * nll).sum() / w[Y4].sum()).item(), rel=1e-5)

    eps = 0.2
    ls = build_loss(cfg(loss="label_smoothing", label_smoothing=eps), MC4, None)(Z4, Y4)
    expected = ((1 - eps) * nll + eps * (-logp).mean(dim=1)).mean()
    assert ls.item() == pytest.approx(expected.item(), rel=1e-5)


def test_softmax_focal_formula_and_gamma_zero_is_ce():
    logp = torch.log_softmax(Z4, dim=1)[torch.arange(8), Y4]
    focal = build_loss(cfg(loss="focal", focal_gamma=2.0), MC4, None)(Z4, Y4)
    assert focal.item() == pytest.approx((-((1 - logp.exp()) ** 2) * logp).mean().item(), rel=1e-5)
    focal0 = build_loss(cfg(loss="focal", focal_gamma=0.0), MC4, None)(Z4, Y4)
    assert focal0.item() == pytest.approx((-logp).mean().item(), rel=1e-5)


def test_hierarchical_weights_partial_hits_and_misses():
    z = torch.tensor([[2.0, -2.0], [-1.0, -3.0], [1.0, 1.0], [-1.0, -1.0]])  # predicted C, N, B, N
    y = torch.tensor([[1, 1], [1, 0], [0, 0], [0, 0]], dtype=torch.float32)  # true B, C, N, N
    stats = LabelStats((4, 2, 1, 3))  # crackle pw = 5/5, wheeze pw = 6/4
    t = cfg(loss="hierarchical", partial_credit=0.5, miss_penalty=2.0)
    loss = build_loss(t, MULTI, stats)(z, y)
    pw = torch.tensor([1.0, 1.5])
    s = torch.sigmoid(z)
    bce = -(pw * y * torch.log(s) + (1 - y) * torch.log(1 - s))
    # cycle 0: true both, one bit -> x0.5; cycle 1: abnormal predicted normal -> x2
    weights = torch.tensor([0.5, 2.0, 1.0, 1.0])[:, None]
    assert loss.item() == pytest.approx((bce * weights).mean().item(), rel=1e-5)


def test_composite_expected_cost_by_hand():
    stats = LabelStats((4, 2, 1, 1))
    cost = composite_cost_matrix(stats, partial_credit=0.5, over_pred_cost=0.3, sensitivity_bias=2.0)
    w = np.array([8 / 16, 8 / 8, 8 / 4, 8 / 4])  # n / (4 n_k), the 1e-6 is negligible here
    w = w * 4 / w.sum()
    w[1:] *= 2.0
    base = np.array([[0, 1, 1, 1.5], [2, 0, 1.2, 0.3], [2, 1.2, 0, 0.3], [2.5, 0.5, 0.5, 0]])
    np.testing.assert_allclose(cost.numpy(), base * w[:, None], rtol=1e-5)

    z = torch.tensor([[0.5, -0.2], [1.0, 2.0]])
    y = torch.tensor([[1, 0], [1, 1]], dtype=torch.float32)  # crackle, both
    loss = build_loss(cfg(loss="composite", sensitivity_bias=2.0), MULTI, stats)(z, y)
    pc, pw_ = torch.sigmoid(z[:, 0]).double(), torch.sigmoid(z[:, 1]).double()
    probs = torch.stack([(1 - pc) * (1 - pw_), pc * (1 - pw_), (1 - pc) * pw_, pc * pw_], 1).numpy()
    c = base * w[:, None]
    expected = (probs[0] @ c[1] + probs[1] @ c[3]) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_losses_compute_in_float32_for_half_logits():
    loss = build_loss(cfg(loss="bce"), MULTI, BITS)(Z2.half(), BITS)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_gradients_flow():
    z = Z2.clone().requires_grad_(True)
    build_loss(cfg(loss="composite"), MULTI, BITS)(z, BITS).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_unknown_and_mismatched_losses_are_clear_errors():
    with pytest.raises(ValueError, match="unknown training.loss 'bcee'; known losses: asymmetric, bce"):
        build_loss(cfg(loss="bcee"), MULTI, BITS)
    with pytest.raises(ValueError, match="needs multiclass outputs, but the model has multilabel outputs"):
        build_loss(cfg(loss="weighted_ce"), MULTI, BITS)
    with pytest.raises(ValueError, match="for multiclass use one of: ce, weighted_ce"):
        build_loss(cfg(loss="bce"), MC4, Y4)
    with pytest.raises(ValueError, match="needs the training label counts"):
        build_loss(cfg(loss="bce"), MULTI, None)


def test_degenerate_counts_are_reported():
    no_wheeze = torch.tensor([[0, 0], [1, 0]], dtype=torch.float32)
    with pytest.raises(
        ValueError, match="cannot weight the wheeze output: the training labels have 0 positive"
    ):
        build_loss(cfg(loss="bce"), MULTI, no_wheeze)
    with pytest.raises(ValueError, match=r"classes \[2, 3\] have no training cycles"):
        build_loss(cfg(loss="weighted_ce"), MC4, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="logits .* and targets .* do not match"):
        build_loss(cfg(loss="focal"), MULTI, None)(Z2, BITS[:, :1])
