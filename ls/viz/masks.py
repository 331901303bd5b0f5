"""SoftFiLM mask analysis (the paper's mask figure): how the soft masks split the embedding dimensions between factors.

Inputs are the mask weights ``w_k = sigmoid(a_k / tau)`` as the model reports them in ``info["masks"]``, i.e.
at the temperature the model actually runs at (the reference recomputed them at tau = 1, which is not what the
trained model uses: defect 11.1-8). A mask set is ``{factor key: [D]}`` with one entry per categorical factor
the dataset declares and ``rest`` for the continuous features (ICBHI: ``dev``, ``site``, ``rest``), in the
model's order, or a ``[K, D]`` array with ``names``.

Two overlap measures are reported per pair of factors, each beside its own chance level so a number is never
read without one:

- ``overlap``: the soft overlap ``mean_d(w_a * w_b)`` (the regulariser's term and the reference's printout);
  chance = ``mean(w_a) * mean(w_b)``, its expectation when the dimensions of one mask are shuffled.
- ``active_overlap``: the overlap coefficient ``|A & B| / min(|A|, |B|)`` of the active sets (``w > 0.5``);
  chance = ``max(|A|, |B|) / D`` for random subsets of the same sizes. For K equal shares chance is 1/K (for
  ICBHI's three, the "33 % expected by chance" the paper compares its "< 3.2 %" with).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ls.utils.io import atomic_write_text
from ls.viz.style import (
    FACTORS,
    TEXT_WIDTH,
    UNKNOWN_COLOR,
    factor_colors,
    factor_label,
    figure,
    paper_style,
    save_figure,
)

#: A dimension is "active" for a factor when its mask weight exceeds this (sigmoid midpoint).
ACTIVE_THRESHOLD = 0.5


class MaskSet:
    """Mask weights ``w [K, D]`` with the factor key of each row."""

    def __init__(self, weights: np.ndarray, names: Sequence[str]) -> None:
        self.w = weights
        self.names = tuple(names)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(itertools.combinations(self.names, 2))


def as_mask_set(masks: Mapping[str, object] | np.ndarray, names: Sequence[str] | None = None) -> MaskSet:
    """Masks as a :class:`MaskSet`: a mapping ``{key: [D]}`` (rows in its order), or a ``[K, D]`` array with
    ``names`` (default for ``K = 3``: ICBHI's ``dev``, ``site``, ``rest``)."""
    if isinstance(masks, Mapping):
        if not masks:
            raise ValueError("no masks given")
        if names is not None:
            missing = [k for k in names if k not in masks]
            if missing:
                raise ValueError(f"mask dict lacks factor(s) {missing}; expected keys {list(names)}, got {list(masks)}")
        keys = list(names) if names is not None else list(masks)
        rows = [np.asarray(_to_numpy(masks[k]), dtype=np.float64).reshape(-1) for k in keys]
        if len({r.shape[0] for r in rows}) != 1:
            raise ValueError(f"mask lengths differ: {dict(zip(keys, [r.shape[0] for r in rows]))}")
        matrix = np.stack(rows)
    else:
        matrix = np.asarray(_to_numpy(masks), dtype=np.float64)
        if matrix.ndim != 2:
            raise ValueError(f"masks must be a [K, D] array (one row per factor), got shape {matrix.shape}")
        if names is None:
            if matrix.shape[0] != len(FACTORS):
                raise ValueError(f"a [K, D] mask array with K = {matrix.shape[0]} needs the factor names "
                                 f"(only K = 3 defaults to {list(FACTORS)})")
            names = FACTORS
        keys = list(names)
        if len(keys) != matrix.shape[0]:
            raise ValueError(f"{len(keys)} factor names {keys} for masks of shape {matrix.shape}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"factor names repeat: {keys}")
    if not np.all(np.isfinite(matrix)) or matrix.min() < 0.0 or matrix.max() > 1.0:
        raise ValueError("mask weights must be finite and in [0, 1] (sigmoid outputs)")
    return MaskSet(matrix, keys)


def as_mask_matrix(masks: Mapping[str, object] | np.ndarray, names: Sequence[str] | None = None) -> np.ndarray:
    """The ``[K, D]`` weights of :func:`as_mask_set`."""
    return as_mask_set(masks, names).w


def _to_numpy(x: object) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def pair_key(a: str, b: str) -> str:
    return f"{a}-{b}"


def mask_statistics(masks: Mapping[str, object] | np.ndarray | MaskSet, threshold: float = ACTIVE_THRESHOLD,
                    names: Sequence[str] | None = None) -> dict:
    """Summary of a ``[K, D]`` mask set: per-factor counts, coverage and the pairwise overlaps with chance.

    Returns plain Python types (JSON-ready): ``factors`` (keys in row order), ``dim``, ``active`` /
    ``active_fraction`` / ``dominant`` / ``mean_weight`` per factor, ``coverage`` (share of dims with any
    active factor), ``dead_dims`` (none active), ``shared_dims`` (more than one active), ``binariness``
    ``mean(2|w - 0.5|)``, and per pair ``"<a>-<b>"`` (row order): ``overlap``, ``overlap_chance``,
    ``active_overlap``, ``active_overlap_chance``.
    """
    ms = masks if isinstance(masks, MaskSet) else as_mask_set(masks, names)
    w, keys = ms.w, ms.names
    dim = w.shape[1]
    active = w > threshold  # [K, D]
    dominant = np.bincount(w.argmax(axis=0), minlength=len(keys))
    n_active_per_dim = active.sum(axis=0)
    stats: dict = {
        "factors": list(keys),
        "dim": int(dim),
        "threshold": float(threshold),
        "active": {k: int(active[i].sum()) for i, k in enumerate(keys)},
        "active_fraction": {k: float(active[i].mean()) for i, k in enumerate(keys)},
        "dominant": {k: int(dominant[i]) for i, k in enumerate(keys)},
        "mean_weight": {k: float(w[i].mean()) for i, k in enumerate(keys)},
        "coverage": float((n_active_per_dim > 0).mean()),
        "dead_dims": int((n_active_per_dim == 0).sum()),
        "shared_dims": int((n_active_per_dim > 1).sum()),
        "binariness": float(np.mean(2.0 * np.abs(w - 0.5))),
        "overlap": {},
        "overlap_chance": {},
        "active_overlap": {},
        "active_overlap_chance": {},
    }
    for a, b in ms.pairs:
        i, j = keys.index(a), keys.index(b)
        key = pair_key(a, b)
        stats["overlap"][key] = float(np.mean(w[i] * w[j]))
        stats["overlap_chance"][key] = float(w[i].mean() * w[j].mean())
        n_i, n_j = int(active[i].sum()), int(active[j].sum())
        if min(n_i, n_j) == 0:  # an empty active set overlaps nothing; the coefficient is undefined
            stats["active_overlap"][key] = None
            stats["active_overlap_chance"][key] = None
        else:
            stats["active_overlap"][key] = float((active[i] & active[j]).sum() / min(n_i, n_j))
            stats["active_overlap_chance"][key] = float(max(n_i, n_j) / dim)
    return stats


def _width(n: int) -> str | float:
    return "column" if n <= 4 else TEXT_WIDTH


# -- figures (each builder returns the Figure; the plot_* functions save it) -------------------------------
def mask_heatmap_figure(masks: Mapping[str, object] | np.ndarray | MaskSet, title: str | None = None) -> Figure:
    """Heat map of the ``[K, D]`` masks (one row per factor) above a strip of each dimension's dominant
    factor; dimensions where no factor is active are grey. A legend below names the strip's colours."""
    ms = masks if isinstance(masks, MaskSet) else as_mask_set(masks)
    w, keys = ms.w, ms.names
    k, dim = w.shape
    colors = factor_colors(keys)
    with paper_style():
        fig = figure("column", aspect=0.45 + 0.06 * k)
        axes = fig.subplots(2, 1, height_ratios=[max(k, 2), 1], sharex=True)
        im = axes[0].imshow(w, aspect="auto", cmap="RdYlBu_r", vmin=0.0, vmax=1.0, interpolation="nearest",
                            extent=(-0.5, dim - 0.5, k - 0.5, -0.5))
        axes[0].set_yticks(range(k), [factor_label(n) for n in keys])
        fig.colorbar(im, ax=axes[0], label="Mask weight", fraction=0.05, pad=0.02)
        axes[0].set_title(title or "SoftFiLM masks")
        partition = np.where((w > ACTIVE_THRESHOLD).any(axis=0), w.argmax(axis=0), k)  # k = none active
        cmap = ListedColormap([colors[n] for n in keys] + [UNKNOWN_COLOR])
        axes[1].imshow(partition[None, :], aspect="auto", cmap=cmap, vmin=-0.5, vmax=k + 0.5,
                       interpolation="nearest", extent=(-0.5, dim - 0.5, 0.5, -0.5))
        axes[1].set_yticks([0], ["Dominant"])
        axes[1].set_xlabel("Embedding dimension")
        for ax in axes:
            ax.spines[["top", "right"]].set_visible(True)
        handles = [Patch(color=colors[n], label=factor_label(n)) for n in keys]
        handles.append(Patch(color=UNKNOWN_COLOR, label="none active"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)
    return fig


def mask_partition_figure(stats: Mapping, title: str | None = None) -> Figure:
    """Bars of active (``w > 0.5``) and dominant (argmax) dimension counts per factor, with the ``D/K``
    line (an even split); the legend sits below the axes."""
    keys = list(stats.get("factors") or stats["active"])
    dim, k = stats["dim"], len(keys)
    x = np.arange(k)
    colors = factor_colors(keys)
    with paper_style():
        fig = figure(_width(k), aspect=0.6 if k <= 4 else 0.3)
        ax = fig.subplots()
        active = [stats["active"][n] for n in keys]
        dominant = [stats["dominant"][n] for n in keys]
        ax.bar(x - 0.2, active, width=0.38, color=[colors[n] for n in keys], edgecolor="black", linewidth=0.5)
        ax.bar(x + 0.2, dominant, width=0.38, color="white", hatch="////", edgecolor=[colors[n] for n in keys],
               linewidth=0.8)
        for xi, (n_a, n_d) in enumerate(zip(active, dominant, strict=True)):
            ax.text(xi - 0.2, n_a, str(n_a), ha="center", va="bottom", fontsize=6)
            ax.text(xi + 0.2, n_d, str(n_d), ha="center", va="bottom", fontsize=6)
        ax.axhline(dim / k, color="black", linestyle=":", linewidth=0.8)
        ax.set_xticks(x, [factor_label(n) for n in keys])
        ax.set_ylabel("Dimensions")
        ax.set_ylim(0, max(max(active), max(dominant), dim / k) * 1.15 + 1)
        ax.set_title(title or f"Coverage {100 * stats['coverage']:.1f}% of D = {dim}")
        handles = [Patch(facecolor="#7f7f7f", edgecolor="black", label="Active (w > 0.5)"),
                   Patch(facecolor="white", edgecolor="#7f7f7f", hatch="////", label="Dominant (largest w)"),
                   Line2D([], [], color="black", linestyle=":", label=f"D/{k} (even split)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    return fig


def mask_overlap_figure(stats: Mapping, title: str | None = None) -> Figure:
    """Pairwise overlaps in percent beside their chance levels: soft overlap (left), active sets (right);
    one bar per pair of factors, the legend below."""
    keys = list(stats["overlap"])
    labels = ["–\n".join(factor_label(p) for p in _split_pair(key, stats)) for key in keys]  # two short lines
    x = np.arange(len(keys))
    panels = (
        ("overlap", "overlap_chance", r"Soft overlap $\overline{w_a w_b}$ (%)"),
        ("active_overlap", "active_overlap_chance", "Active-set overlap (%)"),
    )
    with paper_style():
        wide = len(keys) > 3  # many pairs: one panel above the other, each the full text width
        fig = figure(TEXT_WIDTH if wide else "column", aspect=0.5 if wide else 0.65)
        axes = fig.subplots(2 if wide else 1, 1 if wide else 2)
        for ax, (obs_key, chance_key, ylabel) in zip(axes, panels, strict=True):
            obs = np.array([np.nan if stats[obs_key][k] is None else 100 * stats[obs_key][k] for k in keys])
            chance = np.array([np.nan if stats[chance_key][k] is None else 100 * stats[chance_key][k]
                               for k in keys])
            ax.bar(x, np.nan_to_num(obs), width=0.6, color="#555555")
            ax.scatter(x, chance, marker="_", s=300, color="#c0392b", linewidths=1.5, zorder=3)
            for xi, v in zip(x, obs, strict=True):
                ax.text(xi, 0 if np.isnan(v) else v, "n/a" if np.isnan(v) else f"{v:.1f}", ha="center",
                        va="bottom", fontsize=6)
            ax.set_xticks(x, labels, fontsize=6)
            ax.set_ylabel(ylabel)
            top = np.nanmax(np.concatenate([obs, chance, [1.0]]))
            ax.set_ylim(0, top * 1.2)
        handles = [Patch(color="#555555", label="Learned"),
                   Line2D([], [], color="#c0392b", marker="_", markersize=12, linestyle="", label="Chance")]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle(title or "Pairwise mask overlap")
    return fig


def _split_pair(key: str, stats: Mapping) -> tuple[str, str]:
    """The two factor keys of a pair key (factor names may themselves contain '-')."""
    names = list(stats.get("factors") or [])
    for a, b in itertools.combinations(names, 2):
        if pair_key(a, b) == key:
            return a, b
    a, _, b = key.partition("-")
    return a, b


def plot_mask_heatmap(w: Mapping[str, object] | np.ndarray | MaskSet, out_dir: str | Path, name: str,
                      title: str | None = None) -> list[Path]:
    return save_figure(mask_heatmap_figure(w, title), out_dir, name)


def plot_mask_partition(stats: Mapping, out_dir: str | Path, name: str, title: str | None = None) -> list[Path]:
    return save_figure(mask_partition_figure(stats, title), out_dir, name)


def plot_mask_overlap(stats: Mapping, out_dir: str | Path, name: str, title: str | None = None) -> list[Path]:
    return save_figure(mask_overlap_figure(stats, title), out_dir, name)


def mask_analysis(
    masks: Mapping[str, object] | np.ndarray,
    out_dir: str | Path,
    prefix: str = "mask",
    temperature: float | None = None,
    model_name: str = "SoftFiLM",
    names: Sequence[str] | None = None,
) -> dict:
    """All mask figures and the statistics JSON for one mask set (any number of factors).

    Writes ``<prefix>_heatmap``, ``<prefix>_partition``, ``<prefix>_overlap`` (PNG + PDF) and
    ``<prefix>_stats.json``; returns ``{"stats": ..., "paths": [...]}``. ``temperature`` is recorded in the
    JSON and titles (the tau the masks were computed at); ``model_name`` starts every title.
    """
    ms = as_mask_set(masks, names)
    stats = mask_statistics(ms)
    stats["temperature"] = None if temperature is None else float(temperature)
    tau = "" if temperature is None else rf" ($\tau$ = {temperature:.2f})"
    out_dir = Path(out_dir)
    paths = []
    paths += plot_mask_heatmap(ms, out_dir, f"{prefix}_heatmap", title=f"{model_name} masks{tau}")
    paths += plot_mask_partition(stats, out_dir, f"{prefix}_partition",
                                 title=f"{model_name}: coverage {100 * stats['coverage']:.1f}% of D = {stats['dim']}")
    paths += plot_mask_overlap(stats, out_dir, f"{prefix}_overlap", title=f"{model_name}: pairwise mask overlap{tau}")
    json_path = out_dir / f"{prefix}_stats.json"
    atomic_write_text(json_path, json.dumps(stats, indent=2) + "\n")
    paths.append(json_path)
    return {"stats": stats, "paths": paths}
