"""Statistics of a multi-seed comparison: per-variant summaries, paired tests and a patient-level bootstrap.

Pure functions on numpy arrays and pandas frames. Metric values are fractions in ``[0, 1]`` (as in
:mod:`ls.engine.metrics`); differences are fractions too; rendering turns them into percent points.

Point estimates are recomputed from per-cycle predictions with :mod:`ls.engine.metrics`. The bootstrap does
not call those functions once per replicate: every metric here is a ratio of cycle counts, so a replicate
that draws patient ``p`` ``w_p`` times has counts ``sum_p w_p * count_p``; one matrix product gives every
replicate, run and metric at once. :func:`metric_replicates` at unit weights is checked against
:mod:`ls.engine.metrics` before any bootstrap result is used (:func:`check_against_engine`), so the two
definitions cannot drift apart silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as _sps

from ls.engine.metrics import binary_icbhi_scores, group_metrics, icbhi_scores

#: What a table shows for a test or interval that was not computed (too few pairs, no spread).
NOT_COMPUTED = "n/c"


class ReportError(ValueError):
    """A problem with the inputs of a report (shown to users as one ``error:`` line)."""


#: Whole-test-set metrics, in display order.
BASE_METRICS = (
    "specificity",
    "sensitivity",
    "icbhi_score",
    "binary_specificity",
    "binary_sensitivity",
    "binary_icbhi_score",
)
#: Short labels of the whole-test-set metrics (tables, figures, notes).
METRIC_LABELS = {
    "specificity": "Sp",
    "sensitivity": "Se",
    "icbhi_score": "Score",
    "binary_specificity": "2-class Sp",
    "binary_sensitivity": "2-class Se",
    "binary_icbhi_score": "2-class Score",
}
#: Per-factor-value metrics that ``ls.engine.metrics.group_metrics`` defines (``<factor>/<value>/<metric>``).
GROUP_METRICS = ("specificity", "sensitivity", "icbhi_score", "binary_sensitivity", "binary_icbhi_score")

# metric -> (numerator part, denominator part); scores are the mean of two of these ratios.
_RATIOS = {
    "specificity": ("hit_normal", "normal"),
    "sensitivity": ("hit_abnormal", "abnormal"),
    "binary_specificity": ("hit_normal", "normal"),
    "binary_sensitivity": ("any_abnormal", "abnormal"),
}
_SCORES = {
    "icbhi_score": ("specificity", "sensitivity"),
    "binary_icbhi_score": ("binary_specificity", "binary_sensitivity"),
}


# =================================================================================================
# The shared test set
# =================================================================================================
@dataclass(frozen=True, eq=False)
class TestSet:
    """The test cycles that every compared run predicted, in one fixed order.

    Attributes:
        y_true: true class ids ``[N]`` (0 = normal).
        clusters: resampling unit of each cycle ``[N]``, codes ``0..P-1`` (the patient).
        cluster_names: the name of each code (patient ids).
        groups: ``{factor: value per cycle [N]}`` (e.g. device, site), values as strings.
        n_classes: number of classes K.
    """

    __test__ = False  # not a pytest class

    y_true: np.ndarray
    clusters: np.ndarray
    cluster_names: tuple[str, ...]
    groups: Mapping[str, np.ndarray] = field(default_factory=dict)
    n_classes: int = 4

    def __post_init__(self) -> None:
        n = self.y_true.shape[0]
        if self.y_true.ndim != 1 or self.clusters.shape != (n,):
            raise ValueError(f"y_true and clusters must be [N] arrays, got {self.y_true.shape}, {self.clusters.shape}")
        if n and (self.clusters.min() < 0 or self.clusters.max() >= len(self.cluster_names)):
            raise ValueError("cluster codes must lie in [0, len(cluster_names))")
        for factor, values in self.groups.items():
            if np.shape(values) != (n,):
                raise ValueError(f"groups[{factor!r}] has shape {np.shape(values)}, expected ({n},)")

    @property
    def n_cycles(self) -> int:
        return int(self.y_true.shape[0])

    @property
    def n_clusters(self) -> int:
        return len(self.cluster_names)

    def with_clusters(self, clusters: np.ndarray) -> TestSet:
        """The same cycles with another resampling unit (e.g. ``np.arange(N)``: every cycle on its own)."""
        codes, names = pd.factorize(np.asarray(clusters), sort=True)
        return TestSet(self.y_true, codes.astype(np.int64), tuple(str(n) for n in names), self.groups,
                       self.n_classes)


def parse_metric(key: str) -> tuple[tuple[str, str] | None, str]:
    """``"icbhi_score"`` -> ``(None, "icbhi_score")``; ``"device/Meditron/icbhi_score"`` ->
    ``(("device", "Meditron"), "icbhi_score")``. Raises ``ReportError`` for unknown metric names."""
    if "/" not in key:
        if key not in BASE_METRICS:
            raise ReportError(f"unknown metric {key!r}; known: {', '.join(BASE_METRICS)} or <factor>/<value>/<metric>")
        return None, key
    factor, rest = key.split("/", 1)
    if "/" not in rest:
        raise ReportError(f"metric {key!r} is not of the form <factor>/<value>/<metric>")
    value, base = rest.rsplit("/", 1)
    if base not in GROUP_METRICS:
        raise ReportError(f"unknown per-group metric {base!r} in {key!r}; known: {', '.join(GROUP_METRICS)}")
    return (factor, value), base


# =================================================================================================
# Point estimates (ls.engine.metrics)
# =================================================================================================
def point_metrics(test_set: TestSet, y_pred: np.ndarray) -> dict[str, float]:
    """Every metric of one run's predictions, computed by :mod:`ls.engine.metrics`.

    Whole-set keys are :data:`BASE_METRICS`; per factor value ``<factor>/<value>/<metric>`` as
    ``group_metrics`` returns them (undefined ones absent). A whole-set metric that needs normal (abnormal)
    cycles is NaN when the test set has none, where ``ls.engine.metrics`` would report 0.
    """
    t = test_set.y_true
    k = test_set.n_classes
    out = icbhi_scores(t, y_pred, k)
    out.update(binary_icbhi_scores(t, y_pred))
    has_normal, has_abnormal = bool(np.any(t == 0)), bool(np.any(t > 0))
    for key in BASE_METRICS:
        needs_normal = "specificity" in key or "score" in key
        needs_abnormal = "sensitivity" in key or "score" in key
        if (needs_normal and not has_normal) or (needs_abnormal and not has_abnormal):
            out[key] = math.nan
    if test_set.groups:
        grouped = group_metrics(t, y_pred, dict(test_set.groups), k)
        out.update({key: v for key, v in grouped.items() if not key.endswith("/n_cycles")})
    return {key: float(v) for key, v in out.items()}


def run_metrics(test_set: TestSet, preds: np.ndarray) -> pd.DataFrame:
    """:func:`point_metrics` of every run: a frame ``[R, metrics]`` (row ``r`` = ``preds[r]``), NaN where a
    metric is undefined; columns in a stable order (whole-set metrics first, then per factor value)."""
    rows = [point_metrics(test_set, p) for p in np.asarray(preds)]
    keys: list[str] = [k for k in BASE_METRICS]
    for row in rows:
        keys += [k for k in row if k not in keys]
    return pd.DataFrame([{k: row.get(k, math.nan) for k in keys} for row in rows], columns=keys)


# =================================================================================================
# Count formulation: the same metrics for many weightings of the patients at once
# =================================================================================================
def metric_replicates(test_set: TestSet, preds: np.ndarray, metrics: Sequence[str],
                      weights: np.ndarray) -> np.ndarray:
    """Metric values of every run under every cluster weighting.

    Args:
        test_set: the shared test cycles.
        preds: predicted class ids ``[R, N]`` (one row per run).
        metrics: metric keys (see :func:`parse_metric`).
        weights: ``[B, P]`` how many times each cluster (patient) counts in each replicate; a row of ones
            gives the metrics of the test set itself.

    Returns:
        ``[B, R, M]`` fractions; NaN where the replicate leaves a metric undefined (no normal or no abnormal
        cycle of the metric's scope was drawn). Undefinedness depends on the true labels only, so it is the
        same for every run of a replicate.
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != test_set.n_cycles:
        raise ValueError(f"preds must be [R, {test_set.n_cycles}], got {preds.shape}")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != test_set.n_clusters:
        raise ValueError(f"weights must be [B, {test_set.n_clusters}], got {weights.shape}")
    y = test_set.y_true
    n_runs = preds.shape[0]
    n_clusters = test_set.n_clusters

    def per_cluster(x: np.ndarray) -> np.ndarray:  # [..., N] indicator -> [..., P] sums per cluster
        rows = x.reshape(-1, x.shape[-1])
        idx = (test_set.clusters[None, :] + n_clusters * np.arange(rows.shape[0])[:, None]).ravel()
        sums = np.bincount(idx, weights=rows.ravel().astype(np.float64), minlength=rows.shape[0] * n_clusters)
        return sums.reshape(*x.shape[:-1], n_clusters)

    scopes: dict[tuple[str, str] | None, dict[str, np.ndarray]] = {}

    def parts(scope: tuple[str, str] | None) -> dict[str, np.ndarray]:
        if scope not in scopes:
            if scope is None:
                mask = np.ones(test_set.n_cycles, dtype=bool)
            else:
                if scope[0] not in test_set.groups:
                    raise ReportError(f"no factor {scope[0]!r} in the test set (factors: {list(test_set.groups)})")
                mask = np.asarray(test_set.groups[scope[0]]).astype(str) == scope[1]
            normal, abnormal = mask & (y == 0), mask & (y > 0)
            per_run = {
                "hit_normal": (preds == 0) & normal,
                "hit_abnormal": (preds == y) & abnormal,
                "any_abnormal": (preds > 0) & abnormal,
            }
            out = {"normal": weights @ per_cluster(normal), "abnormal": weights @ per_cluster(abnormal)}  # [B]
            for name, hits in per_run.items():
                out[name] = weights @ per_cluster(hits).T  # [B, R]
            scopes[scope] = out
        return scopes[scope]

    def ratio(p: dict[str, np.ndarray], base: str) -> np.ndarray:
        num, den = _RATIOS[base]
        d = p[den][:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(d > 0, p[num] / np.where(d > 0, d, 1.0), np.nan)

    out = np.empty((weights.shape[0], n_runs, len(metrics)))
    for m, key in enumerate(metrics):
        scope, base = parse_metric(key)
        p = parts(scope)
        if base in _SCORES:
            a, b = _SCORES[base]
            out[:, :, m] = (ratio(p, a) + ratio(p, b)) / 2.0
        else:
            out[:, :, m] = ratio(p, base)
    return out


def check_against_engine(test_set: TestSet, preds: np.ndarray, metrics: Sequence[str],
                         point: pd.DataFrame, atol: float = 1e-12) -> None:
    """Raise ``RuntimeError`` unless :func:`metric_replicates` at unit weights reproduces ``point`` (the
    :mod:`ls.engine.metrics` values, as from :func:`run_metrics`) for every run and metric."""
    fast = metric_replicates(test_set, preds, metrics, np.ones((1, test_set.n_clusters)))[0]
    for m, key in enumerate(metrics):
        ref = point[key].to_numpy(dtype=float) if key in point else np.full(fast.shape[0], np.nan)
        same = np.isclose(fast[:, m], ref, rtol=0.0, atol=atol) | (np.isnan(fast[:, m]) & np.isnan(ref))
        if not np.all(same):
            raise RuntimeError(f"bootstrap metric {key!r} disagrees with ls.engine.metrics: "
                               f"{fast[~same, m].tolist()} vs {ref[~same].tolist()}")


def cluster_draws(n_clusters: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[B, P]`` cluster indices drawn with replacement (one row = one bootstrap replicate)."""
    if n_clusters < 1:
        raise ReportError("cannot bootstrap a test set without patients")
    return rng.integers(0, n_clusters, size=(n_boot, n_clusters))


def draws_to_weights(draws: np.ndarray, n_clusters: int) -> np.ndarray:
    """How many times each cluster occurs in each replicate: ``[B, P]`` counts from ``[B, P]`` draws."""
    n_boot = draws.shape[0]
    flat = (draws + n_clusters * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_clusters).reshape(n_boot, n_clusters).astype(np.float64)


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap interval: the ``(1-c)/2`` and ``(1+c)/2`` empirical quantiles (linear
    interpolation) of the finite ``samples``; NaNs if there are none."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return math.nan, math.nan
    alpha = 1.0 - confidence
    lo, hi = np.quantile(s, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


# =================================================================================================
# Summaries over seeds
# =================================================================================================
def summarise(values: pd.DataFrame, by: str = "variant", metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof 1; NaN for one run) and n (runs where the metric is defined)
    of every metric per ``by`` group.

    Args:
        values: one row per run, a ``by`` column and one column per metric (fractions).
        metrics: the metric columns (default: every column except ``by``, ``seed``, ``fold``).

    Returns:
        Long frame ``[by, metric, mean, std, n]``, groups in order of first appearance.
    """
    metrics = list(metrics) if metrics is not None else [c for c in values.columns if c not in (by, "seed", "fold")]
    rows = []
    for group, frame in values.groupby(by, sort=False):
        for key in metrics:
            v = frame[key].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            rows.append({
                by: group,
                "metric": key,
                "mean": float(np.mean(v)) if v.size else math.nan,
                "std": float(np.std(v, ddof=1)) if v.size >= 2 else math.nan,
                "n": int(v.size),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=[by, "metric", "mean", "std", "n"])


# =================================================================================================
# Paired comparisons
# =================================================================================================
@dataclass(frozen=True)
class Pairing:
    """Runs of a variant and of the baseline matched by key (seed, or seed and fold)."""

    paired: tuple  # keys present for both, sorted
    variant_only: tuple
    baseline_only: tuple

    def describe_unpaired(self, variant: str, baseline: str) -> str:
        parts = []
        if self.variant_only:
            parts.append(f"{variant} only: {format_keys(self.variant_only)}")
        if self.baseline_only:
            parts.append(f"{baseline} only: {format_keys(self.baseline_only)}")
        return "; ".join(parts)


def format_keys(keys: Sequence) -> str:
    """``(42, None)`` -> ``seed 42``; ``(42, 1)`` -> ``seed 42 fold 1``; comma-separated."""
    out = []
    for key in keys:
        seed, fold = key if isinstance(key, tuple) else (key, None)
        out.append(f"seed {seed}" + (f" fold {fold}" if fold is not None else ""))
    return ", ".join(out)


def pair_by_key(variant_keys: Sequence, baseline_keys: Sequence) -> Pairing:
    """Match runs by key (seed number, with fold when there is one); each key must occur once per side."""
    for side, keys in (("variant", variant_keys), ("baseline", baseline_keys)):
        if len(set(keys)) != len(list(keys)):
            raise ReportError(f"{side} has several runs with the same seed: {format_keys(sorted(keys, key=str))}")
    v, b = set(variant_keys), set(baseline_keys)
    order = _key_order
    return Pairing(tuple(sorted(v & b, key=order)), tuple(sorted(v - b, key=order)), tuple(sorted(b - v, key=order)))


def _key_order(key) -> tuple:
    seed, fold = key if isinstance(key, tuple) else (key, None)
    return (seed, -1 if fold is None else fold)


@dataclass(frozen=True)
class TestResult:
    """One p-value (or why there is none)."""

    __test__ = False

    name: str
    statistic: float
    p: float
    note: str = ""
    n: int = 0


def paired_t_test(variant: np.ndarray, baseline: np.ndarray) -> TestResult:
    """Two-sided paired t-test (``scipy.stats.ttest_rel``) of per-seed values; not computed for fewer than 2
    pairs or when the differences have no spread (all equal, e.g. all zero)."""
    v, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    name = "paired t-test (two-sided)"
    d = v - b
    if d.size < 2:
        return TestResult(name, math.nan, math.nan, f"not computed: {d.size} pair(s), needs >= 2", int(d.size))
    if np.allclose(d, d[0], rtol=0.0, atol=1e-12):
        why = "all differences are zero" if abs(d[0]) <= 1e-12 else "all differences are equal (no spread)"
        return TestResult(name, math.nan, math.nan, f"not computed: {why}", int(d.size))
    res = _sps.ttest_rel(v, b)
    return TestResult(name, float(res.statistic), float(res.pvalue), "", int(d.size))


#: Above this many non-zero differences the exact Wilcoxon distribution is not enumerated.
EXACT_WILCOXON_MAX_N = 20


def wilcoxon_exact(differences: np.ndarray) -> TestResult:
    """Two-sided Wilcoxon signed-rank test, exact null distribution.

    Zero differences are dropped (Wilcoxon's convention); with ties among the remaining absolute differences
    the exact permutation distribution of the mid-rank statistic is enumerated (scipy's ``exact`` method
    assumes no ties). Not computed for fewer than 2 non-zero differences, nor above
    :data:`EXACT_WILCOXON_MAX_N`. ``statistic`` is the smaller of the positive and negative rank sums.
    """
    name = "Wilcoxon signed-rank (exact, two-sided)"
    d = np.round(np.asarray(differences, dtype=float), 12)  # float noise must not break ties
    nonzero = d[d != 0]
    dropped = d.size - nonzero.size
    tail = f"; {dropped} zero difference(s) dropped" if dropped else ""
    if nonzero.size < 2:
        return TestResult(name, math.nan, math.nan, f"not computed: {nonzero.size} non-zero difference(s){tail}",
                          int(nonzero.size))
    if nonzero.size > EXACT_WILCOXON_MAX_N:
        return TestResult(name, math.nan, math.nan, f"not computed: {nonzero.size} pairs, exact test enumerates "
                          f"at most {EXACT_WILCOXON_MAX_N}", int(nonzero.size))
    ties = np.unique(np.abs(nonzero)).size < nonzero.size
    if ties:
        res = _sps.wilcoxon(nonzero, method=_sps.PermutationMethod(n_resamples=np.inf))
        tail += "; ties: exact permutation distribution of mid-ranks"
    else:
        res = _sps.wilcoxon(nonzero, method="exact")
    return TestResult(name, float(res.statistic), float(res.pvalue), tail.lstrip("; "), int(nonzero.size))


def format_p(p: float | None) -> str:
    """The one format of a p-value in every report (tables, notes): three significant digits
    (``0.0625``, ``0.827``, ``1.00``), ``<0.001`` below 0.001, and ``n/c`` (not computed) for a missing one."""
    if p is None or not math.isfinite(float(p)):
        return NOT_COMPUTED
    return "<0.001" if p < 0.001 else f"{float(p):#.3g}"


def min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided p-value the exact signed-rank test can give with ``n`` non-zero differences."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (family = the finite entries; NaNs stay NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    if idx.size == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


COMPARISON_COLUMNS = (
    "variant", "baseline", "metric", "n_pairs", "seeds", "pair_keys", "diffs", "unpaired", "mean_diff", "sd_diff", "ci_low",
    "ci_high", "confidence", "n_boot", "n_boot_dropped", "t_stat", "t_p", "t_p_holm", "t_note",
    "wilcoxon_stat", "wilcoxon_p", "wilcoxon_n", "wilcoxon_note",
)  # fmt: skip


def compare_to_baseline(
    test_set: TestSet,
    preds: np.ndarray,
    runs: pd.DataFrame,
    metrics: Sequence[str],
    baseline: str = "ast",
    *,
    point: pd.DataFrame | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired comparison of every variant with ``baseline`` on each metric.

    Args:
        test_set: the shared test cycles (clusters = patients).
        preds: predicted class ids ``[R, N]``.
        runs: one row per run (aligned with ``preds``) with columns ``variant``, ``seed`` and optionally
            ``fold``; runs are paired by ``(seed, fold)``.
        metrics: metric keys to compare.
        point: :func:`run_metrics` of ``preds`` (computed when omitted).
        n_boot: bootstrap replicates; confidence: interval level; seed: bootstrap RNG seed.

    Returns:
        One row per (variant, metric) with :data:`COMPARISON_COLUMNS` (fractions; ``seeds`` and
        ``unpaired`` are text; ``pair_keys`` the paired ``(seed, fold)`` keys and ``diffs`` the per-seed
        differences variant - baseline, in that order). ``mean_diff`` is the mean over paired seeds of variant - baseline;
        ``ci_low``/``ci_high`` the percentile interval of that mean under a paired patient-level bootstrap;
        ``n_boot_dropped`` the replicates in which the metric was undefined; ``t_p`` the paired t-test,
        ``t_p_holm`` its Holm adjustment over all rows; ``wilcoxon_p`` the exact signed-rank test.
    """
    if not 0.0 < confidence < 1.0:
        raise ReportError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ReportError(f"the number of bootstrap replicates must be >= 1, got {n_boot}")
    metrics = list(metrics)
    preds = np.asarray(preds)
    if len(runs) != preds.shape[0]:
        raise ValueError(f"{len(runs)} run rows for {preds.shape[0]} prediction rows")
    point = run_metrics(test_set, preds) if point is None else point
    missing = [m for m in metrics if m not in point.columns]
    if missing:
        raise ReportError(f"metric(s) not defined on this test set: {', '.join(missing)}")
    check_against_engine(test_set, preds, metrics, point)

    variants = list(dict.fromkeys(runs["variant"]))
    if baseline not in variants:
        raise ReportError(f"baseline {baseline!r} has no runs (variants: {', '.join(variants)})")
    folds = runs["fold"] if "fold" in runs else pd.Series([None] * len(runs), index=runs.index)
    keys = [(int(s), None if pd.isna(f) else int(f)) for s, f in zip(runs["seed"], folds, strict=True)]
    rows_of = {v: [i for i, rv in enumerate(runs["variant"]) if rv == v] for v in variants}

    rng = np.random.default_rng(seed)
    weights = draws_to_weights(cluster_draws(test_set.n_clusters, n_boot, rng), test_set.n_clusters)
    boot = metric_replicates(test_set, preds, metrics, weights)  # [B, R, M]

    out = []
    base_rows = rows_of[baseline]
    base_by_key = {keys[i]: i for i in base_rows}
    for variant in variants:
        if variant == baseline:
            continue
        var_by_key = {keys[i]: i for i in rows_of[variant]}
        pairing = pair_by_key([keys[i] for i in rows_of[variant]], [keys[i] for i in base_rows])
        iv = np.array([var_by_key[k] for k in pairing.paired], dtype=int)
        ib = np.array([base_by_key[k] for k in pairing.paired], dtype=int)
        for m, key in enumerate(metrics):
            vv, bb = point[key].to_numpy(dtype=float)[iv], point[key].to_numpy(dtype=float)[ib]
            d = vv - bb
            row = {
                "variant": variant, "baseline": baseline, "metric": key, "n_pairs": int(iv.size),
                "seeds": format_keys(pairing.paired), "pair_keys": pairing.paired, "diffs": tuple(d.tolist()),
                "unpaired": pairing.describe_unpaired(variant, baseline),
                "mean_diff": float(np.mean(d)) if d.size else math.nan,
                "sd_diff": float(np.std(d, ddof=1)) if d.size >= 2 else math.nan,
                "confidence": confidence, "n_boot": int(n_boot),
            }  # fmt: skip
            if iv.size:
                rep = np.mean(boot[:, iv, m] - boot[:, ib, m], axis=1)  # [B]
                row["n_boot_dropped"] = int(np.sum(~np.isfinite(rep)))
                row["ci_low"], row["ci_high"] = percentile_interval(rep, confidence)
            else:
                row.update(n_boot_dropped=int(n_boot), ci_low=math.nan, ci_high=math.nan)
            t = paired_t_test(vv, bb)
            w = wilcoxon_exact(d)
            row.update(t_stat=t.statistic, t_p=t.p, t_note=t.note, wilcoxon_stat=w.statistic, wilcoxon_p=w.p,
                       wilcoxon_n=w.n, wilcoxon_note=w.note)
            out.append(row)
    frame = pd.DataFrame(out, columns=[c for c in COMPARISON_COLUMNS if c != "t_p_holm"])
    frame.insert(frame.columns.get_loc("t_p") + 1, "t_p_holm", holm(frame["t_p"].to_numpy(dtype=float)))
    return frame


__all__ = [
    "BASE_METRICS",
    "COMPARISON_COLUMNS",
    "GROUP_METRICS",
    "METRIC_LABELS",
    "NOT_COMPUTED",
    "Pairing",
    "ReportError",
    "TestResult",
    "TestSet",
    "check_against_engine",
    "cluster_draws",
    "compare_to_baseline",
    "draws_to_weights",
    "format_keys",
    "format_p",
    "holm",
    "metric_replicates",
    "min_wilcoxon_p",
    "pair_by_key",
    "paired_t_test",
    "parse_metric",
    "percentile_interval",
    "point_metrics",
    "run_metrics",
    "summarise",
    "wilcoxon_exact",
]
