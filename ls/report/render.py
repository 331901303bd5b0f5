"""Rendering a :class:`~ls.report.build.Report`: Markdown, LaTeX (booktabs) and CSV tables, the scores figure,
and writing them all (atomically) into one folder.

Values are fractions in the report objects; everything rendered here is in percent (metrics) or percent
points (differences), with two decimals in tables and full precision in the CSV files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ls.report.build import FEW_PATIENTS, Report, Section, Settings
from ls.report.protocol import card_rows
from ls.report.stats import BASE_METRICS, METRIC_LABELS, NOT_COMPUTED, format_keys, format_p
from ls.utils.io import atomic_write_text
from ls.viz.style import category_colors, figure, paper_style, save_figure

#: Colours for the variants, the first four colour-blind-safe (Okabe & Ito), every one at least 3:1 against
#: white (``ls.viz.style.MIN_CONTRAST``); the baseline is dark grey.
VARIANT_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#B8860B", "#0A9396", "#8C564B", "#9467BD")
BASELINE_COLOR = "#4d4d4d"

Table = tuple[list[str], list[list[str]]]


# =================================================================================================
# Cell formatting
# =================================================================================================
def metric_label(key: str) -> str:
    """``icbhi_score`` -> ``Score``; ``device/Meditron/icbhi_score`` -> ``Score (device Meditron)``."""
    if "/" not in key:
        return METRIC_LABELS.get(key, key)
    factor, rest = key.split("/", 1)
    value, base = rest.rsplit("/", 1)
    return f"{METRIC_LABELS.get(base, base)} ({factor} {value})"


def _finite(x: float | None) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and not pd.isna(x)


def fmt_pct(x: float | None, digits: int = 2, sign: bool = False) -> str:
    """A fraction as percent (``0.61234`` -> ``61.23``); ``n/a`` when undefined."""
    if not _finite(x):
        return "n/a"
    return f"{100.0 * float(x):+.{digits}f}" if sign else f"{100.0 * float(x):.{digits}f}"


def fmt_mean_sd(mean: float, std: float, n: int, digits: int = 2) -> str:
    """``61.23 ± 1.05 (n=5)`` (percent); the SD is ``n/a`` for a single run."""
    if not n:
        return "n/a (n=0)"
    return f"{fmt_pct(mean, digits)} ± {fmt_pct(std, digits)} (n={n})"


def fmt_p(p: float | None) -> str:
    """A p-value as every part of the report writes it (:func:`ls.report.stats.format_p`)."""
    return format_p(p if _finite(p) else None)


# =================================================================================================
# Tables (header + rows of text cells), shared by Markdown and LaTeX
# =================================================================================================
def _summary_row(section: Section, variant: str, metric: str) -> pd.Series | None:
    s = section.summary
    row = s[(s["variant"] == variant) & (s["metric"] == metric)]
    return None if row.empty else row.iloc[0]


def runs_per_variant(section: Section) -> dict[str, int]:
    """How many runs each variant has in the section."""
    return {v: int((section.runs["variant"] == v).sum()) for v in section.variants}


def _summary_cell(section: Section, variant: str, metric: str, compact: bool = False) -> str:
    r = _summary_row(section, variant, metric)
    if r is None:
        return "n/a (n=0)"
    cell = fmt_mean_sd(r["mean"], r["std"], int(r["n"]))
    if compact and int(r["n"]) == runs_per_variant(section)[variant]:
        return cell.rsplit(" (n=", 1)[0]  # n is every run of the variant: the table's note says how many
    return cell


def summary_table(section: Section, compact: bool = False) -> Table:
    """Variant x whole-test-set metric, ``mean ± SD (n=runs)`` in percent. ``compact`` (LaTeX, where width
    counts) leaves ``(n=...)`` out where it is every run of the variant (:func:`compact_note` says so)."""
    metrics = [m for m in BASE_METRICS if m in section.metrics]
    header = ["Variant", *[METRIC_LABELS[m] for m in metrics]]
    rows = [[section.display_names[v], *[_summary_cell(section, v, m, compact) for m in metrics]]
            for v in section.variants]
    return header, rows


def factor_table(section: Section, factor: str, compact: bool = False) -> Table:
    """Variant x value of ``factor``: ICBHI Score ``mean ± SD (n=runs)`` in percent; every value of the test
    set has a column, ``n/a`` where the Score is undefined (:func:`factor_table_note` says why). ``compact``:
    as in :func:`summary_table`."""
    values = section.factor_values(factor)
    header = ["Variant", *[v for v, _, _ in values]]
    rows = [[section.display_names[v],
             *[_summary_cell(section, v, key, compact) if key else "n/a" for _, key, _ in values]]
            for v in section.variants]
    return header, rows


def compact_note(section: Section) -> str:
    """What a compact table's cells mean, with the runs per variant."""
    counts = runs_per_variant(section)
    if len(set(counts.values())) == 1:
        runs = f"all {next(iter(counts.values()))} runs of each variant"
    else:
        runs = "all runs of the variant (" + ", ".join(f"{section.display_names[v]} {n}" for v, n in counts.items()) + ")"
    return f"Mean ± sample SD over runs (seeds), percent, over {runs}; (n=k): only k runs define the metric."


