"""Benchmark: what a search costs beyond its training, and what a second worker process gains.

    python benchmarks/tune.py [--recordings 60] [--epochs 3] [--trials 6] [--repeats 2] [--threads 1]
        [--no-overhead | --no-speedup]

On a synthetic ICBHI folder (``--recordings``, generated into a temporary folder) with the quickstart's tiny
SoftFiLM (tiny224, 16 mel bins x 128 frames, ``--epochs`` epochs), after one untimed run (imports, caches), in
rounds that alternate their order:

- **overhead per trial**: a sequential search of ``--trials`` trials (``python -m ls.tune``'s work in this
  process) against the same configs trained as plain runs through ``ls.runs.executor.execute`` (the same epochs,
  also without the test split, one thread each). A trial lasts from Optuna's ask to its tell (parameters, config,
  the run, its heartbeats, reading the value, the record's tags, the tell); its bookkeeping is that time less
  the run's own (``ls.runs.executor.execute``, timed inside the trial: free of the run-to-run noise of a shared
  machine). What the search spends outside its trials (the SQLite storage and study, the search's record, looking
  for work between trials) and the report with ``best_config.yaml`` are once per command and timed apart;
- **speed-up of 2 workers over 1** (unless ``--no-speedup``): ``python -m ls.tune FILE --jobs 1`` against
  ``--jobs 2`` as commands (process start, worker spawn and report included), ``--trials`` trials each with a
  random sampler of the same seed, so both train the same parameters, each trial on ``--threads`` threads
  (``tune.threads``; 0: ls.tune's default, all cores for one worker and the cores shared out among two). Each
  command's time splits into its start (to the first trial: imports, the storage, for two workers their spawn
  and the feature cache built once before them), its trials (first start to last end) and its end (report);
  the CPU time its processes got is printed beside it.

The machine's load average (``os.getloadavg``) is printed before and after: timings on a shared machine say little
without it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

SPACE = {
    "training.optimizer.lr": {"log_uniform": [5.0e-5, 1.0e-3]},
    "models.ast_film_soft.mask_overlap_lambda": {"uniform": [0.0, 0.05]},
    "models.ast_film_soft.conditioned_layers": {"choice": [[10, 11], [8, 9, 10, 11], "all"]},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recordings", type=int, default=60, help="synthetic recordings (default 60)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    p.add_argument("--trials", type=int, default=6, help="trials per search (default 6)")
    p.add_argument("--repeats", type=int, default=2, help="rounds, alternating the order (default 2)")
    p.add_argument("--threads", type=int, default=1, help="threads per trial of the --jobs commands (0: ls.tune's "
                   "default; default 1)")
    p.add_argument("--no-speedup", action="store_true", help="measure the overhead per trial only")
    p.add_argument("--no-overhead", action="store_true", help="measure the speed-up only")
    return p.parse_args(argv)


def write_tune_file(path: Path, data: Path, out: Path, trials: int, epochs: int, threads: int | None) -> Path:
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    config["dataset"]["data_folder"] = str(data)
    config["training"].update(epochs=epochs, checkpoint_dir=str(out / "unused"))
    config["tune"] = {"name": path.stem, "variants": ["ast_film_soft"], "space": SPACE, "n_trials": trials,
                      "sampler": {"type": "random"}, "seed": 0, "pruner": {"type": "none"}, "out": str(out),
                      "threads": threads}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


def search_round(tmp: Path, data: Path, args: argparse.Namespace, i: int) -> tuple[float, float, list, list]:
    """A sequential search in this process: (seconds without the report, seconds of the report, its trials, the
    seconds of each trial's run)."""
    from ls.runs import executor
    from ls.tune import report as tune_report
    from ls.tune.config import load_search, resolve_storage
    from ls.tune.search import run_search

    search = load_search(write_tune_file(tmp / f"search{i}.yaml", data, tmp / f"search{i}", args.trials,
                                         args.epochs, 1))
    runs: list[float] = []
    reports: list[float] = []

    def timed(fn, into):  # trials and run_search import these from their modules when they run
        def call(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                into.append(time.perf_counter() - t0)
        return call

    execute, write_outputs = executor.execute, tune_report.write_outputs
    executor.execute, tune_report.write_outputs = timed(execute, runs), timed(write_outputs, reports)
    t0 = time.perf_counter()
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            outcome = run_search(search, resolve_storage(search, None), say=lambda s: None)
    finally:
        executor.execute, tune_report.write_outputs = execute, write_outputs
    total = time.perf_counter() - t0
    return total - reports[0], reports[0], outcome.trials, runs


def plain_round(tmp: Path, data: Path, args: argparse.Namespace, i: int, trials: list) -> list[float]:
    """The configs of ``trials`` as plain runs (no Optuna, no tune folder): seconds of each."""
    from ls.runs.executor import execute
    from ls.runs.plan import Plan, RunSpec
    from ls.tune.best import trial_values
    from ls.tune.config import load_search

    search = load_search(write_tune_file(tmp / f"plain{i}.yaml", data, tmp / f"plain{i}", args.trials,
                                         args.epochs, 1))
    specs = []
    for k, trial in enumerate(trials):
        variant, values = trial_values(search, trial.params)
        specs.append(RunSpec(variant, search.trial_config(variant, values), tmp / f"plain{i}" / f"run{k}",
                             evaluate_test=False))
    seconds = []
    for spec in specs:
        t0 = time.perf_counter()
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            execute(Plan([spec]), threads=1, progress=False)
        seconds.append(time.perf_counter() - t0)
    return seconds


def command_round(tmp: Path, data: Path, args: argparse.Namespace, jobs: int, i: int) -> dict[str, float]:
    """``python -m ls.tune --jobs N`` as a command: its seconds, and their split into start, trials and end."""
    import optuna

    path = write_tune_file(tmp / f"jobs{jobs}_{i}.yaml", data, tmp / f"jobs{jobs}_{i}", args.trials, args.epochs,
                           args.threads or None)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    import resource

    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, t0 = time.time(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "ls.tune", str(path), "--jobs", str(jobs), "--no-tracking"], check=True,
                   env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds, ended = time.perf_counter() - t0, time.time()
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=path.stem, storage=f"sqlite:///{tmp / f'jobs{jobs}_{i}' / 'optuna.db'}"
                               ).get_trials()
    first = min(t.datetime_start for t in trials).timestamp()
    last = max(t.datetime_complete for t in trials).timestamp()
    return {"total": seconds, "start": first - started, "trials": last - first, "end": ended - last, "cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ls.data import build_datasets
    from ls.data.synthetic import generate_icbhi

    with tempfile.TemporaryDirectory(prefix="ls_tune_bench_") as name:
        tmp = Path(name)
        data = generate_icbhi(tmp / "data", recordings=args.recordings, seed=0)
        print(f"tiny224 SoftFiLM, {args.recordings} synthetic recordings, {args.epochs} epochs per trial, "
              f"{args.trials} trials per search, {args.repeats} round(s); {os.cpu_count()} CPU(s); the --jobs "
              f"commands' trials on {args.threads or 'the default number of'} thread(s)")
        print(f"start: {load()}", flush=True)
        from ls.tune.config import load_search

        warm = load_search(write_tune_file(tmp / "warm.yaml", data, tmp / "warm", 1, 1, 1))
        build_datasets(warm.base)  # the feature cache
        from ls.runs.executor import execute
        from ls.runs.plan import Plan, RunSpec

        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            execute(Plan([RunSpec("ast_film_soft", warm.trial_config("ast_film_soft", {}), tmp / "warm" / "run",
                                  evaluate_test=False)]), threads=1, progress=False)  # the model code's first use
        overhead, bookkeeping, fixed, reports, plains = [], [], [], [], []
        for i in range(0 if args.no_overhead else args.repeats):
            if i % 2 == 0:
                search_s, report_s, trials, runs = search_round(tmp, data, args, i)
                plain = plain_round(tmp, data, args, i, trials)
            else:
                # the plain runs first: the parameters of the last search round, trained again
                plain = plain_round(tmp, data, args, i, trials)
                search_s, report_s, trials, runs = search_round(tmp, data, args, i)
            lasted = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
            bookkeeping += [a - r for a, r in zip(lasted, runs)]
            overhead.append((sum(lasted) - sum(plain)) / args.trials)
            fixed.append(search_s - sum(lasted))
            plains.append(sum(plain) / args.trials)
            reports.append(report_s)
            print(f"round {i + 1}: trials {sum(lasted):.1f} s (their bookkeeping {sum(lasted) - sum(runs):.1f} s), the "
                  f"same plain runs {sum(plain):.1f} s: {overhead[-1]:+.2f} s per trial "
                  f"({100 * (sum(lasted) / sum(plain) - 1):+.1f} %); the search outside its trials {fixed[-1]:.1f} s, "
                  f"report {report_s:.1f} s; {load()}", flush=True)
        if bookkeeping:
            print(f"bookkeeping per trial (ask to tell, less the run): median {statistics.median(bookkeeping):.2f} s, "
                  f"max {max(bookkeeping):.2f} s over {len(bookkeeping)} trials; a plain run takes "
                  f"{statistics.median(plains):.1f} s (median of rounds)")
            print(f"trials against plain runs: median {statistics.median(overhead):+.2f} s per trial over "
                  f"{args.repeats} round(s) (rounds: {', '.join(f'{o:+.2f}' for o in overhead)})")
            print(f"once per command: the search outside its trials {statistics.median(fixed):.1f} s, report and "
                  f"best_config.yaml {statistics.median(reports):.1f} s")
        if not args.no_speedup:
            ratios, spans = [], []
            for i in range(args.repeats):
                order = (1, 2) if i % 2 == 0 else (2, 1)
                times = {jobs: command_round(tmp, data, args, jobs, i) for jobs in order}
                ratios.append(times[1]["total"] / times[2]["total"])
                spans.append(times[1]["trials"] / times[2]["trials"])
                parts = "; ".join(f"--jobs {j} {t['total']:.1f} s (start {t['start']:.1f}, trials {t['trials']:.1f}, "
                                  f"end {t['end']:.1f}; {t['cpu']:.0f} CPU-s)" for j, t in sorted(times.items()))
                print(f"round {i + 1}: {parts}: speed-up {ratios[-1]:.2f}x, of the trials {spans[-1]:.2f}x; {load()}",
                      flush=True)
            print(f"speed-up of 2 workers over 1: median {statistics.median(ratios):.2f}x of the command, "
                  f"{statistics.median(spans):.2f}x of its trials, over {args.repeats} round(s)")
        print(f"end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
