"""A recording at a glance: its waveform (with the annotated cycles), the per-window probability of each sound
with the decision thresholds, and the class decided for each window (``ls.predict --plot``). Torch-free.

Three panels share the time axis (seconds):

1. the waveform (min/max envelope per pixel column, so an hour-long recording draws as fast as a short one);
   annotated cycles are shaded, coloured by their annotated class when the annotation has crackle/wheeze
   columns;
2. the probabilities that decide the class, one line per output (sigmoid models: crackle and wheeze, or
   abnormal; softmax models: every class but normal), each point at the centre of its window, with the
   thresholds as dashed lines in the same colour;
3. the decided class of each window, one row per class, over the stretch of time whose nearest window centre
   it is (so overlapping windows do not hide each other).

The title states the recording-level result (``ls.aggregate``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ls.viz.style import (
    CLASS_COLORS,
    SITE_PALETTE,
    TEXT_WIDTH,
    category_colors,
    figure,
    paper_style,
    save_figure,
)

#: Samples drawn per envelope column of the waveform panel.
ENVELOPE_COLUMNS = 2000


def _envelope(wave: np.ndarray, sr: int, columns: int = ENVELOPE_COLUMNS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t, lower, upper)``: min/max of the waveform per column."""
    n = len(wave)
    per = max(1, n // columns)
    m = n // per
    blocks = wave[: m * per].reshape(m, per)
    t = (np.arange(m) * per + per / 2) / sr
    return t, blocks.min(axis=1), blocks.max(axis=1)


def _output_columns(table: Any, mode: Any, class_names: Sequence[str]) -> list[tuple[str, str]]:
    """``(column, label)`` of the probabilities the decision reads."""
    if mode.kind == "multilabel":
        return [("sigmoid_crackle", "Crackle"), ("sigmoid_wheeze", "Wheeze")]
    if mode.kind == "binary":
        return [("sigmoid_abnormal", class_names[1])]
    return [(f"p_{name.lower()}", name) for name in class_names[1:]]


def timeline_figure(pred: Any, mode: Any, class_names: Sequence[str], thresholds: Sequence[float] | None,
                    result: Mapping[str, Any] | None = None) -> Any:
    """The figure of one ``ls.predict.RecordingPrediction`` (``table``, ``wave``, ``sr``, ``annotation``)."""
    table, wave, sr = pred.table, np.asarray(pred.wave, dtype=np.float32), int(pred.sr)
    duration = len(wave) / sr
    names = list(class_names)
    colors = category_colors(names, SITE_PALETTE)
    with paper_style():
        fig = figure("text", aspect=0.62)
        ax_wave, ax_prob, ax_cls = fig.subplots(3, 1, sharex=True, height_ratios=[1.1, 1.5, 0.25 * len(names) + 0.5])

        t, lo, hi = _envelope(wave, sr)
        ax_wave.fill_between(t, lo, hi, color="#34495e", linewidth=0.0)
        shown = set()
        for start, end, bits in pred.annotation or ():
            if bits is not None and mode.kind == "multilabel":
                label = names[bits[0] + 2 * bits[1]]
                color = CLASS_COLORS.get(label, "#95a5a6")
            else:
                label, color = "annotated cycle", "#95a5a6"
            ax_wave.axvspan(start, end, color=color, alpha=0.18, linewidth=0,
                            label=None if label in shown else label)
            for edge in (start, end):  # adjacent cycles of one class stay apart
                ax_wave.axvline(edge, color="#7f8c8d", linewidth=0.5, linestyle=":")
            shown.add(label)
        if shown:
            ax_wave.legend(loc="upper right", ncols=min(4, len(shown)), frameon=False, title="annotation")
        ax_wave.set_ylabel("Amplitude")
        ax_wave.set_xlim(0, duration)

        centres = ((table["start"] + table["end"]) / 2).to_numpy()
        outputs = _output_columns(table, mode, names)
        out_colors = {label: CLASS_COLORS.get(label) or colors.get(label, "#2c3e50") for _, label in outputs}
        for column, label in outputs:
            ax_prob.plot(centres, table[column].to_numpy(), marker="o", markersize=2.5, color=out_colors[label],
                         label=f"p({label.lower()})")
        if mode.uses_thresholds and thresholds:
            for (_, label), value in zip(outputs, thresholds):
                ax_prob.axhline(value, color=out_colors[label], linestyle="--", linewidth=0.8,
                                label=f"threshold {label.lower()} {value:g}")
        ax_prob.set_ylim(-0.03, 1.03)
        ax_prob.set_ylabel("Probability")
        ax_prob.grid(axis="y", linewidth=0.3, alpha=0.5)
        ax_prob.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)

        rows = {name: i for i, name in enumerate(names)}
        # each window's decision drawn over the stretch it is the nearest window centre for, so overlapping
        # windows neither hide nor darken each other
        order = np.argsort(centres)
        edges = np.concatenate([[table["start"].min()], (centres[order][1:] + centres[order][:-1]) / 2,
                                [table["end"].max()]])
        classes = table["pred_class"].to_numpy()[order]
        for left, right, cls in zip(edges[:-1], edges[1:], classes):
            ax_cls.broken_barh([(left, right - left)], (rows[cls] - 0.35, 0.7),
                               facecolors=CLASS_COLORS.get(cls) or colors[cls], linewidth=0)
        ax_cls.set_yticks(range(len(names)), names)
        ax_cls.set_ylim(-0.6, len(names) - 0.4)
        ax_cls.invert_yaxis()
        ax_cls.set_ylabel("Decision")
        ax_cls.set_xlabel("Time (s)")

        title = (f"{Path(pred.wav).name}: {len(table)} annotated cycle(s)" if pred.annotation else
                 f"{Path(pred.wav).name}: {len(table)} window(s) of {table['duration'].max():g} s")
        if result is not None:
            title += f"; recording: {result['label']}"
        fig.suptitle(title)
    return fig


def plot_timeline(pred: Any, mode: Any, class_names: Sequence[str], thresholds: Sequence[float] | None,
                  result: Mapping[str, Any] | None, path: str | Path) -> Path:
    """Draw :func:`timeline_figure` into ``path`` (``.png`` or ``.pdf``, atomically)."""
    path = Path(path)
    fig = timeline_figure(pred, mode, class_names, thresholds, result)
    [written] = save_figure(fig, path.parent, path.stem, formats=(path.suffix.lstrip(".").lower(),))
    return written


__all__ = ["TEXT_WIDTH", "plot_timeline", "timeline_figure"]
