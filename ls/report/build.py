"""From loaded runs to a report: one section per model-selection protocol, each with per-run metrics, the
mean ± SD summary, the paired comparison with the baseline, the test-set composition and notes.

Nothing here draws or writes files (see :mod:`ls.report.render`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ls.report.paths import shown_sources, without_absolute_paths
from ls.report.protocol import section_card
from ls.report.runs import Run, align_runs, split_by_selection
from ls.report.stats import (
    BASE_METRICS,
    METRIC_LABELS,
    ReportError,
    TestSet,
    compare_to_baseline,
    format_keys,
    format_p,
    min_wilcoxon_p,
    parse_metric,
    run_metrics,
    summarise,
)

#: Logged and recomputed test metrics may differ by this much (fractions) before a note is written.
LOGGED_TOLERANCE = 5e-5
#: Fewer bootstrap replicates than this get a note: the interval's ends are then noisy.
FEW_REPLICATES = 1000
#: Above this share of undefined replicates, a note says the interval is conditional on definedness.
DROPPED_WARNING = 0.01
#: Below this many test patients the report warns. The interval resamples patients, and with few of them it
#: is too narrow. Measured on no-signal synthetic test sets (two variants of equal skill, 3 seeds each,
#: patients of 10-60 cycles, 500 replicates): the 95% interval held 0 in 89.4% of 1,000 test sets of 10
#: patients, 92.0% with 20 and 94.4% with 30. A patient is then also over 3% of the test set by itself.
FEW_PATIENTS = 30


@dataclass(frozen=True)
class Settings:
    """What the report was asked for."""

    baseline: str = "ast"
    metrics: tuple[str, ...] = ("icbhi_score",)
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0
    selection: str | None = None


@dataclass
class Section:
    """The report of the runs of one selection protocol (``strict`` or ``paper``) on one test set."""

    selection: str
    variants: list[str]  # baseline first (when present), then by name
    display_names: dict[str, str]
    baseline: str | None  # None when this selection has no baseline runs
    runs: pd.DataFrame  # one row per run: variant, display_name, seed, fold, run_id, source, <metrics>
    metrics: list[str]  # every metric column of ``runs`` (fractions)
    summary: pd.DataFrame  # variant, display_name, metric, mean, std, n
    comparison: pd.DataFrame  # stats.COMPARISON_COLUMNS (+ display_name); empty without baseline
    composition: pd.DataFrame  # factor, value, patients, cycles, normal, abnormal
    factors: list[str]
    n_cycles: int
    n_patients: int
    notes: list[str] = field(default_factory=list)
    class_names: tuple[str, ...] = ()
    protocol: dict = field(default_factory=dict)  # ls.report.protocol.section_card of the runs' cards

    def factor_metrics(self, factor: str, base: str = "icbhi_score") -> list[tuple[str, str]]:
        """``(value, metric key)`` of ``factor`` that are defined for some run, in value order."""
        prefix = f"{factor}/"
        out = []
        for key in self.metrics:
            if key.startswith(prefix) and key.endswith(f"/{base}") and self.runs[key].notna().any():
                out.append((key[len(prefix):-len(base) - 1], key))
        return out

    def factor_values(self, factor: str, base: str = "icbhi_score") -> list[tuple[str, str | None, str]]:
        """Every value of ``factor`` in the test set, in value order, as ``(value, metric key, why)``: the key
        of ``base`` for the value where some run defines it, else None and ``why`` it is undefined (a value
        without normal cycles has no Sp, so no Score). Tables and figures mark such values, never drop them."""
        defined = dict(self.factor_metrics(factor, base))
        rows = self.composition[self.composition["factor"] == factor]
        out = []
        for row in rows.itertuples():
            value = str(row.value)
            if value in defined:
                out.append((value, defined[value], ""))
            else:
                out.append((value, None, undefined_reason(base, int(row.normal), int(row.abnormal))))
        return out


def undefined_reason(metric: str, normal: int, abnormal: int) -> str:
    """Why ``metric`` is undefined on a group with ``normal`` and ``abnormal`` test cycles, in words."""
    needs_normal = "specificity" in metric or "score" in metric
    needs_abnormal = "sensitivity" in metric or "score" in metric
    label = METRIC_LABELS.get(metric, metric)
    if needs_normal and normal == 0:
        return "no normal cycles in the test set, so no Sp" + ("" if label == "Sp" else f" and no {label}")
    if needs_abnormal and abnormal == 0:
        return "no abnormal cycles in the test set, so no Se" + ("" if label == "Se" else f" and no {label}")
    return f"{label} undefined for every run"


@dataclass
class Report:
    sections: list[Section]
    settings: Settings
    source: str = ""
    notes: list[str] = field(default_factory=list)  # loading notes (e.g. skipped MLflow runs)


def variant_order(variants: Sequence[str], baseline: str | None) -> list[str]:
    distinct = list(dict.fromkeys(variants))
    return ([baseline] if baseline in distinct else []) + sorted(v for v in distinct if v != baseline)


def composition(test_set: TestSet) -> pd.DataFrame:
    """Patients, cycles, normal and abnormal cycles of the whole test set and of every factor value."""
    y, clusters = test_set.y_true, test_set.clusters
    rows = [("all", "all", np.ones(y.shape[0], dtype=bool))]
    for factor, values in test_set.groups.items():
        values = np.asarray(values).astype(str)
        rows += [(factor, v, values == v) for v in sorted(np.unique(values).tolist())]
    return pd.DataFrame(
        [{"factor": f, "value": v, "patients": int(np.unique(clusters[m]).size), "cycles": int(m.sum()),
          "normal": int(np.sum(m & (y == 0))), "abnormal": int(np.sum(m & (y > 0)))} for f, v, m in rows],
        columns=["factor", "value", "patients", "cycles", "normal", "abnormal"],
    )  # fmt: skip


def _logged_mismatches(runs: Sequence[Run], names: Sequence[str], point: pd.DataFrame) -> list[str]:
    notes = []
    for r, (run, name) in enumerate(zip(runs, names, strict=True)):
        bad = []
        for key, logged in run.test.items():
            value = point.at[r, key] if key in point.columns else np.nan
            if np.isfinite(value) and abs(value - logged) > LOGGED_TOLERANCE:
                bad.append(f"{key} {100 * logged:.2f} logged vs {100 * value:.2f} recomputed")
        if bad:
            notes.append(f"{name}: logged test metrics differ from those recomputed from its predictions "
                         f"(the report uses the recomputed ones): {'; '.join(bad[:4])}"
                         + (f"; and {len(bad) - 4} more" if len(bad) > 4 else ""))
    return notes


def build_section(runs: Sequence[Run], settings: Settings, names: Sequence[str] | None = None) -> Section:
    """The report of runs that share one selection protocol and one test set. ``names``: how the report
    names each run (default :func:`ls.report.paths.shown_sources` of their sources: no absolute path)."""
    aligned = align_runs(runs)  # its errors name the runs by their full source
    names = list(names) if names is not None else shown_sources([r.source for r in runs])
    notes = list(aligned.notes)
    selection = runs[0].selection
    point = run_metrics(aligned.test_set, aligned.preds)
    notes += _logged_mismatches(aligned.runs, names, point)
    table = pd.concat([aligned.table.assign(source=names), point], axis=1)
    baseline = settings.baseline if settings.baseline in set(table["variant"]) else None
    variants = variant_order(table["variant"], baseline)
    display: dict[str, str] = {}
    for variant, name in zip(table["variant"], table["display_name"], strict=True):
        if display.setdefault(variant, name) != name:
            notes.append(f"{variant}: runs use different display names ({display[variant]!r}, {name!r}); "
                         f"the first is used")
    table["display_name"] = table["variant"].map(display)
    order = {v: i for i, v in enumerate(variants)}
    table = table.assign(_o=table["variant"].map(order)).sort_values(["_o", "seed", "fold"], kind="stable")
    preds = aligned.preds[table.index.to_numpy()]
    table = table.drop(columns="_o").reset_index(drop=True)
    metrics = list(point.columns)
    summary = summarise(table[["variant", *metrics]], by="variant", metrics=metrics)
    summary.insert(1, "display_name", summary["variant"].map(display))

    for variant in variants:
        seeds = table.loc[table["variant"] == variant]
        if len(seeds) < 2:
            notes.append(f"{display[variant]}: {len(seeds)} run, so no standard deviation")

    if baseline is None:
        notes.append(f"no runs of the baseline {settings.baseline!r} with selection {selection!r}: "
                     f"no paired comparison")
        comparison = pd.DataFrame()
    else:
        wanted = list(settings.metrics)
        undefined = [m for m in wanted if m not in point.columns]
        if undefined:
            raise ReportError(f"selection {selection}: metric(s) {', '.join(undefined)} are not defined on this "
                              f"test set (defined: {', '.join(metrics[:12])}{', ...' if len(metrics) > 12 else ''})")
        comparison = compare_to_baseline(aligned.test_set, preds, table, wanted, baseline, point=table[metrics],
                                         n_boot=settings.n_boot, confidence=settings.confidence, seed=settings.seed)
        comparison.insert(1, "display_name", comparison["variant"].map(display))
        notes += _comparison_notes(comparison, display, settings)
    if selection == "paper":
        notes.append("selection 'paper': epochs and thresholds were chosen on the test split, so these test "
                     "numbers are optimistic; use them only to compare with published results")
    ts = aligned.test_set
    if ts.n_clusters < FEW_PATIENTS:
        notes.append(few_patients_warning(ts.n_clusters))
    seeds = {v: sorted({int(s) for s in table.loc[table["variant"] == v, "seed"]}) for v in variants}
    card, card_notes = section_card([r.protocol for r in runs], names, seeds, ts.n_clusters, ts.n_cycles)
    notes += card_notes
    return Section(
        selection=selection, variants=variants, display_names=display, baseline=baseline, runs=table,
        metrics=metrics, summary=summary, comparison=comparison, composition=composition(aligned.test_set),
        factors=list(aligned.test_set.groups), n_cycles=aligned.test_set.n_cycles,
        n_patients=aligned.test_set.n_clusters, notes=notes, class_names=runs[0].class_names, protocol=card,
    )  # fmt: skip


def few_patients_warning(n_patients: int) -> str:
    """The note of a test set with fewer than :data:`FEW_PATIENTS` patients."""
    return (f"the test set has only {n_patients} patients (fewer than {FEW_PATIENTS}): the patient-level "
            f"bootstrap interval then covers less than its nominal level and one patient's cycles move every "
            f"metric by points; read differences with care and prefer a larger test set (or patient folds)")


def _seeds_vary_more_than_patients(row: pd.Series, confidence: float) -> str:
    """A warning when the training seeds move the mean difference more than the test patients do.

    The bootstrap interval holds the trained models fixed; its half-width over the normal quantile is the
    standard error from test sampling. The spread of the per-seed differences gives the standard error from
    training (sd / sqrt(n)). When the second is larger, the interval alone understates the uncertainty.
    """
    n, sd = int(row["n_pairs"]), float(row["sd_diff"])
    low, high = float(row["ci_low"]), float(row["ci_high"])
    if n < 2 or not np.isfinite(sd) or not (np.isfinite(low) and np.isfinite(high)):
        return ""
    from scipy.stats import norm

    se_patients = (high - low) / (2.0 * norm.ppf(0.5 + confidence / 2.0))
    se_seeds = sd / np.sqrt(n)
    if se_seeds <= se_patients:
        return ""
    return (f"the per-seed differences vary more (SD {100 * sd:.2f} pp, standard error of their mean "
            f"{100 * se_seeds:.2f} pp) than test-patient sampling moves it ({100 * se_patients:.2f} pp, what the "
            f"interval covers): the interval understates the uncertainty of this comparison; read it with the "
            f"paired tests over seeds, and add seeds")


def _comparison_notes(comparison: pd.DataFrame, display: dict[str, str], settings: Settings) -> list[str]:
    notes = []
    seen_unpaired = set()
    for _, row in comparison.iterrows():
        name = display[row["variant"]]
        if row["unpaired"] and row["variant"] not in seen_unpaired:
            seen_unpaired.add(row["variant"])
            notes.append(f"{name} vs {display[row['baseline']]}: unpaired runs left out of the comparison "
                         f"({row['unpaired']}); paired: {row['seeds'] or 'none'}")
        untested = [f"{test} {row[col]}" for test, col in (("t-test", "t_note"), ("Wilcoxon", "wilcoxon_note"))
                    if str(row[col]).startswith("not computed")]
        if untested:
            notes.append(f"{name}, {row['metric']}: {'; '.join(untested)}")
        seeds_wider = _seeds_vary_more_than_patients(row, settings.confidence)
        if seeds_wider:
            notes.append(f"{name}, {row['metric']}: {seeds_wider}")
        dropped = int(row["n_boot_dropped"])
        if row["n_pairs"] and dropped:
            share = dropped / settings.n_boot
            text = (f"{name}, {row['metric']}: {dropped} of {settings.n_boot} bootstrap replicates dropped because "
                    f"the metric was undefined in them (no normal or no abnormal cycle of its scope drawn)")
            if share > DROPPED_WARNING:
                text += "; the interval is conditional on the metric being defined"
            notes.append(text)
    # the signed-rank test drops zero differences, so its smallest p follows from the non-zero ones
    counts = sorted({(int(w), int(n)) for w, n in zip(comparison["wilcoxon_n"], comparison["n_pairs"], strict=True)
                     if w >= 2})
    alpha = 1.0 - settings.confidence
    for nonzero, pairs in counts:
        floor = min_wilcoxon_p(nonzero)
        if floor > alpha:
            among = "" if nonzero == pairs else f" (of {pairs} pairs; zero differences are dropped)"
            notes.append(f"with {nonzero} non-zero differences{among} the exact Wilcoxon test cannot give p below "
                         f"{format_p(floor)} (all {nonzero} of one sign), so it cannot reach p < {alpha:.2g}")
    if settings.n_boot < FEW_REPLICATES:
        notes.append(f"only {settings.n_boot} bootstrap replicates: the interval ends are noisy "
                     f"(use >= {FEW_REPLICATES}, default 2000)")
    if len(comparison) > 1 and comparison["t_p"].notna().sum() > 1:
        notes.append(f"p-values and intervals are per comparison; 'Holm' adjusts the t-test p-values for the "
                     f"{int(comparison['t_p'].notna().sum())} comparisons of this table")
    return notes


def build_report(runs: Sequence[Run], settings: Settings | None = None, *, source: str = "",
                 notes: Sequence[str] = ()) -> Report:
    """The report of ``runs``: one :class:`Section` per selection protocol (or only ``settings.selection``).

    Raises :class:`ReportError` when the baseline has no runs at all, a metric is unknown, or runs of one
    selection do not share class names and test set.
    """
    settings = settings or Settings()
    for metric in settings.metrics:
        parse_metric(metric)
    if not 0.0 < settings.confidence < 1.0:
        raise ReportError(f"--confidence must be in (0, 1), got {settings.confidence}")
    if settings.n_boot < 1:
        raise ReportError(f"--bootstrap must be >= 1, got {settings.n_boot}")
    groups = split_by_selection(runs, settings.selection)
    if not any(r.variant == settings.baseline for rs in groups.values() for r in rs):
        found = sorted({r.variant for rs in groups.values() for r in rs})
        raise ReportError(f"baseline {settings.baseline!r} has no runs (variants: {', '.join(found)})")
    # one naming for every section: run folders relative to the folder that holds them all
    every = [r for group in groups.values() for r in group]
    shown = dict(zip(map(id, every), shown_sources([r.source for r in every]), strict=True))
    sections = [build_section(group, settings, [shown[id(r)] for r in group]) for group in groups.values()]
    return Report(sections=sections, settings=settings, source=without_absolute_paths(source),
                  notes=[without_absolute_paths(n) for n in notes])


__all__ = [
    "BASE_METRICS",
    "FEW_PATIENTS",
    "Report",
    "Section",
    "Settings",
    "build_report",
    "build_section",
    "composition",
    "few_patients_warning",
    "format_keys",
    "undefined_reason",
    "variant_order",
]
