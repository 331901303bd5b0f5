"""The protocol card of a run: how its test numbers were made, in the terms that decide whether two published
numbers can be compared.

Published ICBHI numbers differ as much by protocol as by model: the split (the official 60/40 one or random
folds), where the epoch was selected and the thresholds tuned (a validation split, or the test split itself),
the sensitivity definition (exact class or any abnormal class), the test set and the number of seeds. A
training run records its card in ``run.json`` under :data:`PROTOCOL_KEY` (:func:`protocol_card` builds it
from plain values); ``ls.report.protocol`` reads the cards back and gathers them per report section.

The card::

    {"split": "official", "selection": "strict", "selection_metric": "icbhi_score",
     "thresholds_tuned_on": "validation", "sensitivity": "<one sentence>",
     "test_set": {"name": "icbhi test", "task": "icbhi4", "patients": 53, "cycles": 668}, "seeds": 1}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Key of the card in ``run.json``.
PROTOCOL_KEY = "protocol"
#: The card's keys, in display order.
CARD_FIELDS = ("split", "selection", "selection_metric", "thresholds_tuned_on", "sensitivity", "test_set", "seeds")
#: Keys of the card's ``test_set``.
TEST_SET_FIELDS = ("name", "task", "patients", "cycles")

SELECTIONS = ("strict", "paper")
OUTPUT_KINDS = ("multiclass", "multilabel", "binary")
#: ``thresholds_tuned_on`` values, in words.
THRESHOLD_PLACES = {
    "validation": "the validation split (patients held out of training)",
    "test": "the test split itself (optimistic)",
    "fixed": "nowhere: fixed in the config",
    "none": "no thresholds: softmax outputs, the most probable class",
}
#: ``split`` values (``dataset.split_strategy``), in words.
SPLITS = {
    "official": "the dataset's own train/test split",
    "foldwise": "patient folds, one fold as test",
    "random": "a random patient-level split",
}
SELECTION_WORDS = {
    "strict": "epoch selected on the validation split; test evaluated once, at the end",
    "paper": "epoch selected on the test split itself, as the original implementation (optimistic)",
}


def thresholds_tuned_on(selection: str, output_kind: str, thresholds_tuned: bool) -> str:
    """Where the decision thresholds were tuned: ``validation`` (strict selection), ``test`` (paper
    selection), ``fixed`` (thresholds given in the config) or ``none`` (softmax outputs have none)."""
    if output_kind == "multiclass":
        return "none"
    if not thresholds_tuned:
        return "fixed"
    return "validation" if selection == "strict" else "test"


def sensitivity_definition(class_names: Sequence[str]) -> str:
    """The sensitivity of ``class_names`` (class 0 the normal class), in one sentence."""
    abnormal = [str(c) for c in class_names[1:]]
    if len(abnormal) == 1:
        return (f"Se = {abnormal[0]} cycles predicted {abnormal[0]} / all {abnormal[0]} cycles "
                f"(every class other than {class_names[0]} counts as abnormal)")
    both = [c for c in abnormal if c.lower() in ("both", "wheeze+crackle", "cas & das")]
    tail = (f"; a {both[0]} cycle predicted as only one of its sounds is a miss" if both else "")
    return (f"Se = abnormal cycles ({', '.join(abnormal)}) predicted as exactly their class / all abnormal "
            f"cycles{tail}")


def protocol_card(*, split: str, selection: str, selection_metric: str, output_kind: str, thresholds_tuned: bool,
                  dataset: str, task: str, class_names: Sequence[str], test_patients: int, test_cycles: int,
                  test_split: str = "test", seeds: int = 1) -> dict[str, Any]:
    """The protocol card of one training run, for its ``run.json`` under :data:`PROTOCOL_KEY`.

    Args (all plain values, e.g. from the resolved config and the data):
        split: ``dataset.split_strategy`` (``official``, ``foldwise``, ``random``).
        selection: ``training.selection`` (``strict`` or ``paper``).
        selection_metric: the validation metric the epoch was selected on (e.g. ``icbhi_score``).
        output_kind: the output mode's kind (``multiclass``, ``multilabel``, ``binary``).
        thresholds_tuned: ``training.thresholds.mode == "tuned"`` (ignored for ``multiclass``).
        dataset: the dataset's name (``icbhi``, ``sprsound``, a manifest's name).
        task: the classification task (``icbhi4``, ``icbhi2``, ``event7``, ...).
        class_names: the class names in id order, class 0 the normal class.
        test_patients, test_cycles: patients and cycles of the test set the run was evaluated on.
        test_split: the name of the test split (``test``; SPRSound: ``test_inter+test_intra``, ...).
        seeds: training seeds behind the run's numbers (1 for one run).

    Returns:
        ``{"split", "selection", "selection_metric", "thresholds_tuned_on", "sensitivity",
        "test_set": {"name", "task", "patients", "cycles"}, "seeds"}``, JSON-ready. Raises ``ValueError`` for
        an unknown selection or output kind, fewer than 2 class names or negative counts.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"protocol_card: selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    if output_kind not in OUTPUT_KINDS:
        raise ValueError(f"protocol_card: output_kind must be one of {', '.join(OUTPUT_KINDS)}, got {output_kind!r}")
    if len(class_names) < 2:
        raise ValueError(f"protocol_card: needs at least 2 class names (class 0 normal), got {list(class_names)}")
    for what, n in (("test_patients", test_patients), ("test_cycles", test_cycles), ("seeds", seeds)):
        if int(n) < 0:
            raise ValueError(f"protocol_card: {what} must be >= 0, got {n}")
    return {
        "split": str(split),
        "selection": selection,
        "selection_metric": str(selection_metric),
        "thresholds_tuned_on": thresholds_tuned_on(selection, output_kind, bool(thresholds_tuned)),
        "sensitivity": sensitivity_definition(class_names),
        "test_set": {"name": f"{dataset} {test_split}", "task": str(task), "patients": int(test_patients),
                     "cycles": int(test_cycles)},
        "seeds": int(seeds),
    }


__all__ = [
    "CARD_FIELDS",
    "OUTPUT_KINDS",
    "PROTOCOL_KEY",
    "SELECTIONS",
    "SELECTION_WORDS",
    "SPLITS",
    "TEST_SET_FIELDS",
    "THRESHOLD_PLACES",
    "protocol_card",
    "sensitivity_definition",
    "thresholds_tuned_on",
]
