"""From per-window (or per-cycle) predictions of a recording to a recording-level result, and from several
recordings of one patient to a patient-level summary (torch-free: ``ls.predict --onnx`` uses it too).

The rule, per kind of model:

- **sound models** (ICBHI's 4 classes from crackle/wheeze bits, a normal-vs-abnormal model, SPRSound's event
  classes, a manifest's labels): a sound is *present* in the recording when at least ``min_windows`` windows
  (default 1) are decided to hold it (a window decided ``Both`` holds a crackle and a wheeze; an SPRSound
  ``Wheeze+Crackle`` event both a continuous and a discontinuous sound). The recording is abnormal when any sound
  is present. Where crackles and wheezes can be told apart (ICBHI's 4 classes, SPRSound's event classes), the
  result also names the ICBHI class (``Normal``/``Crackle``/``Wheeze``/``Both``) and SPRSound's record classes
  (``record5``: ``Normal``/``CAS``/``DAS``/``CAS & DAS``, wheezes being continuous and crackles discontinuous
  adventitious sounds; ``record3``: ``Normal``/``Adventitious``);
- **record models** (SPRSound's ``record3``/``record5`` tasks, trained on whole recordings): the class with the
  highest mean probability over the windows.

A patient is abnormal when any of their recordings is; the summary lists each sound with the recordings it was
found in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ls.data.tasks import ICBHI_BITS
from ls.engine.modes import OutputMode

#: A sound is present in a recording when at least this many windows hold it.
MIN_WINDOWS = 1

RULE = ("sounds: present when at least {k} window(s) are decided to hold them; abnormal when any sound is "
        "present; record models: the class with the highest mean window probability")


def rule_text(min_windows: int = MIN_WINDOWS) -> str:
    """The aggregation rule in one sentence (JSON ``aggregation_rule``, CSV header)."""
    return RULE.format(k=min_windows)


def is_record_task(task: str) -> bool:
    return str(task).startswith("record")


def window_bits(pred_class: Sequence[str], mode: OutputMode, class_names: Sequence[str]) -> np.ndarray | None:
    """``[N, 2]`` (crackle, wheeze) per window when the classes tell them apart (ICBHI composite classes,
    SPRSound event types), else None."""
    names = list(class_names)
    if mode.kind == "multilabel":
        ids = np.array([names.index(c) for c in pred_class], dtype=np.int64)
        return np.stack([ids & 1, ids >> 1], axis=1)
    if mode.kind == "multiclass" and set(names) <= set(ICBHI_BITS):
        return np.array([ICBHI_BITS[c] for c in pred_class], dtype=np.int64).reshape(-1, 2)
    return None


def record_classes(crackle: bool, wheeze: bool) -> dict[str, str]:
    """The ICBHI class and SPRSound's record classes of a recording with/without crackles and wheezes."""
    icbhi = ("Normal", "Crackle", "Wheeze", "Both")[int(crackle) + 2 * int(wheeze)]
    record5 = ("Normal", "DAS", "CAS", "CAS & DAS")[int(crackle) + 2 * int(wheeze)]
    return {"icbhi": icbhi, "record5": record5, "record3": "Normal" if record5 == "Normal" else "Adventitious"}


def aggregate_recording(table: pd.DataFrame, mode: OutputMode, class_names: Sequence[str], task: str = "",
                        min_windows: int = MIN_WINDOWS) -> dict[str, Any]:
    """The recording-level result of one recording's prediction table (``ls.predict.predict_recording``).

    Returns ``{"label", "abnormal", "windows", "sounds": {sound: {"windows", "fraction", "first_s", "max_p"}},
    "classes": {...}}`` (``classes`` only where crackles and wheezes are told apart; record models give
    ``label`` and ``mean_probabilities`` instead of ``sounds``).
    """
    if min_windows < 1:
        raise ValueError(f"min_windows must be >= 1, got {min_windows}")
    n = len(table)
    names = list(class_names)
    pred = table["pred_class"].astype(str).tolist()
    if is_record_task(task):
        means = {name: float(table[f"p_{name.lower()}"].mean()) for name in names}
        label = max(means, key=means.get)
        return {"label": label, "abnormal": label != names[0] if label != "Poor Quality" else None,
                "windows": n, "mean_probabilities": means}
    sounds: dict[str, dict[str, Any]] = {}

    def add(sound: str, hit: np.ndarray, prob_column: str | None) -> None:
        k = int(hit.sum())
        entry: dict[str, Any] = {"windows": k, "fraction": k / n if n else 0.0, "present": k >= min_windows,
                                 "first_s": float(table["start"].to_numpy()[hit][0]) if k else None}
        if prob_column and prob_column in table:
            entry["max_p"] = float(table[prob_column].max())
        sounds[sound] = entry

    bits = window_bits(pred, mode, names)
    if mode.kind == "multilabel":
        add("Crackle", bits[:, 0] == 1, "sigmoid_crackle")
        add("Wheeze", bits[:, 1] == 1, "sigmoid_wheeze")
    else:
        for name in names[1:]:
            add(name, np.array([p == name for p in pred]), f"p_{name.lower()}")
    present = [s for s, e in sounds.items() if e["present"]]
    result: dict[str, Any] = {"label": "Normal" if not present else ", ".join(present),
                              "abnormal": bool(present), "windows": n, "sounds": sounds}
    if bits is not None:
        crackle = int(bits[:, 0].sum()) >= min_windows
        wheeze = int(bits[:, 1].sum()) >= min_windows
        result["classes"] = record_classes(crackle, wheeze)
        if mode.kind == "multilabel":
            result["label"] = result["classes"]["icbhi"]
    return result


def aggregate_patient(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{wav: recording result}`` of one patient -> ``{"recordings", "abnormal_recordings", "abnormal",
    "sounds": {sound: [wav, ...]}, "labels": {wav: label}}``."""
    sounds: dict[str, list[str]] = {}
    for wav, res in results.items():
        for sound, entry in (res.get("sounds") or {}).items():
            if entry["present"]:
                sounds.setdefault(sound, []).append(wav)
    abnormal = [wav for wav, res in results.items() if res.get("abnormal")]
    return {"recordings": len(results), "abnormal_recordings": len(abnormal), "abnormal": bool(abnormal),
            "sounds": sounds, "labels": {wav: res["label"] for wav, res in results.items()}}


__all__ = ["MIN_WINDOWS", "aggregate_patient", "aggregate_recording", "is_record_task", "record_classes",
           "rule_text", "window_bits"]
