"""The protocol card: what a test number was measured under, so that only comparable numbers are compared.

Published ICBHI numbers differ as much by protocol as by model: the split (the official 60/40 one or random
folds), where the epoch was selected and the thresholds tuned (a validation split, or the test split itself),
the sensitivity definition (exact class or any abnormal class), the test set and the number of seeds. A
training run records its card in ``run.json`` under :data:`PROTOCOL_KEY` (``ls.runs.protocol.protocol_card``
builds it from plain values); the report gathers the cards of each section's runs into one (:func:`section_card`), says
which runs disagree, and prints it (:func:`card_rows`).

The card (every key optional when read: runs written before it was recorded have none)::

    {"split": "official", "selection": "strict", "selection_metric": "icbhi_score",
     "thresholds_tuned_on": "validation", "sensitivity": "<one sentence>",
     "test_set": {"name": "icbhi test", "task": "icbhi4", "patients": 53, "cycles": 668}, "seeds": 1}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ls.runs.protocol import (  # the card as runs write it
    CARD_FIELDS,
    PROTOCOL_KEY,
    SELECTION_WORDS,
    SPLITS,
    TEST_SET_FIELDS,
    THRESHOLD_PLACES,
    protocol_card,
    sensitivity_definition,
    thresholds_tuned_on,
)


# =================================================================================================
# Reading cards back and gathering them per report section
# =================================================================================================
def parse_card(value: object, where: str) -> dict[str, Any]:
    """The card of one ``run.json`` (``value`` of its :data:`PROTOCOL_KEY`), its known keys only: scalars as
    text or int, ``test_set`` as a dict. Raises ``TypeError`` naming ``where`` for a card that is not an
    object, or a ``test_set`` that is not one."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: '{PROTOCOL_KEY}' must be an object, got {type(value).__name__}")
    card: dict[str, Any] = {}
    for key in CARD_FIELDS:
        if key not in value or value[key] is None:
            continue
        if key == "test_set":
            test_set = value[key]
            if not isinstance(test_set, Mapping):
                raise TypeError(f"{where}: '{PROTOCOL_KEY}.test_set' must be an object, got {test_set!r}")
            card[key] = {k: test_set[k] for k in TEST_SET_FIELDS if test_set.get(k) is not None}
        else:
            card[key] = value[key] if isinstance(value[key], (int, float, str)) else str(value[key])
    return card


def _text(value: object) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def section_card(cards: Sequence[Mapping[str, Any] | None], names: Sequence[str], seeds: Mapping[str, Sequence[int]],
                 n_patients: int, n_cycles: int) -> tuple[dict[str, Any], list[str]]:
    """One card for the runs of a report section, and notes on what does not agree.

    Args:
        cards: each run's card (:func:`parse_card`), None for a run without one.
        names: how the report names each run (same order).
        seeds: the seeds of each variant in the section: the card's ``seeds`` is what the section has, not
            what each run says about itself.
        n_patients, n_cycles: the test set the section's predictions cover.

    Returns:
        ``(card, notes)``: the card has the keys of :data:`CARD_FIELDS` that some run records, None where runs
        disagree (a note lists which runs hold which value), and ``seed_list`` (variant -> seeds).
        ``test_set`` counts are those of the predictions (a card that says otherwise gets a note).
    """
    notes: list[str] = []
    lacking = [n for c, n in zip(cards, names, strict=True) if not c]
    if lacking:
        notes.append(f"protocol: {len(lacking)} of {len(cards)} run(s) have no protocol card in run.json "
                     f"(written before it was recorded): {_some(lacking)}")
    card: dict[str, Any] = {}
    for key in CARD_FIELDS[:-1]:  # seeds: counted from the section's runs below
        holders: dict[str, list[str]] = {}
        values: dict[str, Any] = {}
        for c, name in zip(cards, names, strict=True):
            if c and key in c:
                value = c[key]
                if key == "test_set":  # its counts are checked against the predictions below
                    value = {k: v for k, v in value.items() if k in ("name", "task")}
                holders.setdefault(_text(value), []).append(name)
                values[_text(value)] = value
        if len(holders) == 1:
            card[key] = next(iter(values.values()))
        elif len(holders) > 1:
            card[key] = None
            parts = "; ".join(f"{text!r} ({_some(runs)})" for text, runs in holders.items())
            notes.append(f"protocol: the runs disagree on {key}: {parts}; their numbers are not comparable")
    if card.get("test_set", {}) is not None:
        card["test_set"] = {**card.get("test_set", {}), "patients": int(n_patients), "cycles": int(n_cycles)}
    claimed = {(c["test_set"].get("patients"), c["test_set"].get("cycles")) for c in cards
               if c and isinstance(c.get("test_set"), Mapping) and "patients" in c["test_set"]}
    for patients, cycles in sorted(claimed - {(n_patients, n_cycles)}, key=str):
        notes.append(f"protocol: a run.json says its test set has {patients} patients and {cycles} cycles; the "
                     f"predictions hold {n_patients} patients and {n_cycles} cycles")
    card["seeds"] = len({s for ss in seeds.values() for s in ss})
    card["seed_list"] = {v: sorted(ss) for v, ss in seeds.items()}
    return card, notes


