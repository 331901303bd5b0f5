"""ls.report: statistics (paired patient-level bootstrap, tests over seeds), loading, tables, figure, CLI."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ls.engine.metrics import binary_icbhi_scores, group_metrics, icbhi_scores
from ls.report.__main__ import main
from ls.report.build import Settings, build_report
from ls.report.render import (
    comparison_frame,
    composition_table,
    fmt_pct,
    latex_escape,
    latex_report,
    latex_table,
    markdown_report,
    markdown_table,
    scores_figure,
    seed_difference_table,
    summary_frame,
    summary_table,
)
from ls.report.runs import Run, align_runs, load_mlflow_runs, load_runs, parse_run
from ls.report.stats import (
    ReportError,
    TestSet,
    cluster_draws,
    compare_to_baseline,
    draws_to_weights,
    holm,
    metric_replicates,
    pair_by_key,
    paired_t_test,
    point_metrics,
    run_metrics,
    summarise,
    wilcoxon_exact,
)

CLASSES = ["normal", "crackle", "wheeze", "both"]
DEVICES = ["AKGC417L", "Litt3200", "LittC2SE", "Meditron"]
SITES = ["Al", "Ar", "Ll", "Lr", "Pl", "Pr", "Tc"]


# =================================================================================================
# Synthetic test sets and predictions with patient clusters
# =================================================================================================
def make_cycles(n_patients: int = 40, seed: int = 0, heavy: int | None = None) -> pd.DataFrame:
    """Test cycles: patients with 10-60 cycles (``heavy`` cycles for patient 0 if given), a per-patient share
    of abnormal cycles, one device per patient and a site per cycle."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        n = heavy if (heavy is not None and p == 0) else int(rng.integers(10, 60))
        share = rng.beta(2, 2)
        device = DEVICES[p % len(DEVICES)]
        for c in range(n):
            abnormal = rng.random() < share
            rows.append({
                "filename": f"{100 + p}_1b1_{device}", "cycle_index": c, "patient": str(100 + p),
                "true": CLASSES[int(rng.integers(1, 4))] if abnormal else "normal",
                "device": device, "site": SITES[int(rng.integers(0, len(SITES)))],
            })  # fmt: skip
    return pd.DataFrame(rows)


def predict(cycles: pd.DataFrame, skill: float, seed: int, patient_sd: float = 1.0,
            patient_effects: np.ndarray | None = None) -> pd.DataFrame:
    """Predictions correct with probability sigmoid(skill + patient effect); wrong ones pick another class.
    Patient effects (fixed per dataset when given) make errors cluster within patients."""
    rng = np.random.default_rng(seed)
    patients, codes = np.unique(cycles["patient"], return_inverse=True)
    effects = patient_effects if patient_effects is not None else rng.normal(0, patient_sd, patients.size)
    p_correct = 1.0 / (1.0 + np.exp(-(skill + effects[codes])))
    correct = rng.random(len(cycles)) < p_correct
    true = cycles["true"].map(CLASSES.index).to_numpy()
    wrong = (true + rng.integers(1, 4, len(cycles))) % 4
    out = cycles.copy()
    out["pred"] = [CLASSES[k] for k in np.where(correct, true, wrong)]
    return out


def make_run(variant: str, seed: int, preds: pd.DataFrame, selection: str = "strict",
             display_name: str | None = None, fold: int | None = None) -> Run:
    meta = {"variant": variant, "display_name": display_name or variant.upper(), "seed": seed,
            "selection": selection, "class_names": CLASSES, "factors": ["device", "site"], "test": {}}
    if fold is not None:
        meta["fold"] = fold
    return parse_run(meta, preds.astype(str), f"{variant}/seed{seed}")


def study(skills: dict[str, float], seeds=(1, 2, 3, 4, 5), n_patients: int = 40, data_seed: int = 0,
          shared_effects: bool = True) -> list[Run]:
    """Runs of several variants over seeds on one test set. With ``shared_effects`` every model finds the
    same patients hard (a fixed patient effect), as real models do."""
    cycles = make_cycles(n_patients, data_seed)
    effects = np.random.default_rng(data_seed + 99).normal(0, 1.0, cycles["patient"].nunique())
    runs = []
    for v, (variant, skill) in enumerate(skills.items()):
        for s in seeds:
            preds = predict(cycles, skill, seed=1000 * v + s + 17 * data_seed,
                            patient_effects=effects if shared_effects else None)
            runs.append(make_run(variant, s, preds))
    return runs


def aligned_study(skills: dict[str, float], **kwargs):
    aligned = align_runs(study(skills, **kwargs))
    return aligned.test_set, aligned.preds, aligned.table


# =================================================================================================
# Statistics
# =================================================================================================
def test_point_metrics_are_those_of_ls_engine_metrics():
    ts, preds, _ = aligned_study({"ast": 0.5}, seeds=(1,))
    got = point_metrics(ts, preds[0])
    want = icbhi_scores(ts.y_true, preds[0], 4) | binary_icbhi_scores(ts.y_true, preds[0])
    for key, value in want.items():
        assert got[key] == value
    groups = group_metrics(ts.y_true, preds[0], dict(ts.groups), 4)
    assert got["device/Meditron/icbhi_score"] == groups["device/Meditron/icbhi_score"]
    assert got["site/Tc/icbhi_score"] == groups["site/Tc/icbhi_score"]


def test_bootstrap_replicate_is_the_metric_of_whole_resampled_patients():
    """A replicate's value equals ls.engine.metrics on the cycles of the drawn patients, each patient taken
    whole as many times as drawn: the bootstrap resamples patients as clusters, not cycles."""
    ts, preds, _ = aligned_study({"ast": 0.5, "x": 1.0}, seeds=(1, 2))
    metrics = ["specificity", "icbhi_score", "binary_icbhi_score", "device/Meditron/icbhi_score"]
    draws = cluster_draws(ts.n_clusters, 4, np.random.default_rng(3))
    boot = metric_replicates(ts, preds, metrics, draws_to_weights(draws, ts.n_clusters))
    for b in range(4):
        cycles = np.concatenate([np.flatnonzero(ts.clusters == p) for p in draws[b]])
        # whole patients: every drawn patient contributes all its cycles, as many times as it was drawn
        counts = np.bincount(ts.clusters[cycles], minlength=ts.n_clusters)
        assert np.array_equal(counts, np.bincount(ts.clusters, minlength=ts.n_clusters)
                              * np.bincount(draws[b], minlength=ts.n_clusters))
        for r in range(preds.shape[0]):
            t, p = ts.y_true[cycles], preds[r, cycles]
            dev = ts.groups["device"][cycles]
            ref = icbhi_scores(t, p, 4) | binary_icbhi_scores(t, p) | group_metrics(t, p, {"device": dev}, 4)
            for m, key in enumerate(metrics):
                if key in ref:
                    assert boot[b, r, m] == pytest.approx(ref[key], abs=1e-12)
                else:  # Meditron patients not drawn: undefined, not 0
                    assert np.isnan(boot[b, r, m])


