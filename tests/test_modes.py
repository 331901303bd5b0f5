"""Output modes (ls.engine.modes): the one function that decides a run's mode from the task and the loss, and
what an OutputMode says about itself."""

from __future__ import annotations

import pytest

from ls.engine.modes import OutputMode, resolve_output_mode

MULTI = OutputMode("multilabel", 4, 2)
BINARY = OutputMode("binary", 2, 1)


def test_the_mode_follows_from_the_task_and_the_loss():
    assert resolve_output_mode(4, True, "bce") == MULTI
    assert resolve_output_mode(2, False, "bce") == BINARY  # the paper's FiLM/TAFiLM 2-class model
    assert resolve_output_mode(2, False, "asymmetric") == BINARY
    assert resolve_output_mode(4, False, "ce") == OutputMode("multiclass", 4, 4)
    assert resolve_output_mode(2, False, "ce") == OutputMode("multiclass", 2, 2)
    assert resolve_output_mode(7, False, "weighted_ce").label_dim == 7
    # a label_dim given (the reference's model key) must agree, and decides binary vs softmax for focal
    assert resolve_output_mode(2, False, "focal") == BINARY
    assert resolve_output_mode(2, False, "focal", label_dim=2) == OutputMode("multiclass", 2, 2)
    assert resolve_output_mode(4, True, "bce", label_dim=2) == MULTI


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((2, True, "bce"), "multi_label true needs dataset.n_cls 4"),
        ((4, False, "bce", 2), "label_dim 2 does not fit 4 classes"),  # the reference's ast_config.yaml
        ((4, False, "bce"), "training.loss 'bce' needs multilabel or binary outputs"),
        ((4, True, "ce"), "needs multiclass outputs"),
        ((2, False, "hierarchical"), "for multiclass use one of: ce"),
        ((4, False, "nonsense"), "unknown training.loss 'nonsense'; known losses:"),
    ],
)
def test_inconsistent_combinations_name_the_problem(args, match):
    with pytest.raises(ValueError, match=match):
        resolve_output_mode(*args)


def test_a_mode_round_trips_carries_its_class_names_and_states_its_rule():
    assert OutputMode.from_dict(MULTI.to_dict()) == MULTI
    assert MULTI.class_names == ("normal", "crackle", "wheeze", "both")
    named = OutputMode("multiclass", 3, 3, ("Normal", "Adventitious", "Poor Quality"))
    assert OutputMode.from_dict(named.to_dict()) == named
    # format-1 checkpoints stored modes without names: the ICBHI names by class count
    assert OutputMode.from_dict({"kind": "binary", "n_classes": 2, "label_dim": 1}).class_names == ("normal", "abnormal")
    assert "threshold_crackle" in MULTI.decision_rule and "threshold" in BINARY.decision_rule
    assert OutputMode("multiclass", 4, 4).decision_rule == "the class with the highest probability"
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        OutputMode("multiclass", 3, 3, ("a", "b"))
