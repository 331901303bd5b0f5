"""ls.engine.metrics on small cases computed by hand (and AUROC by direct pair counting)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ls.engine.metrics import (
    binary_icbhi_scores,
    binary_view,
    classification_metrics,
    confusion_matrix,
    format_metrics,
    group_metrics,
    icbhi_scores,
)

# 4 normal, 2 crackle, 1 wheeze, 2 both. Hits: normals 3/4; abnormal: crackle 1/2, wheeze 1/1,
# both 1/2 (the 'both' predicted 'crackle' is a miss in 4-class, a hit in the binary view).
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 3, 3])
Y_PRED = np.array([0, 0, 1, 0, 1, 0, 2, 1, 3])


def pairwise_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC as P(score_pos > score_neg) + 0.5 P(tie), by counting every pair."""
    pos, neg = score[positive], score[~positive]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_icbhi_scores_hand_computed():
    s = icbhi_scores(Y_TRUE, Y_PRED, n_classes=4)
    assert s["specificity"] == pytest.approx(3 / 4)
    assert s["sensitivity"] == pytest.approx(3 / 5)
    assert s["icbhi_score"] == pytest.approx((3 / 4 + 3 / 5) / 2)


def test_both_predicted_as_crackle_is_a_miss():
    s = icbhi_scores(np.array([3]), np.array([1]), n_classes=4)
    assert s["sensitivity"] == 0.0
    assert binary_icbhi_scores(np.array([3]), np.array([1]))["binary_sensitivity"] == 1.0


def test_binary_view_merges_abnormal_classes():
    assert binary_view(np.array([0, 1, 2, 3])).tolist() == [0, 1, 1, 1]
    b = binary_icbhi_scores(Y_TRUE, Y_PRED)
    assert b["binary_specificity"] == pytest.approx(3 / 4)
    assert b["binary_sensitivity"] == pytest.approx(4 / 5)
    assert b["binary_icbhi_score"] == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)
    expected = np.array([[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 1]])
    np.testing.assert_array_equal(cm, expected)
    # a class absent from both arrays still gets its row and column
    assert confusion_matrix(np.array([0, 1]), np.array([0, 1]), 4).shape == (4, 4)


def test_classification_metrics_hand_computed():
    m = classification_metrics(Y_TRUE, Y_PRED, n_classes=4)
    assert m["accuracy"] == pytest.approx(6 / 9)
    recalls = {"normal": 3 / 4, "crackle": 1 / 2, "wheeze": 1.0, "both": 1 / 2}
    precisions = {"normal": 3 / 4, "crackle": 1 / 3, "wheeze": 1.0, "both": 1.0}
    f1 = {k: 2 * precisions[k] * recalls[k] / (precisions[k] + recalls[k]) for k in recalls}
    for k, recall in recalls.items():
        assert m[f"recall_{k}"] == pytest.approx(recall)
        assert m[f"precision_{k}"] == pytest.approx(precisions[k])
        assert m[f"f1_{k}"] == pytest.approx(f1[k])
    assert m["balanced_accuracy"] == pytest.approx(np.mean(list(recalls.values())))
    assert m["f1_macro"] == pytest.approx(np.mean(list(f1.values())))
    support = {"normal": 4, "crackle": 2, "wheeze": 1, "both": 2}
    assert m["f1_weighted"] == pytest.approx(sum(f1[k] * support[k] for k in f1) / 9)
    assert m["icbhi_score"] == pytest.approx(0.675)
    assert m["binary_icbhi_score"] == pytest.approx(0.775)
    assert all(0.0 <= v <= 1.0 for v in m.values())


def test_two_class_metrics_and_binary_auroc():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    pred = (p >= 0.5).astype(int)
    m = classification_metrics(y, pred, probs=p, n_classes=2)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["recall_abnormal"] == pytest.approx(2 / 3)
    assert m["auroc"] == pytest.approx(pairwise_auc(y == 1, p))
    assert m["binary_icbhi_score"] == pytest.approx(m["icbhi_score"])


def test_multiclass_auroc_matches_pair_counting():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 3] * 6)
    probs = rng.dirichlet(np.ones(4), size=y.size)
    m = classification_metrics(y, probs.argmax(1), probs=probs, n_classes=4)
    per_class = [pairwise_auc(y == k, probs[:, k]) for k in range(4)]
    for k, name in enumerate(("normal", "crackle", "wheeze", "both")):
        assert m[f"auroc_{name}"] == pytest.approx(per_class[k])
    assert m["auroc_macro"] == pytest.approx(np.mean(per_class))
    assert m["binary_auroc"] == pytest.approx(pairwise_auc(y > 0, 1 - probs[:, 0]))