def test_better_variant_ci_excludes_zero_and_t_test_is_small():
    ts, preds, table = aligned_study({"ast": 0.3, "better": 1.0})
    comp = compare_to_baseline(ts, preds, table, ["icbhi_score", "sensitivity"], "ast", n_boot=400, seed=1)
    row = comp[comp["metric"] == "icbhi_score"].iloc[0]
    assert row["n_pairs"] == 5 and row["unpaired"] == ""
    assert row["mean_diff"] > 0.05
    assert 0.0 < row["ci_low"] < row["mean_diff"] < row["ci_high"]
    assert row["t_p"] < 0.001
    assert row["wilcoxon_p"] == pytest.approx(0.0625)  # 5 of 5 positive: the smallest exact p with n = 5
    assert row["n_boot_dropped"] == 0
    # the mean difference is the mean over seeds of the per-seed differences (ls.engine.metrics values)
    point = run_metrics(ts, preds)["icbhi_score"].to_numpy()
    per_seed = point[table["variant"] == "better"] - point[table["variant"] == "ast"]
    assert row["diffs"] == pytest.approx(tuple(per_seed))
    assert row["mean_diff"] == pytest.approx(per_seed.mean())


def disagreeing_seed_runs() -> list:
    """AST and a variant over three seeds on the same cycles; the variant's third seed collapses."""
    cycles = make_cycles(40, 3)
    effects = np.random.default_rng(5).normal(0, 1.0, 40)
    runs = []
    for s, skill in ((1, 1.6), (2, 1.5), (3, -1.0)):
        runs += [make_run("ast", s, predict(cycles, 0.5, s, patient_effects=effects)),
                 make_run("var", s, predict(cycles, skill, 10 + s, patient_effects=effects))]
    return runs


def test_a_note_says_when_seeds_move_the_difference_more_than_test_patients_do():
    """Seeds that disagree (one far worse) widen nothing in the patient bootstrap: the report says that the
    interval alone understates the uncertainty. Consistent seeds get no such note."""
    runs = disagreeing_seed_runs()
    notes = build_report(runs, Settings(n_boot=300)).sections[0].notes
    assert any("the per-seed differences vary more" in n and "understates" in n for n in notes), notes
    steady = build_report(study({"ast": 0.3, "var": 1.0}, seeds=(1, 2, 3)), Settings(n_boot=300))
    assert not any("vary more" in n for n in steady.sections[0].notes)


def test_latex_holds_the_tables_and_notes_of_the_markdown_report():
    """report.tex: every table of report.md (per-seed differences and test-set composition included), and the
    section's notes inside the comparison table, such as the one that the interval understates the
    uncertainty."""
    runs = disagreeing_seed_runs()
    report = build_report(runs, Settings(n_boot=300), notes=["skipped run x\nof another test set"])
    section = report.sections[0]
    tex = latex_report(report)
    tables = re.split(r"\\begin\{table\*?\}", tex)[1:]
    md_tables = [b for b in markdown_report(report).split("\n### ")[1:] if not b.startswith("Notes")]
    # protocol, metrics, Score per device and site, differences, per seed, composition
    assert len(tables) == len(md_tables) == 7
    comparison = next(t for t in tables if r"\caption{Paired differences" in t)
    understates = next(n for n in section.notes if "understates" in n)
    assert latex_escape(understates) in comparison
    assert all(latex_escape(n) in tex for n in section.notes)
    per_seed = next(t for t in tables if r"\caption{Per-seed differences" in t)
    header, rows = seed_difference_table(section)
    assert " & ".join(header) + r" \\" in per_seed and " & ".join(map(latex_escape, rows[0])) + r" \\" in per_seed
    assert "$-$" in " & ".join(map(latex_escape, rows[0]))  # the third seed's difference is negative
    assert rows[0][2:] == [fmt_pct(d, sign=True) for d in section.comparison.iloc[0]["diffs"]]
    composition = next(t for t in tables if r"\caption{Test set composition" in t)
    assert r"\begin{tabular}{llrrrr}" in composition
    assert all(" & ".join(row) + r" \\" in composition for row in composition_table(section)[1])
    assert "% Loading note: skipped run x of another test set" in tex  # one comment line


def test_bootstrap_is_paired_same_patients_for_both_models():
    """The variant equals the baseline except on 15 cycles per seed that it gets right and the baseline gets
    wrong. Resampled together, every replicate's difference is >= 0 and the interval is narrow; resampling
    the two models independently would give an interval of several points around the difference."""
    cycles = make_cycles(40, 2)
    runs = []
    for s in (1, 2, 3):
        base = predict(cycles, 0.3, seed=s)
        better = base.copy()
        wrong = np.flatnonzero((base["pred"] != base["true"]).to_numpy())
        fixed = np.random.default_rng(s).choice(wrong, 15, replace=False)
        better.loc[fixed, "pred"] = better.loc[fixed, "true"]
        runs += [make_run("ast", s, base), make_run("var", s, better)]
    aligned = align_runs(runs)
    row = compare_to_baseline(aligned.test_set, aligned.preds, aligned.table, ["icbhi_score"], "ast",
                              n_boot=500).iloc[0]
    assert 0.0 < row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    assert row["ci_high"] - row["ci_low"] < 0.02


def test_no_signal_intervals_include_zero_at_about_the_nominal_rate():
    """Two variants with the same error distribution: over 24 independent test sets the 90% interval of
    the difference includes 0 in most of them (a broken interval, e.g. far too narrow, would not)."""
    covered = 0
    for k in range(24):
        ts, preds, table = aligned_study({"ast": 0.5, "same": 0.5}, seeds=(1, 2, 3), n_patients=30, data_seed=k,
                                         shared_effects=False)
        row = compare_to_baseline(ts, preds, table, ["icbhi_score"], "ast", n_boot=300, confidence=0.9,
                                  seed=k).iloc[0]
        covered += row["ci_low"] <= 0.0 <= row["ci_high"]
    # percentile intervals from ~30 clusters cover a little below nominal (~86% measured over 200 such sets);
    # 17 of 24 tolerates that (P ~ 0.98) while an interval that ignores most of the variation fails
    assert covered >= 17