def _some(names: Sequence[str], at_most: int = 4) -> str:
    shown = ", ".join(names[:at_most])
    return shown + (f" and {len(names) - at_most} more" if len(names) > at_most else "")


DIFFERS = "differs between runs (see the notes)"
NOT_RECORDED = "not recorded"


def _described(card: Mapping[str, Any], key: str, words: Mapping[str, str] | None = None) -> str:
    if key not in card:
        return NOT_RECORDED
    value = card[key]
    if value is None:
        return DIFFERS
    if words is None:
        return str(value)
    return f"{value} ({words[value]})" if value in words else str(value)


def card_rows(card: Mapping[str, Any], display_names: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The card of :func:`section_card` as ``(item, text)`` rows: split, model selection, selection metric,
    where thresholds were tuned, the sensitivity definition, the test set and the seeds. A key the runs
    disagree on reads :data:`DIFFERS`, one no run recorded :data:`NOT_RECORDED`."""
    place = card.get("thresholds_tuned_on")
    rows = [
        ("Split", _described(card, "split", SPLITS)),
        ("Model selection", _described(card, "selection", SELECTION_WORDS)),
        ("Selection metric", _described(card, "selection_metric")),
        ("Thresholds tuned on", THRESHOLD_PLACES.get(place, _described(card, "thresholds_tuned_on"))
         if isinstance(place, str) else _described(card, "thresholds_tuned_on")),
        ("Sensitivity", _described(card, "sensitivity")),
    ]
    test_set = card.get("test_set")
    if test_set is None:
        rows.append(("Test set", DIFFERS))
    else:
        task = f" (task {test_set['task']})" if test_set.get("task") else ""
        counts = f"{test_set.get('patients', '?')} patients, {test_set.get('cycles', '?')} cycles"
        rows.append(("Test set", f"{test_set['name']}{task}: {counts}" if test_set.get("name") else counts))
    seed_list = card.get("seed_list") or {}
    lists = {tuple(ss) for ss in seed_list.values()}
    n = card.get("seeds", 0)
    if len(lists) <= 1:
        listed = ", ".join(map(str, next(iter(lists), ())))
        rows.append(("Seeds", f"{n} ({listed})" if listed else str(n)))
    else:
        names = display_names or {}
        per = "; ".join(f"{names.get(v, v)}: {', '.join(map(str, ss))}" for v, ss in seed_list.items())
        rows.append(("Seeds", f"{n} in all ({per})"))
    return rows


__all__ = [
    "CARD_FIELDS",
    "DIFFERS",
    "NOT_RECORDED",
    "PROTOCOL_KEY",
    "card_rows",
    "parse_card",
    "protocol_card",
    "section_card",
    "sensitivity_definition",
    "thresholds_tuned_on",
]
