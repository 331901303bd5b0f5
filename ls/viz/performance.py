"""Performance figures of one trained model: confusion matrix, training curves, ICBHI Score per device / site.

Numbers come from ``ls.engine.metrics`` (one definition of the ICBHI metrics); this module only draws them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

import ls.utils.telemetry  # noqa: F401 - before anything imports mlflow: it turns MLflow's telemetry off
from ls.viz.style import (
    TEXT_WIDTH,
    figure,
    ordered_categories,
    paper_style,
    save_figure,
    text_color_on,
)

#: Colours of the three ICBHI quantities in bar charts.
METRIC_COLORS = {"specificity": "#2e86c1", "sensitivity": "#c0392b", "score": "#2c3e50"}
METRIC_LABELS = {"specificity": "Sp", "sensitivity": "Se", "score": "Score"}
#: Colours of the splits in training curves (train, the selection split, test monitoring).
SPLIT_COLORS = {"train": "#1f4e79", "val": "#d35400", "test": "#1e8449", "test_epoch": "#1e8449"}
SPLIT_LABELS = {"train": "train", "val": "validation", "test": "test", "test_epoch": "test (monitoring only)"}


# -- confusion matrix (counts from ls.engine.metrics.confusion_matrix) -----------------------------------
def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str], title: str | None = None) -> Figure:
    """Confusion matrix coloured by row share (recall per true class), each cell annotated with its count
    and its percentage of the row, in black or white, whichever reads better on the cell."""
    import matplotlib as mpl

    cm = np.asarray(cm)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {k} class names {list(class_names)}")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    cmap = mpl.colormaps["Blues"]
    with paper_style():
        fig = figure("column", aspect=0.85)
        ax = fig.subplots()
        im = ax.imshow(share, cmap=cmap, vmin=0.0, vmax=1.0)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{cm[i, j]}\n{100 * share[i, j]:.1f}%", ha="center", va="center", fontsize=6,
                        color=text_color_on(to_hex(cmap(share[i, j]))))
        ax.set_xticks(range(k), class_names)
        ax.set_yticks(range(k), class_names)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.spines[["top", "right"]].set_visible(True)
        fig.colorbar(im, ax=ax, label="Share of true class", fraction=0.046, pad=0.04)
        if title:
            ax.set_title(title)
    return fig


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], out_dir: str | Path, name: str,
                          title: str | None = None) -> list[Path]:
    """:func:`confusion_matrix_figure` saved as ``<name>.png/.pdf``."""
    return save_figure(confusion_matrix_figure(cm, class_names, title), out_dir, name)


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


#: The metric groups of the training curves: one panel each, one line per split.
CURVE_GROUPS = (("loss", "Loss"), ("specificity", "Specificity"), ("sensitivity", "Sensitivity"),
                ("icbhi_score", "ICBHI Score"))


def _curve_groups(history: Mapping[str, Sequence[float]]) -> list[tuple[str, list[str]]]:
    """``(panel title, [series])`` per metric group with at least one multi-epoch ``<split>/<metric>`` series
    (per-class, binary and auxiliary series are left out: they would bury the headline numbers)."""
    series = [k for k in history if len(history[k]) > 1 and "/" in k]
    panels = []
    for metric, title in CURVE_GROUPS:
        keys = [k for k in series if k.split("/", 1)[1] == metric]
        keys.sort(key=lambda k: (list(SPLIT_COLORS).index(k.split("/")[0]) if k.split("/")[0] in SPLIT_COLORS
                                 else len(SPLIT_COLORS), k))
        if keys:
            panels.append((title, keys))
    return panels


def training_curves_figure(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
                           model_name: str | None = None, best_epoch: int | None = None,
                           title: str | None = None) -> Figure:
    """One panel per metric group (loss, Sp, Se, ICBHI Score), one line per split, the selected epoch as a
    dashed vertical line; the model's name in the title, the legend below the panels."""
    hist = normalise_history(history)
    panels = _curve_groups(hist)
    if not panels:
        raise ValueError(f"history has no per-epoch loss or ICBHI series (keys: {sorted(hist)})")
    n = len(panels)
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    with paper_style():
        fig = figure(TEXT_WIDTH if cols > 1 else "column", aspect=0.3 * rows + 0.08 if cols > 1 else 0.8)
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
        labels: dict[str, object] = {}
        for ax, (panel, keys) in zip(axes, panels, strict=False):
            for key in keys:
                split = key.split("/")[0]
                values = hist[key]
                (line,) = ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=2,
                                  color=SPLIT_COLORS.get(split, "#5d6d7e"))
                labels.setdefault(SPLIT_LABELS.get(split, split), line)
            if best_epoch:
                selected = ax.axvline(best_epoch, color="black", linestyle="--", linewidth=0.8)
                labels.setdefault(f"selected epoch ({best_epoch})", selected)
            ax.set_title(panel)
            ax.set_xlabel("Epoch")
            ax.set_ylabel(panel if panel == "Loss" else f"{panel} (fraction)")
            if panel != "Loss":
                ax.set_ylim(-0.02, 1.02)
            ax.grid(lw=0.3, alpha=0.5)
        for ax in axes[n:]:
            ax.remove()
        fig.legend(list(labels.values()), list(labels), loc="outside lower center", ncols=min(len(labels), 4),
                   frameon=False)
        fig.suptitle(title or (f"{model_name}: training curves" if model_name else "Training curves"))
    return fig


def plot_training_curves(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]],
                         out_dir: str | Path, name: str, title: str | None = None, *,
                         model_name: str | None = None, best_epoch: int | None = None) -> list[Path]:
    """:func:`training_curves_figure` saved as ``<name>.png/.pdf``."""
    return save_figure(training_curves_figure(history, model_name, best_epoch, title), out_dir, name)


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


def group_scores_figure(scores: Mapping[str, Mapping], group_title: str, title: str | None = None) -> Figure:
    """Grouped bars of Sp, Se and Score (%) per group value; the number of cycles under each group name,
    'n/a' where a quantity is undefined (no normal or no abnormal cycles in that group); legend below."""
    names = list(scores)
    if not names:
        raise ValueError(f"no groups to plot for {group_title}")
    x = np.arange(len(names))
    metrics = ("specificity", "sensitivity", "score")
    width = 0.27
    with paper_style():
        fig = figure("column" if len(names) <= 5 else TEXT_WIDTH, aspect=0.65 if len(names) <= 5 else 0.32)
        ax = fig.subplots()
        for m_i, metric in enumerate(metrics):
            vals = [scores[n][metric] for n in names]
            pos = x + (m_i - 1) * width
            ax.bar(pos, [0 if v is None else 100 * v for v in vals], width=width, color=METRIC_COLORS[metric],
                   label=METRIC_LABELS[metric], edgecolor="black", linewidth=0.3)
            for xi, v in zip(pos, vals, strict=True):
                if v is None:
                    ax.text(xi, 1, "n/a", ha="center", va="bottom", fontsize=5, rotation=90)
        ax.set_xticks(x, [f"{n}\n(n={scores[n]['n']})" for n in names],
                      rotation=30 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center")
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_xlabel(group_title)
        fig.legend(loc="outside lower center", ncols=3, frameon=False)
        ax.set_title(title or f"ICBHI metrics per {group_title.lower()}")
    return fig


def plot_group_scores(scores: Mapping[str, Mapping], group_title: str, out_dir: str | Path, name: str,
                      title: str | None = None) -> list[Path]:
    """:func:`group_scores_figure` saved as ``<name>.png/.pdf``."""
    return save_figure(group_scores_figure(scores, group_title, title), out_dir, name)
