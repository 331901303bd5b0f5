"""Studies: every variant x seed (x selection protocol) of one experiment, resumable, ending in the report.

    python -m ls.study configs/quickstart_study.yaml [--jobs 2] [--set training.epochs=5] [--no-tracking]

A study file is a run config with a ``study:`` section. The run config is the file's other sections, laid over
the base config named by ``study.config`` (relative to the study file; mappings merge key by key, anything
else replaces):

    study:
      config: quickstart.yaml            # base run config
      variants: [ast, ast_film_soft]     # the first listed is not special; `baseline` is
      seeds: [0, 1, 2]
      selections: [strict]               # strict and/or paper (training.selection)
      baseline: ast
      out: runs/quickstart_study
    training:
      epochs: 15

What goes where (``out``):

- the study's own record (``events.jsonl``; MLflow's parent run of every run of the study);
- ``runs/<selection>/<variant>/seed<seed>/``: each run's folder (``ls.runs.folder``);
- ``report/``: what ``python -m ls.report`` writes, built from the finished runs;
- ``study.json``: the plan, and per run its state (finished, failed, interrupted) and wall time, and per
  session what it did.

Running the same command again skips finished runs (``run.json`` present), continues interrupted ones from
their ``last.pt`` (in the same record and MLflow run) and starts the rest; a stored run whose config differs
from the study's (of ``models`` only its own variant's block counts) is an error naming the run folder and the
keys, never overwritten. Adding seeds or variants to the file and re-running extends a study; seeds added with
``--seeds`` are remembered in ``study.json`` and stay in the study when the command is run again without it.
One process at a time may work on a study folder (a lock file). The runs go through ``ls.runs.executor``: one
after another, or several at once (``jobs``), each on ``threads`` intra-op threads on CPU, so that a run's
numbers do not depend on how many ran beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ls.utils.cli import EXIT_INTERRUPTED, add_common_options, run_command
from ls.utils.fields import option
from ls.utils.io import atomic_write_text, file_lock

EXIT_FAILED_RUNS = 1
STATE_FILE = "study.json"
LOCK_FILE = "study.lock"
RUNS_FOLDER = "runs"
REPORT_FOLDER = "report"
SELECTIONS = ("strict", "paper")


class StudyError(ValueError):
    """A problem with a study file, its folder or its runs (shown to users as one ``error:`` line)."""


# =================================================================================================
# The study file
# =================================================================================================
@dataclass
class StudyReportConfig:
    """How the report at the end of a study is computed (``ls.report.Settings``)."""

    metrics: list[str] = option(["icbhi_score"], "metrics compared with the baseline (paired differences, "
                                "interval, tests), e.g. icbhi_score, sensitivity, device/Meditron/icbhi_score")
    bootstrap: int = option(2000, "patient-level bootstrap replicates of the intervals")
    confidence: float = option(0.95, "interval level")
    seed: int = option(0, "seed of the bootstrap")

    def __post_init__(self) -> None:
        # Checked with the file, not after the last run: a typo here must not cost a study's training.
        from ls.report.stats import parse_metric

        if not self.metrics:
            raise ValueError("metrics is empty: name at least one, e.g. icbhi_score")
        for metric in self.metrics:
            parse_metric(metric)
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {self.confidence}")
        if self.bootstrap < 100:
            raise ValueError(f"bootstrap must be at least 100 replicates (2000 or more for a paper), got "
                             f"{self.bootstrap}")


@dataclass
class StudyConfig:
    """The ``study:`` section of a study file."""

    variants: list[str] = option(help="variants to train (each needs a models.<variant> block)")
    seeds: list[int] = option([42], "training seeds; runs of two variants with the same seed are paired")
    selections: list[str] = option(["strict"], "model-selection protocols (training.selection): strict, paper")
    baseline: str = option("ast", "the variant every other variant is compared with")
    config: str | None = option(None, "base run config, relative to the study file; the file's other "
                                "sections are laid over it")
    name: str | None = option(None, "name of the study (MLflow parent run, report); null: the file's stem")
    out: str | None = option(None, "study folder; null: runs/<name>")
    jobs: int | None = option(None, "runs at once: worker processes on CPU, at most one per GPU on CUDA; "
                              "null: 1 on CPU, every visible GPU on CUDA")
    threads: int = option(1, "intra-op threads of each run on CPU (a run's numbers depend on it, not on jobs)")
    report: StudyReportConfig = option(StudyReportConfig, "the report written at the end")

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("variants is empty: name at least the baseline and one other variant")
        if not self.seeds:
            raise ValueError("seeds is empty")
        for name, values in (("variants", self.variants), ("seeds", self.seeds), ("selections", self.selections)):
            dup = sorted({str(v) for v in values if values.count(v) > 1})
            if dup:
                raise ValueError(f"{name} lists {', '.join(dup)} more than once")
        bad = [s for s in self.selections if s not in SELECTIONS]
        if bad or not self.selections:
            raise ValueError(f"selections must be a non-empty list of {' / '.join(SELECTIONS)}, got {self.selections}")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


@dataclass
class Study:
    """A loaded study: its settings, the resolved base run config and where everything goes. ``seeds_given``:
    the seeds came from the command line (they replace the file's and the remembered ones)."""

    settings: StudyConfig
    base: Any  # ls.config.Config (seed and training.selection are set per run)
    source: Path
    name: str
    out: Path
    seeds_given: bool = False

    @property
    def runs_dir(self) -> Path:
        return self.out / RUNS_FOLDER

    @property
    def report_dir(self) -> Path:
        return self.out / REPORT_FOLDER

    def run_dir(self, variant: str, seed: int, selection: str) -> Path:
        """The deterministic folder of a run, so that a re-run finds it."""
        return self.runs_dir / selection / variant / f"seed{seed}"

    def run_config(self, variant: str, seed: int, selection: str) -> Any:
        from ls.runs.plan import with_seed

        cfg = with_seed(self.base, seed, selection)
        cfg.training.checkpoint_dir = str(self.run_dir(variant, seed, selection).parent)
        return cfg

    def identities(self) -> list[tuple[str, int, str]]:
        """``(variant, seed, selection)`` of every run, in the order they are started (seed-major, so that
        an interrupted study has comparable seeds of every variant)."""
        s = self.settings
        return [(v, int(seed), sel) for sel in s.selections for seed in s.seeds for v in s.variants]


def _merge(base: dict, over: dict) -> dict:
    """``over`` laid over ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_study(path: str | Path, overrides: Sequence[str] = (), *, variants: Sequence[str] | None = None,
               seeds: Sequence[int] | None = None, selections: Sequence[str] | None = None,
               jobs: int | None = None, threads: int | None = None, out: str | Path | None = None) -> Study:
    """Read a study file; keyword arguments replace the values of its ``study:`` section (the command line's
    ``--variants``, ``--seeds``, ...), ``overrides`` (``section.key=value``) change the run config. Seeds added
    to the study folder by an earlier ``--seeds`` stay in the study unless ``seeds`` is given.

    Every problem raises :class:`StudyError` or ``ls.config.ConfigError`` naming the file and key.
    """
    from ls.config import ConfigError, config_from_dict, load_config_plugins
    from ls.config.loader import from_dict, read_yaml, resolve_config_path
    from ls.models.variants import canonical_variant

    path = resolve_config_path(path)  # a file, or a built-in study's name (quickstart_study)
    data = read_yaml(path)
    if "study" not in data or not isinstance(data["study"], dict):
        raise StudyError(f"{path}: no 'study:' section (a mapping with at least 'variants'); see "
                         "python -m ls.study --help")
    raw = dict(data["study"])
    for key, value in (("variants", variants), ("seeds", seeds), ("selections", selections), ("jobs", jobs),
                       ("threads", threads), ("out", out)):
        if value is not None:
            raw[key] = [*value] if isinstance(value, (list, tuple)) else (str(value) if key == "out" else value)
    settings = from_dict(StudyConfig, raw, f"{path} (study section)")
    sections = {k: v for k, v in data.items() if k != "study"}
    if settings.config is not None:
        base_path = (path.parent / settings.config) if not Path(settings.config).is_absolute() else Path(settings.config)
        if not base_path.is_file():
            raise StudyError(f"{path}: study.config {settings.config!r} not found (looked for {base_path})")
        sections = _merge(read_yaml(base_path), sections)
        source = f"{path} over {base_path}"
    else:
        source = str(path)
    load_config_plugins(sections, source)  # before study.variants are looked up: a plugin's variant may be one
    name = settings.name or path.stem
    out_dir = Path(settings.out) if settings.out else Path("runs") / name
    try:
        settings.variants = [canonical_variant(v) for v in settings.variants]
        settings.baseline = canonical_variant(settings.baseline)
    except ValueError as exc:
        _require_recorded_plugins(out_dir, [*settings.variants, settings.baseline], f"study {path}")
        raise StudyError(f"{path}: study.variants / study.baseline: {exc}") from None
    if len(set(settings.variants)) != len(settings.variants):
        raise StudyError(f"{path}: study.variants names a variant twice (aliases count): {settings.variants}")
    if settings.baseline not in settings.variants:
        raise StudyError(f"{path}: study.baseline {settings.baseline!r} is not among study.variants "
                         f"{settings.variants}")
    cfg = config_from_dict(sections, source, list(overrides))
    for variant in settings.variants:
        try:
            cfg.model(variant)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc} (study.variants lists {variant!r})") from None
    study = Study(settings=settings, base=cfg, source=path, name=name, out=out_dir, seeds_given=seeds is not None)
    if seeds is None:
        kept = [s for s in read_state(out_dir).get("seeds_added", []) if s not in settings.seeds]
        settings.seeds = [*settings.seeds, *kept]
    return study


def _require_recorded_plugins(out: Path, variants: Sequence[str], where: str) -> None:
    """A variant the study names that no loaded plugin registers, but whose runs in the study folder recorded
    where it came from: the error names that plugin and how to load it (``ls.utils.plugins.require``)."""
    from ls.utils import plugins

    for variant in dict.fromkeys(variants):
        for run_file in sorted((out / RUNS_FOLDER).glob(f"*/{variant}/*/run.json")):
            try:
                records = json.loads(run_file.read_text(encoding="utf-8")).get("plugins")
            except (OSError, ValueError, AttributeError):
                continue
            plugins.require([r for r in records or [] if isinstance(r, dict) and r.get("name") == variant], where)


# =================================================================================================
# The plan: what is finished, what continues, what starts
# =================================================================================================
def _check_stored_config(stored: dict, planned: Any, variant: str, where: Path, what: str) -> None:
    from ls.config import config_differences, to_dict

    diffs = config_differences(stored, to_dict(planned), variant)
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; ... ({len(diffs)} in all)" if len(diffs) > 6 else "")
        raise StudyError(f"{where}: this {what} was trained with another config than the study's ({shown}); "
                         "restore the study's settings, or give the study another 'out' folder")


def plan_runs(study: Study) -> list[Any]:
    """Every run of the study as a ``ls.runs.plan.RunSpec`` (an interrupted one continues from its ``last.pt``;
    :func:`run_state` says what each is). A stored run, finished or interrupted, whose config differs from the
    study's raises :class:`StudyError` (the same check for both)."""
    import yaml

    from ls.engine.checkpoint import CheckpointError, check_resume_state, read_checkpoint
    from ls.runs import folder as layout
    from ls.runs.plan import RunSpec

    specs = []
    for variant, seed, selection in study.identities():
        run_dir = study.run_dir(variant, seed, selection)
        cfg = study.run_config(variant, seed, selection)
        state = layout.folder_state(run_dir)
        resume = None
        if state == "finished":
            config_path = run_dir / layout.CONFIG_FILE
            if not config_path.is_file():
                raise StudyError(f"{run_dir}: run.json but no config.yaml beside it: not a run folder of ls")
            try:
                stored = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise StudyError(f"{config_path}: not valid YAML ({exc})") from None
            _check_stored_config(stored if isinstance(stored, dict) else {}, cfg, variant, run_dir, "finished run")
        elif state == "resumable":
            resume = run_dir / layout.LAST
            try:
                checkpoint = read_checkpoint(resume)
                check_resume_state(checkpoint, variant, resume)
            except CheckpointError as exc:
                raise StudyError(f"{exc}; give the study another 'out' folder or delete {run_dir}") from None
            stored = checkpoint.get("config")
            _check_stored_config(stored if isinstance(stored, dict) else {}, cfg, variant, run_dir,
                                 "interrupted run")
        specs.append(RunSpec(variant, cfg, run_dir, resume=resume, tags={"study": study.name}))
    return specs


def run_state(spec: Any) -> str:
    """``finished``, ``resume`` or ``new`` (also a run that failed before its first checkpoint)."""
    from ls.runs.folder import RUN_FILE

    if (spec.run_dir / RUN_FILE).is_file():
        return "finished"
    return "resume" if spec.resume is not None else "new"


def describe_plan(study: Study, plan: Sequence[Any]) -> str:
    s = study.settings
    states = [run_state(r) for r in plan]
    counts = {k: states.count(k) for k in ("finished", "resume", "new")}
    lines = [(f"study {study.name}: {len(s.variants)} variant(s) x {len(s.seeds)} seed(s) x "
              f"{len(s.selections)} selection(s) = {len(plan)} runs in {study.out}"),
             f"  finished {counts['finished']}, to resume {counts['resume']}, to start {counts['new']}"]
    added = read_state(study.out).get("seeds_added", [])
    if added and not study.seeds_given:
        lines.append(f"  seed(s) {', '.join(map(str, added))} added by an earlier --seeds: kept")
    left_out = sorted({*_file_seeds(study), *added} - set(s.seeds)) if study.seeds_given else []
    if left_out:
        lines.append(f"  --seeds leaves out seed(s) {', '.join(map(str, left_out))} of the study: the report covers "
                     f"seed(s) {', '.join(map(str, s.seeds))} only (run without --seeds for the whole study)")
    lines += [f"  {r.key:<40} {state}" for r, state in zip(plan, states)]
    return "\n".join(lines)


# =================================================================================================
# The study
# =================================================================================================
@dataclass
class StudyOutcome:
    plan: list[Any]
    results: list[Any]  # ls.runs.executor.RunResult
    report: Any | None  # ls.report.Report
    report_paths: list[Path]
    parent_run_id: str | None
    seconds: float

    @property
    def failed(self) -> list[Any]:
        return [r for r in self.results if not r.ok]


@contextlib.contextmanager
def study_lock(out: Path) -> Iterator[None]:
    """One process per study folder: a second ``python -m ls.study`` on it stops with an error."""
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / LOCK_FILE) as locked:
        if not locked:
            raise StudyError(f"{out}: another process is working on this study (lock {out / LOCK_FILE})")
        yield