def test_patient_clusters_widen_the_interval_compared_with_cycle_resampling():
    """One patient holds half the cycles and the variant is much better on exactly that patient: resampling
    patients (the patient is in or out as a whole) gives a much wider interval than resampling cycles."""
    cycles = make_cycles(n_patients=20, seed=5, heavy=600)
    heavy = cycles["patient"] == "100"
    runs = []
    for s in (1, 2, 3):
        base = predict(cycles, 0.5, seed=s, patient_sd=0.0)
        better = predict(cycles, 0.5, seed=100 + s, patient_sd=0.0)
        better.loc[heavy, "pred"] = better.loc[heavy, "true"]  # perfect on the heavy patient only
        runs += [make_run("ast", s, base), make_run("var", s, better)]
    aligned = align_runs(runs)
    ts = aligned.test_set
    kw = {"metrics": ["icbhi_score"], "baseline": "ast", "n_boot": 500, "seed": 0}
    by_patient = compare_to_baseline(ts, aligned.preds, aligned.table, **kw).iloc[0]
    by_cycle = compare_to_baseline(ts.with_clusters(np.arange(ts.n_cycles)), aligned.preds, aligned.table,
                                   **kw).iloc[0]
    assert by_patient["mean_diff"] == pytest.approx(by_cycle["mean_diff"])
    width_patient = by_patient["ci_high"] - by_patient["ci_low"]
    width_cycle = by_cycle["ci_high"] - by_cycle["ci_low"]
    assert width_patient > 2.0 * width_cycle


def test_bootstrap_is_seeded_and_reports_dropped_replicates():
    ts, preds, table = aligned_study({"ast": 0.5, "x": 0.8}, seeds=(1, 2), n_patients=12)
    # a device of few patients: some replicates draw none of its normal or abnormal cycles
    key = "device/Meditron/icbhi_score"
    a = compare_to_baseline(ts, preds, table, [key, "icbhi_score"], "ast", n_boot=300, seed=7)
    b = compare_to_baseline(ts, preds, table, [key, "icbhi_score"], "ast", n_boot=300, seed=7)
    c = compare_to_baseline(ts, preds, table, [key, "icbhi_score"], "ast", n_boot=300, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert (a["ci_low"].iloc[1], a["ci_high"].iloc[1]) != (c["ci_low"].iloc[1], c["ci_high"].iloc[1])
    assert a["n_boot_dropped"].iloc[1] == 0
    n_meditron = len(set(ts.clusters[ts.groups["device"] == "Meditron"]))
    assert n_meditron == 3
    # P(no Meditron patient among 12 draws) = (9/12)^12 ~ 3 %: some of 300 replicates must be dropped
    assert 0 < a["n_boot_dropped"].iloc[0] < 100
    assert np.isfinite(a["ci_low"].iloc[0])


def test_pairing_by_seed_leaves_out_and_reports_unpaired_seeds():
    cycles = make_cycles(20, 1)
    runs = [make_run("ast", s, predict(cycles, 0.5, s)) for s in (1, 2, 3, 5)]
    runs += [make_run("var", s, predict(cycles, 0.9, 10 + s)) for s in (1, 2, 3)]
    runs.append(make_run("var", 4, predict(cycles, -5.0, 99)))  # unpaired and terrible: must not count
    aligned = align_runs(runs)
    point = run_metrics(aligned.test_set, aligned.preds)["icbhi_score"].to_numpy()
    row = compare_to_baseline(aligned.test_set, aligned.preds, aligned.table, ["icbhi_score"], "ast",
                              n_boot=100).iloc[0]
    assert row["n_pairs"] == 3
    assert row["seeds"] == "seed 1, seed 2, seed 3"
    assert row["unpaired"] == "var only: seed 4; ast only: seed 5"
    by_run = {(v, s): point[i] for i, (v, s) in enumerate(zip(aligned.table["variant"], aligned.table["seed"]))}
    expected = np.mean([by_run[("var", s)] - by_run[("ast", s)] for s in (1, 2, 3)])
    assert row["mean_diff"] == pytest.approx(expected)
    report = build_report(runs, Settings(n_boot=100))
    assert any("var only: seed 4; ast only: seed 5" in n for n in report.sections[0].notes)
    assert "var only: seed 4" in markdown_report(report)
    with pytest.raises(ReportError, match="same seed"):
        pair_by_key([(1, None), (1, None)], [(1, None)])
    folds = pair_by_key([(1, 0), (1, 1), (2, 0)], [(1, 0), (1, 1), (2, 1)])  # k-fold runs: seed and fold
    assert folds.paired == ((1, 0), (1, 1)) and folds.variant_only == ((2, 0),) and folds.baseline_only == ((2, 1),)


def test_paired_tests_name_themselves_and_are_not_computed_when_undefined():
    t = paired_t_test([0.6, 0.62, 0.65], [0.58, 0.61, 0.6])
    assert t.name == "paired t-test (two-sided)" and 0 < t.p < 1
    assert np.isnan(paired_t_test([0.6], [0.5]).p) and "1 pair" in paired_t_test([0.6], [0.5]).note
    zero = paired_t_test([0.6, 0.7], [0.6, 0.7])
    assert np.isnan(zero.p) and "all differences are zero" in zero.note
    w = wilcoxon_exact(np.array([0.01, -0.02, 0.03, 0.04, 0.05]))
    assert w.name.startswith("Wilcoxon signed-rank (exact")
    assert w.p == pytest.approx(0.1875)  # W- = 2; sign patterns with W- <= 2: {}, {1}, {2}; p = 2 * 3 / 32
    assert np.isnan(wilcoxon_exact(np.zeros(4)).p) and "not computed" in wilcoxon_exact(np.zeros(4)).note
    tied = wilcoxon_exact(np.array([0.01, -0.02, 0.02, 0.04, 0.05]))
    assert tied.p == pytest.approx(0.25) and "ties" in tied.note  # enumerated with mid-ranks
    assert holm([0.01, 0.04, np.nan, 0.03]) == pytest.approx([0.03, 0.06, np.nan, 0.06], nan_ok=True)


def test_summary_mean_sd_n_over_seeds():
    values = pd.DataFrame({"variant": ["a", "a", "a", "b"], "icbhi_score": [0.6, 0.62, np.nan, 0.7]})
    s = summarise(values).set_index("variant")
    assert s.loc["a", "mean"] == pytest.approx(0.61)
    assert s.loc["a", "std"] == pytest.approx(np.std([0.6, 0.62], ddof=1))
    assert s.loc["a", "n"] == 2  # the undefined value is not a run with the metric
    assert s.loc["b", "n"] == 1 and np.isnan(s.loc["b", "std"])


def test_full_size_bootstrap_runs_in_seconds():
    """2,000 replicates, ~2,700 cycles from 49 patients, 5 variants x 5 seeds, every whole-set metric."""
    import time

    cycles = make_cycles(49, 0)
    cycles = pd.concat([cycles] * 2, ignore_index=True).assign(cycle_index=lambda f: np.arange(len(f)))
    ts = TestSet(cycles["true"].map(CLASSES.index).to_numpy(), pd.factorize(cycles["patient"])[0],
                 tuple(pd.unique(cycles["patient"])), {"device": cycles["device"].to_numpy()}, 4)
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 4, size=(25, ts.n_cycles))
    table = pd.DataFrame({"variant": np.repeat([f"v{i}" for i in range(5)], 5), "seed": np.tile(range(5), 5)})
    start = time.perf_counter()
    comp = compare_to_baseline(ts, preds, table, ["icbhi_score", "specificity", "sensitivity",
                               "binary_icbhi_score"], "v0", n_boot=2000)
    assert time.perf_counter() - start < 10.0
    assert len(comp) == 16 and ts.n_cycles > 2500


