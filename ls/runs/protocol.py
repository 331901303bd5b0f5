"""The protocol card of a run: how its test numbers were made, in the terms that decide whether two published
numbers can be compared (split, selection protocol and metric, where the decision thresholds were tuned, what
"sensitivity" counts, the test set). Every ``run.json`` carries one; ``ls.report`` shows them per section."""

from __future__ import annotations

from typing import Any

#: Where the decision thresholds of each selection protocol are tuned (``training.thresholds.mode: tuned``).
_TUNED_ON = {"strict": "validation", "paper": "test"}


def protocol_card(*, split: str, selection: str, selection_metric: str, thresholds: str, mode: Any, dataset: str,
                  task: str | None, test_patients: int, test_cycles: int, seeds: int = 1) -> dict[str, Any]:
    """The card as plain values.

    ``thresholds``: ``tuned``, ``fixed`` (``training.thresholds.mode``) or ``argmax`` (softmax outputs have no
    thresholds). ``mode``: the run's ``ls.engine.modes.OutputMode`` (its class names say what is abnormal).
    """
    names = list(mode.class_names)
    if thresholds == "tuned":
        tuned_on = _TUNED_ON.get(selection, selection)
    elif thresholds == "fixed":
        tuned_on = "none (fixed thresholds)"
    else:
        tuned_on = "none (the most probable class)"
    sensitivity = (f"the share of abnormal cycles (true class {' / '.join(names[1:])}) whose class is predicted "
                   f"exactly; specificity: the share of {names[0]} cycles predicted {names[0]}")
    return {"split": split, "selection": selection, "selection_metric": selection_metric,
            "thresholds_tuned_on": tuned_on, "sensitivity": sensitivity,
            "test_set": {"name": f"{dataset}{'/' + task if task else ''} test", "patients": int(test_patients),
                         "cycles": int(test_cycles)},
            "seeds": int(seeds)}


__all__ = ["protocol_card"]
