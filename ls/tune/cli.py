"""The command line of :mod:`ls.tune`: ``python -m ls.tune FILE [--jobs N] [--storage S] ...``.

Problems of the input are one ``error:`` line and exit code 2 (``--traceback`` shows where), before any trial;
Ctrl-C exits 130 (the interrupted trials continue from their ``last.pt`` when the command runs again); a search
that ends without a complete trial, a worker that failed or a failed ``--then-study`` run exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ls.utils.cli import EXIT_INTERRUPTED, add_common_options, fail, run_command

EXIT_FAILED = 1
#: How to get Optuna when it is missing (it is a dependency of ls; an environment may still lack it).
INSTALL_HINT = "pip install 'optuna>=5.0' (pip install -e . installs it with ls)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ls.tune",
        description="Search hyperparameters of a tune file (a run config with a tune: section) with Optuna: trials "
                    "are selected on the validation split and never tested; the search ends with best_config.yaml "
                    "and a report in the tune folder. See the ls.tune module docstring for the file format.")
    p.add_argument("file", help="tune file (YAML with a tune: section), e.g. configs/quickstart_tune.yaml, or a "
                   "built-in one's name (quickstart_tune)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run config value, e.g. --set training.epochs=5 (repeatable)")
    p.add_argument("--jobs", type=int, help="worker processes on this machine (default: 1 on CPU, one per visible "
                   "GPU on CUDA); the same command elsewhere with the same --storage adds workers")
    p.add_argument("--storage", help="Optuna storage: a database URL (sqlite:///..., postgresql://..., "
                   "mysql://...) or a journal file path (e.g. on a shared filesystem); default: "
                   "<tune folder>/optuna.db")
    p.add_argument("--mlflow-config", default=None, help="flat YAML with tracking_uri, experiment_name, ...; "
                   "it wins over the run config's mlflow: section, which wins over the MLFLOW_* environment "
                   "variables (key by key), else sqlite:///mlflow.db")
    p.add_argument("--no-tracking", action="store_true", help="do not mirror the records to MLflow (they are kept "
                   "in the tune folder all the same)")
    p.add_argument("--report-only", action="store_true", help="train nothing: rewrite best_config.yaml and the "
                   "report from the storage")
    p.add_argument("--then-study", nargs="+", type=int, metavar="SEED", help="after the search, train "
                   "best_config.yaml once per seed through ls.study and test each run once (<tune folder>/study)")
    add_common_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        try:
            import optuna  # noqa: F401
        except ImportError:
            return fail(f"ls.tune needs Optuna, which is not installed in this environment: {INSTALL_HINT}")
        from ls.runs.executor import tracking_summary
        from ls.runs.mirror import start_mirror
        from ls.tune.config import load_search, resolve_storage
        from ls.tune.search import run_search
        from ls.utils.trees import to_dict

        if args.jobs is not None and args.jobs < 1:
            return fail(f"--jobs must be >= 1, got {args.jobs}")
        search = load_search(args.file, args.overrides)
        storage = resolve_storage(search, args.storage)
        db = storage.sqlite_file
        if args.report_only and db is not None and not db.is_file():
            return fail(f"{db} does not exist: the search {search.name!r} has not run yet (or give its --storage)")
        mirror = None if args.no_tracking or args.report_only else \
            start_mirror(to_dict(search.base.mlflow), args.mlflow_config)
        try:
            outcome = run_search(search, storage, jobs=args.jobs, mirror=mirror, report_only=args.report_only)
        except KeyboardInterrupt:
            print(f"\ninterrupted: run the same command again to continue ({args.file}); interrupted trials "
                  "continue from their last.pt", file=sys.stderr)
            return EXIT_INTERRUPTED
        code = 0
        if not args.report_only:
            print(f"[tune] {search.name}: {outcome.ran} trial(s) run by this command in {outcome.seconds:.0f} s")
        if outcome.running:
            print(f"[tune] {outcome.running} trial(s) still running or queued (other workers): the report and "
                  f"best_config.yaml are of the trials finished so far; --report-only rewrites them later")
        if outcome.best is None:
            print(f"error: no trial of {search.name!r} is complete; see the report's trials table "
                  f"({search.report_dir / 'trials.md'})", file=sys.stderr)
            code = EXIT_FAILED
        if outcome.worker_failures:
            code = EXIT_FAILED
        if args.then_study and outcome.best is not None:
            if outcome.running:
                print("error: --then-study waits for a finished search; run the same command again when the other "
                      "workers are done", file=sys.stderr)
                code = EXIT_FAILED
            else:
                code = max(code, _then_study(search, outcome.best, args.then_study, mirror, args.jobs))
        hint = tracking_summary(mirror)
        if hint:
            print(hint)
        return code

    return run_command(body, args)


def _then_study(search, best, seeds: Sequence[int], mirror, jobs: int | None) -> int:
    """Train ``best_config.yaml`` over ``seeds`` through :mod:`ls.study` and test each run once."""
    from ls.study import load_study, run_study
    from ls.tune.best import trial_values, write_study_file

    variant, _ = trial_values(search, best.params)
    path = write_study_file(search, variant, seeds)
    print(f"[tune] then the study {path}: {variant}, seeds {', '.join(map(str, seeds))}")
    outcome = run_study(load_study(path, jobs=jobs), mirror=mirror)
    for result in outcome.failed:
        print(f"error: run {result.key} failed: {result.error}", file=sys.stderr)
    return EXIT_FAILED if outcome.failed else 0

