"""Performance figures of one trained model: confusion matrix, training curves, ICBHI Score per device / site.

Numbers come from ``ls.engine.metrics`` (one definition of the ICBHI metrics); this module only draws them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

import ls.engine.tracking  # noqa: F401 - before anything imports mlflow: it turns MLflow's telemetry off
from ls.viz.style import (
    TEXT_WIDTH,
    category_colors,
    figure,
    ordered_categories,
    palette_for,
    paper_style,
    save_figure,
)

#: Colours of the three ICBHI quantities in bar charts.
METRIC_COLORS = {"specificity": "#3498db", "sensitivity": "#e74c3c", "score": "#2c3e50"}
METRIC_LABELS = {"specificity": "Sp", "sensitivity": "Se", "score": "Score"}


# -- confusion matrix (counts from ls.engine.metrics.confusion_matrix) -----------------------------------
def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], out_dir: str | Path, name: str,
                          title: str | None = None) -> list[Path]:
    """Confusion matrix coloured by row share (recall per true class), each cell annotated with its count
    and its percentage of the row."""
    cm = np.asarray(cm)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {k} class names {list(class_names)}")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    with paper_style():
        fig = figure("column", aspect=0.85)
        ax = fig.subplots()
        im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{cm[i, j]}\n{100 * share[i, j]:.1f}%", ha="center", va="center", fontsize=6,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(k), class_names)
        ax.set_yticks(range(k), class_names)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.spines[["top", "right"]].set_visible(True)
        fig.colorbar(im, ax=ax, label="Share of true class", fraction=0.046, pad=0.04)
        if title:
            ax.set_title(title)
        return save_figure(fig, out_dir, name)


# -- training curves --------------------------------------------------------------------------------
def normalise_history(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]]) -> dict[str, list]:
    """Metric history as ``{metric: [value per epoch]}``.

    Accepts that form, or a list of per-epoch dicts (missing entries become NaN). Non-numeric entries are
    dropped.
    """
    if isinstance(history, Mapping):
        out = {}
        for key, values in history.items():
            try:
                out[str(key)] = [float(v) for v in values]
            except (TypeError, ValueError):
                continue
        return out
    keys: list[str] = []
    for row in history:
        keys += [k for k, v in row.items() if k not in keys and isinstance(v, (int, float)) and k != "epoch"]
    return {k: [float(row.get(k, math.nan)) for row in history] for k in keys}


def history_from_mlflow(run_id: str, tracking_uri: str | None = None) -> dict[str, list[float]]:
    """Per-epoch metric histories of an MLflow run (``{metric: [value per step]}``, steps in order).

    Metrics logged once without a step (e.g. final test metrics) are single-value lists and are ignored by
    :func:`plot_training_curves`.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    history = {}
    for key in run.data.metrics:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        history[key] = [float(m.value) for m in points]
    return history


#: Per-class and averaged metrics are left out of the curves; they would bury the headline Sp / Se / Score.
_DETAIL_MARKERS = ("normal", "crackle", "wheeze", "both", "macro", "weighted", "binary")


def _curve_groups(history: Mapping[str, Sequence[float]]) -> list[tuple[str, list[str]]]:
    """Panels of the training-curve figure: losses, then ICBHI Sp / Se / Score; only multi-epoch series."""
    series = [k for k in history if len(history[k]) > 1]
    losses = sorted(k for k in series if k.lower().endswith("loss"))
    headline = sorted(
        k for k in series
        if k.lower().endswith(("icbhi_score", "specificity", "sensitivity"))
        and not any(m in k.lower() for m in _DETAIL_MARKERS)
    )
    return [("Loss", losses), ("ICBHI", headline)]


def plot_training_curves(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
                         out_dir: str | Path, name: str, title: str | None = None) -> list[Path]:
    """Loss curves (left) and ICBHI Sp / Se / Score curves (right) per epoch, one line per logged series."""
    hist = normalise_history(history)
    panels = [(t, keys) for t, keys in _curve_groups(hist) if keys]
    if not panels:
        raise ValueError(f"history has no per-epoch loss or ICBHI series (keys: {sorted(hist)})")
    with paper_style():
        fig = figure(TEXT_WIDTH if len(panels) > 1 else "column", aspect=0.3 if len(panels) > 1 else 0.7)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (panel, keys) in zip(axes, panels):
            for key in keys:
                values = hist[key]
                ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=2, label=key)
            ax.set_xlabel("Epoch")
            ax.set_ylabel(panel if panel == "Loss" else "Value")
            if panel != "Loss":
                ax.set_ylim(0, 1)
            ax.legend(frameon=False, fontsize=6)
        if title:
            fig.suptitle(title)
        return save_figure(fig, out_dir, name)


# -- ICBHI score per group --------------------------------------------------------------------------
def group_scores(flat: Mapping[str, float], factor: str) -> dict[str, dict]:
    """Regroup ``ls.engine.metrics.group_metrics`` output (``"<factor>/<group>/<metric>"``) for plotting.

    Returns ``{group: {"specificity", "sensitivity", "score", "n"}}`` for one factor (e.g. ``"device"``),
    groups in :func:`~ls.viz.style.ordered_categories` order; quantities a group cannot define (no normal
    or no abnormal cycle) are None.
    """
    prefix = f"{factor}/"
    names = {key[len(prefix):].rsplit("/", 1)[0] for key in flat if key.startswith(prefix)}
    if not names:
        raise ValueError(f"group metrics hold no '{factor}/...' entries (keys like {sorted(flat)[:3]})")
    out = {}
    for name in ordered_categories(sorted(names)):
        at = f"{prefix}{name}/"
        out[name] = {"specificity": flat.get(at + "specificity"), "sensitivity": flat.get(at + "sensitivity"),
                     "score": flat.get(at + "icbhi_score"), "n": int(flat.get(at + "n_cycles", 0))}
    return out


def plot_group_scores(scores: Mapping[str, Mapping], group_title: str, out_dir: str | Path, name: str,
                      title: str | None = None) -> list[Path]:
    """Grouped bars of Sp, Se and Score (%) per group value; the number of cycles under each group name,
    and 'n/a' where a quantity is undefined (no normal or no abnormal cycles in that group)."""
    names = list(scores)
    if not names:
        raise ValueError(f"no groups to plot for {group_title}")
    x = np.arange(len(names))
    metrics = ("specificity", "sensitivity", "score")
    width = 0.27
    with paper_style():
        fig = figure("column" if len(names) <= 5 else TEXT_WIDTH, aspect=0.6 if len(names) <= 5 else 0.3)
        ax = fig.subplots()
        for m_i, metric in enumerate(metrics):
            vals = [scores[n][metric] for n in names]
            pos = x + (m_i - 1) * width
            ax.bar(pos, [0 if v is None else 100 * v for v in vals], width=width, color=METRIC_COLORS[metric],
                   label=METRIC_LABELS[metric], edgecolor="black", linewidth=0.3)
            for xi, v in zip(pos, vals):
                if v is None:
                    ax.text(xi, 1, "n/a", ha="center", va="bottom", fontsize=5, rotation=90)
        colors = category_colors(names, palette_for(group_title))
        ax.set_xticks(x, [f"{n}\n(n={scores[n]['n']})" for n in names])
        for tick, n in zip(ax.get_xticklabels(), names):
            tick.set_color(colors[n])
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_xlabel(group_title)
        ax.legend(frameon=False, ncols=3, loc="upper center", bbox_to_anchor=(0.5, 1.15))
        if title:
            ax.set_title(title, pad=16)
        return save_figure(fig, out_dir, name)
