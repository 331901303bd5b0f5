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

#: SoftFiLM's mask keys of ICBHI (its factors are data: any dataset declares its own, plus ``rest``).
FACTORS = ("dev", "site", "rest")
#: Fixed labels and colours of the ICBHI factor keys; other factors get :func:`factor_label` and
#: :data:`FACTOR_PALETTE` in order.
FACTOR_LABELS = {"dev": "Device", "device": "Device", "site": "Site", "rest": "Continuous"}
FACTOR_COLORS = {"dev": "#c0392b", "device": "#c0392b", "site": "#2471a3", "rest": "#1e8449"}
FACTOR_PALETTE = ("#8e44ad", "#b35806", "#c51b7d", "#7d6608", "#5d6d7e", "#0e6655")

#: Every colour that marks data is at least this contrast ratio against the white background (WCAG 2.1
#: non-text contrast), so lines, dots and bars stay visible in print and for weaker eyes.
MIN_CONTRAST = 3.0

#: Composite respiratory classes (4-class) and the 2-class view; "Abnormal" reuses the crackle colour.
CLASS_COLORS = {
    "Normal": "#2e86c1",
    "Crackle": "#c0392b",
    "Wheeze": "#b9770e",
    "Both": "#8e44ad",
    "Abnormal": "#c0392b",
}

#: Palettes for devices and sites: colours assigned in sorted-name order, so they are stable across figures.
DEVICE_PALETTE = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#4d9221", "#8c6d00", "#a6761d")
SITE_PALETTE = ("#4e79a7", "#d35400", "#e15759", "#0a9396", "#59a14f", "#9a7d0a", "#b07aa1", "#d45087",
                "#9c755f", "#7b7d7d")
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


def factor_label(key: str) -> str:
    """Display name of a factor key: ``dev`` -> ``Device``, ``rest`` -> ``Continuous``, ``body_pos`` ->
    ``Body pos``."""
    return FACTOR_LABELS.get(key, key.replace("_", " ").capitalize())


def factor_colors(keys: Sequence[str]) -> dict[str, str]:
    """A colour per factor key: the fixed ICBHI ones, then :data:`FACTOR_PALETTE` in the given order."""
    colors, free = {}, iter(FACTOR_PALETTE * (1 + len(keys) // len(FACTOR_PALETTE)))
    for key in keys:
        colors[key] = FACTOR_COLORS.get(key) or next(free)
    return colors


def relative_luminance(color: str) -> float:
    """WCAG 2.1 relative luminance of a matplotlib colour (0 black .. 1 white)."""
    from matplotlib.colors import to_rgb

    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(color)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast_ratio(a: str, b: str = "white") -> float:
    """WCAG 2.1 contrast ratio of two colours (1 .. 21)."""
    la, lb = relative_luminance(a), relative_luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def text_color_on(background: str) -> str:
    """Black or white, whichever reads better on ``background``."""
    return "black" if contrast_ratio("black", background) >= contrast_ratio("white", background) else "white"


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