def read_state(out: Path) -> dict:
    path = Path(out) / STATE_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StudyError(f"{path}: invalid JSON ({exc})") from None
    return state if isinstance(state, dict) else {}


def _write_state(study: Study, state: dict) -> None:
    atomic_write_text(study.out / STATE_FILE, json.dumps(state, indent=2, default=str) + "\n")


def run_study(study: Study, *, mirror: Any = None, say: Callable[[str], None] = print,
              report_only: bool = False) -> StudyOutcome:
    """Run every unfinished run of ``study`` (``mirror``: a checked ``ls.runs.mirror.Mirror``, or None), then
    write the report of the finished ones into ``<out>/report`` and record it in the study's record.
    ``report_only`` trains nothing.

    With more than one job, worker processes are spawned: a script that calls this must start from
    ``if __name__ == "__main__":``, as every script that starts processes does.
    """
    from ls.config import flatten
    from ls.runs.executor import PlanInterrupted, execute, open_parent, resolve_jobs
    from ls.runs.plan import Plan

    t0 = time.perf_counter()
    with study_lock(study.out):
        plan = plan_runs(study)
        say(describe_plan(study, plan))
        todo = [] if report_only else [r for r in plan if run_state(r) != "finished"]
        if todo:
            check_data(study)  # before the study's record is opened: nothing is logged for a study that cannot run
        state = read_state(study.out)
        s = study.settings
        added = sorted({*state.get("seeds_added", []), *s.seeds} - set(_file_seeds(study))) if study.seeds_given \
            else state.get("seeds_added", [])
        state.update({"name": study.name, "study_file": str(study.source), "out": str(study.out),
                      "variants": s.variants, "seeds": s.seeds, "seeds_added": added, "selections": s.selections,
                      "baseline": s.baseline})
        state.setdefault("runs", {})
        parent = open_parent(study.out, f"study_{study.name}", mirror=mirror,
                             tags={"study": study.name, "group": "study"},
                             params={**flatten(study.base), "study.variants": s.variants, "study.seeds": s.seeds,
                                     "study.selections": s.selections, "study.baseline": s.baseline,
                                     "study.threads": s.threads, "study.file": str(study.source)})
        _write_state(study, state)
        results: list[Any] = []
        status = "FINISHED"

        def started(spec: Any, i: int) -> None:
            state["runs"][spec.key] = {"state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            _write_state(study, state)
            if jobs == 1:
                say(f"[study] {i}/{len(todo)} {spec.key}: {'resuming' if spec.resume else 'training'}")

        def finished(result: Any, i: int) -> None:
            results.append(result)
            entry = {"state": "finished" if result.ok else "failed", "seconds": round(result.seconds, 1),
                     "run_id": result.run_id}
            if not result.ok:
                entry["error"] = result.error
            state["runs"][result.key] = entry
            _write_state(study, state)
            score = result.test.get("icbhi_score")
            shown = f"ICBHI Score {100 * score:.2f}" if result.ok and score is not None else f"FAILED: {result.error}"
            say(f"[study] {i}/{len(todo)} {result.key}: {shown} ({result.seconds:.0f} s)")

        jobs = 1
        try:
            if todo:
                jobs, gpus = resolve_jobs(study.base, s.jobs)
                jobs = min(jobs, len(todo))
                if jobs > 1:
                    say(f"[study] {len(todo)} runs, {jobs} at once" + (f" (GPUs {', '.join(gpus)})" if gpus else
                        f" ({s.threads} thread(s) each)") + "; each run's output goes to its train.log")
                execute(Plan(todo, parent=study.out), mirror=mirror, jobs=jobs, gpus=gpus, threads=s.threads,
                        keep_going=True, progress=False, on_start=started, on_result=finished)
            report, paths = _finish_report(study, plan, parent, say)
            if any(not r.ok for r in results):
                status = "FAILED"
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            for key, entry in state["runs"].items():
                if entry.get("state") != "running":
                    continue
                folder = study.out / RUNS_FOLDER / key  # started in this session, ended by the interrupt
                if (folder / "run.json").is_file():  # it had finished (Ctrl-C came during its last sync)
                    entry.update(state="finished")
                else:
                    entry.update(state="interrupted", resumable=(folder / "last.pt").is_file())
            if isinstance(exc, PlanInterrupted):
                raise KeyboardInterrupt from None
            raise
        finally:
            seconds = time.perf_counter() - t0
            state.setdefault("sessions", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S",
                                                                             time.localtime(time.time() - seconds)),
                                                     "seconds": round(seconds, 1), "status": status,
                                                     "trained": sum(r.ok for r in results),
                                                     "failed": sum(not r.ok for r in results)})
            _write_state(study, state)
            parent.end(status)
    return StudyOutcome(plan, results, report, paths, parent.run_id, seconds)


