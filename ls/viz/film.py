"""FiLM parameter distributions per layer and per device / site / class (FiLM, TAFiLM and SoftFiLM).

A model's ``info`` holds the modulation of each conditioned layer as ``{layer: [B, D]}`` under ``gamma`` and
``beta`` (TAFiLM: ``gamma_cls``, ``beta_cls``, ``gamma_patch``, ``beta_patch``). Each cycle is summarised by
the mean of its ``[D]`` vector, so a distribution over cycles shows how strongly, and how differently per
group, the metadata moves the features away from identity (gamma = 1, beta = 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ls.viz.style import (
    COLUMN_WIDTH,
    TEXT_WIDTH,
    category_colors,
    figure,
    ordered_categories,
    palette_for,
    paper_style,
    save_figure,
)

#: ``info`` keys that hold FiLM parameters, in display order.
FILM_KEYS = ("gamma", "beta", "gamma_cls", "beta_cls", "gamma_patch", "beta_patch")

_SYMBOL = {"gamma": r"$\gamma$", "beta": r"$\beta$"}
#: Colour of the violins of the per-layer figure (one group per layer).
LAYER_COLOR = "#5d6d7e"


def film_label(key: str) -> str:
    """Axis label of a FiLM key: ``gamma_cls`` -> ``mean γ (CLS)``."""
    base, _, token = key.partition("_")
    suffix = {"cls": " (CLS)", "patch": " (patch)"}.get(token, "")
    return f"mean {_SYMBOL.get(base, base)}{suffix}"


def identity_value(key: str) -> float:
    """The value of ``key`` that leaves features unchanged: 1 for scales, 0 for shifts."""
    return 1.0 if key.startswith("gamma") else 0.0


def summarise_film_info(info: Mapping[str, object]) -> dict[str, dict[str, np.ndarray]]:
    """Per-cycle means of the FiLM parameters in one batch's ``info``: ``{key: {layer: [B]}}``.

    Keys are those of :data:`FILM_KEYS` present in ``info``; layer names are strings (``"10"``).
    Raises ``ValueError`` when ``info`` holds no FiLM parameters (e.g. a baseline or GRF model).
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in FILM_KEYS:
        per_layer = info.get(key)
        if not per_layer:
            continue
        out[key] = {}
        for layer, value in per_layer.items():
            arr = value.detach().float().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            if arr.ndim != 2:
                raise ValueError(f"info[{key!r}][{layer!r}] must be [B, D], got shape {arr.shape}")
            out[key][str(layer)] = arr.mean(axis=1)
    if not out:
        raise ValueError(f"model info has no FiLM parameters (keys {sorted(info)}; expected some of {FILM_KEYS})")
    return out