def factor_table_note(section: Section, factor: str) -> str:
    """Which values of ``factor`` have no Score, and why (empty when every value has one)."""
    missing = [f"{value} ({why})" for value, key, why in section.factor_values(factor) if key is None]
    if not missing:
        return ""
    return f"n/a: no ICBHI Score for {factor} {'; '.join(missing)}."


def comparison_table(section: Section) -> Table:
    """One row per (variant, metric): pairs, mean difference and interval (pp), p-values."""
    conf = _confidence_label(section)
    header = ["Variant", "Metric", "n pairs", "Mean diff (pp)", f"{conf} CI low", f"{conf} CI high",
              "t-test p", "Wilcoxon p", "t-test p (Holm)"]
    rows = []
    for _, r in section.comparison.iterrows():
        rows.append([r["display_name"], metric_label(r["metric"]), str(int(r["n_pairs"])),
                     fmt_pct(r["mean_diff"], sign=True), fmt_pct(r["ci_low"], sign=True),
                     fmt_pct(r["ci_high"], sign=True), fmt_p(r["t_p"]), fmt_p(r["wilcoxon_p"]),
                     fmt_p(r["t_p_holm"])])
    return header, rows


def seed_difference_table(section: Section) -> Table:
    """Per-seed differences variant - baseline (pp) of every compared metric; blank = not paired."""
    keys = sorted({k for ks in section.comparison.get("pair_keys", []) for k in ks},
                  key=lambda k: (k[0], -1 if k[1] is None else k[1]))
    header = ["Variant", "Metric", *[format_keys([k]) for k in keys]]
    rows = []
    for _, r in section.comparison.iterrows():
        by_key = dict(zip(r["pair_keys"], r["diffs"], strict=True))
        rows.append([r["display_name"], metric_label(r["metric"]),
                     *[fmt_pct(by_key[k], sign=True) if k in by_key else "" for k in keys]])
    return header, rows


def protocol_table(section: Section) -> Table:
    """The section's protocol card (:func:`ls.report.protocol.card_rows`): item, text."""
    rows = card_rows(section.protocol, section.display_names)
    return ["Item", "Value"], [[item, text] for item, text in rows]


def composition_table(section: Section) -> Table:
    header = ["Factor", "Value", "Patients", "Cycles", "Normal", "Abnormal"]
    rows = [[str(r.factor), str(r.value), str(r.patients), str(r.cycles), str(r.normal), str(r.abnormal)]
            for r in section.composition.itertuples()]
    return header, rows


def _confidence_label(section: Section | Settings) -> str:
    conf = section.comparison["confidence"].iloc[0] if isinstance(section, Section) and len(section.comparison) \
        else getattr(section, "confidence", 0.95)
    return f"{100 * float(conf):g}%"


# =================================================================================================
# Markdown and LaTeX
# =================================================================================================
def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table, left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns left-aligned (text), the others right-aligned (numbers)."""
    header, rows = table
    align = ["---" if i < left else "--:" for i in range(len(header))]
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "±": r"$\pm$", "\u2212": "$-$", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$", "–": "--", "—": "---",
}  # fmt: skip
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))
# A hyphen that is a minus: the sign of a number ("-1.34", "[-0.5") or between spaced terms ("a - b"); not a
# hyphen inside a word or a range of names ("2-class", "n-1", "test-set").
_MINUS_RE = re.compile(r"(?<![\w)\]])-(?=\.?\d)|(?<= )-(?= )")


def latex_escape(text: str) -> str:
    """Text safe in LaTeX text mode (``_`` -> ``\\_``, ``%`` -> ``\\%``, ``±`` -> ``$\\pm$``, ...), with true
    minus signs: ``-1.34`` -> ``$-$1.34`` (a hyphen would print as a short dash)."""
    escaped = _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], str(text))
    return _MINUS_RE.sub("$-$", escaped)


#: Width of one column of a two-column paper (EUSIPCO/IEEE: 3.39 in), in TeX points.
COLUMN_WIDTH_PT = 3.39 * 72.27
# \small text (9 pt) sets about 4.6 pt per character of these tables; each column adds 2 \tabcolsep = 12 pt.
_PT_PER_CHAR, _PT_PER_COLUMN = 4.6, 12.0


def estimated_width_pt(table: Table) -> float:
    """A table's natural width in TeX points at ``\\small``, estimated from its longest cell per column."""
    header, rows = table
    return sum(_PT_PER_CHAR * max(len(str(c)) for c in column) + _PT_PER_COLUMN for column in zip(header, *rows))