def _file_seeds(study: Study) -> list[int]:
    """The seeds the study file itself lists."""
    from ls.config.loader import read_yaml

    return [int(s) for s in (read_yaml(study.source).get("study") or {}).get("seeds", [42])]


def check_data(study: Study) -> None:
    """Fail before any run starts when an input that every run of a variant needs is missing or unusable (every
    such run would fail the same way): the data folder(s), for a combined dataset those of its parts, and the
    pretrained-weights file of each variant (``ls.runs.run.check_inputs``, the check each run makes)."""
    from ls.runs.run import check_inputs
    from ls.utils.cli import error_message

    ds = study.base.dataset
    folder = Path(ds.data_folder).expanduser()
    if ds.name != "combined" and not folder.is_dir():  # a combined dataset's own folder only gets the cache
        synthetic = re.fullmatch(r"data_(\d+)rec_seed(\d+)", folder.name)  # the name ls.quickstart gives its data
        hint = (f"; make it with python -m ls.data.synthetic {folder} --recordings {synthetic[1]} --seed "
                f"{synthetic[2]}" if synthetic else "")
        raise StudyError(f"dataset.data_folder {folder} (from {study.source}) does not exist{hint}")
    for variant in study.settings.variants:
        try:
            check_inputs(study.base, variant)
        except (OSError, ValueError) as exc:
            raise StudyError(f"{error_message(exc)} (from {study.source}, variant {variant}); no run was "
                             "started") from None