# =================================================================================================
# Tables
# =================================================================================================
def _report(n_boot: int = 200, **study_kwargs):
    return build_report(study({"ast": 0.4, "ast_film_soft": 0.9}, **study_kwargs), Settings(n_boot=n_boot))


def test_summary_table_shows_mean_sd_n_in_percent():
    runs = study({"ast": 0.4, "ast_film_soft": 0.9}, seeds=(1, 2, 3))
    report = build_report(runs, Settings(n_boot=100))
    section = report.sections[0]
    ts = align_runs(runs).test_set
    scores = [point_metrics(ts, align_runs([r]).preds[0])["icbhi_score"] for r in runs if r.variant == "ast"]
    want = f"{100 * np.mean(scores):.2f} ± {100 * np.std(scores, ddof=1):.2f} (n=3)"
    header, rows = summary_table(section)
    assert header == ["Variant", "Sp", "Se", "Score", "2-class Sp", "2-class Se", "2-class Score"]
    assert rows[0][0] == "AST" and rows[0][3] == want  # baseline first
    md = markdown_report(report)
    assert want in md and "| Variant | Sp | Se | Score |" in md
    assert "### ICBHI Score per device" in md and "| Variant | AKGC417L | Litt3200 | LittC2SE | Meditron |" in md
    # CSV: numbers (percent) with mean, std and n in separate columns
    csv = summary_frame(report)
    row = csv[(csv["variant"] == "ast") & (csv["metric"] == "icbhi_score")].iloc[0]
    assert row["mean"] == pytest.approx(100 * np.mean(scores)) and row["n"] == 3
    assert row["std"] == pytest.approx(100 * np.std(scores, ddof=1)) and row["unit"] == "%"


def test_comparison_table_in_markdown_latex_and_csv():
    report = _report()
    section = report.sections[0]
    comp = section.comparison.iloc[0]
    md = markdown_report(report)
    assert "| Variant | Metric | n pairs | Mean diff (pp) | 95% CI low | 95% CI high | t-test p | Wilcoxon p |" in md
    assert f"| {100 * comp['mean_diff']:+.2f} | {100 * comp['ci_low']:+.2f} | {100 * comp['ci_high']:+.2f} |" in md
    assert "percentile" in md and "paired t-test" in md and "Wilcoxon signed-rank" in md
    tex = latex_report(report)
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"$\pm$" in tex and "±" not in tex.split("% Methods")[0]
    assert f"{100 * comp['mean_diff']:+.2f}" in tex
    csv = comparison_frame(report)
    assert csv.loc[0, "mean_diff"] == pytest.approx(100 * comp["mean_diff"])
    assert csv.loc[0, "ci_low"] == pytest.approx(100 * comp["ci_low"])
    assert csv.loc[0, "t_p"] == pytest.approx(comp["t_p"]) and csv.loc[0, "unit"] == "pp"
    assert csv.loc[0, "per_seed_diff"].count(";") == 4


def test_latex_escapes_special_characters():
    assert latex_escape("ast_film 100% a&b #1 $x$ {y} ~^\\") == (
        r"ast\_film 100\% a\&b \#1 \$x\$ \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}")
    table = (["Variant", "Score"], [["my_variant 5%", "61.00 ± 1.00 (n=3)"]])
    tex = latex_table(table, "Caption with 95% and ast_film", "tab:x")
    assert r"my\_variant 5\%" in tex and r"61.00 $\pm$ 1.00 (n=3)" in tex
    assert r"\caption{Caption with 95\% and ast\_film}" in tex
    assert "my_variant" not in tex
    assert markdown_table((["a|b"], [["x|y"]])).splitlines()[0] == r"| a\|b |"


# =================================================================================================
# Loading: folder tree and MLflow give the same report
# =================================================================================================
def _write_run_folder(folder: Path, run: Run) -> None:
    folder.mkdir(parents=True)
    meta = {"variant": run.variant, "display_name": run.display_name, "seed": run.seed,
            "selection": run.selection, "class_names": list(run.class_names), "factors": list(run.factors),
            "test": dict(run.test), "run_id": f"id-{run.variant}-{run.seed}"}
    (folder / "run.json").write_text(json.dumps(meta))
    run.predictions.to_csv(folder / "test_predictions.csv", index=False)


def _with_logged_metrics(runs: list[Run]) -> list[Run]:
    """The runs with some test metrics 'logged' as training would (values of their own predictions)."""
    out = []
    for run in runs:
        single = align_runs([run])
        m = point_metrics(single.test_set, single.preds[0])
        out.append(replace(run, test={k: m[k] for k in ("icbhi_score", "specificity", "device/Meditron/icbhi_score")}))
    return out


@pytest.fixture(scope="module")
def small_study() -> list[Run]:
    return _with_logged_metrics(study({"ast": 0.4, "ast_film_soft": 0.9}, seeds=(1, 2, 3), n_patients=16))


