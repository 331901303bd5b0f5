"""Command line: ``python -m ls.report (--runs DIR | --tracking-uri URI --experiment NAME [--parent ID])
[--baseline ast] [--metric icbhi_score ...] [--confidence 0.95] [--bootstrap 2000] [--seed 0]
[--selection strict] --out DIR``.

Writes ``report.md``, ``report.tex``, ``summary.csv``, ``comparison.csv``, ``runs.csv`` and
``scores.png``/``.pdf`` into ``--out`` and prints the Markdown report. Any problem is one ``error:`` line on
stderr and exit code 2 (``--traceback`` prints where it happened too; ``ls.utils.cli``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ls.utils.cli import add_common_options, run_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ls.report",
                                description="Compare variants over seeds with paired statistics.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", metavar="DIR", help="folder tree of runs (run.json + test_predictions.csv)")
    src.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (with --experiment)")
    p.add_argument("--experiment", metavar="NAME", help="MLflow experiment name")
    p.add_argument("--parent", metavar="RUN_ID", help="only the child runs of this MLflow parent run")
    p.add_argument("--baseline", default="ast", help="variant every other variant is compared with (default ast)")
    p.add_argument("--metric", nargs="+", action="extend", metavar="KEY",
                   help="metric(s) to compare, e.g. icbhi_score sensitivity device/Meditron/icbhi_score "
                        "(default icbhi_score)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="B", help="bootstrap replicates (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default 0)")
    p.add_argument("--selection", help="only runs with this selection protocol (strict or paper)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_common_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from ls.report.build import Settings, build_report
        from ls.report.paths import shown_path, shown_uri
        from ls.report.render import markdown_report, write_report
        from ls.report.runs import load_mlflow_runs, load_runs
        from ls.report.stats import ReportError

        if args.runs is not None:
            if args.experiment or args.parent:
                raise ReportError("--experiment and --parent go with --tracking-uri, not --runs")
            runs, notes = load_runs(args.runs)
            source = f"folder {shown_path(args.runs)}"
        else:
            if not args.experiment:
                raise ReportError("--tracking-uri needs --experiment")
            runs, notes = load_mlflow_runs(args.tracking_uri, args.experiment, args.parent)
            source = f"MLflow {shown_uri(args.tracking_uri)}, experiment {args.experiment!r}" + (
                f", children of run {args.parent}" if args.parent else "")
        settings = Settings(baseline=args.baseline, metrics=tuple(args.metric or ("icbhi_score",)),
                            confidence=args.confidence, n_boot=args.bootstrap, seed=args.seed,
                            selection=args.selection)
        report = build_report(runs, settings, source=source, notes=notes)
        write_report(report, args.out)
        print(markdown_report(report))
        return 0

    return run_command(body, args)


if __name__ == "__main__":
    sys.exit(main())