def _finish_report(study: Study, plan: Sequence[Any], parent: Any,
                   say: Callable[[str], None]) -> tuple[Any, list[Path]]:
    """The report of every finished run of the plan, written to ``<out>/report`` and recorded in the study's
    record."""
    from ls.report.build import Settings, build_report
    from ls.report.render import write_report
    from ls.report.runs import load_run_dir
    from ls.report.stats import ReportError

    done = [r for r in plan if run_state(r) == "finished"]
    if not done:
        say("[study] no finished run yet: no report")
        return None, []
    r = study.settings.report
    settings = Settings(baseline=study.settings.baseline, metrics=tuple(r.metrics), confidence=r.confidence,
                        n_boot=r.bootstrap, seed=r.seed)
    try:
        report = build_report([load_run_dir(p.run_dir) for p in done], settings,
                              source=f"study {study.name} ({study.runs_dir})")
    except ReportError as exc:
        say(f"[study] no report: {exc}")
        return None, []
    paths = write_report(report, study.report_dir)
    for path in paths:
        parent.log_artifact(path, REPORT_FOLDER)
    parent.log_metrics(summary_metrics(report))
    say(f"[study] report: {study.report_dir / 'report.md'}")
    say(headline(report))
    return report, paths


def summary_metrics(report: Any) -> dict[str, float]:
    """Flat metrics of a report for the study's record: ``<selection>/<variant>/<metric>_{mean,std}`` of the
    whole-test-set metrics and ``<selection>/<variant>-<baseline>/<metric>_{diff,ci_low,ci_high}``."""
    from ls.report.stats import BASE_METRICS

    out: dict[str, float] = {}
    for section in report.sections:
        summary = section.summary[section.summary["metric"].isin(BASE_METRICS)]
        for row in summary.itertuples():
            out[f"{section.selection}/{row.variant}/{row.metric}_mean"] = float(row.mean)
            out[f"{section.selection}/{row.variant}/{row.metric}_std"] = float(row.std)
        for row in section.comparison.itertuples() if len(section.comparison) else []:
            key = f"{section.selection}/{row.variant}-{row.baseline}/{row.metric.replace('/', '_')}"
            out[f"{key}_diff"] = float(row.mean_diff)
            out[f"{key}_ci_low"] = float(row.ci_low)
            out[f"{key}_ci_high"] = float(row.ci_high)
    return out


