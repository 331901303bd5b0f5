"""The report of a search, ``<tune folder>/report/``, built from the study in its storage alone (so
``--report-only`` rebuilds it at any time, also while other workers still run trials):

- ``trials.csv`` / ``trials.md``: one row per trial (state, validation value, epochs, seconds, parameters, run
  folder, why it failed or stopped);
- ``importances.csv``: each parameter's share of the variance of the validation value (Optuna's fANOVA, seed 0);
- figures, PNG + PDF, in the project's style: the optimisation history, parallel coordinates, slices,
  importances and the per-epoch values of every trial (what the pruner judged);
- ``report.md``: all of it on one page, with the best trial.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from ls.tune.config import BEST_CONFIG, Search, StorageSpec
from ls.tune.space import label, short_names
from ls.tune.trials import ERROR_ATTR, EXCESS_ATTR, FOLDER_ATTR, VARIANT_PARAM, retried_from
from ls.utils.io import atomic_write_text

#: Seed of the fANOVA random forest (the importances are reproducible).
IMPORTANCE_SEED = 0


def trials_frame(search: Search, study: optuna.Study) -> pd.DataFrame:
    """One row per trial that ran or runs (not those asked for after ``n_trials`` was reached)."""
    keys = ([VARIANT_PARAM] if len(search.variants) > 1 else []) + [p.key for p in search.params]
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(EXCESS_ATTR):
            continue
        origin = retried_from(t)
        notes = [f"retry of trial {origin}"] if origin is not None else []
        if t.user_attrs.get(ERROR_ATTR):
            notes.append(str(t.user_attrs[ERROR_ATTR]))
        if t.state == TrialState.PRUNED and t.last_step is not None:
            notes.append(f"pruned after epoch {t.last_step}")
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete is not None and t.datetime_start is not None else math.nan
        rows.append({"trial": t.number, "state": t.state.name, search.metric: t.value,
                     "epochs": t.last_step, "seconds": round(seconds, 1),
                     **{k: t.params.get(k) for k in keys}, "folder": t.user_attrs.get(FOLDER_ATTR),
                     "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=["trial", "state", search.metric, "epochs", "seconds", *keys, "folder", "note"])


def importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """fANOVA importances of the parameters over the complete trials, and a note when there are none yet."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}, f"importances need at least 2 complete trials ({len(complete)} so far)"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), ""
    except (ValueError, RuntimeError) as exc:  # e.g. no parameter took two values among the complete trials
        return {}, f"no importances: {exc}"


@contextlib.contextmanager
def _project_style() -> Iterator[None]:
    """The project's figure style for Optuna's matplotlib figures, which switch the global style to ggplot
    (``plt.style.use``) when they draw: that switch is skipped while they draw here."""
    import matplotlib.pyplot as plt

    from ls.viz.style import paper_style

    use = plt.style.use
    plt.style.use = lambda *args, **kwargs: None
    try:
        with paper_style():
            yield
    finally:
        plt.style.use = use


def _figure_of(axes: Any) -> Any:
    import numpy as np

    return np.ravel(axes)[0].figure if isinstance(axes, np.ndarray) else axes.figure


