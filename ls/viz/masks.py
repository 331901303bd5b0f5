"""SoftFiLM mask analysis (the paper's mask figure): how the soft masks split the embedding dimensions between factors.

Inputs are the mask weights ``w_k = sigmoid(a_k / tau)`` as the model reports them in ``info["masks"]``, i.e.
at the temperature the model actually runs at (the reference recomputed them at tau = 1, which is not what the
trained model uses: defect 11.1-8). Masks are given as ``{"dev": [D], "site": [D], "rest": [D]}`` or a
``[3, D]`` array in that row order.

Two overlap measures are reported, each beside its own chance level so a number is never read without one:

- ``overlap``: the soft overlap ``mean_d(w_a * w_b)`` (the regulariser's term and the reference's printout);
  chance = ``mean(w_a) * mean(w_b)``, its expectation when the dimensions of one mask are shuffled.
- ``active_overlap``: the overlap coefficient ``|A & B| / min(|A|, |B|)`` of the active sets (``w > 0.5``);
  chance = ``max(|A|, |B|) / D`` for random subsets of the same sizes. For three equal thirds chance is 1/3,
  the "33 % expected by chance" the paper compares its "< 3.2 %" with.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap

from ls.utils.io import atomic_write_text
from ls.viz.style import FACTOR_COLORS, FACTOR_LABELS, FACTORS, figure, paper_style, save_figure

#: A dimension is "active" for a factor when its mask weight exceeds this (sigmoid midpoint).
ACTIVE_THRESHOLD = 0.5

PAIRS = tuple(itertools.combinations(FACTORS, 2))  # (dev, site), (dev, rest), (site, rest)


def as_mask_matrix(masks: Mapping[str, object] | np.ndarray) -> np.ndarray:
    """Masks as a float64 ``[3, D]`` array, rows in :data:`FACTORS` order (``dev``, ``site``, ``rest``)."""
    if isinstance(masks, Mapping):
        missing = [k for k in FACTORS if k not in masks]
        if missing:
            raise ValueError(f"mask dict lacks factor(s) {missing}; expected keys {list(FACTORS)}, got {list(masks)}")
        rows = [np.asarray(_to_numpy(masks[k]), dtype=np.float64).reshape(-1) for k in FACTORS]
        if len({r.shape[0] for r in rows}) != 1:
            raise ValueError(f"mask lengths differ: {[r.shape[0] for r in rows]}")
        matrix = np.stack(rows)
    else:
        matrix = np.asarray(_to_numpy(masks), dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != len(FACTORS):
        raise ValueError(f"masks must be [3, D] (dev, site, rest), got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or matrix.min() < 0.0 or matrix.max() > 1.0:
        raise ValueError("mask weights must be finite and in [0, 1] (sigmoid outputs)")
    return matrix


def _to_numpy(x: object) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def mask_statistics(masks: Mapping[str, object] | np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> dict:
    """Summary of a ``[3, D]`` mask set: per-factor counts, coverage and the pairwise overlaps with chance.

    Returns plain Python types (JSON-ready): ``dim``, ``active`` / ``active_fraction`` / ``dominant`` /
    ``mean_weight`` per factor, ``coverage`` (share of dims with any active factor), ``dead_dims`` (none
    active), ``shared_dims`` (more than one active), ``binariness`` ``mean(2|w - 0.5|)``, and per pair
    ``"dev-site"`` etc.: ``overlap``, ``overlap_chance``, ``active_overlap``, ``active_overlap_chance``.
    """
    w = as_mask_matrix(masks)
    dim = w.shape[1]
    active = w > threshold  # [3, D]
    dominant = np.bincount(w.argmax(axis=0), minlength=len(FACTORS))
    n_active_per_dim = active.sum(axis=0)
    stats: dict = {
        "dim": int(dim),
        "threshold": float(threshold),
        "active": {k: int(active[i].sum()) for i, k in enumerate(FACTORS)},
        "active_fraction": {k: float(active[i].mean()) for i, k in enumerate(FACTORS)},
        "dominant": {k: int(dominant[i]) for i, k in enumerate(FACTORS)},
        "mean_weight": {k: float(w[i].mean()) for i, k in enumerate(FACTORS)},
        "coverage": float((n_active_per_dim > 0).mean()),
        "dead_dims": int((n_active_per_dim == 0).sum()),
        "shared_dims": int((n_active_per_dim > 1).sum()),
        "binariness": float(np.mean(2.0 * np.abs(w - 0.5))),
        "overlap": {},
        "overlap_chance": {},
        "active_overlap": {},
        "active_overlap_chance": {},
    }
    for a, b in PAIRS:
        i, j = FACTORS.index(a), FACTORS.index(b)
        key = f"{a}-{b}"
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


def _pair_label(key: str) -> str:
    a, b = key.split("-")
    return f"{FACTOR_LABELS[a]}–{FACTOR_LABELS[b]}"


def plot_mask_heatmap(w: np.ndarray, out_dir: str | Path, name: str, title: str | None = None) -> list[Path]:
    """Heat map of the ``[3, D]`` masks above a strip showing each dimension's dominant factor.

    The strip is the dominant-factor partition; dimensions where no factor is active are left light grey.
    """
    w = as_mask_matrix(w)
    dim = w.shape[1]
    with paper_style():
        fig = figure("column", aspect=0.55)
        axes = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
        im = axes[0].imshow(w, aspect="auto", cmap="RdYlBu_r", vmin=0.0, vmax=1.0, interpolation="nearest",
                            extent=(-0.5, dim - 0.5, len(FACTORS) - 0.5, -0.5))
        axes[0].set_yticks(range(len(FACTORS)), [FACTOR_LABELS[k] for k in FACTORS])
        for tick, k in zip(axes[0].get_yticklabels(), FACTORS):
            tick.set_color(FACTOR_COLORS[k])
        fig.colorbar(im, ax=axes[0], label="Mask weight", fraction=0.05, pad=0.02)
        if title:
            axes[0].set_title(title)

        # 0..2 = dominant factor, 3 = no active factor
        partition = np.where((w > ACTIVE_THRESHOLD).any(axis=0), w.argmax(axis=0), len(FACTORS))
        cmap = ListedColormap([FACTOR_COLORS[k] for k in FACTORS] + ["#eeeeee"])
        axes[1].imshow(partition[None, :], aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(FACTORS) + 0.5,
                       interpolation="nearest", extent=(-0.5, dim - 0.5, 0.5, -0.5))
        axes[1].set_yticks([0], ["Dominant"])
        axes[1].set_xlabel("Embedding dimension")
        for ax in axes:
            ax.spines[["top", "right"]].set_visible(True)
        return save_figure(fig, out_dir, name)


def plot_mask_partition(stats: Mapping, out_dir: str | Path, name: str, title: str | None = None) -> list[Path]:
    """Bars of active (``w > 0.5``) and dominant (argmax) dimension counts per factor, with the ``D/3`` line."""
    dim = stats["dim"]
    x = np.arange(len(FACTORS))
    with paper_style():
        fig = figure("column", aspect=0.6)
        ax = fig.subplots()
        colors = [FACTOR_COLORS[k] for k in FACTORS]
        active = [stats["active"][k] for k in FACTORS]
        dominant = [stats["dominant"][k] for k in FACTORS]
        ax.bar(x - 0.2, active, width=0.38, color=colors, edgecolor="black", linewidth=0.5, label="Active")
        ax.bar(x + 0.2, dominant, width=0.38, color=colors, alpha=0.45, hatch="//", edgecolor="black",
               linewidth=0.5, label="Dominant")
        for xi, (n_a, n_d) in enumerate(zip(active, dominant)):
            ax.text(xi - 0.2, n_a, str(n_a), ha="center", va="bottom", fontsize=6)
            ax.text(xi + 0.2, n_d, str(n_d), ha="center", va="bottom", fontsize=6)
        ax.axhline(dim / 3, color="black", linestyle=":", linewidth=0.8, label=r"$D/3$")
        ax.set_xticks(x, [FACTOR_LABELS[k] for k in FACTORS])
        ax.set_ylabel("Dimensions")
        ax.set_ylim(0, max(max(active), max(dominant), dim / 3) * 1.2 + 1)
        ax.set_title(title or f"Coverage {100 * stats['coverage']:.1f}% of D = {dim}")
        ax.legend(frameon=False, ncols=3, loc="upper center")
        return save_figure(fig, out_dir, name)


def plot_mask_overlap(stats: Mapping, out_dir: str | Path, name: str, title: str | None = None) -> list[Path]:
    """Pairwise overlaps in percent beside their chance levels: soft overlap (left), active sets (right)."""
    keys = [f"{a}-{b}" for a, b in PAIRS]
    x = np.arange(len(keys))
    panels = (
        ("overlap", "overlap_chance", r"Soft overlap $\overline{w_a w_b}$ (%)"),
        ("active_overlap", "active_overlap_chance", "Active-set overlap (%)"),
    )
    with paper_style():
        fig = figure("column", aspect=0.55)
        axes = fig.subplots(1, 2)
        for ax, (obs_key, chance_key, ylabel) in zip(axes, panels):
            obs = np.array([np.nan if stats[obs_key][k] is None else 100 * stats[obs_key][k] for k in keys])
            chance = np.array([np.nan if stats[chance_key][k] is None else 100 * stats[chance_key][k]
                               for k in keys])
            ax.bar(x, np.nan_to_num(obs), width=0.6, color="#555555", label="Learned")
            ax.scatter(x, chance, marker="_", s=300, color="black", linewidths=1.5, zorder=3, label="Chance")
            for xi, v in zip(x, obs):
                ax.text(xi, 0 if np.isnan(v) else v, "n/a" if np.isnan(v) else f"{v:.1f}", ha="center",
                        va="bottom", fontsize=6)
            ax.set_xticks(x, [_pair_label(k) for k in keys], rotation=30, ha="right")
            ax.set_ylabel(ylabel)
            top = np.nanmax(np.concatenate([obs, chance, [1.0]]))
            ax.set_ylim(0, top * 1.6)  # headroom for the legend
        axes[0].legend(frameon=False, loc="upper center", ncols=2)
        if title:
            fig.suptitle(title)
        return save_figure(fig, out_dir, name)


def mask_analysis(
    masks: Mapping[str, object] | np.ndarray,
    out_dir: str | Path,
    prefix: str = "mask",
    temperature: float | None = None,
) -> dict:
    """All mask figures and the statistics JSON for one mask set.

    Writes ``<prefix>_heatmap``, ``<prefix>_partition``, ``<prefix>_overlap`` (PNG + PDF) and
    ``<prefix>_stats.json``; returns ``{"stats": ..., "paths": [...]}``. ``temperature`` is recorded in the
    JSON and titles (the tau the masks were computed at).
    """
    w = as_mask_matrix(masks)
    stats = mask_statistics(w)
    stats["temperature"] = None if temperature is None else float(temperature)
    tau = "" if temperature is None else rf" ($\tau$ = {temperature:.2f})"
    out_dir = Path(out_dir)
    paths = []
    paths += plot_mask_heatmap(w, out_dir, f"{prefix}_heatmap", title=f"SoftFiLM masks{tau}")
    paths += plot_mask_partition(stats, out_dir, f"{prefix}_partition")
    paths += plot_mask_overlap(stats, out_dir, f"{prefix}_overlap", title=f"Pairwise mask overlap{tau}")
    json_path = out_dir / f"{prefix}_stats.json"
    atomic_write_text(json_path, json.dumps(stats, indent=2) + "\n")
    paths.append(json_path)
    return {"stats": stats, "paths": paths}