def test_auroc_omitted_where_undefined():
    y = np.array([0, 0, 1, 1])  # wheeze and both absent
    probs = np.full((4, 4), 0.25)
    m = classification_metrics(y, np.zeros(4, dtype=int), probs=probs, n_classes=4)
    assert "auroc_macro" not in m and "auroc_wheeze" not in m
    assert "auroc_crackle" in m
    assert not any(math.isnan(v) for v in m.values())
    one_class = classification_metrics(np.zeros(3, int), np.zeros(3, int), probs=np.full(3, 0.2), n_classes=2)
    assert "auroc" not in one_class


def test_group_metrics_per_device_and_site():
    devices = np.array(["A", "A", "A", "B", "A", "B", "B", "B", "B"])
    sites = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1])
    g = group_metrics(Y_TRUE, Y_PRED, {"device": devices, "site": sites}, n_classes=4)
    # device A: cycles 0,1,2,4 -> normals 0,1,2 (hits 2/3), abnormal cycle 4 (hit 1/1)
    assert g["device/A/n_cycles"] == 4
    assert g["device/A/specificity"] == pytest.approx(2 / 3)
    assert g["device/A/sensitivity"] == pytest.approx(1.0)
    assert g["device/A/icbhi_score"] == pytest.approx((2 / 3 + 1) / 2)
    # device B: cycles 3,5,6,7,8 -> normal 3 (hit), abnormal 5,6,7,8 (hits 6, 8)
    assert g["device/B/icbhi_score"] == pytest.approx((1 + 2 / 4) / 2)
    assert g["device/B/binary_sensitivity"] == pytest.approx(3 / 4)
    assert g["site/1/icbhi_score"] == pytest.approx(0.675)


def test_group_metrics_omit_undefined_scores():
    g = group_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]), np.array(["x", "x", "y"]), n_classes=4)
    assert g["group/x/specificity"] == 0.5
    assert "group/x/sensitivity" not in g and "group/x/icbhi_score" not in g
    assert "group/y/specificity" not in g and g["group/y/sensitivity"] == 1.0


def test_format_metrics_one_line_in_percent():
    m = classification_metrics(Y_TRUE, Y_PRED, n_classes=4)
    m["loss"] = 0.51234
    line = format_metrics(m, prefix="val")
    assert line.startswith("val | loss 0.5123")
    assert "Sp 75.00" in line and "Se 60.00" in line and "Score 67.50" in line and "2cls 77.50" in line
    assert "\n" not in line


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="y_pred has class ids outside"):
        icbhi_scores(np.array([0, 1]), np.array([0, 4]), n_classes=4)
    with pytest.raises(ValueError, match="differ in length"):
        icbhi_scores(np.array([0, 1]), np.array([0]), n_classes=4)
    with pytest.raises(ValueError, match="probs must have shape"):
        classification_metrics(Y_TRUE, Y_PRED, probs=np.ones((9, 3)), n_classes=4)
    with pytest.raises(ValueError, match="groups\\['device'\\]"):
        group_metrics(Y_TRUE, Y_PRED, {"device": ["A"]}, n_classes=4)


def test_sprsound_challenge_scores_and_class_names_with_symbols_in_keys():
    from ls.engine.metrics import classification_metrics, metric_key, sprsound_scores

    # 3 normal (2 right), 3 abnormal (1 exactly right): Sp 2/3, Se 1/3
    y_true = np.array([0, 0, 0, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 1])
    m = classification_metrics(y_true, y_pred, n_classes=3, names=["Normal", "CAS & DAS", "Wheeze+Crackle"])
    sp, se = 2 / 3, 1 / 3
    harmonic = 2 * sp * se / (sp + se)
    assert m["harmonic_score"] == pytest.approx(harmonic)
    assert m["sprsound_score"] == pytest.approx(((sp + se) / 2 + harmonic) / 2)
    assert {"f1_cas_das", "recall_wheeze_crackle", "precision_normal"} <= set(m)
    assert sprsound_scores(0.0, 0.0) == {"harmonic_score": 0.0, "sprsound_score": 0.0}
    assert metric_key("Coarse Crackle") == "coarse_crackle"
    with pytest.raises(ValueError, match="not distinct as metric keys"):
        classification_metrics(y_true, y_pred, n_classes=3, names=["a b", "a-b", "c"])
