"""``python -m ls.report``: compare variants over seeds, with uncertainty.

>>> runs, notes = load_runs("studies/icbhi")                    # or load_mlflow_runs(uri, experiment)
>>> report = build_report(runs, Settings(baseline="ast"), notes=notes)
>>> write_report(report, "report/")     # report.md/.tex, CSVs, scores.png/.pdf, differences.png/.pdf

:mod:`ls.report.stats` holds the statistics (pure functions), :mod:`ls.report.runs` the loading,
:mod:`ls.report.build` the assembly, :mod:`ls.report.render` the tables and figures and
:mod:`ls.report.protocol` the protocol card that training writes into ``run.json``. Exports load on first
use: ``from ls.report.protocol import protocol_card`` imports neither pandas, scipy nor MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ls.utils.lazy import lazy_exports

#: Exported name -> the submodule that defines it.
_EXPORTS = {
    "Report": "build",
    "Section": "build",
    "Settings": "build",
    "build_report": "build",
    "differences_figure": "render",
    "markdown_report": "render",
    "scores_figure": "render",
    "write_report": "render",
    "Run": "runs",
    "load_mlflow_runs": "runs",
    "load_runs": "runs",
    "ReportError": "stats",
    "protocol_card": "protocol",
}

if TYPE_CHECKING:
    from ls.report.build import Report, Section, Settings, build_report
    from ls.report.protocol import protocol_card
    from ls.report.render import differences_figure, markdown_report, scores_figure, write_report
    from ls.report.runs import Run, load_mlflow_runs, load_runs
    from ls.report.stats import ReportError

__all__ = [
    "Report",
    "ReportError",
    "Run",
    "Section",
    "Settings",
    "build_report",
    "differences_figure",
    "load_mlflow_runs",
    "load_runs",
    "markdown_report",
    "protocol_card",
    "scores_figure",
    "write_report",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
