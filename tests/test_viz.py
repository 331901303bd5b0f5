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


# -- style --------------------------------------------------------------------------------------------------
def test_category_colors_fixed_per_name_not_per_order():
    a = style.category_colors(["Meditron", "AKGC417L", "Litt3200"], style.DEVICE_PALETTE)
    b = style.category_colors(["Litt3200", "Meditron", "AKGC417L", "AKGC417L"], style.DEVICE_PALETTE)
    assert a == b
    assert a["AKGC417L"] == style.DEVICE_PALETTE[0]  # sorted-name order
    classes = style.category_colors(["Both", "Normal", "<unknown>"], style.SITE_PALETTE)
    assert classes["Normal"] == "#3498db" and classes["Both"] == "#8e44ad"
    assert classes["<unknown>"] == style.UNKNOWN_COLOR


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
        masks.as_mask_matrix({"dev": DEV, "site": SITE})
    with pytest.raises(ValueError, match=r"\[3, D\]"):
        masks.as_mask_matrix(np.zeros((2, 5)))
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
    assert panels["Loss"] == ["train/loss", "val/loss"]
    assert panels["ICBHI"] == ["val/icbhi_score", "val/sensitivity", "val/specificity"]
    assert_figure_files(performance.plot_training_curves(history, tmp_path, "curves"), tmp_path, "curves")
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