def draw_figures(search: Search, study: optuna.Study, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Optuna's matplotlib figures of the study, saved as PNG and PDF; each that cannot be drawn yet (too few
    trials) is a note instead."""
    import numpy as np

    from ls.viz.style import TEXT_WIDTH, save_figure

    vis = optuna.visualization.matplotlib
    names = short_names([VARIANT_PARAM, *(p.key for p in search.params)])
    target = f"validation {search.metric}"
    n_params = len(search.params) + (len(search.variants) > 1)

    # Optuna names parameters by their keys, cut to 17 characters + "..." where longer than 19.
    names.update({_truncated(k): v for k, v in names.items()
                  if sum(_truncated(o) == _truncated(k) for o in names) == 1})

    def relabel(axes: Any, integer_x: bool) -> None:
        from matplotlib.ticker import MaxNLocator, NullFormatter

        for ax in np.ravel(axes):
            ax.set_xlabel(names.get(ax.get_xlabel(), ax.get_xlabel()))
            for axis in (ax.xaxis, ax.yaxis):
                old = [t.get_text() for t in axis.get_ticklabels()]
                new = [names.get(t, t[1:-1] if len(t) > 1 and t[0] == t[-1] == "'" else t) for t in old]
                if new != old:  # parameter names and quoted choices (slices write a choice's repr)
                    axis.set_ticks(axis.get_ticklocs(), new)
            if ax.get_xscale() == "log":  # minor tick labels of a short log range run into each other
                ax.xaxis.set_minor_formatter(NullFormatter())
            if integer_x:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    def parallel() -> Any:
        ax = vis.plot_parallel_coordinate(study, target_name=target)
        # Its axes are the target, then the parameters of the complete trials in sorted order; long names come
        # cut to 17 characters, which does not tell models.<v>.a from models.<v>.b: short names instead.
        shown = sorted({k for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) for k in t.params})
        if len(ax.get_xticks()) == len(shown) + 1:
            ax.set_xticks(ax.get_xticks(), [target, *(names.get(k, k) for k in shown)], rotation=20, ha="right")
        return ax

    def intermediate() -> Any:
        ax = vis.plot_intermediate_values(study)
        ax.set_xlabel("epoch")
        ax.set_ylabel(target)
        return ax

    figures: list[tuple[str, Callable[[], Any], float]] = [
        ("optimization_history", lambda: vis.plot_optimization_history(study, target_name=target), 2.8),
        ("parallel_coordinate", parallel, 3.0),
        ("slice", lambda: vis.plot_slice(study, target_name=target), 2.6),
        ("param_importances", lambda: vis.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED), target_name=target),
         0.9 + 0.35 * n_params),
        ("intermediate_values", intermediate, 2.8),
    ]
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    paths, notes = [], []
    for name, draw, height in figures:
        if complete < (2 if name == "param_importances" else 1):
            notes.append(f"{name}: needs {'2 complete trials' if name == 'param_importances' else 'a complete trial'}")
            continue
        try:
            with _project_style(), warnings.catch_warnings():
                # a parameter with one value so far gets a flat axis, which matplotlib widens with a warning
                warnings.filterwarnings("ignore", message="Attempting to set identical")
                axes = draw()
                relabel(axes, integer_x=name in ("optimization_history", "intermediate_values"))
                fig = _figure_of(axes)
                fig.set_size_inches(TEXT_WIDTH, height)
                paths += save_figure(fig, out_dir, name)
        except (ValueError, RuntimeError) as exc:
            notes.append(f"{name}: {exc}")
    return paths, notes


def _truncated(name: str) -> str:
    return name if len(name) < 20 else f"{name[:17]}..."


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown(frame: pd.DataFrame, names: dict[str, str] | None = None) -> str:
    from ls.report.render import markdown_table

    header = [(names or {}).get(c, c) for c in frame.columns]
    return markdown_table((header, [[_cell(v) for v in row] for row in frame.itertuples(index=False)]))


def report_text(search: Search, study: optuna.Study, storage: StorageSpec, frame: pd.DataFrame,
                weights: dict[str, float], weights_note: str, figures: list[Path], figure_notes: list[str],
                best_config: Path | None) -> str:
    from ls.tune.best import trial_values

    s = search.settings
    states = frame["state"].value_counts().to_dict()
    counts = ", ".join(f"{states.get(k, 0)} {word}" for k, word in (("COMPLETE", "complete"), ("PRUNED", "pruned"),
                                                                     ("FAIL", "failed")))
    waiting = states.get("RUNNING", 0) + states.get("WAITING", 0)
    lines = [
        f"# Search {search.name}",
        "",
        (f"Validation {search.metric} ({search.direction}) of {len(frame)} trial(s) of {s.n_trials}: {counts}"
         + (f", {waiting} running or queued" if waiting else "") + "."),
        (f"Variants: {', '.join(search.variants)}. Sampler: {s.sampler.type} (seed {s.seed}); pruner: "
         f"{s.pruner.type}. Storage: `{storage.safe}`. Tune file: `{search.source}`."),
        "No trial read the test split: epochs were selected on the validation split, and no trial was tested.",
        "",
        "## Best trial",
        "",
    ]
    try:
        best: FrozenTrial | None = study.best_trial
    except ValueError:
        best = None
    if best is None:
        lines.append("No complete trial yet.")
    else:
        variant, values = trial_values(search, best.params)
        rows = [("variant", variant, ", ".join(search.variants))] if len(search.variants) > 1 else []
        rows += [(p.key, _cell(v) if p.kind != "choice" else str(label(v)), p.describe()) for p, v in values.items()]
        from ls.report.render import markdown_table

        lines += [(f"Trial {best.number}: validation {search.metric} **{best.value:.4f}**, run folder "
                   f"`{best.user_attrs.get(FOLDER_ATTR, '?')}`."), "",
                  markdown_table((["parameter", "value", "searched"], [list(r) for r in rows])), ""]
        if best_config is not None:
            lines.append(f"`{BEST_CONFIG}` holds its configuration. Its test score is not known yet: "
                         f"`python -m ls.tune {search.source} --then-study 0 1 2` trains it over seeds and tests "
                         "each run once.")
    lines += ["", "## Parameter importances (fANOVA)", ""]
    if weights:
        from ls.report.render import markdown_table

        lines.append(markdown_table((["parameter", "importance"],
                                     [[k, f"{v:.3f}"] for k, v in weights.items()])))
    else:
        lines.append(weights_note)
    lines += ["", "## Figures", ""]
    lines += [f"![{p.stem.replace('_', ' ')}]({p.name})" for p in figures if p.suffix == ".png"]
    lines += [f"- {note}" for note in figure_notes]
    names = short_names([VARIANT_PARAM, *(p.key for p in search.params)])
    lines += ["", "## Trials", "", _markdown(frame, names), ""]
    return "\n".join(lines)


def write_report(search: Search, study: optuna.Study, storage: StorageSpec,
                 best_config: Path | None = None) -> list[Path]:
    """Write ``<tune folder>/report/``; returns the files written."""
    out = search.report_dir
    out.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(search, study)
    paths = [out / "trials.csv", out / "trials.md", out / "importances.csv"]
    atomic_write_text(paths[0], frame.to_csv(index=False))
    atomic_write_text(paths[1], _markdown(frame) + "\n")
    weights, weights_note = importances(study)
    atomic_write_text(paths[2], pd.DataFrame({"parameter": list(weights), "importance": list(weights.values())})
                      .to_csv(index=False))
    figures, figure_notes = draw_figures(search, study, out)
    text = report_text(search, study, storage, frame, weights, weights_note, figures, figure_notes, best_config)
    atomic_write_text(out / "report.md", text)
    return [*paths, *figures, out / "report.md"]


def write_outputs(search: Search, study: optuna.Study, storage: StorageSpec,
                  say: Callable[[str], None] = print) -> tuple[Path | None, list[Path]]:
    """``best_config.yaml`` (once a trial is complete) and the report."""
    from ls.tune.best import write_best_config

    best_config = write_best_config(search, study)
    paths = write_report(search, study, storage, best_config)
    say(f"[tune] report: {search.report_dir / 'report.md'}")
    if best_config is not None:
        best = study.best_trial
        say(f"[tune] best: trial {best.number}, validation {search.metric} {best.value:.4f}; {best_config}")
    return best_config, paths


__all__ = ["draw_figures", "importances", "report_text", "trials_frame", "write_outputs", "write_report"]