def test_folder_tree_and_mlflow_store_give_the_same_report(tmp_path, small_study, mlflow_db):
    from mlflow.tracking import MlflowClient

    root = tmp_path / "study"
    for run in small_study:
        _write_run_folder(root / run.variant / f"seed_{run.seed}", run)
    (root / "notes").mkdir()  # unrelated folders are ignored
    from_folder, notes = load_runs(root)
    assert len(from_folder) == 6 and notes == []

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}")  # tmp_path / mlflow.db, tables made once
    exp = client.create_experiment("icbhi", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="sweep")
    for run in small_study:
        child = client.create_run(exp, run_name=f"{run.variant}_{run.seed}", tags={
            "mlflow.parentRunId": parent.info.run_id, "variant": run.variant, "seed": str(run.seed),
            "selection": run.selection, "display_name": run.display_name})  # fmt: skip
        for key, value in run.test.items():
            client.log_metric(child.info.run_id, f"test/{key}", value)
        folder = tmp_path / "upload" / child.info.run_id
        _write_run_folder(folder, run)
        client.log_artifact(child.info.run_id, str(folder / "run.json"))
        client.log_artifact(child.info.run_id, str(folder / "test_predictions.csv"))
        client.set_terminated(child.info.run_id)
    other = client.create_run(exp, run_name="not a child")  # outside the parent: left out with --parent
    client.set_tag(other.info.run_id, "variant", "ast")

    from_mlflow, notes = load_mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "icbhi")
    assert len(from_mlflow) == 6
    assert any("sweep" in n and "skipped, no tag(s) variant, seed, selection" in n for n in notes)
    assert any("not a child" in n and "skipped" in n for n in notes)
    children, notes = load_mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "icbhi", parent.info.run_id)
    assert len(children) == 6 and notes == []

    settings = Settings(n_boot=200, metrics=("icbhi_score", "sensitivity"))
    a, b = build_report(from_folder, settings), build_report(children, settings)
    for x, y in ((summary_frame(a), summary_frame(b)), (comparison_frame(a), comparison_frame(b))):
        pd.testing.assert_frame_equal(x, y)
    assert not any("logged test metrics differ" in n for n in a.sections[0].notes + b.sections[0].notes)
    wrong = [replace(from_folder[0], test={**from_folder[0].test, "icbhi_score": 0.99})] + from_folder[1:]
    note = [n for n in build_report(wrong, settings).sections[0].notes if "logged test metrics differ" in n]
    assert len(note) == 1 and "icbhi_score 99.00 logged vs" in note[0]

    with pytest.raises(ReportError, match="no experiment named 'nope'"):
        load_mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "nope")
    with pytest.raises(ReportError, match="no database file"):
        load_mlflow_runs(f"sqlite:///{tmp_path / 'typo.db'}", "icbhi")
    assert not (tmp_path / "typo.db").exists()
    # the CLI's MLflow path: same comparison as from the folder tree
    out = tmp_path / "out"
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--experiment", "icbhi", "--parent",
                 parent.info.run_id, "--bootstrap", "200", "--metric", "icbhi_score", "sensitivity",
                 "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "comparison.csv"), comparison_frame(a).pipe(
        lambda f: pd.read_csv(io.StringIO(f.to_csv(index=False)))))


def test_loading_errors_name_the_file_and_what_is_missing(tmp_path, small_study):
    run = small_study[0]
    _write_run_folder(tmp_path / "a", run)
    meta = json.loads((tmp_path / "a" / "run.json").read_text())
    del meta["selection"]
    (tmp_path / "a" / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ReportError, match=r"a: run.json lacks field\(s\) selection"):
        load_runs(tmp_path)
    _write_run_folder(tmp_path / "b", run)
    run.predictions.drop(columns=["patient"]).to_csv(tmp_path / "b" / "test_predictions.csv", index=False)
    with pytest.raises(ReportError, match=r"b/test_predictions.csv: missing column\(s\) patient"):
        load_runs(tmp_path / "b")
    bad = run.predictions.copy()
    bad.loc[0, "pred"] = "rattle"
    with pytest.raises(ReportError, match="labels not in class_names.*rattle"):
        parse_run({"variant": "ast", "seed": 1, "selection": "strict", "class_names": CLASSES,
                   "factors": ["device"], "test": {}}, bad, "x")


def test_runs_must_agree_on_class_names_and_test_set_and_selections_are_not_mixed(small_study):
    odd = replace(small_study[1], class_names=("normal", "wheeze", "crackle", "both"))
    with pytest.raises(ReportError, match="class names differ"):
        build_report([small_study[0], odd], Settings(n_boot=50))
    fewer = replace(small_study[1], predictions=small_study[1].predictions.iloc[5:])
    with pytest.raises(ReportError, match="other cycles"):
        align_runs([small_study[0], fewer])
    paper = [replace(r, selection="paper") for r in small_study]
    report = build_report(small_study + paper, Settings(n_boot=50))
    assert [s.selection for s in report.sections] == ["strict", "paper"]
    assert all(len(s.runs) == 6 for s in report.sections)  # never mixed
    assert any("optimistic" in n for n in report.sections[1].notes)
    only = build_report(small_study + paper, Settings(n_boot=50, selection="paper"))
    assert [s.selection for s in only.sections] == ["paper"]


# =================================================================================================
# Figure
# =================================================================================================
def test_scores_figure_draws_the_summary_of_the_tables():
    """The figure's means and SDs are the section's summary (the tables' numbers), not computed again; one run
    (SD undefined) has no error bar."""
    import matplotlib.pyplot as plt

    section = _report(seeds=(1, 2, 3)).sections[0]
    summary = section.summary.copy()
    at = (summary["variant"] == "ast") & (summary["metric"] == "icbhi_score")
    summary.loc[at, ["mean", "std"]] = [0.5, 0.04]
    at = (summary["variant"] == "ast_film_soft") & (summary["metric"] == "icbhi_score")
    summary.loc[at, ["mean", "std"]] = [0.7, float("nan")]
    fig = scores_figure(replace(section, summary=summary))
    try:
        (ast, film) = fig.axes[0].containers[:2]
        assert ast[0].get_ydata()[2] == pytest.approx(50.0) and film[0].get_ydata()[2] == pytest.approx(70.0)
        seg = ast[2][0].get_segments()[2]
        assert seg[1][1] - seg[0][1] == pytest.approx(8.0)
        seg = film[2][0].get_segments()[2]
        assert seg[1][1] == pytest.approx(seg[0][1])
    finally:
        plt.close(fig)