def latex_table(table: Table, caption: str, label: str, note: str = "", notes: Sequence[str] = (),
                left: int | None = None) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs,graphicx}``); every cell escaped. ``note`` and each of
    ``notes`` are small paragraphs below the table; ``left``: how many leading columns hold text (left-aligned;
    default: the first, and a ``Metric`` column after it).

    It fits one- and two-column pages: a table wider than one column of a two-column paper
    (:data:`COLUMN_WIDTH_PT`, estimated) is a ``table*`` (across both columns there, an ordinary table in
    one column), and the tabular shrinks to ``\\linewidth`` where it is still wider (``\\resizebox``; never
    enlarged)."""
    header, rows = table
    if left is None:
        left = 2 if len(header) > 1 and header[1] == "Metric" else 1
    spec = ("l" * left + "r" * len(header))[: len(header)]
    env = "table*" if estimated_width_pt(table) > COLUMN_WIDTH_PT else "table"
    lines = [
        rf"\begin{{{env}}}[tbp]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if note or notes:
        lines.append(r"\par\smallskip")
    # notes read as paragraphs: left-aligned, not centred line by line like the table above them
    lines += [rf"{{\footnotesize\raggedright {latex_escape(text)}\par}}" for text in [note, *notes] if text]
    lines.append(rf"\end{{{env}}}")
    return "\n".join(lines)


def latex_card(rows: Sequence[tuple[str, str]], caption: str, label: str) -> str:
    """Two columns, item and text, the text wrapping to the line width (``tabularx``): fits any page."""
    lines = [
        r"\begin{table}[tbp]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabularx}{\linewidth}{@{}l>{\raggedright\arraybackslash}X@{}}",
        r"\toprule",
    ]
    lines += [f"{latex_escape(item)} & {latex_escape(text)} \\\\" for item, text in rows]
    lines += [r"\bottomrule", r"\end{tabularx}", r"\end{table}"]
    return "\n".join(lines)


def _label(*parts: str) -> str:
    return "tab:" + "-".join(re.sub(r"[^A-Za-z0-9]+", "-", p).strip("-").lower() for p in parts)


def metric_definitions(class_names: Sequence[str] = ()) -> str:
    """Sp, Se and the ICBHI Score (and their 2-class view) in words, for classes ``class_names`` (class 0 the
    normal class; default ICBHI's normal, crackle, wheeze, both)."""
    names = [str(c) for c in class_names] or ["normal", "crackle", "wheeze", "both"]
    normal, abnormal = names[0], names[1:]
    composite = [c for c in abnormal if c.lower() in ("both", "wheeze+crackle", "cas & das")]
    text = (f"Specificity (Sp) is the share of {normal} test cycles predicted {normal}; sensitivity (Se) is the "
            f"share of abnormal test cycles ({', '.join(abnormal)}) predicted as exactly their class")
    if composite:
        text += f", so that a {composite[0]} cycle predicted as only one of its sounds counts as a miss"
    text += "; the ICBHI Score is the mean of Sp and Se."
    if len(abnormal) > 1:
        text += (" The 2-class Sp, Se and Score are the same after merging the abnormal classes into one (a "
                 "2-class hit is an abnormal cycle predicted as any abnormal class).")
    return text


def protocol_definitions(selections: Sequence[str], selection_metric: str | None = None) -> str:
    """The model-selection protocols of ``selections`` (``strict``, ``paper``) in words."""
    metric = f"the validation {selection_metric}" if selection_metric else "the validation selection score"
    out = []
    if "strict" in selections:
        out.append("Under the strict protocol, each run's epoch is selected on "
                   f"{metric}, and the decision thresholds of sigmoid outputs (where the config tunes them) are "
                   "tuned, on a validation split of whole patients held out of the training data; the test set "
                   "takes no part in any choice and is evaluated once, with the selected model.")
    if "paper" in selections:
        out.append("Under the paper protocol, as in the original implementation, the epoch and the thresholds "
                   "are chosen on the test split itself, so its test numbers are optimistic and serve only to "
                   "compare with published results.")
    return " ".join(out)


def methods_text(settings: Settings, sections: Sequence[Section] = ()) -> str:
    """The methods, as one paragraph: the metrics and protocols of ``sections`` in words, the statistics, and a
    warning when a test set has fewer than :data:`ls.report.build.FEW_PATIENTS` patients."""
    conf = f"{100 * settings.confidence:g}%"
    class_names = next((s.class_names for s in sections if s.class_names), ())
    selections = list(dict.fromkeys(s.selection for s in sections))
    metrics = {s.protocol.get("selection_metric") for s in sections} - {None}
    text = [metric_definitions(class_names)]
    protocols = protocol_definitions(selections, next(iter(metrics)) if len(metrics) == 1 else None)
    if protocols:
        text.append(protocols)
    text.append(
        "Metrics are recomputed from each run's per-cycle test predictions with ls.engine.metrics (the whole "
        "test set and each value of each metadata factor). Per variant we report the mean and the sample standard "
        "deviation (n-1) over runs "
        "(seeds), with n. Each variant is compared with the baseline on the seeds both have (paired by seed "
        "number, and fold for k-fold runs; unpaired runs are listed and left out). The difference is the mean "
        f"over paired seeds of (variant - baseline). Its {conf} confidence interval is a percentile interval "
        f"from a paired, patient-level (cluster) bootstrap of the test set: each of {settings.n_boot} "
        "replicates draws the test patients with replacement, keeps all cycles of a drawn patient together, "
        "applies the same draw to every run of both models, recomputes the metric for every seed and averages "
        "the per-seed differences; replicates in which the metric is undefined (no normal or no abnormal "
        f"cycle of its scope drawn) are dropped and counted (RNG seed {settings.seed}). This interval reflects "
        "the sampling of test patients with the trained models held fixed. The p-values reflect the variation "
        "between training seeds with the test set held fixed: the two-sided paired t-test on the per-seed "
        "differences (scipy.stats.ttest_rel) and, as a non-parametric companion, the two-sided Wilcoxon "
        "signed-rank test with its exact null distribution (zero differences dropped; with tied absolute "
        "differences the exact permutation distribution of mid-ranks). Neither test is computed with fewer "
        "than two pairs or when the differences have no spread. 'Holm' adjusts the t-test p-values for the "
        "number of comparisons in the table; intervals are not adjusted. p-values are given to three "
        "significant digits, below 0.001 as <0.001.")
    few = sorted({s.n_patients for s in sections if s.n_patients < FEW_PATIENTS})
    if few:
        text.append(f"Caution: the test set has only {' or '.join(map(str, few))} patients. Below {FEW_PATIENTS} "
                    "test patients a patient-level bootstrap interval covers less than its nominal level (there "
                    "are too few patients to resample), and a single patient's cycles move every metric by "
                    "points; these differences call for a larger test set or patient folds.")
    return " ".join(text)


def _comparison_note(section: Section, settings: Settings) -> str:
    return (f"Differences {('to ' + section.display_names[section.baseline]) if section.baseline else ''} in "
            f"percent points, mean over paired seeds. CI: {100 * settings.confidence:g}% percentile interval, "
            f"paired patient-level bootstrap ({settings.n_boot} replicates). p: two-sided paired t-test; "
            f"exact Wilcoxon signed-rank; Holm-adjusted t-test. {NOT_COMPUTED} = not computed.")


def _section_heading(section: Section) -> str:
    n = len(section.runs)
    return (f"Selection `{section.selection}`: {n} run{'' if n == 1 else 's'}, test set of {section.n_cycles} cycles "
            f"from {section.n_patients} patients")


def _runs_line(section: Section) -> str:
    parts = []
    for v in section.variants:
        rows = section.runs[section.runs["variant"] == v]
        keys = [(int(s), None if pd.isna(f) else int(f)) for s, f in zip(rows["seed"], rows["fold"], strict=True)]
        parts.append(f"{section.display_names[v]} (`{v}`): {format_keys(keys)}")
    return "; ".join(parts)


def markdown_report(report: Report) -> str:
    """The whole report as Markdown."""
    s = report.settings
    out = ["# Variant comparison over seeds", ""]
    if report.source:
        out.append(f"Runs from {report.source}.")
    out.append(f"Baseline `{s.baseline}`; compared metric(s): {', '.join(metric_label(m) for m in s.metrics)}; "
               f"{s.n_boot} patient-level bootstrap replicates (seed {s.seed}), {100 * s.confidence:g}% "
               f"percentile intervals. Metrics in percent, differences in percent points (pp).")
    out.append("")
    for section in report.sections:
        out += [f"## {_section_heading(section)}", "", f"Runs: {_runs_line(section)}.", ""]
        out += ["### Protocol", "", markdown_table(protocol_table(section), left=2), ""]
        out += ["### Test metrics (mean ± SD over seeds, %)", "", markdown_table(summary_table(section)), ""]
        for factor in section.factors:
            out += [f"### ICBHI Score per {factor} (mean ± SD over seeds, %)", "",
                    markdown_table(factor_table(section, factor)), ""]
            note = factor_table_note(section, factor)
            out += [note, ""] if note else []
        if section.baseline is not None and len(section.comparison):
            base = section.display_names[section.baseline]
            out += [f"### Paired differences to {base} (variant - baseline, pp)", "",
                    markdown_table(comparison_table(section)), "", _comparison_note(section, s), ""]
            out += [f"### Per-seed differences to {base} (pp)", "", markdown_table(seed_difference_table(section)),
                    ""]
        out += ["### Test set composition", "", markdown_table(composition_table(section), left=2), ""]
        if section.notes:
            out += ["### Notes", "", *[f"- {n}" for n in section.notes], ""]
    if report.notes:
        out += ["## Loading notes", "", *[f"- {n}" for n in report.notes], ""]
    out += ["## Methods", "", methods_text(s, report.sections), ""]
    return "\n".join(out)


def latex_report(report: Report) -> str:
    """The report's tables as booktabs LaTeX (``\\input`` it; needs ``\\usepackage{booktabs,graphicx,tabularx}``;
    every table fits a one- and a two-column page, :func:`latex_table`): per selection the protocol card, the
    test metrics, the Score per factor value, the paired differences with the section's notes below them
    (without a comparison: below the test metrics), the per-seed differences and the test-set composition;
    the loading notes and the methods paragraph as comments."""
    s = report.settings
    out = ["% Generated by python -m ls.report; requires \\usepackage{booktabs,graphicx,tabularx}.", ""]
    for section in report.sections:
        sel = section.selection
        out += [latex_card(protocol_table(section)[1], f"Protocol ({sel} selection).", _label("protocol", sel)), ""]
        compared = section.baseline is not None and len(section.comparison)
        # the notes qualify the numbers (e.g. an interval that understates the uncertainty): they go with the
        # comparison they are about, or with the metrics when nothing is compared
        notes = [f"Note: {n.rstrip('.')}." for n in section.notes]
        out += [latex_table(summary_table(section, compact=True), f"Test metrics over seeds ({sel} selection), "
                            "percent.", _label("summary", sel), compact_note(section), () if compared else notes), ""]
        for factor in section.factors:
            note = factor_table_note(section, factor)
            out += [latex_table(factor_table(section, factor, compact=True),
                                f"ICBHI Score per {factor} over seeds ({sel} selection), percent.",
                                _label(factor, sel), compact_note(section), [note] if note else ()), ""]
        if compared:
            base = section.display_names[section.baseline]
            out += [latex_table(comparison_table(section),
                                f"Paired differences to {base} ({sel} selection), percent points.",
                                _label("comparison", sel), _comparison_note(section, s), notes), ""]
            out += [latex_table(seed_difference_table(section),
                                f"Per-seed differences to {base} ({sel} selection), percent points.",
                                _label("seed-differences", sel), "Variant - baseline on each paired seed; blank: "
                                "not paired."), ""]
        out += [latex_table(composition_table(section), f"Test set composition ({sel} selection).",
                            _label("composition", sel), "Cycles of each factor value and the patients they come "
                            "from; normal and abnormal cycles.", left=2), ""]
    out += ["% Loading note: " + " ".join(n.split()) for n in report.notes]
    out += ["% Methods: " + methods_text(s, report.sections).replace("%", r"\%"), ""]
    return "\n".join(out)


# =================================================================================================
# CSV
# =================================================================================================
def summary_frame(report: Report) -> pd.DataFrame:
    """Long table: selection, variant, display_name, metric, label, mean, std (percent), n, unit."""
    frames = []
    for section in report.sections:
        f = section.summary.copy()
        f.insert(0, "selection", section.selection)
        f.insert(4, "label", f["metric"].map(metric_label))
        f["mean"] = 100.0 * f["mean"]
        f["std"] = 100.0 * f["std"]
        f["unit"] = "%"
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def comparison_frame(report: Report) -> pd.DataFrame:
    """One row per (selection, variant, metric); differences and interval in percent points."""
    frames = []
    for section in report.sections:
        c = section.comparison
        if c.empty:
            continue
        f = pd.DataFrame({
            "selection": section.selection,
            "variant": c["variant"],
            "display_name": c["display_name"],
            "baseline": c["baseline"],
            "metric": c["metric"],
            "label": c["metric"].map(metric_label),
            "n_pairs": c["n_pairs"],
            "seeds": c["seeds"],
            "per_seed_diff": [";".join(f"{100 * d:.6g}" for d in ds) for ds in c["diffs"]],
            "unpaired": c["unpaired"],
            "mean_diff": 100.0 * c["mean_diff"],
            "sd_diff": 100.0 * c["sd_diff"],
            "ci_low": 100.0 * c["ci_low"],
            "ci_high": 100.0 * c["ci_high"],
            "unit": "pp",
            "confidence": c["confidence"],
            "ci_method": "percentile, paired patient-level bootstrap",
            "n_boot": c["n_boot"],
            "n_boot_dropped": c["n_boot_dropped"],
            "t_stat": c["t_stat"],
            "t_p": c["t_p"],
            "t_p_holm": c["t_p_holm"],
            "t_test": "paired t-test, two-sided",
            "t_note": c["t_note"],
            "wilcoxon_stat": c["wilcoxon_stat"],
            "wilcoxon_p": c["wilcoxon_p"],
            "wilcoxon_n": c["wilcoxon_n"],
            "wilcoxon_test": "Wilcoxon signed-rank, exact, two-sided",
            "wilcoxon_note": c["wilcoxon_note"],
        })  # fmt: skip
        frames.append(f)
    if not frames:
        return pd.DataFrame(columns=["selection", "variant", "display_name", "baseline", "metric"])
    return pd.concat(frames, ignore_index=True)


def runs_frame(report: Report) -> pd.DataFrame:
    """One row per run with every recomputed metric in percent."""
    frames = []
    for section in report.sections:
        f = section.runs.copy()
        f.insert(0, "selection", section.selection)
        f[section.metrics] = 100.0 * f[section.metrics]
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


# =================================================================================================
# Figure
# =================================================================================================
def variant_colors(variants: Sequence[str], baseline: str | None) -> dict[str, str]:
    """A fixed colour per variant name (stable across figures); the baseline is dark grey."""
    colors = category_colors([v for v in variants if v != baseline], VARIANT_PALETTE)
    if baseline is not None:
        colors[baseline] = BASELINE_COLOR
    return colors


def _runs_of(section: Section, variant: str, metric: str) -> np.ndarray:
    v = section.runs.loc[section.runs["variant"] == variant, metric].to_numpy(dtype=float)
    return 100.0 * v[np.isfinite(v)]


def _stats_of(section: Section, variant: str, metric: str) -> tuple[float, float]:
    """Mean and SD in percent, those of the tables (``section.summary``); no error bar where the SD is
    undefined (one run)."""
    r = _summary_row(section, variant, metric)
    if r is None:
        return math.nan, 0.0
    std = float(r["std"])
    return 100.0 * float(r["mean"]), 100.0 * std if math.isfinite(std) else 0.0


def scores_figure(section: Section):
    """Whole-test-set metrics per variant (mean ± SD over seeds as marker and error bar, seeds as dots) and
    one panel per factor (bars of the mean ICBHI Score per value per variant, ± SD, seeds as dots).

    Returns the matplotlib ``Figure`` (``1 + len(factors)`` axes, one legend entry per variant, placed
    below the panels, outside every axes).
    """
    factors = [f for f in section.factors if section.factor_metrics(f)]  # a factor without any Score: tables say so
    colors = variant_colors(section.variants, section.baseline)
    n_var = len(section.variants)
    jitter = np.random.default_rng(0)
    with paper_style():
        fig = figure("text", aspect=0.36 * (1 + len(factors)) + 0.08)
        axes = np.atleast_1d(fig.subplots(1 + len(factors), 1))
        # --- panel 1: whole-test-set metrics, dot + whisker (differences of 1-3 points stay visible)
        ax = axes[0]
        metrics = [m for m in BASE_METRICS if m in section.metrics]
        width = 0.8 / n_var
        handles = []
        for i, variant in enumerate(section.variants):
            offset = (i - (n_var - 1) / 2) * width
            x = np.arange(len(metrics)) + offset
            stats = [_stats_of(section, variant, m) for m in metrics]
            h = ax.errorbar(x, [s[0] for s in stats], yerr=[s[1] for s in stats], fmt="o", ms=3.5, capsize=2,
                            lw=0.9, color=colors[variant], label=section.display_names[variant], zorder=3)
            handles.append(h)
            xs, ys = [], []
            for j, m in enumerate(metrics):
                v = _runs_of(section, variant, m)
                xs += list(x[j] + width * 0.28 + jitter.uniform(-0.06, 0.06, v.size) * width)
                ys += list(v)
            ax.scatter(xs, ys, s=5, color=colors[variant], linewidths=0, zorder=2)
        ax.set_xticks(range(len(metrics)), [METRIC_LABELS[m] for m in metrics])
        ax.set_xlim(-0.5, len(metrics) - 0.5)
        ax.set_ylabel("Test metric (%)")
        ax.set_title("Whole test set: mean ± SD over seeds (dots: individual seeds)")
        ax.grid(axis="y", lw=0.3, alpha=0.5)
        # --- one panel per factor: bars of the per-value Score
        for ax, factor in zip(axes[1:], factors, strict=True):
            values = section.factor_values(factor)
            shown = [j for j, (_, key, _) in enumerate(values) if key]
            for i, variant in enumerate(section.variants):
                offset = (i - (n_var - 1) / 2) * width
                x = np.arange(len(values)) + offset
                stats = [_stats_of(section, variant, values[j][1]) for j in shown]
                ax.bar(x[shown], [s[0] for s in stats], width=width * 0.9, yerr=[s[1] for s in stats],
                       color=colors[variant], alpha=0.85, capsize=1.5, error_kw={"lw": 0.7},
                       label=section.display_names[variant])
                xs, ys = [], []
                for j in shown:
                    v = _runs_of(section, variant, values[j][1])
                    xs += list(x[j] + jitter.uniform(-0.15, 0.15, v.size) * width)
                    ys += list(v)
                # white dots with a black rim read on every bar colour, dark grey included
                ax.scatter(xs, ys, s=6, facecolor="white", edgecolor="black", linewidths=0.4, zorder=3)
            for j, (_, key, why) in enumerate(values):
                if not key:  # marked where its bars would be, never left out
                    ax.text(j, 50, "n/a\n" + why.split(",")[0].replace(" in the test set", ""), ha="center",
                            va="center", fontsize=6, color="#4d4d4d")
            labels = [v for v, _, _ in values]
            ax.set_xticks(range(len(values)), labels, rotation=30 if len(values) > 8 else 0,
                          ha="right" if len(values) > 8 else "center")
            ax.set_xlim(-0.5, len(values) - 0.5)
            ax.set_ylim(0, 100)
            ax.set_ylabel("ICBHI Score (%)")
            ax.set_title(f"ICBHI Score per {factor}: mean ± SD over seeds (dots: seeds)")
            ax.grid(axis="y", lw=0.3, alpha=0.5)
        fig.suptitle(f"Test split, {section.selection} selection ({section.n_cycles} cycles, "
                     f"{section.n_patients} patients)")
        fig.legend(handles, [section.display_names[v] for v in section.variants], loc="outside lower center",
                   ncols=min(n_var, 5), frameon=False)
    return fig


#: Marker of the mean difference and its interval, and of the single seeds, in the forest plot.
MEAN_MARKER, SEED_MARKER = "D", "o"


def differences_figure(section: Section):
    """Forest plot of the paired differences to the baseline: one panel per compared metric, one row per
    variant, with the mean over paired seeds (diamond) and its bootstrap interval (whisker), and each
    paired seed's difference (dots, just below), in percent points, around a line at zero. The numbers are
    those of ``section.comparison`` (the comparison table). Returns the matplotlib ``Figure`` (one legend,
    below the panels, outside every axes); raises ``ValueError`` for a section without comparison."""
    from matplotlib.lines import Line2D

    comp = section.comparison
    if section.baseline is None or comp.empty:
        raise ValueError(f"selection {section.selection}: no comparison with a baseline to draw")
    metrics = list(dict.fromkeys(comp["metric"]))
    variants = [v for v in section.variants if v != section.baseline]
    colors = variant_colors(section.variants, section.baseline)
    base = section.display_names[section.baseline]
    conf = _confidence_label(section)
    n_cols = min(len(metrics), 3)
    n_rows = math.ceil(len(metrics) / n_cols)
    with paper_style():
        width = "column" if n_cols == 1 else "text"
        inches = {"column": 3.39, "text": 7.0}[width]
        # per row of panels: title and axis labels, then room per variant; plus the figure title and legend
        height = n_rows * (0.7 + 0.32 * len(variants)) + (1.0 if n_cols == 1 else 0.75)
        fig = figure(width, aspect=height / inches)
        axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False).ravel())
        y = np.arange(len(variants))[::-1].astype(float)  # first variant on top
        for ax, metric in zip(axes, metrics, strict=False):
            rows = comp[comp["metric"] == metric].set_index("variant")
            lows, highs = [0.0], [0.0]
            for v, yv in zip(variants, y, strict=True):
                r = rows.loc[v]
                color = colors[v]
                mean, low, high = (100.0 * float(r[k]) for k in ("mean_diff", "ci_low", "ci_high"))
                diffs = 100.0 * np.asarray(r["diffs"], dtype=float)
                if math.isfinite(mean):
                    xerr = [[mean - low], [high - mean]] if math.isfinite(low) and math.isfinite(high) else None
                    ax.errorbar([mean], [yv], xerr=xerr, fmt=MEAN_MARKER, ms=4.5, capsize=2.5, lw=1.1,
                                color=color, zorder=3)
                    lows += [mean, low if math.isfinite(low) else mean]
                    highs += [mean, high if math.isfinite(high) else mean]
                else:
                    ax.text(0.0, yv, " no paired seeds", va="center", ha="left", fontsize=6, color=color)
                if diffs.size:
                    ax.scatter(diffs, np.full(diffs.size, yv - 0.28), s=9, marker=SEED_MARKER, facecolor="white",
                               edgecolor=color, linewidths=0.8, zorder=2)
                    lows.append(float(diffs.min()))
                    highs.append(float(diffs.max()))
            ax.axvline(0.0, color="black", lw=0.6, zorder=1)
            lo, hi = min(lows), max(highs)
            pad = 0.08 * (hi - lo) if hi > lo else 1.0
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(-0.75, len(variants) - 0.4)
            ax.set_yticks(y, [section.display_names[v] for v in variants])
            ax.set_title(metric_label(metric))
            ax.set_xlabel(f"Difference to {base} (pp)")
            ax.grid(axis="x", lw=0.3, alpha=0.5)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        for k, ax in enumerate(axes[: len(metrics)]):
            if k % n_cols:
                ax.tick_params(labelleft=False)
        narrow = width == "column"  # one column of a paper: title and legend on two lines
        fig.suptitle(f"Paired differences to {base}, {section.selection} selection"
                     + ("\n" if narrow else " ") + f"(test: {section.n_cycles} cycles, {section.n_patients} patients)")
        handles = [Line2D([], [], color="black", marker=MEAN_MARKER, ms=4.5, lw=1.1),
                   Line2D([], [], ls="none", marker=SEED_MARKER, ms=3.5, mfc="white", mec="black", mew=0.8)]
        labels = [f"mean over paired seeds, {conf} interval (patient bootstrap)", "one seed (variant - baseline)"]
        fig.legend(handles, labels, loc="outside lower center", ncols=1 if narrow else 2, frameon=False)
    return fig


