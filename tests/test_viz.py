"""Figure library (ls.viz) on small synthetic arrays, and the visualize CLI on tiny trained checkpoints."""

from __future__ import annotations

import json
import math

import matplotlib.image as mpimg
import numpy as np
import pytest
from test_evaluate_predict import tiny_checkpoints  # noqa: F401  (session fixture shared with that module)

from ls.viz import film, masks, performance, style, tsne

# Hand-made masks over D = 6 dims: dev owns dims 0-1, site 2-3 and (weakly) 5, rest dim 4.
DEV = [0.9, 0.9, 0.1, 0.1, 0.1, 0.1]
SITE = [0.1, 0.1, 0.9, 0.9, 0.1, 0.6]
REST = [0.1, 0.1, 0.1, 0.1, 0.9, 0.2]


def assert_figure_files(paths, out_dir, name):
    """PNG and PDF of ``name`` exist; the PNG decodes to a non-blank image; the PDF has a PDF header."""
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    assert png in paths and pdf in paths
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert img[..., :3].std() > 0.01, f"{png} is blank"
    assert pdf.read_bytes()[:5] == b"%PDF-"


def assert_readable(fig):
    """No legend covers an axes (its data, ticks, labels or title), no tick label overlaps another, no label or
    title of one axes overlaps another axes, and the figure title overlaps no axes."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = {ax: ax.get_tightbbox(r, bbox_extra_artists=[]) for ax in fig.axes}  # legends of axes left out
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    for legend in legends:
        box = legend.get_window_extent(r)
        for ax, ax_box in boxes.items():
            assert not box.overlaps(ax_box), f"legend {legend.get_texts()[0].get_text()!r} covers {ax.get_title()!r}"
    for ax in fig.axes:
        for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            shown = [t.get_window_extent(r) for t in ticks if t.get_text() and t.get_visible()]
            assert not any(a.overlaps(b) for i, a in enumerate(shown) for b in shown[i + 1:]), ax.get_title()
        own = [t for t in (ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels())
               if t.get_text()]
        for other in fig.axes:
            if other is ax:
                continue
            area = other.get_window_extent(r)
            for text in own:
                assert not text.get_window_extent(r).overlaps(area), f"{text.get_text()!r} overlaps another axes"
    if fig._suptitle is not None:
        title = fig._suptitle.get_window_extent(r)
        assert not any(title.overlaps(b) for b in boxes.values()), "the figure title overlaps an axes"


def legend_labels(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


@pytest.fixture
def close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


# -- style --------------------------------------------------------------------------------------------------
def test_category_colors_fixed_per_name_not_per_order():
    a = style.category_colors(["Meditron", "AKGC417L", "Litt3200"], style.DEVICE_PALETTE)
    b = style.category_colors(["Litt3200", "Meditron", "AKGC417L", "AKGC417L"], style.DEVICE_PALETTE)
    assert a == b
    assert a["AKGC417L"] == style.DEVICE_PALETTE[0]  # sorted-name order
    classes = style.category_colors(["Both", "Normal", "<unknown>"], style.SITE_PALETTE)
    assert classes["Normal"] == style.CLASS_COLORS["Normal"] and classes["Both"] == style.CLASS_COLORS["Both"]
    assert classes["<unknown>"] == style.UNKNOWN_COLOR


def test_every_data_colour_stands_out_from_the_white_background():
    from ls.report.render import BASELINE_COLOR, VARIANT_PALETTE

    palettes = {
        "factor": [*style.FACTOR_COLORS.values(), *style.FACTOR_PALETTE], "class": list(style.CLASS_COLORS.values()),
        "device": style.DEVICE_PALETTE, "site": style.SITE_PALETTE, "unknown": [style.UNKNOWN_COLOR],
        "metric": list(performance.METRIC_COLORS.values()), "split": list(performance.SPLIT_COLORS.values()),
        "variant": [*VARIANT_PALETTE, BASELINE_COLOR],
    }  # fmt: skip
    low = {name: [c for c in colors if style.contrast_ratio(c) < style.MIN_CONTRAST] for name, colors in palettes.items()}
    assert not any(low.values()), low
    assert style.contrast_ratio("black") == pytest.approx(21.0) and style.contrast_ratio("#ffffff") == 1.0
    assert style.text_color_on("#08306b") == "white" and style.text_color_on("#f7fbff") == "black"


def test_factor_labels_and_colours_for_any_factor():
    assert [style.factor_label(k) for k in ("dev", "site", "rest", "body_position")] == [
        "Device", "Site", "Continuous", "Body position"]
    colors = style.factor_colors(["dev", "site", "sex", "age_group", "rest"])
    assert colors["dev"] == style.FACTOR_COLORS["dev"] and colors["rest"] == style.FACTOR_COLORS["rest"]
    assert len(set(colors.values())) == 5


def test_save_figure_writes_png_and_pdf_and_closes(tmp_path):
    import matplotlib.pyplot as plt

    with style.paper_style():
        fig = style.figure("column")
        fig.subplots().plot([0, 1], [1, 0])
        paths = style.save_figure(fig, tmp_path / "sub", "line")
    assert_figure_files(paths, tmp_path / "sub", "line")
    assert not plt.fignum_exists(fig.number)
    assert not list((tmp_path / "sub").glob(".*tmp"))  # atomic writes leave no temp files


# -- masks --------------------------------------------------------------------------------------------------
def test_mask_statistics_by_hand():
    s = masks.mask_statistics({"dev": DEV, "site": SITE, "rest": REST})
    assert s["dim"] == 6
    assert s["active"] == {"dev": 2, "site": 3, "rest": 1}
    assert s["dominant"] == {"dev": 2, "site": 3, "rest": 1}
    assert s["coverage"] == 1.0 and s["dead_dims"] == 0 and s["shared_dims"] == 0
    assert s["overlap"]["dev-site"] == pytest.approx((4 * 0.09 + 0.01 + 0.06) / 6)
    assert s["overlap_chance"]["dev-site"] == pytest.approx((2.2 / 6) * (2.7 / 6))
    # active sets {0,1} and {2,3,5} are disjoint; random sets of sizes 2 and 3 in 6 dims: 3/6 chance
    assert s["active_overlap"]["dev-site"] == 0.0
    assert s["active_overlap_chance"]["dev-site"] == pytest.approx(0.5)
    assert s["binariness"] == pytest.approx((16 * 0.8 + 0.2 + 0.6) / 18)


def test_mask_statistics_shared_and_dead_dims():
    w = np.array([[0.9, 0.9, 0.1, 0.2], [0.8, 0.1, 0.1, 0.3], [0.1, 0.1, 0.1, 0.4]])
    s = masks.mask_statistics(w)
    assert s["shared_dims"] == 1 and s["dead_dims"] == 2 and s["coverage"] == 0.5
    # dev {0,1}, site {0}: overlap coefficient 1/1, chance max(2,1)/4
    assert s["active_overlap"]["dev-site"] == 1.0
    assert s["active_overlap_chance"]["dev-site"] == 0.5
    assert s["active_overlap"]["dev-rest"] is None  # rest has no active dim


def test_random_thirds_chance_is_one_third():
    # three disjoint thirds of D = 12: the paper's "33 % expected by chance"
    w = np.kron(np.eye(3), np.ones(4)) * 0.98 + 0.01
    s = masks.mask_statistics(w)
    assert all(v == pytest.approx(1 / 3) for v in s["active_overlap_chance"].values())
    assert all(v == 0.0 for v in s["active_overlap"].values())


def test_masks_rejects_bad_input():
    with pytest.raises(ValueError, match="lacks factor"):
        masks.as_mask_matrix({"dev": DEV, "site": SITE}, names=("dev", "site", "rest"))
    with pytest.raises(ValueError, match="needs the factor names"):
        masks.as_mask_matrix(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="lengths differ"):
        masks.as_mask_matrix({"dev": DEV, "site": SITE[:4]})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        masks.as_mask_matrix(np.full((3, 4), 1.5))


def test_mask_analysis_writes_figures_and_json(tmp_path):
    torch = pytest.importorskip("torch")
    result = masks.mask_analysis({"dev": torch.tensor(DEV), "site": SITE, "rest": np.array(REST)}, tmp_path,
                                 prefix="m", temperature=0.2)
    for fig_name in ("m_heatmap", "m_partition", "m_overlap"):
        assert_figure_files(result["paths"], tmp_path, fig_name)
    saved = json.loads((tmp_path / "m_stats.json").read_text())
    assert saved["temperature"] == 0.2 and saved["active"] == {"dev": 2, "site": 3, "rest": 1}


# Four factors (a dataset declaring sex besides device and site): D = 8, each factor owns two dims.
FOUR = {"dev": [0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], "site": [0.1, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1],
        "sex": [0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.1, 0.1], "rest": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.2]}


def test_mask_statistics_for_any_number_of_factors():
    s = masks.mask_statistics(FOUR)
    assert s["factors"] == ["dev", "site", "sex", "rest"]
    assert s["active"] == {"dev": 2, "site": 2, "sex": 2, "rest": 1}
    assert sorted(s["overlap"]) == sorted(["dev-site", "dev-sex", "dev-rest", "site-sex", "site-rest", "sex-rest"])
    assert s["active_overlap"]["dev-sex"] == 0.0 and s["active_overlap_chance"]["dev-sex"] == pytest.approx(2 / 8)
    one = masks.mask_statistics({"rest": [0.9, 0.2]})  # a dataset without categorical factors
    assert one["overlap"] == {} and one["active"] == {"rest": 1}


def test_mask_figures_content_for_four_factors(close_figures):
    stats = masks.mask_statistics(FOUR)
    heat = masks.mask_heatmap_figure(FOUR, title="SoftFiLM-AST masks")
    main_ax = heat.axes[0]
    assert [t.get_text() for t in main_ax.get_yticklabels()] == ["Device", "Site", "Sex", "Continuous"]
    assert main_ax.images[0].get_array().shape == (4, 8) and main_ax.get_title() == "SoftFiLM-AST masks"
    assert legend_labels(heat) == ["Device", "Site", "Sex", "Continuous", "none active"]
    assert_readable(heat)

    part = masks.mask_partition_figure(stats, title="SoftFiLM-AST: coverage")
    ax = part.axes[0]
    assert len(ax.patches) == 8  # active + dominant per factor
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Device", "Site", "Sex", "Continuous"]
    assert ax.lines[0].get_ydata()[0] == pytest.approx(8 / 4)  # the even split D/K
    assert legend_labels(part) == ["Active (w > 0.5)", "Dominant (largest w)", "D/4 (even split)"]
    assert_readable(part)

    over = masks.mask_overlap_figure(stats, title="SoftFiLM-AST: pairwise mask overlap")
    assert len(over.axes) == 2 and all(len(ax.patches) == 6 for ax in over.axes)  # K(K-1)/2 pairs
    assert "Device–\nSex" in [t.get_text() for t in over.axes[0].get_xticklabels()]
    assert over._suptitle.get_text() == "SoftFiLM-AST: pairwise mask overlap"
    assert legend_labels(over) == ["Learned", "Chance"]
    assert_readable(over)


def test_mask_analysis_of_a_four_factor_model(tmp_path):
    result = masks.mask_analysis(FOUR, tmp_path, prefix="m4", model_name="SoftFiLM-AST")
    for name in ("m4_heatmap", "m4_partition", "m4_overlap"):
        assert_figure_files(result["paths"], tmp_path, name)
    assert json.loads((tmp_path / "m4_stats.json").read_text())["factors"] == ["dev", "site", "sex", "rest"]


# -- t-SNE --------------------------------------------------------------------------------------------------
def test_adapted_perplexity():
    assert tsne.adapted_perplexity(1000) == 30.0
    assert tsne.adapted_perplexity(10) == 3.0
    assert tsne.adapted_perplexity(3) == 1.0
    with pytest.raises(ValueError):
        tsne.adapted_perplexity(1)


def test_tsne_comparison_reports_measured_separation(tmp_path):
    rng = np.random.default_rng(0)
    n = 24
    devices = np.array(["AKGC417L", "Meditron"] * (n // 2))
    classes = np.array(["Normal"] * (n // 2) + ["Crackle"] * (n // 2))
    # "biased" clusters by device; "clean" is noise: the device silhouette must tell them apart
    biased = rng.normal(size=(n, 8)) * 0.05 + np.where(devices[:, None] == "AKGC417L", 1.0, -1.0) * np.eye(8)[0]
    biased += 0.5 * np.eye(8)[1]  # keep vectors away from the origin (cosine distance)
    clean = rng.normal(size=(n, 8))
    out = tsne.plot_tsne_comparison({"AST": biased, "SoftFiLM": clean},
                                    {"Class": classes, "Device": devices}, tmp_path, max_iter=250)
    assert_figure_files(out["paths"], tmp_path, "tsne_comparison")
    assert out["coords"]["AST"].shape == (n, 2)
    assert out["silhouette"]["AST"]["Device"] > 0.5
    assert abs(out["silhouette"]["SoftFiLM"]["Device"]) < 0.3
    report = json.loads((tmp_path / "tsne_comparison.json").read_text())
    assert report["perplexity"] == pytest.approx((n - 1) / 3)


def test_tsne_figure_content(close_figures):
    rng = np.random.default_rng(0)
    coords = {"AST": rng.normal(size=(12, 2)), "SoftFiLM-AST": rng.normal(size=(12, 2))}
    groups = {"Class": ["Normal", "Crackle"] * 6, "Device": ["Meditron"] * 6 + ["LittC2SE"] * 6,
              "Site": ["Al", "Ar", "Tc"] * 4}
    fig = tsne.tsne_figure(coords, groups, {"AST": {"Device": 0.5}})
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["AST: class", "AST: device (silh. +0.50)", "AST: site"]
    assert fig.axes[3].get_title() == "SoftFiLM-AST: class"
    assert [len(ax.collections) for ax in fig.axes] == [2, 2, 3, 2, 2, 3]  # one series per group value
    assert [ax.get_legend().get_title().get_text() for ax in fig.axes[3:]] == ["Class", "Device", "Site"]
    assert_readable(fig)


def test_tsne_rejects_mismatched_sizes(tmp_path):
    with pytest.raises(ValueError, match="same cycles"):
        tsne.plot_tsne_comparison({"AST": np.zeros((5, 3))}, {"Class": ["Normal"] * 4}, tmp_path)


# -- FiLM parameters ----------------------------------------------------------------------------------------
def test_summarise_film_info_means_over_dims():
    torch = pytest.importorskip("torch")
    gamma = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    summary = film.summarise_film_info({"gamma": {10: gamma}, "beta": {10: -gamma}, "embedding": gamma})
    np.testing.assert_allclose(summary["gamma"]["10"], [2.0, 1.0])
    np.testing.assert_allclose(summary["beta"]["10"], [-2.0, -1.0])
    with pytest.raises(ValueError, match="no FiLM parameters"):
        film.summarise_film_info({"embedding": gamma})


def test_film_labels():
    assert film.film_label("gamma_cls") == r"mean $\gamma$ (CLS)"
    assert film.identity_value("gamma_patch") == 1.0 and film.identity_value("beta") == 0.0


def test_film_figures_content(close_figures):
    rng = np.random.default_rng(2)
    n = 20
    summary = {"gamma": {"10": rng.normal(1.0, 0.1, n), "11": rng.normal(1.0, 0.1, n)},
               "beta": {"10": rng.normal(0.0, 0.1, n), "11": rng.normal(0.0, 0.1, n)}}
    devices = ["Meditron", "LittC2SE", "AKGC417L", "Litt3200"] * 5
    fig = film.film_by_group_figure(summary, devices, "Device", model_name="SoftFiLM-AST")
    assert len(fig.axes) == 4  # rows gamma, beta x columns layer 10, 11
    assert fig._suptitle.get_text() == "SoftFiLM-AST: FiLM parameters per device (layers 10, 11)"
    assert [ax.get_title() for ax in fig.axes[:2]] == ["Layer 10", "Layer 11"]
    assert fig.axes[0].get_ylabel() == r"mean $\gamma$" and fig.axes[2].get_ylabel() == r"mean $\beta$"
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == sorted(set(devices))
    assert legend_labels(fig) == ["mean", "median", r"identity ($\gamma$ = 1, $\beta$ = 0)"]
    # per panel: one mean marker per device, and the identity line at 1 (gamma) / 0 (beta)
    assert sum(1 for line in fig.axes[0].lines if line.get_marker() == "o") == 4
    assert fig.axes[0].lines[-1].get_ydata()[0] == 1.0 and fig.axes[2].lines[-1].get_ydata()[0] == 0.0
    assert_readable(fig)
    by_layer = film.film_by_layer_figure(summary, model_name="FiLM-AST")
    assert len(by_layer.axes) == 2 and by_layer._suptitle.get_text() == "FiLM-AST: FiLM parameters per layer"
    assert [t.get_text() for t in by_layer.axes[1].get_xticklabels()] == ["10", "11"]
    assert legend_labels(by_layer)[:2] == ["mean", "median"]
    assert_readable(by_layer)


def test_film_legend_shows_the_marks_as_drawn(close_figures):
    """The legend's mean dots are the drawn ones (white, rim in each group's colour), its median bar has the
    drawn bar's colour and width, its identity line the drawn line's style."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_hex
    from matplotlib.lines import Line2D

    def marker(line):
        return (to_hex(line.get_markerfacecolor()), to_hex(line.get_markeredgecolor()), line.get_markersize())

    rng = np.random.default_rng(3)
    summary = {"gamma": {"10": rng.normal(1.0, 0.1, 12)}}
    devices = ["Meditron", "LittC2SE", "AKGC417L"] * 4
    for fig in (film.film_by_group_figure(summary, devices, "Device"), film.film_by_layer_figure(summary)):
        ax, legend = fig.axes[0], fig.legends[0]
        in_legend = legend.findobj(Line2D)
        dots = [line for line in in_legend if line.get_marker() == "o"]
        drawn_dots = [line for line in ax.lines if line.get_marker() == "o"]
        assert sorted({marker(d) for d in dots}) == sorted({marker(d) for d in drawn_dots})
        assert len(dots) == len({marker(d) for d in drawn_dots})  # one dot per group colour
        bars = [c for c in ax.collections if isinstance(c, LineCollection)]
        median = next(line for line in in_legend if line.get_marker() in ("None", "", None)
                      and line.get_linestyle() == "-" and len(line.get_xdata()))
        assert {(to_hex(b.get_colors()[0]), float(b.get_linewidths()[0])) for b in bars} == {
            (to_hex(median.get_color()), median.get_linewidth())}
        identity = next(line for line in in_legend if line.get_linestyle() == "--")
        drawn = ax.lines[-1]
        assert (to_hex(identity.get_color()), identity.get_linewidth()) == (to_hex(drawn.get_color()),
                                                                           drawn.get_linewidth())
        assert_readable(fig)