def test_scores_figure_content():
    from matplotlib.container import BarContainer, ErrorbarContainer

    report = _report(seeds=(1, 2, 3))
    section = report.sections[0]
    fig = scores_figure(section)
    try:
        axes = fig.axes
        assert len(axes) == 3  # whole test set + one panel per factor (device, site)
        assert axes[0].get_title().startswith("Whole test set: mean ± SD over seeds")
        assert axes[1].get_title().startswith("ICBHI Score per device")
        assert axes[2].get_title().startswith("ICBHI Score per site")
        assert [t.get_text() for t in axes[0].get_xticklabels()] == [
            "Sp", "Se", "Score", "2-class Sp", "2-class Se", "2-class Score"]
        assert [t.get_text() for t in axes[1].get_xticklabels()] == DEVICES
        assert [t.get_text() for t in axes[2].get_xticklabels()] == SITES
        # one error-bar series per variant in every panel, bars per variant in the factor panels
        for ax in axes:
            assert len([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == 2
        assert [len(c) for c in axes[1].containers if isinstance(c, BarContainer)] == [4, 4]
        # the error bars are the mean ± SD of the seeds (first variant, Score)
        ast_score = 100 * section.runs.loc[section.runs["variant"] == "ast", "icbhi_score"].to_numpy()
        marker = axes[0].containers[0]
        assert marker[0].get_ydata()[2] == pytest.approx(ast_score.mean())
        seg = marker[2][0].get_segments()[2]
        assert seg[1][1] - seg[0][1] == pytest.approx(2 * ast_score.std(ddof=1))
        # individual seeds as points: 3 seeds x 6 metrics per variant
        assert [len(c.get_offsets()) for c in axes[0].collections if c.get_offsets().shape[0] == 18] == [18, 18]
        # one legend entry per variant, outside every axes
        assert len(fig.legends) == 1
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["AST", "AST_FILM_SOFT"]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend_box = fig.legends[0].get_window_extent(renderer)
        assert not legend_box.overlaps(fig._suptitle.get_window_extent(renderer))
        for ax in axes:
            assert not legend_box.overlaps(ax.get_tightbbox(renderer))  # axes with its ticks, labels, title
            ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
            assert not any(a.overlaps(b) for i, a in enumerate(ticks) for b in ticks[i + 1:])
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


# =================================================================================================
# CLI
# =================================================================================================
def test_cli_missing_folder_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LS_TRACEBACK", raising=False)
    argv = ["--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: runs folder") and "does not exist" in err[0]
    assert not (tmp_path / "out").exists()
    # the error style of every ls command (ls.utils.cli): --traceback shows where, then the same line
    assert main([*argv, "--traceback"]) == 2
    traced = capsys.readouterr().err.strip().splitlines()
    assert traced[0].startswith("Traceback") and traced[-1] == err[0]
    with pytest.raises(SystemExit) as exc:
        main(["--runs", str(tmp_path), "--out", str(tmp_path / "o"), "--bootstrap", "many"])
    assert exc.value.code == 2
    assert "error: argument --bootstrap: invalid int value: 'many'" in capsys.readouterr().err


def test_cli_writes_the_report_and_the_files_round_trip(tmp_path, capsys, small_study):
    for run in small_study:
        _write_run_folder(tmp_path / "runs" / f"{run.variant}_{run.seed}", run)
    out = tmp_path / "out"
    argv = ["--runs", str(tmp_path / "runs"), "--out", str(out), "--bootstrap", "200",
            "--metric", "icbhi_score", "binary_icbhi_score", "--selection", "strict"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Variant | Metric | n pairs |" in printed and "2-class Score" in printed
    for name in ("report.md", "report.tex", "summary.csv", "comparison.csv", "runs.csv", "scores.png",
                 "scores.pdf"):
        assert (out / name).stat().st_size > 0
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files
    # the files hold what the report objects hold
    runs, _ = load_runs(tmp_path / "runs")
    report = build_report(runs, Settings(n_boot=200, metrics=("icbhi_score", "binary_icbhi_score"),
                                         selection="strict"), source=f"folder {tmp_path / 'runs'}")
    assert (out / "report.md").read_text() == markdown_report(report)
    assert printed == markdown_report(report) + "\n"
    assert (out / "report.tex").read_text() == latex_report(report)
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), summary_frame(report), check_dtype=False)
    comp = pd.read_csv(out / "comparison.csv", keep_default_na=False, na_values=[""])
    assert len(comp) == 2
    assert comp["mean_diff"].to_numpy() == pytest.approx(comparison_frame(report)["mean_diff"].to_numpy())
    assert comp["ci_low"].to_numpy() == pytest.approx(comparison_frame(report)["ci_low"].to_numpy())
    assert main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--baseline", "resnet"]) == 2
    assert "error: baseline 'resnet' has no runs" in capsys.readouterr().err


def test_wilcoxon_note_counts_only_the_non_zero_differences():
    """Zero differences are dropped by the signed-rank test, so the smallest p it can give follows from the
    non-zero ones: with one zero among 5 seeds that is 2/2^4 = 0.125, not 2/2^5 = 0.0625."""
    cycles = make_cycles(30, 4)
    runs = []
    for s in (1, 2, 3, 4, 5):
        base = predict(cycles, 0.3, seed=s)
        better = base.copy() if s == 1 else predict(cycles, 1.2, seed=100 + s)  # seed 1: the same predictions
        runs += [make_run("ast", s, base), make_run("var", s, better)]
    section = build_report(runs, Settings(n_boot=100)).sections[0]
    row = section.comparison.iloc[0]
    assert row["n_pairs"] == 5 and row["wilcoxon_n"] == 4 and row["diffs"][0] == 0.0
    floor = [n for n in section.notes if "Wilcoxon test cannot give p below" in n]
    assert len(floor) == 1, section.notes
    assert "4 non-zero differences" in floor[0] and "0.125" in floor[0] and "0.0625" not in floor[0]


# =================================================================================================
# As a paper needs it: forest plot, methods, LaTeX that fits, one p format, marked gaps, no absolute path
# =================================================================================================
def _three_variant_report(n_patients: int = 40, seeds=(1, 2, 3, 4, 5), n_boot: int = 200):
    runs = study({"ast": 0.4, "ast_film_soft": 0.9, "ast_film": 0.5}, seeds=seeds, n_patients=n_patients)
    return build_report(runs, Settings(n_boot=n_boot, metrics=("icbhi_score", "specificity", "sensitivity")))


def test_forest_plot_draws_the_comparison_table():
    """One panel per compared metric, one row per variant (first on top): the diamond and whisker are the
    table's mean difference and interval, the dots the per-seed differences, all in pp, around a line at
    zero; one legend, outside every axes; every mark at least 3:1 against white."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex
    from matplotlib.container import ErrorbarContainer

    from ls.report.render import differences_figure
    from ls.viz.style import MIN_CONTRAST, contrast_ratio

    section = _three_variant_report().sections[0]
    comp = section.comparison.copy()
    # numbers the figure could not compute itself: it must draw the table's
    at = (comp["variant"] == "ast_film") & (comp["metric"] == "sensitivity")
    comp.loc[at, ["mean_diff", "ci_low", "ci_high"]] = [0.031, -0.012, 0.07]
    comp.loc[at, "diffs"] = pd.Series([(0.05, 0.01, -0.02, 0.06, 0.035)], index=comp.index[at])
    section = replace(section, comparison=comp)
    fig = differences_figure(section)
    try:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title() for ax in axes] == ["Score", "Sp", "Se"]
        variants = ["ast_film", "ast_film_soft"]  # the baseline is not a row
        assert [t.get_text() for t in axes[0].get_yticklabels()] == ["AST_FILM", "AST_FILM_SOFT"]
        for ax, metric in zip(axes, ["icbhi_score", "specificity", "sensitivity"], strict=True):
            bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
            dots = [c for c in ax.collections if c.get_offsets().shape[0] == 5]
            assert len(bars) == len(dots) == 2
            zero = [line for line in ax.lines if np.array_equal(np.asarray(line.get_xdata(), float), [0.0, 0.0])]
            assert len(zero) == 1 and list(zero[0].get_ydata()) == [0, 1]  # from bottom to top of the axes
            for v, bar, dot in zip(variants, bars, dots, strict=True):
                row = comp[(comp["variant"] == v) & (comp["metric"] == metric)].iloc[0]
                assert bar[0].get_xdata()[0] == pytest.approx(100 * row["mean_diff"])
                (low, _), (high, _) = bar[2][0].get_segments()[0]
                assert (low, high) == pytest.approx((100 * row["ci_low"], 100 * row["ci_high"]))
                assert list(np.asarray(dot.get_offsets())[:, 0]) == pytest.approx(list(100 * np.asarray(row["diffs"])))
                # the first variant's row is on top, its seeds just below its diamond
                assert dot.get_offsets()[0, 1] < bar[0].get_ydata()[0]
                for color in (to_hex(bar[0].get_color()), to_hex(dot.get_edgecolor()[0])):
                    assert contrast_ratio(color) >= MIN_CONTRAST
        assert axes[2].get_xlim()[0] < 100 * -0.02 and axes[2].get_xlim()[1] > 100 * 0.07
        assert len(fig.legends) == 1
        assert [t.get_text() for t in fig.legends[0].get_texts()] == [
            "mean over paired seeds, 95% interval (patient bootstrap)", "one seed (variant - baseline)"]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend_box = fig.legends[0].get_window_extent(renderer)
        for ax in axes:
            assert not legend_box.overlaps(ax.get_tightbbox(renderer))
            assert not fig._suptitle.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    finally:
        plt.close(fig)


def test_report_files_include_the_forest_plot(tmp_path):
    import matplotlib.image as mpimg

    from ls.report.render import write_report

    written = write_report(_report(seeds=(1, 2, 3)), tmp_path)
    for name in ("differences.png", "differences.pdf", "scores.png", "scores.pdf"):
        assert tmp_path / name in written
    img = mpimg.imread(tmp_path / "differences.png")
    assert img.shape[1] > 900 and img[..., :3].std() > 0.01  # 3.39 in at 300 dpi, not blank
    assert (tmp_path / "differences.pdf").read_bytes()[:5] == b"%PDF-"


def test_methods_define_the_metrics_and_protocols_and_warn_on_few_test_patients():
    from ls.report.build import FEW_PATIENTS
    from ls.report.render import methods_text

    runs = study({"ast": 0.4, "var": 0.9}, seeds=(1, 2), n_patients=12)
    paper = [replace(r, selection="paper") for r in runs]
    report = build_report(runs + paper, Settings(n_boot=50))
    text = methods_text(report.settings, report.sections)
    assert "Specificity (Sp) is the share of normal test cycles predicted normal" in text
    assert ("sensitivity (Se) is the share of abnormal test cycles (crackle, wheeze, both) predicted as exactly "
            "their class") in text
    assert "a both cycle predicted as only one of its sounds counts as a miss" in text
    assert "the ICBHI Score is the mean of Sp and Se" in text
    assert "Under the strict protocol" in text and "validation split of whole patients" in text
    assert "Under the paper protocol" in text and "optimistic" in text
    assert FEW_PATIENTS == 30
    assert "only 12 patients" in text and "Below 30 test patients" in text
    assert all(any("only 12 patients (fewer than 30)" in n for n in s.notes) for s in report.sections)
    assert text in markdown_report(report) and "% Methods: " in latex_report(report)
    # enough patients, one protocol, two classes: no warning, no paper sentence, the 2-class definition
    two = [replace(r, class_names=("normal", "abnormal"),
                   predictions=r.predictions.replace({"crackle": "abnormal", "wheeze": "abnormal", "both": "abnormal"}))
           for r in study({"ast": 0.4, "var": 0.9}, seeds=(1, 2), n_patients=40)]
    report = build_report(two, Settings(n_boot=50))
    text = methods_text(report.settings, report.sections)
    assert "Caution" not in text and "paper protocol" not in text
    assert "abnormal test cycles (abnormal) predicted as exactly their class" in text
    assert not any("fewer than 30" in n for n in report.sections[0].notes)


P_VALUE = re.compile(r"^(<0\.001|n/c|1\.00|0\.0*[1-9]\d{2})$")  # three significant digits


def test_p_values_have_one_format_in_tables_notes_and_latex():
    """Three significant digits (0.0625, 0.827, 1.00), <0.001 below, n/c when not computed: in the Markdown
    and LaTeX comparison tables and in the notes."""
    from ls.report.render import comparison_table, fmt_p

    assert [fmt_p(p) for p in (0.0625, 0.82712, 1.0, 0.6, 0.00354, 0.0004, float("nan"), None)] == [
        "0.0625", "0.827", "1.00", "0.600", "0.00354", "<0.001", "n/c", "n/c"]
    report = _three_variant_report(seeds=(1, 2, 3, 4))
    section = report.sections[0]
    header, rows = comparison_table(section)
    columns = [i for i, h in enumerate(header) if "p" in h.split()]
    assert len(columns) == 3
    cells = [row[i] for row in rows for i in columns]
    assert cells and all(P_VALUE.match(c) for c in cells), cells
    tex = latex_report(report)
    table = next(t for t in re.split(r"\\begin\{table\*?\}", tex) if "Paired differences" in t)
    tex_rows = [line.split(" & ") for line in table.splitlines() if line.count(" & ") == len(header) - 1][1:]
    assert [[c.rstrip(" \\") for c in r][i] for r in tex_rows for i in columns] == [
        latex_escape(c) for c in cells]
    floor = next(n for n in section.notes if "cannot give p below" in n)
    assert "p below 0.125 " in floor  # 2 / 2^4, written as the tables write p-values


def test_factor_values_without_a_score_are_marked_not_left_out():
    """A site without normal cycles has no Sp, so no Score: its column stays, with n/a and a note saying why,
    in Markdown and LaTeX, and the figure marks it where its bars would be."""
    import matplotlib.pyplot as plt

    from ls.report.render import factor_table, factor_table_note

    cycles = make_cycles(20, 3)
    cycles.loc[(cycles["site"] == "Tc") & (cycles["true"] == "normal"), "true"] = "wheeze"
    runs = []
    for s in (1, 2):
        runs += [make_run("ast", s, predict(cycles, 0.4, s)), make_run("var", s, predict(cycles, 0.9, 10 + s))]
    section = build_report(runs, Settings(n_boot=50)).sections[0]
    header, rows = factor_table(section, "site")
    assert header == ["Variant", *SITES]
    assert [row[-1] for row in rows] == ["n/a", "n/a"] and all("±" in c for c in rows[0][1:-1])
    note = factor_table_note(section, "site")
    assert note == "n/a: no ICBHI Score for site Tc (no normal cycles in the test set, so no Sp and no Score)."
    assert factor_table_note(section, "device") == ""
    report = build_report(runs, Settings(n_boot=50))
    assert note in markdown_report(report) and latex_escape(note) in latex_report(report)
    fig = scores_figure(section)
    try:
        site_ax = fig.axes[2]
        assert [t.get_text() for t in site_ax.get_xticklabels()] == SITES
        marks = [t for t in site_ax.texts if t.get_text().startswith("n/a")]
        assert len(marks) == 1 and marks[0].get_position()[0] == SITES.index("Tc")
        assert "no normal cycles" in marks[0].get_text()
    finally:
        plt.close(fig)


def test_latex_tables_fit_the_page_and_use_true_minus_signs():
    """Wide tables span both columns of a two-column page (table*) and shrink to the line width where still
    wider, never enlarged; numbers with a minus sign get a true minus ($-$), not a hyphen."""
    from ls.report.render import COLUMN_WIDTH_PT, estimated_width_pt

    assert latex_escape("-1.34 [-0.50, +2.00] variant - baseline; 2-class, n-1") == (
        "$-$1.34 [$-$0.50, +2.00] variant $-$ baseline; 2-class, n-1")
    narrow = (["Factor", "Value"], [["device", "Meditron"]])
    wide = (["Variant", *[f"seed {i}" for i in range(9)]], [["SoftFiLM-AST", *["+12.34"] * 9]])
    assert estimated_width_pt(narrow) < COLUMN_WIDTH_PT < estimated_width_pt(wide)
    assert latex_table(narrow, "c", "tab:n").startswith(r"\begin{table}[tbp]")
    tex = latex_table(wide, "c", "tab:w")
    assert tex.startswith(r"\begin{table*}[tbp]") and tex.endswith(r"\end{table*}")
    assert r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%" in tex
    report = _three_variant_report(seeds=(1, 2, 3))
    report_tex = latex_report(report)
    body = "\n".join(line for line in report_tex.splitlines() if not line.startswith("%"))
    assert "$-$" in body
    assert not re.search(r"(?<![\w$])-\d", body)  # no hyphen before a number
    # cells leave out the n that every cell shares (narrower); the note says it once
    summary = next(t for t in re.split(r"\\begin\{table\*?\}", report_tex) if "Test metrics over seeds" in t)
    _, rows = summary_table(report.sections[0], compact=True)
    assert rows[0][1] == summary_table(report.sections[0])[1][0][1].removesuffix(" (n=3)")
    assert "(n=" not in summary.split(r"\bottomrule")[0]
    assert " & ".join(map(latex_escape, rows[0])) + r" \\" in summary
    assert "over all 3 runs of each variant" in summary


def _compile(tex_dir: Path, name: str, preamble: str) -> str:
    """Compile ``\\input{report}`` in ``tex_dir`` with ``preamble`` (documentclass line); the log's text."""
    import shutil
    import subprocess

    engine = shutil.which("pdflatex") or shutil.which("lualatex")
    (tex_dir / f"{name}.tex").write_text(
        preamble + "\n\\usepackage{booktabs,graphicx,tabularx}\n\\begin{document}\n\\input{report}\n\\end{document}\n")
    done = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"], cwd=tex_dir, check=False,
                          capture_output=True, text=True, timeout=120)
    log = (tex_dir / f"{name}.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    return log


def test_latex_report_compiles_on_one_and_two_column_pages(tmp_path):
    """report.tex, with two sections, a protocol card, notes, 9-column comparison tables and 8-column site
    tables, compiles in a one-column article and in a two-column page of a paper (3.39 in columns) without an
    overfull box (a table wider than its column or page)."""
    import shutil

    if not (shutil.which("pdflatex") or shutil.which("lualatex")):
        pytest.skip("SKIPPED (needs a TeX engine): no pdflatex or lualatex on PATH, so report.tex was not "
                    "compiled; install texlive-latex-base and texlive-latex-recommended to run this test")
    runs = study({"ast": 0.4, "ast_film_soft": 0.9, "ast_film": 0.5}, seeds=(1, 2, 3, 4, 5))
    runs += [replace(r, selection="paper") for r in runs]
    report = build_report(runs, Settings(n_boot=100, metrics=("icbhi_score", "specificity", "sensitivity")))
    (tmp_path / "report.tex").write_text(latex_report(report))
    one = _compile(tmp_path, "one", r"\documentclass{article}")
    two = _compile(tmp_path, "two", "\\documentclass[twocolumn]{article}\n"
                                    r"\usepackage[textwidth=7in,columnsep=0.22in,textheight=9.5in]{geometry}")
    for log in (one, two):
        assert "Overfull \\hbox" not in log, [line for line in log.splitlines() if "Overfull" in line]
        assert "Output written on" in log


def test_no_absolute_path_in_the_report(tmp_path, capsys, small_study, monkeypatch):
    """Runs and output under an absolute tmp path: neither report.md, report.tex, the CSVs nor the figures'
    texts name it, whether the report comes from the command line or from build_report with absolute run
    folders and an absolute path in its source (as a study passes them)."""
    from ls.report.paths import shown_path, shown_uri, without_absolute_paths
    from ls.report.render import differences_figure
    from ls.report.runs import load_run_dir

    monkeypatch.chdir(Path(__file__).parent)  # the runs are outside the working directory
    root = tmp_path / "study" / "runs"
    folders = []
    for run in small_study:
        folders.append(root / run.variant / f"seed{run.seed}")
        _write_run_folder(folders[-1], run)
    meta = json.loads((folders[0] / "run.json").read_text())
    meta["test"]["icbhi_score"] = 0.99  # a note naming the run
    (folders[0] / "run.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    assert main(["--runs", str(root), "--out", str(out), "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    runs = [load_run_dir(f) for f in folders]
    assert runs[0].source == str(folders[0])  # errors name the full folder; the report does not
    report = build_report(runs, Settings(n_boot=50), source=f"study x ({root})", notes=[f"skipped {tmp_path}/y"])
    texts = [printed, markdown_report(report), latex_report(report), report.source, *report.notes]
    texts += [(out / name).read_text() for name in ("report.md", "report.tex", "summary.csv", "comparison.csv",
                                                    "runs.csv")]
    for make in (scores_figure, differences_figure):
        fig = make(report.sections[0])
        texts += [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert "ast/seed1: logged test metrics differ" in markdown_report(report)
    assert "Runs from folder runs." in printed and report.source == "study x (runs)"
    for text in texts:
        assert str(tmp_path) not in text and f"/{tmp_path.parts[1]}/" not in text
    # the helpers
    assert shown_path("rel/dir") == "rel/dir" and shown_path(tmp_path / "a" / "b") == "b"
    assert shown_path(Path.cwd() / "sub" / "x.csv") == "sub/x.csv"
    assert shown_uri(f"sqlite:///{tmp_path}/mlflow.db") == "sqlite:///mlflow.db"
    assert shown_uri("https://user:secret@mlflow.example.org/") == "https://mlflow.example.org/"
    assert without_absolute_paths("n/c, device/Meditron/icbhi_score, 2/2^4 and sqlite:///m.db") == (
        "n/c, device/Meditron/icbhi_score, 2/2^4 and sqlite:///m.db")