# =================================================================================================
# Writing everything
# =================================================================================================
def figure_name(section: Section, report: Report, stem: str = "scores") -> str:
    """``<stem>``, or ``<stem>_<selection>`` when the report has several selections."""
    if len(report.sections) == 1:
        return stem
    return f"{stem}_" + re.sub(r"[^A-Za-z0-9_.-]+", "-", section.selection)


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.tex``, ``summary.csv``, ``comparison.csv``, ``runs.csv``, the scores
    figure(s) and, where a section compares variants with the baseline, the forest plot of the differences
    (``differences``; PNG + PDF) into ``out_dir``, each atomically. Returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("report.md", markdown_report(report)),
        ("report.tex", latex_report(report)),
        ("summary.csv", summary_frame(report).to_csv(index=False)),
        ("comparison.csv", comparison_frame(report).to_csv(index=False)),
        ("runs.csv", runs_frame(report).to_csv(index=False)),
    ):
        atomic_write_text(out / name, text)
        written.append(out / name)
    for section in report.sections:
        written += save_figure(scores_figure(section), out, figure_name(section, report))
        if section.baseline is not None and len(section.comparison):
            written += save_figure(differences_figure(section), out, figure_name(section, report, "differences"))
    return written


__all__ = [
    "METRIC_LABELS",
    "compact_note",
    "comparison_frame",
    "comparison_table",
    "composition_table",
    "differences_figure",
    "factor_table",
    "factor_table_note",
    "fmt_mean_sd",
    "fmt_p",
    "fmt_pct",
    "latex_card",
    "latex_escape",
    "latex_report",
    "latex_table",
    "markdown_report",
    "markdown_table",
    "methods_text",
    "metric_definitions",
    "metric_label",
    "protocol_definitions",
    "protocol_table",
    "runs_frame",
    "scores_figure",
    "seed_difference_table",
    "summary_frame",
    "summary_table",
    "variant_colors",
    "write_report",
]

