"""t-SNE of pooled embeddings, models side by side, coloured by class, device and site.

Nothing in the figure is hard-coded commentary (the reference drew "device bias removed" regardless of the
data: defect 11.1-7). Instead each panel states a measured number: the silhouette score of that grouping in
the *original* embedding space (cosine distance), which is higher when the grouping forms tighter clusters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score

from ls.utils.io import atomic_write_text
from ls.viz.style import (
    TEXT_WIDTH,
    category_colors,
    figure,
    ordered_categories,
    palette_for,
    paper_style,
    save_figure,
)

DEFAULT_PERPLEXITY = 30.0


def adapted_perplexity(n_points: int, perplexity: float = DEFAULT_PERPLEXITY) -> float:
    """``perplexity`` capped for small sets: t-SNE needs ``perplexity < n_points``; we use ``(n - 1) / 3``
    (at least 1), so each point still has about three times as many neighbours as its effective count."""
    if n_points < 2:
        raise ValueError(f"t-SNE needs at least 2 points, got {n_points}")
    return float(min(perplexity, max(1.0, (n_points - 1) / 3.0)))


def tsne_embed(embeddings: np.ndarray, perplexity: float = DEFAULT_PERPLEXITY, seed: int = 42,
               max_iter: int = 1000) -> np.ndarray:
    """2-D t-SNE of ``embeddings [N, D]`` -> ``[N, 2]`` (PCA init, automatic learning rate, fixed seed)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {x.shape}")
    n = x.shape[0]
    tsne = TSNE(
        n_components=2,
        perplexity=adapted_perplexity(n, perplexity),
        max_iter=max_iter,
        init="pca" if min(x.shape) >= 2 else "random",
        learning_rate="auto",
        random_state=seed,
    )
    return tsne.fit_transform(x)


def grouping_silhouette(embeddings: np.ndarray, labels: Sequence[str]) -> float | None:
    """Cosine silhouette of ``labels`` in the embedding space ``[N, D]``; None when undefined
    (fewer than 2 groups, or as many groups as points)."""
    labels = np.asarray([str(v) for v in labels])
    n_groups = len(set(labels.tolist()))
    if n_groups < 2 or n_groups >= len(labels):
        return None
    return float(silhouette_score(np.asarray(embeddings, dtype=np.float64), labels, metric="cosine"))


def tsne_figure(coords: Mapping[str, np.ndarray], groupings: Mapping[str, Sequence[str]],
                silhouette: Mapping[str, Mapping[str, float | None]] | None = None) -> Figure:
    """t-SNE panels: one row per model (``coords``: model name -> ``[N, 2]``), one column per grouping; each
    panel's title names the model and the grouping (with the silhouette when given), each column has its
    legend below its bottom panel."""
    rows, cols = len(coords), len(groupings)
    with paper_style():
        fig = figure(TEXT_WIDTH, aspect=0.32 * rows * 3 / max(cols, 3) + 0.1)
        axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
        for c, (group, values) in enumerate(groupings.items()):
            values = np.asarray([str(v) for v in values])
            colors = category_colors(values.tolist(), palette_for(group))
            order = ordered_categories(values.tolist())
            for r, model in enumerate(coords):
                ax = axes[r, c]
                xy = coords[model]
                for cat in order:
                    sel = values == cat
                    ax.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.8, color=colors[cat], linewidths=0,
                               label=f"{cat} ({int(sel.sum())})")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.spines[["top", "right"]].set_visible(True)
                sil = (silhouette or {}).get(model, {}).get(group)
                ax.set_title(f"{model}: {group.lower()}" + ("" if sil is None else f" (silh. {sil:+.2f})"))
                if c == 0:
                    ax.set_ylabel("t-SNE 2")
                if r == rows - 1:
                    ax.set_xlabel("t-SNE 1")
            # one legend per column, under its bottom panel (same colours in every row of the column)
            handles, labels = axes[0, c].get_legend_handles_labels()
            axes[-1, c].legend(handles, labels, title=group, frameon=False, markerscale=2, ncols=2,
                               loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return fig


def plot_tsne_comparison(
    embeddings: Mapping[str, np.ndarray],
    groupings: Mapping[str, Sequence[str]],
    out_dir: str | Path,
    name: str = "tsne_comparison",
    perplexity: float = DEFAULT_PERPLEXITY,
    seed: int = 42,
    max_iter: int = 1000,
) -> dict:
    """t-SNE panels: one row per model (``embeddings``: model name -> ``[N, D]``), one column per grouping
    (``groupings``: e.g. ``{"Class": [...], "Device": [...], "Site": [...]}``, each ``N`` names).

    All models must embed the same ``N`` cycles in the same order. Writes ``<name>.png/.pdf`` and
    ``<name>.json`` (the silhouette per model and grouping, and the perplexity used); returns
    ``{"coords": {model: [N, 2]}, "silhouette": {model: {grouping: float|None}}, "paths": [...]}``.
    """
    if not embeddings or not groupings:
        raise ValueError("plot_tsne_comparison needs at least one model and one grouping")
    sizes = {m: np.asarray(e).shape[0] for m, e in embeddings.items()}
    sizes.update({g: len(v) for g, v in groupings.items()})
    if len(set(sizes.values())) != 1:
        raise ValueError(f"models and groupings must cover the same cycles; sizes: {sizes}")
    n = next(iter(sizes.values()))
    coords = {m: tsne_embed(e, perplexity, seed, max_iter) for m, e in embeddings.items()}
    silhouette = {m: {g: grouping_silhouette(e, v) for g, v in groupings.items()} for m, e in embeddings.items()}

    paths = save_figure(tsne_figure(coords, groupings, silhouette), out_dir, name)
    report = {"n_points": int(n), "perplexity": adapted_perplexity(n, perplexity), "seed": seed,
              "silhouette_cosine": silhouette}
    json_path = Path(out_dir) / f"{name}.json"
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    return {"coords": coords, "silhouette": silhouette, "paths": [*paths, json_path]}