def concat_summaries(batches: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Concatenate per-batch summaries of :func:`summarise_film_info` along the cycle axis."""
    if not batches:
        raise ValueError("no FiLM summaries to concatenate")
    first = batches[0]
    return {k: {layer: np.concatenate([b[k][layer] for b in batches]) for layer in first[k]} for k in first}


#: The mean of a group: a white dot whose rim has the group's colour (``markeredgecolor``, set per group).
MEAN_STYLE = {"marker": "o", "markersize": 4, "markerfacecolor": "white", "linestyle": ""}
#: The median of a group: a black bar.
MEDIAN_STYLE = {"color": "black", "linewidth": 0.8}
#: The identity line (gamma = 1, beta = 0).
IDENTITY_STYLE = {"color": "black", "linestyle": "--", "linewidth": 0.6}


def _legend(fig: Figure, colors: Sequence[str], ncols: int) -> None:
    """What the marks of the violin figures mean, drawn as they are drawn: the mean (one dot per group
    colour), the median (bar) and identity (dashed line)."""
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D

    colors = list(dict.fromkeys(colors))
    means = tuple(Line2D([], [], **MEAN_STYLE, markeredgecolor=c) for c in colors)
    handles = [means, Line2D([], [], **MEDIAN_STYLE), Line2D([], [], **IDENTITY_STYLE)]
    labels = ["mean", "median", r"identity ($\gamma$ = 1, $\beta$ = 0)"]
    fig.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None, pad=0.2)}, loc="outside lower center",
               ncols=ncols, frameon=False, handlelength=max(2.0, 0.9 * len(colors)))


def _violins(ax, data: list[np.ndarray], colors: list[str]) -> None:
    """Violin per group where a density can be estimated; every group also gets its points' mean (dot)
    and median (bar), so groups with one cycle or identical values still show."""
    positions = np.arange(1, len(data) + 1)
    dense = [i for i, d in enumerate(data) if d.size >= 2 and np.ptp(d) > 0]
    if dense:
        parts = ax.violinplot([data[i] for i in dense], positions=positions[dense], showextrema=False, widths=0.8)
        for body, i in zip(parts["bodies"], dense, strict=True):
            body.set_facecolor(colors[i])
            body.set_edgecolor("black")
            body.set_linewidth(0.4)
            body.set_alpha(0.6)
    for pos, d, color in zip(positions, data, colors, strict=True):
        if d.size == 0:
            continue
        ax.plot([pos], [d.mean()], zorder=3, **MEAN_STYLE, markeredgecolor=color)
        ax.hlines(np.median(d), pos - 0.25, pos + 0.25, zorder=3, **MEDIAN_STYLE)


def film_by_group_figure(
    summary: Mapping[str, Mapping[str, np.ndarray]],
    groups: Sequence[str],
    group_title: str,
    model_name: str = "FiLM model",
) -> Figure:
    """Violins of per-cycle mean FiLM parameters per group value: rows = parameter keys, columns = layers.

    ``summary``: ``{key: {layer: [N]}}`` (from :func:`summarise_film_info`); ``groups``: ``N`` names (e.g.
    the device of each cycle). A dashed line marks identity (gamma = 1, beta = 0). The figure title names
    the model, each column's title its layer; the legend (below) says what dot, bar and line are.
    """
    groups = np.asarray([str(g) for g in groups])
    keys = [k for k in FILM_KEYS if k in summary]
    layers = list(next(iter(summary.values())))
    order = ordered_categories(groups.tolist())
    colors = category_colors(groups.tolist(), palette_for(group_title))
    with paper_style():
        width = COLUMN_WIDTH if len(layers) == 1 and len(order) <= 5 else TEXT_WIDTH
        fig = figure(width, aspect=0.32 * len(keys) * (COLUMN_WIDTH / width) * 1.6 + 0.1)
        axes = fig.subplots(len(keys), len(layers), squeeze=False, sharex=True)
        for r, key in enumerate(keys):
            for c, layer in enumerate(layers):
                ax = axes[r, c]
                values = np.asarray(summary[key][layer])
                if values.shape[0] != groups.shape[0]:
                    raise ValueError(f"{key} layer {layer}: {values.shape[0]} cycles but {groups.shape[0]} groups")
                _violins(ax, [values[groups == g] for g in order], [colors[g] for g in order])
                ax.axhline(identity_value(key), **IDENTITY_STYLE)
                if r == 0:
                    ax.set_title(f"Layer {layer}")
                if c == 0:
                    ax.set_ylabel(film_label(key))
                ax.set_xticks(np.arange(1, len(order) + 1), order, rotation=35, ha="right")
        for ax in axes[-1]:
            ax.set_xlabel(group_title)
        fig.suptitle(f"{model_name}: FiLM parameters per {group_title.lower()} "
                     f"(layer{'s' if len(layers) > 1 else ''} {', '.join(layers)})")
        _legend(fig, [colors[g] for g in order], ncols=3)
    return fig


def plot_film_by_group(
    summary: Mapping[str, Mapping[str, np.ndarray]],
    groups: Sequence[str],
    group_title: str,
    out_dir: str | Path,
    name: str,
    model_name: str = "FiLM model",
) -> list[Path]:
    """:func:`film_by_group_figure` saved as ``<name>.png/.pdf``."""
    return save_figure(film_by_group_figure(summary, groups, group_title, model_name), out_dir, name)


def film_by_layer_figure(summary: Mapping[str, Mapping[str, np.ndarray]], model_name: str = "FiLM model") -> Figure:
    """Violins of per-cycle mean FiLM parameters per conditioned layer, one panel per parameter key; the
    title names the model, the legend (below) the marks."""
    keys = [k for k in FILM_KEYS if k in summary]
    with paper_style():
        fig = figure("column", aspect=0.45 * len(keys) + 0.15)
        axes = fig.subplots(len(keys), 1, squeeze=False, sharex=True)[:, 0]
        for ax, key in zip(axes, keys, strict=True):
            layers = list(summary[key])
            _violins(ax, [np.asarray(summary[key][layer]) for layer in layers], [LAYER_COLOR] * len(layers))
            ax.axhline(identity_value(key), **IDENTITY_STYLE)
            ax.set_ylabel(film_label(key))
            ax.set_xticks(np.arange(1, len(layers) + 1), layers)
        axes[-1].set_xlabel("Conditioned layer")
        fig.suptitle(f"{model_name}: FiLM parameters per layer")
        _legend(fig, [LAYER_COLOR], ncols=2)
    return fig


def plot_film_by_layer(summary: Mapping[str, Mapping[str, np.ndarray]], out_dir: str | Path, name: str,
                       model_name: str = "FiLM model") -> list[Path]:
    """:func:`film_by_layer_figure` saved as ``<name>.png/.pdf``."""
    return save_figure(film_by_layer_figure(summary, model_name), out_dir, name)


def film_params_figures(
    summary: Mapping[str, Mapping[str, np.ndarray]],
    groupings: Mapping[str, Sequence[str]],
    out_dir: str | Path,
    prefix: str = "film_params",
    model_name: str = "FiLM model",
) -> list[Path]:
    """All FiLM figures: ``<prefix>_by_layer`` and one ``<prefix>_by_<grouping>`` per grouping
    (e.g. ``{"Device": [...], "Site": [...], "Class": [...]}``). Returns the written paths."""
    paths = plot_film_by_layer(summary, out_dir, f"{prefix}_by_layer", model_name)
    for title, groups in groupings.items():
        slug = title.lower().replace(" ", "_")
        paths += plot_film_by_group(summary, groups, title, out_dir, f"{prefix}_by_{slug}", model_name)
    return paths