def test_film_figures_for_tafilm_keys(tmp_path):
    rng = np.random.default_rng(1)
    n = 12
    batches = []
    for _ in range(2):
        info = {k: {"10": rng.normal(1.0 if k.startswith("gamma") else 0.0, 0.1, size=(n // 2, 4)),
                    "11": rng.normal(size=(n // 2, 4))} for k in ("gamma_cls", "beta_cls", "gamma_patch",
                                                                  "beta_patch")}
        batches.append(film.summarise_film_info(info))
    summary = film.concat_summaries(batches)
    assert summary["gamma_cls"]["10"].shape == (n,)
    devices = ["Meditron"] * 11 + ["Litt3200"]  # a group with a single cycle still plots
    paths = film.film_params_figures(summary, {"Device": devices, "Site": ["Tc", "Al"] * 6}, tmp_path)
    for name in ("film_params_by_layer", "film_params_by_device", "film_params_by_site"):
        assert_figure_files(paths, tmp_path, name)


# -- performance --------------------------------------------------------------------------------------------
def test_group_scores_regroups_engine_metrics_by_hand():
    from ls.engine.metrics import group_metrics

    true = [0, 0, 1, 3, 0, 2, 2]
    pred = [0, 1, 1, 1, 0, 2, 0]
    flat = group_metrics(true, pred, {"device": ["A", "A", "A", "A", "B", "B", "C"]}, n_classes=4)
    s = performance.group_scores(flat, "device")
    assert list(s) == ["A", "B", "C"]
    # A: normals 1/2 correct; abnormals: crackle hit, both->crackle miss => Se 1/2
    assert s["A"] == {"specificity": 0.5, "sensitivity": 0.5, "score": 0.5, "n": 4}
    assert s["B"] == {"specificity": 1.0, "sensitivity": 1.0, "score": 1.0, "n": 2}
    assert s["C"] == {"specificity": None, "sensitivity": 0.0, "score": None, "n": 1}
    with pytest.raises(ValueError, match="site"):
        performance.group_scores(flat, "site")


def test_confusion_matrix_content_and_readable_annotations(close_figures):
    from matplotlib.colors import to_hex

    cm = np.array([[50, 1, 0, 0], [0, 3, 0, 1], [2, 0, 40, 0], [0, 0, 0, 0]])
    names = ["Normal", "Crackle", "Wheeze", "Both"]
    fig = performance.confusion_matrix_figure(cm, names, title="AST, test (best epoch 3)")
    ax = fig.axes[0]
    assert len(fig.axes) == 2 and ax.get_title() == "AST, test (best epoch 3)"
    assert [t.get_text() for t in ax.get_xticklabels()] == names and ax.get_xlabel() == "Predicted class"
    cells = [t for t in ax.texts]
    assert len(cells) == 16 and cells[0].get_text() == "50\n98.0%"
    image = ax.images[0]
    for t in cells:
        j, i = (round(v) for v in t.get_position())
        cell = to_hex(image.cmap(image.norm(image.get_array()[i, j])))
        assert style.contrast_ratio(t.get_color(), cell) >= 4.5, (t.get_text(), cell)
    assert_readable(fig)


def test_training_curves_are_split_by_metric_and_mark_the_selected_epoch(close_figures):
    history = [{"epoch": e + 1, "train/loss": 1 / (e + 1), "val/loss": 1.2 / (e + 1), "test_epoch/loss": 1.3 / (e + 1),
                "train/icbhi_score": 0.1 * e, "val/icbhi_score": 0.1 * e, "val/specificity": 0.2,
                "val/sensitivity": 0.05 * e, "train/specificity": 0.3, "train/sensitivity": 0.1,
                "val/f1_crackle": 0.3, "val/binary_sensitivity": 0.4, "lr/backbone": 1e-4} for e in range(5)]
    fig = performance.training_curves_figure(history, model_name="SoftFiLM-AST", best_epoch=3)
    assert fig._suptitle.get_text() == "SoftFiLM-AST: training curves"
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Specificity", "Sensitivity", "ICBHI Score"]
    series = [[line for line in ax.lines if len(line.get_xdata()) == 5] for ax in fig.axes]
    assert [len(s) for s in series] == [3, 2, 2, 2]  # splits per panel; per-class and binary series left out
    for ax in fig.axes:  # the selected epoch in every panel
        marks = [line for line in ax.lines if list(line.get_xdata()) == [3, 3]]
        assert len(marks) == 1 and marks[0].get_linestyle() == "--"
    assert legend_labels(fig) == ["train", "validation", "test (monitoring only)", "selected epoch (3)"]
    assert_readable(fig)


def test_group_scores_figure_content(close_figures):
    scores = {"AKGC417L": {"specificity": 0.9, "sensitivity": 0.5, "score": 0.7, "n": 40},
              "Meditron": {"specificity": None, "sensitivity": 0.5, "score": None, "n": 3}}
    fig = performance.group_scores_figure(scores, "Device", title="AST: ICBHI metrics per device")
    ax = fig.axes[0]
    assert len(ax.patches) == 6 and ax.get_title() == "AST: ICBHI metrics per device"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["AKGC417L\n(n=40)", "Meditron\n(n=3)"]
    assert sum(t.get_text() == "n/a" for t in ax.texts) == 2
    assert legend_labels(fig) == ["Sp", "Se", "Score"]
    assert_readable(fig)


def test_performance_figures(tmp_path):
    cm = np.array([[5, 1, 0, 0], [0, 3, 0, 1], [2, 0, 4, 0], [0, 0, 0, 0]])
    paths = performance.plot_confusion_matrix(cm, ["Normal", "Crackle", "Wheeze", "Both"], tmp_path, "cm")
    assert_figure_files(paths, tmp_path, "cm")
    with pytest.raises(ValueError, match="class names"):
        performance.plot_confusion_matrix(cm, ["Normal", "Abnormal"], tmp_path, "cm2")
    # the trainer's history: one dict per epoch with "<split>/<metric>" keys
    history = [{"epoch": e + 1, "train/loss": 1 / (e + 1), "val/loss": 1.2 / (e + 1), "val/icbhi_score": 0.1 * e,
                "val/specificity": 0.2, "val/sensitivity": 0.05 * e, "val/f1_crackle": 0.3,
                "val/binary_sensitivity": 0.4} for e in range(4)]
    curves = performance.normalise_history(history)
    assert curves["val/icbhi_score"] == pytest.approx([0.0, 0.1, 0.2, 0.3]) and "epoch" not in curves
    panels = dict(performance._curve_groups(curves))
    assert panels == {"Loss": ["train/loss", "val/loss"], "Specificity": ["val/specificity"],
                      "Sensitivity": ["val/sensitivity"], "ICBHI Score": ["val/icbhi_score"]}
    assert_figure_files(performance.plot_training_curves(history, tmp_path, "curves", model_name="AST",
                                                         best_epoch=2), tmp_path, "curves")
    scores = {"Tc": {"specificity": 1.0, "sensitivity": 0.5, "score": 0.75, "n": 2},
              "Al": {"specificity": None, "sensitivity": 0.5, "score": None, "n": 2}}
    assert_figure_files(performance.plot_group_scores(scores, "Site", tmp_path, "sites"), tmp_path, "sites")
    with pytest.raises(ValueError, match="no per-epoch"):
        performance.plot_training_curves({"test/loss": [0.3]}, tmp_path, "none")


def test_history_with_missing_epochs_becomes_nan():
    curves = performance.normalise_history([{"a_loss": 1.0}, {"a_loss": 0.5, "b_loss": 0.7}])
    assert curves["a_loss"] == [1.0, 0.5] and math.isnan(curves["b_loss"][0])


# -- visualize CLI on tiny checkpoints ----------------------------------------------------------------------


def test_visualize_all_figures_from_tiny_checkpoints(tiny_checkpoints, tmp_path, capsys):  # noqa: F811
    from ls.inference import load_for_inference
    from ls.viz.cli import main

    soft, base = str(tiny_checkpoints["ast_film_soft"]), str(tiny_checkpoints["ast"])
    rc = main(["--all", "--mask-tau1", "--checkpoint", soft, "--baseline-ckpt", base, "--out", str(tmp_path),
               "--num-batches", "2", "--compute-device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    for name in ("mask_shared_heatmap", "mask_shared_partition", "mask_shared_overlap", "mask_shared_tau1_heatmap",
                 "tsne_comparison", "film_params_by_layer", "film_params_by_device", "film_params_by_site",
                 "film_params_by_class", "softfilm_ast_confusion", "softfilm_ast_curves", "ast_confusion",
                 "ast_score_by_device", "ast_score_by_site", "ast_curves"):
        assert_figure_files([tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"], tmp_path, name)
    # masks are analysed at the temperature the model runs at (0.5 here), fix 11.1-8: w_tau = sigmoid(a / tau)
    model = load_for_inference(soft, device="cpu").model
    model.set_mask_temperature(1.0)
    w1 = {k: v.detach().double().numpy() for k, v in model.masks()["shared"].items()}
    at_tau = json.loads((tmp_path / "mask_shared_stats.json").read_text())
    at_one = json.loads((tmp_path / "mask_shared_tau1_stats.json").read_text())
    assert at_tau["temperature"] == 0.5 and at_one["temperature"] == 1.0
    for k, w in w1.items():
        logits = np.log(w) - np.log1p(-w)
        assert at_one["mean_weight"][k] == pytest.approx(w.mean(), rel=1e-5)
        assert at_tau["mean_weight"][k] == pytest.approx((1 / (1 + np.exp(-logits / 0.5))).mean(), rel=1e-5)
    report = json.loads((tmp_path / "tsne_comparison.json").read_text())
    assert report["n_points"] == 8 and set(report["silhouette_cosine"]) == {"AST", "SoftFiLM-AST"}


@pytest.mark.parametrize("args, message", [
    (["--mask-analysis", "--checkpoint", "{ast}"], "needs a model with soft masks"),
    (["--film-params", "--checkpoint", "{ast}"], "has no gamma/beta"),
    (["--tsne", "--checkpoint", "{soft}"], "needs --baseline-ckpt"),
    (["--mask-analysis", "--checkpoint", "{missing}"], "checkpoint not found"),
])
def test_visualize_errors_name_the_problem(args, message, tiny_checkpoints, tmp_path, capsys):  # noqa: F811
    from ls.viz.cli import main

    paths = {"ast": tiny_checkpoints["ast"], "soft": tiny_checkpoints["ast_film_soft"], "missing": tmp_path / "x.pt"}
    argv = [a.format(**paths) for a in args] + ["--out", str(tmp_path / "figs")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "figs").exists()  # fails before any work


def test_visualize_requires_a_checkpoint(capsys):
    from ls.viz.cli import main

    with pytest.raises(SystemExit):
        main(["--all"])
    assert "--checkpoint" in capsys.readouterr().err


def test_visualize_takes_its_traceback_option_from_the_shared_helper(monkeypatch):
    """One definition of --traceback for every command (ls.utils.cli), not a copy that can drift."""
    import ls.viz.cli as viz_cli
    from ls.utils import cli

    calls = []

    def recording(parser):
        calls.append(parser)
        cli.add_common_options(parser)

    monkeypatch.setattr(viz_cli, "add_common_options", recording)
    parser = viz_cli.build_parser()
    assert calls == [parser] and parser.parse_args(["--traceback"]).traceback is True


def test_figures_are_attached_to_the_mlflow_run_given_with_run_id(tmp_path, mlflow_db, monkeypatch):
    """``--run-id``: the figures go to that run under figures/, in the store a run's settings resolve."""
    from mlflow.tracking import MlflowClient

    from ls.viz.cli import attach_to_run

    uri = f"sqlite:///{mlflow_db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the store's artifacts under ./mlruns of this test
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("viz", artifact_location=str(tmp_path / "artifacts")))
    figure = tmp_path / "m_confusion.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")
    attach_to_run([figure], run.info.run_id, cfg=None)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == ["figures/m_confusion.png"]

    # a server with credentials in the run's config: the client is made with them (they leave the URI)
    from types import SimpleNamespace

    from ls.engine.config import MlflowConfig
    from ls.runs import mirror

    made = []

    class Client:
        def log_artifact(self, run_id, path, artifact_path):
            made[-1]["uploads"].append((run_id, path.rsplit("/", 1)[-1], artifact_path))

    monkeypatch.setattr(mirror, "client_for", lambda settings: made.append({"settings": settings, "uploads": []})
                        or Client())
    cfg = SimpleNamespace(mlflow=MlflowConfig(tracking_uri="http://bob:pw-123@mlflow.example:5000"))
    attach_to_run([figure], "r1", cfg)
    [call] = made
    assert (call["settings"].tracking_uri, call["settings"].username, call["settings"].password) == (
        "http://mlflow.example:5000", "bob", "pw-123")
    assert call["uploads"] == [("r1", "m_confusion.png", "figures")]
