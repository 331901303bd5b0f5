"""``python -m ls.report``: compare variants over seeds, with uncertainty.

>>> runs, notes = load_runs("studies/icbhi")                    # or load_mlflow_runs(uri, experiment)
>>> report = build_report(runs, Settings(baseline="ast"), notes=notes)
>>> write_report(report, "report/")                             # report.md/.tex, CSVs, scores.png/.pdf

:mod:`ls.report.stats` holds the statistics (pure functions), :mod:`ls.report.runs` the loading,
:mod:`ls.report.build` the assembly and :mod:`ls.report.render` the tables and figure.
"""

from ls.report.build import Report, Section, Settings, build_report
from ls.report.render import markdown_report, scores_figure, write_report
from ls.report.runs import Run, load_mlflow_runs, load_runs
from ls.report.stats import ReportError

__all__ = [
    "Report",
    "ReportError",
    "Run",
    "Section",
    "Settings",
    "build_report",
    "load_mlflow_runs",
    "load_runs",
    "markdown_report",
    "scores_figure",
    "write_report",
]
