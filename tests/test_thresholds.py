"""Output modes, outputs -> classes, and the threshold grid search (ls.engine.predict_rules)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ls.engine.config import ThresholdConfig
from ls.engine.predict_rules import (
    OutputMode,
    bits_to_classes,
    class_probabilities,
    evaluate_outputs,
    predict_classes,
    probabilities,
    target_classes,
    threshold_grid,
    tune_thresholds,
)

MULTI = OutputMode("multilabel", 4, 2)
BINARY = OutputMode("binary", 2, 1)


def brute_force(probs, y, mode, grid, floor, fallback):
    """The original's search written as plain loops: t_c outer, t_w inner, a strictly greater score replaces
    (the first maximum wins), and only Se strictly above the floor qualifies."""

    def score(pred):
        normal = y == 0
        sp = np.sum((pred == y) & normal) / max(1, normal.sum())
        se = np.sum((pred == y) & ~normal) / max(1, (~normal).sum())
        return sp, se

    best, best_t = -1.0, None
    if mode.kind == "multilabel":
        candidates = [(tc, tw) for tc in grid for tw in grid]
    else:
        candidates = [(t,) for t in grid]
    for t in candidates:
        sp, se = score(predict_classes(probs, mode, t))
        if se > floor and (sp + se) / 2 > best:
            best, best_t = (sp + se) / 2, t
    if best_t is None:
        best_t = (fallback,) * len(candidates[0])
    return tuple(float(v) for v in best_t)


# ----------------------------------------------------------------------------- outputs -> classes


def test_probabilities_match_torch():
    z = torch.tensor([[-30.0, 0.0], [2.0, -1.5], [40.0, 3.0]])
    np.testing.assert_allclose(probabilities(z, MULTI), torch.sigmoid(z.double()).numpy(), rtol=1e-12)
    np.testing.assert_allclose(probabilities(z[:, :1], BINARY), torch.sigmoid(z[:, 0].double()).numpy())
    mc = OutputMode("multiclass", 2, 2)
    np.testing.assert_allclose(probabilities(z, mc), torch.softmax(z.double(), 1).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="expects logits"):
        probabilities(torch.zeros(3, 4), MULTI)


def test_bits_and_classes():
    bits = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    assert bits_to_classes(bits).tolist() == [0, 1, 2, 3]
    assert target_classes(torch.tensor(bits), MULTI).tolist() == [0, 1, 2, 3]
    assert target_classes(torch.tensor([0, 1, 1]), BINARY).tolist() == [0, 1, 1]


def test_predict_classes_per_mode():
    p = np.array([[0.2, 0.2], [0.35, 0.1], [0.1, 0.5], [0.6, 0.6]])
    assert predict_classes(p, MULTI).tolist() == [0, 0, 2, 3]  # 0.5 by default, p >= t sets the bit
    assert predict_classes(p, MULTI, (0.3, 0.45)).tolist() == [0, 1, 2, 3]
    assert predict_classes(np.array([0.3, 0.5, 0.7]), BINARY, 0.6).tolist() == [0, 0, 1]
    assert predict_classes(np.array([[0.1, 0.7, 0.2]]), OutputMode("multiclass", 3, 3)).tolist() == [1]
    with pytest.raises(ValueError, match="takes 2 threshold"):
        predict_classes(p, MULTI, (0.1, 0.2, 0.3))


def test_class_probabilities_are_a_distribution():
    p = np.array([[0.2, 0.7], [0.9, 0.1]])
    cp = class_probabilities(p, MULTI)
    np.testing.assert_allclose(cp.sum(1), 1.0)
    assert cp[0, 2] == pytest.approx(0.8 * 0.7)  # p_W = (1 - p_c) p_w


# ----------------------------------------------------------------------------- grid search


def test_threshold_grid_is_exact_and_inclusive():
    g = threshold_grid(0.10, 0.60, 0.05)
    assert len(g) == 11 and g[0] == 0.10 and g[-1] == 0.60 and 0.15 in g.tolist()
    assert len(threshold_grid(0.10, 0.90, 0.05)) == 17


def test_multilabel_search_finds_the_separating_pair_and_keeps_the_first_tie():
    # crackle bit separable between 0.35 and 0.55, wheeze bit between 0.25 and 0.45
    p = np.array([[0.35, 0.25], [0.55, 0.25], [0.35, 0.45], [0.55, 0.45]] * 3)
    y = np.array([0, 1, 2, 3] * 3)
    r = tune_thresholds(p, y, MULTI)
    # every t_c in 0.40..0.55 with t_w in 0.30..0.45 scores 1.0: the first in grid order wins
    assert r.thresholds == (0.40, 0.30)
    assert r.icbhi_score == 1.0 and r.found


def test_multilabel_search_matches_the_reference_loop_and_respects_the_floor():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=80)
    p = np.clip(rng.normal(0.3, 0.15, size=(80, 2)) + 0.2 * np.stack([y % 2, y // 2], 1), 0.01, 0.99)
    p = np.round(p, 2)  # ties on the grid
    grid = threshold_grid(0.10, 0.60, 0.05)
    for floor in (0.0, 0.45, 0.7):
        cfg = ThresholdConfig(min_sensitivity=floor)
        r = tune_thresholds(p, y, MULTI, cfg)
        assert r.thresholds == brute_force(p, y, MULTI, grid, floor, 0.10)
        if r.found:
            assert r.sensitivity > floor


def test_search_falls_back_when_nothing_meets_the_floor():
    p = np.array([[0.05, 0.05], [0.05, 0.05]])
    y = np.array([0, 3])
    r = tune_thresholds(p, y, MULTI)
    assert r.thresholds == (0.10, 0.10) and not r.found
    rb = tune_thresholds(np.array([0.01, 0.02]), np.array([0, 1]), BINARY)
    assert rb.thresholds == (0.5,) and not rb.found


def test_binary_search_matches_the_reference_loop():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=60)
    p = np.round(np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0.0, 1.0), 2)
    r = tune_thresholds(p, y, BINARY)
    assert r.thresholds == brute_force(p, y, BINARY, threshold_grid(0.10, 0.90, 0.05), 0.40, 0.5)


def test_search_settings_come_from_the_config():
    p = np.array([[0.35, 0.25], [0.55, 0.25], [0.35, 0.45], [0.55, 0.45]])
    y = np.array([0, 1, 2, 3])
    # on this grid the wheeze bit is never set (p_w <= 0.45): Se = 1/3 at best
    r = tune_thresholds(p, y, MULTI, ThresholdConfig(grid=[0.5, 0.9, 0.1], min_sensitivity=0.3))
    assert r.thresholds == (0.5, 0.5) and r.found and r.sensitivity == pytest.approx(1 / 3)
    r = tune_thresholds(p, y, MULTI, ThresholdConfig(grid=[0.5, 0.9, 0.1], fallback=0.2))
    assert r.thresholds == (0.2, 0.2) and not r.found  # the paper floor 0.45 is out of reach
    with pytest.raises(ValueError, match="no decision thresholds"):
        tune_thresholds(p, y, OutputMode("multiclass", 4, 4))


def test_evaluate_outputs_uses_explicit_tuned_or_fixed_thresholds():
    # probabilities off the grid points, so the logit -> sigmoid round trip cannot cross a threshold
    probs = torch.tensor([[0.33, 0.23], [0.57, 0.23], [0.33, 0.47], [0.57, 0.47]], dtype=torch.float64)
    logits = torch.logit(probs)
    labels = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=torch.float32)
    tuned = evaluate_outputs(logits, labels, MULTI, threshold_cfg=ThresholdConfig(mode="tuned"))
    assert tuned.thresholds == (0.35, 0.25) and tuned.metrics["icbhi_score"] == 1.0
    assert tuned.metrics["threshold_crackle"] == 0.35 and tuned.metrics["threshold_wheeze"] == 0.25
    fixed = evaluate_outputs(
        logits, labels, MULTI, threshold_cfg=ThresholdConfig(mode="fixed", value=[0.5, 0.5])
    )
    assert fixed.y_pred.tolist() == [0, 1, 0, 1]
    stored = evaluate_outputs(logits, labels, MULTI, thresholds=(0.6, 0.3), threshold_cfg=ThresholdConfig())
    assert stored.thresholds == (0.6, 0.3) and stored.y_pred.tolist() == [0, 0, 2, 2]
    binary = evaluate_outputs(torch.tensor([[-2.0], [2.0]]), torch.tensor([0, 1]), BINARY)
    assert binary.metrics["threshold"] == 0.5 and binary.metrics["icbhi_score"] == 1.0


#: Recorded cases of the original's search: (probabilities, classes, mode, the thresholds the original chooses,
#: what ties="first" + floor="inclusive" and ties="last" + floor="exclusive" would choose instead). Each case's
#: expected thresholds follow from the original's rules by hand: maximise (Sp + Se) / 2 over the grid (t_c outer,
#: t_w inner) among points with Se strictly above the floor; a strictly greater score replaces the best.
RECORDED_CASES = {
    # normals 0.05 x3, 0.20 x2; abnormals 0.95 x2, 0.02 x2, 0.12. t = 0.10: Se 3/5, Sp 3/5 -> 0.60 (above the
    # floor 0.40); t >= 0.25: Se 2/5 = 0.40 exactly on the floor, Sp 1 -> 0.70: not eligible. -> 0.10
    "binary: the best score sits exactly on the floor": (
        [0.05, 0.05, 0.05, 0.2, 0.2, 0.95, 0.95, 0.02, 0.02, 0.12], [0] * 5 + [1] * 5, "binary",
        (0.10,), (0.25,), (0.10,)),
    # abnormal 0.30 is caught for t <= 0.30: t = 0.10..0.30 all score (1 + 4/5) / 2 = 0.9; the first wins
    "binary: equal scores, the first grid point wins": (
        [0.05] * 5 + [0.95, 0.95, 0.95, 0.3, 0.02], [0] * 5 + [1] * 5, "binary", (0.10,), (0.10,), (0.30,)),
    # 20 crackle cycles: 9 at p_c 0.9, 11 at p_c 0.12; normals: 14 of 20 at p_c 0.12. t_c = 0.10: Se 1, Sp 0.3
    # -> 0.65; t_c >= 0.15: Se 9/20 = 0.45 exactly on the floor, Sp 1 -> 0.725: not eligible. The wheeze
    # probabilities (0.05) lie below the grid, so every t_w ties: the first, 0.10
    "multi-label: the best score sits exactly on the floor": (
        [[0.05, 0.05]] * 6 + [[0.12, 0.05]] * 14 + [[0.9, 0.05]] * 9 + [[0.12, 0.05]] * 11, [0] * 20 + [1] * 20,
        "multilabel", (0.10, 0.10), (0.15, 0.10), (0.10, 0.60)),
    # crackle cycle (0.25, 0.27) is right for t_c <= 0.25 and t_w >= 0.30, wheeze cycle (0.27, 0.25) for
    # t_c >= 0.30 and t_w <= 0.25: two disjoint regions score 0.75. In t_c-outer order (0.10, 0.30) comes first
    # (t_w-outer order would give (0.30, 0.10))
    "multi-label: equal scores, t_c is the outer loop": (
        [[0.05, 0.05], [0.25, 0.27], [0.27, 0.25]], [0, 1, 2], "multilabel", (0.10, 0.30), (0.10, 0.30),
        (0.60, 0.25)),
}


@pytest.mark.parametrize("case", sorted(RECORDED_CASES))
def test_recorded_cases_get_the_originals_thresholds(case):
    import dataclasses

    from ls.engine.predict_rules import PAPER_SEARCH, search_settings

    probs, y, kind, original, first_inclusive, last_exclusive = RECORDED_CASES[case]
    mode = MULTI if kind == "multilabel" else BINARY
    p, y = np.array(probs), np.array(y)
    # what the trainer's tuned thresholds use (training.thresholds: tuned, nothing overridden)
    assert search_settings(ThresholdConfig(), mode) == PAPER_SEARCH[kind]
    assert tune_thresholds(p, y, mode, ThresholdConfig()).thresholds == original
    grid = threshold_grid(*PAPER_SEARCH[kind].grid)
    assert brute_force(p, y, mode, grid, PAPER_SEARCH[kind].min_sensitivity, PAPER_SEARCH[kind].fallback) == original
    # the case tells the readings apart: the others choose what the table says
    for ties, floor, want in (("first", "inclusive", first_inclusive), ("last", "exclusive", last_exclusive)):
        other = dataclasses.replace(PAPER_SEARCH[kind], ties=ties, floor=floor)
        assert tune_thresholds(p, y, mode, search=other).thresholds == want


def test_the_search_edge_rules_are_the_originals_and_the_other_readings_are_available():
    """Exact score ties keep the first grid point and a sensitivity exactly on the floor does not qualify (the
    original code's behaviour); the other readings are one argument away (ThresholdSearch ties / floor)."""
    import dataclasses

    from ls.engine.predict_rules import PAPER_SEARCH, ThresholdSearch

    assert (PAPER_SEARCH["binary"].ties, PAPER_SEARCH["binary"].floor) == ("first", "exclusive")
    assert (PAPER_SEARCH["multilabel"].ties, PAPER_SEARCH["multilabel"].floor) == ("first", "exclusive")
    y = np.array([0] * 5 + [1] * 5)
    separated = np.array([0.05] * 5 + [0.95] * 5)  # every t in 0.10..0.90 scores 1.0: all tie
    assert tune_thresholds(separated, y, BINARY).thresholds == (0.1,)
    last = dataclasses.replace(PAPER_SEARCH["binary"], ties="last")
    assert tune_thresholds(separated, y, BINARY, search=last).thresholds == (0.9,)

    on_floor = np.array([0.05] * 5 + [0.95, 0.95, 0.02, 0.02, 0.02])  # Se = 2/5 = 0.40, the binary floor
    r = tune_thresholds(on_floor, y, BINARY)
    assert not r.found and r.thresholds == (0.5,)  # nothing is above the floor: the fallback
    inclusive = dataclasses.replace(PAPER_SEARCH["binary"], floor="inclusive")
    r = tune_thresholds(on_floor, y, BINARY, search=inclusive)
    assert r.found and r.sensitivity == pytest.approx(0.4) and r.thresholds == (0.1,)

    bits = np.array([[0.05, 0.05]] * 4 + [[0.95, 0.05]] * 2 + [[0.05, 0.95]] * 2)
    classes = np.array([0] * 4 + [1] * 2 + [2] * 2)
    assert tune_thresholds(bits, classes, MULTI).thresholds == (0.1, 0.1)
    last_multi = dataclasses.replace(PAPER_SEARCH["multilabel"], ties="last")
    assert tune_thresholds(bits, classes, MULTI, search=last_multi).thresholds == (0.6, 0.6)
    with pytest.raises(ValueError, match="ties must be first|last"):
        ThresholdSearch((0.1, 0.6, 0.05), 0.45, 0.1, ties="middle")
