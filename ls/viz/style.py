"""One look for every figure: paper-column sizes, fonts, and fixed colours per factor, class, device and site.

Figures are sized in inches for a two-column paper (EUSIPCO/IEEE: column 3.39 in, text 7.0 in) so that fonts
print at their nominal size without rescaling. Colours are fixed per *name* (not per plotting order), so the
same device or class has the same colour in every figure of a paper.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (headless servers, CI)

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ls.types import UNKNOWN_TOKEN
from ls.utils.io import atomic_write_bytes

#: Widths of a two-column paper, inches.
COLUMN_WIDTH = 3.39
TEXT_WIDTH = 7.0

#: Metadata factors of SoftFiLM, in the order of the mask rows.
FACTORS = ("dev", "site", "rest")
FACTOR_LABELS = {"dev": "Device", "site": "Site", "rest": "Continuous"}
FACTOR_COLORS = {"dev": "#e74c3c", "site": "#2980b9", "rest": "#27ae60"}

#: Composite respiratory classes (4-class) and the 2-class view; "Abnormal" reuses the crackle colour.
CLASS_COLORS = {
    "Normal": "#3498db",
    "Crackle": "#e74c3c",
    "Wheeze": "#f39c12",
    "Both": "#8e44ad",
    "Abnormal": "#e74c3c",
}

#: Palettes for devices and sites: colours assigned in sorted-name order, so they are stable across figures.
DEVICE_PALETTE = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
SITE_PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                "#9c755f", "#bab0ac")
UNKNOWN_COLOR = "#7f7f7f"

#: matplotlib settings for print: serif text with Computer Modern maths, small but legible sizes.
PAPER_RC = {
    "font.family": "serif",
    "font.serif": ["DejaVu Serif", "Times New Roman", "Times"],
    "mathtext.fontset": "cm",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 300,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}

FIGURE_FORMATS = ("png", "pdf")


@contextmanager
def paper_style() -> Iterator[None]:
    """Context in which figures are drawn with :data:`PAPER_RC`; global rcParams are left untouched."""
    with plt.rc_context(PAPER_RC):
        yield


def figure(width: str | float = "column", aspect: float = 0.75, **kwargs) -> Figure:
    """A new figure ``width`` inches wide (``"column"``/``"text"`` or a number), height ``aspect * width``."""
    w = {"column": COLUMN_WIDTH, "text": TEXT_WIDTH}.get(width, width) if isinstance(width, str) else width
    if not isinstance(w, (int, float)):
        raise TypeError(f"figure width must be 'column', 'text' or inches, got {width!r}")
    return plt.figure(figsize=(float(w), float(w) * aspect), layout="constrained", **kwargs)


def category_colors(names: Sequence[str], palette: Sequence[str]) -> dict[str, str]:
    """Colour per distinct name: known classes keep :data:`CLASS_COLORS`, the unknown token is grey,
    the rest take ``palette`` in sorted-name order (cycling when there are more names than colours)."""
    colors: dict[str, str] = {}
    ordinary = sorted({str(n) for n in names} - set(CLASS_COLORS) - {UNKNOWN_TOKEN})
    for i, name in enumerate(ordinary):
        colors[name] = palette[i % len(palette)]
    for name in {str(n) for n in names}:
        if name in CLASS_COLORS:
            colors[name] = CLASS_COLORS[name]
        elif name == UNKNOWN_TOKEN:
            colors[name] = UNKNOWN_COLOR
    return colors


def palette_for(kind: str) -> Sequence[str]:
    """The palette for a grouping: ``"device"``, ``"site"`` (anything else gets the site palette)."""
    return DEVICE_PALETTE if kind.lower().startswith("dev") else SITE_PALETTE


def ordered_categories(names: Sequence[str]) -> list[str]:
    """Distinct names in a stable order: the composite classes in class order, then the rest sorted."""
    distinct = {str(n) for n in names}
    classes = [c for c in CLASS_COLORS if c in distinct]
    return classes + sorted(distinct - set(classes))


def save_figure(fig: Figure, out_dir: str | Path, name: str, formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """Write ``<out_dir>/<name>.<fmt>`` for each format (300 dpi, tight box, white), atomically; close ``fig``.

    Returns the written paths, in ``formats`` order.
    """
    out_dir = Path(out_dir)
    paths = []
    try:
        for fmt in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=300, bbox_inches="tight", facecolor="white")
            path = out_dir / f"{name}.{fmt}"
            atomic_write_bytes(path, buf.getvalue())
            paths.append(path)
    finally:
        plt.close(fig)
    return paths