def headline(report: Any) -> str:
    """The summary and comparison tables of every section, as Markdown."""
    from ls.report.render import comparison_table, markdown_table, summary_table

    out = []
    for section in report.sections:
        out += [f"selection {section.selection} ({len(section.runs)} runs):", markdown_table(summary_table(section))]
        if len(section.comparison):
            out += ["", markdown_table(comparison_table(section))]
        out.append("")
    return "\n".join(out).rstrip()


# =================================================================================================
# Command line
# =================================================================================================
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ls.study", description="Train every variant x seed (x selection) "
                                "of a study file, resumably, and write the report (see the module docstring for "
                                "the file format).")
    p.add_argument("study", help="study file (YAML with a study: section), e.g. configs/quickstart_study.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run config value, e.g. --set training.epochs=5 (repeatable)")
    p.add_argument("--variants", nargs="+", help="replace study.variants")
    p.add_argument("--seeds", nargs="+", type=int, help="replace study.seeds (seeds beyond the file's are "
                   "remembered in the study folder)")
    p.add_argument("--selections", nargs="+", help="replace study.selections (strict, paper)")
    p.add_argument("--jobs", type=int, help="runs at once (worker processes on CPU, one per GPU on CUDA)")
    p.add_argument("--threads", type=int, help="intra-op threads of each run on CPU (default 1)")
    p.add_argument("--out", help="replace study.out (the study folder)")
    p.add_argument("--mlflow-config", default=None, help="flat YAML with tracking_uri, experiment_name, ...; "
                   "it wins over the run config's mlflow: section, which wins over the MLFLOW_* environment "
                   "variables (key by key), else sqlite:///mlflow.db")
    p.add_argument("--no-tracking", action="store_true", help="do not mirror the runs to MLflow")
    p.add_argument("--dry-run", action="store_true", help="print the plan (finished / to resume / to start) and stop")
    p.add_argument("--report-only", action="store_true", help="train nothing: rewrite the report of the finished runs")
    add_common_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; problems are one ``error:`` line and exit code 2 (``--traceback`` shows where), a failed
    run exit code 1, Ctrl-C 130."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        from ls.runs.executor import tracking_summary
        from ls.runs.mirror import start_mirror
        from ls.utils.trees import to_dict

        study = load_study(args.study, args.overrides, variants=args.variants, seeds=args.seeds,
                           selections=args.selections, jobs=args.jobs, threads=args.threads, out=args.out)
        if args.dry_run:
            print(describe_plan(study, plan_runs(study)))
            return 0
        mirror = None if args.no_tracking else start_mirror(to_dict(study.base.mlflow), args.mlflow_config)
        try:
            outcome = run_study(study, mirror=mirror, report_only=args.report_only)
        except KeyboardInterrupt:
            print(f"\ninterrupted: run the same command again to continue ({args.study})", file=sys.stderr)
            if mirror is not None and mirror.unsynced:  # records whose last sync the interrupt cut short
                print(tracking_summary(mirror), file=sys.stderr)
            return EXIT_INTERRUPTED
        trained = sum(r.ok for r in outcome.results)
        print(f"[study] {study.name}: {trained} run(s) trained in {outcome.seconds:.0f} s this session")
        hint = tracking_summary(mirror)
        if hint:
            print(hint)
        if outcome.failed:
            for r in outcome.failed:
                print(f"error: run {r.key} failed: {r.error}", file=sys.stderr)
            print("run the same command again to retry the failed runs", file=sys.stderr)
            return EXIT_FAILED_RUNS
        return 0

    return run_command(body, args)


if __name__ == "__main__":
    sys.exit(main())
