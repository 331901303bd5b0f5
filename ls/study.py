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

- ``runs/<selection>/<variant>/seed<seed>/``: each run's folder (``best.pt``, ``last.pt``, ``config.yaml``,
  ``run.json``, ``test_predictions.csv``, figures; ``train.log``: the run's output when it ran in a worker
  process, and the traceback of a failed run);
- ``report/``: what ``python -m ls.report`` writes (``report.md``/``.tex``, ``summary.csv``,
  ``comparison.csv``, ``runs.csv``, ``scores.png``/``.pdf``), built from the finished runs;
- ``study.json``: the plan, the MLflow parent run, and per run its state and wall time.

Running the same command again skips finished runs (``run.json`` present), continues interrupted ones from
their ``last.pt`` (in the same MLflow run) and starts the rest; a run, finished or interrupted, whose stored
config differs from the study's (of ``models`` only its own variant's block counts) is an error naming the run
folder and the keys, never overwritten. Adding seeds or variants to the file and re-running extends a study. One process at a time may work on a study folder (a lock file).

Runs go one after another (``jobs: 1``) or several at once: worker processes (spawned) on CPU, one per GPU
on CUDA (``CUDA_VISIBLE_DEVICES``). Each run on CPU uses ``threads`` intra-op threads (default 1) whatever
``jobs`` is, because float reductions depend on the thread count: a run's numbers do not depend on how many
ran beside it. Under MLflow every run is a child of one parent run, which gets the report (``report/``) and
the summary metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ls.utils.cli import EXIT_INTERRUPTED, add_traceback_option, run_command
from ls.utils.fields import option
from ls.utils.io import atomic_write_text

EXIT_FAILED_RUNS = 1
STATE_FILE = "study.json"
LOCK_FILE = "study.lock"
RUNS_FOLDER = "runs"
REPORT_FOLDER = "report"
RUN_LOG = "train.log"
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


@dataclass(frozen=True)
class PlannedRun:
    """One run of the study: its identity, folder and what this session does with it."""

    variant: str
    seed: int
    selection: str
    run_dir: Path
    state: Literal["finished", "resume", "new"] = "new"

    @property
    def key(self) -> str:
        return f"{self.selection}/{self.variant}/seed{self.seed}"

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pt"


@dataclass
class Study:
    """A loaded study: its settings, the resolved base run config and where everything goes."""

    settings: StudyConfig
    base: Any  # ls.config.Config (seed and training.selection are set per run)
    source: Path
    name: str
    out: Path

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
        cfg = copy.deepcopy(self.base)
        cfg.seed = int(seed)
        cfg.training.selection = selection
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
    ``--variants``, ``--seeds``, ...), ``overrides`` (``section.key=value``) change the run config.

    Every problem raises :class:`StudyError` or ``ls.config.ConfigError`` naming the file and key.
    """
    from ls.config import ConfigError, config_from_dict
    from ls.config.loader import from_dict, read_yaml
    from ls.models.variants import canonical_variant

    path = Path(path)
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
    try:
        settings.variants = [canonical_variant(v) for v in settings.variants]
        settings.baseline = canonical_variant(settings.baseline)
    except ValueError as exc:
        raise StudyError(f"{path}: study.variants / study.baseline: {exc}") from None
    if len(set(settings.variants)) != len(settings.variants):
        raise StudyError(f"{path}: study.variants names a variant twice (aliases count): {settings.variants}")
    if settings.baseline not in settings.variants:
        raise StudyError(f"{path}: study.baseline {settings.baseline!r} is not among study.variants "
                         f"{settings.variants}")
    sections = {k: v for k, v in data.items() if k != "study"}
    if settings.config is not None:
        base_path = (path.parent / settings.config) if not Path(settings.config).is_absolute() else Path(settings.config)
        if not base_path.is_file():
            raise StudyError(f"{path}: study.config {settings.config!r} not found (looked for {base_path})")
        sections = _merge(read_yaml(base_path), sections)
        source = f"{path} over {base_path}"
    else:
        source = str(path)
    cfg = config_from_dict(sections, source, list(overrides))
    for variant in settings.variants:
        try:
            cfg.model(variant)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc} (study.variants lists {variant!r})") from None
    name = settings.name or path.stem
    out_dir = Path(settings.out) if settings.out else Path("runs") / name
    return Study(settings=settings, base=cfg, source=path, name=name, out=out_dir)


# =================================================================================================
# The plan: what is finished, what continues, what starts
# =================================================================================================
def config_differences(stored: dict, planned: dict, variant: str) -> list[str]:
    """``key: stored X vs study Y`` for every config key (``section.key``) that both configs have and that
    makes two runs of ``variant`` different: ``ls.config.RUN_INDEPENDENT_KEYS`` aside, and of ``models`` only
    the variant's own block (``ls.config.run_view``), so that adding a variant to a study leaves its other
    runs as they are. A key only one of them has is an option of another ls version: new options default to
    the earlier behaviour, so a run stored before them is still the same run."""
    from ls.config import RUN_INDEPENDENT_KEYS, flatten, run_view

    old, new = flatten(run_view(stored, variant)), flatten(run_view(planned, variant))
    return [f"{k}: stored {old[k]!r} vs study {new[k]!r}" for k in sorted(set(old) & set(new))
            if not k.startswith(RUN_INDEPENDENT_KEYS) and old[k] != new[k]]


def _check_stored_config(stored: dict, planned: Any, variant: str, where: Path, what: str) -> None:
    from ls.config import to_dict

    diffs = config_differences(stored, to_dict(planned), variant)
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; ... ({len(diffs)} in all)" if len(diffs) > 6 else "")
        raise StudyError(f"{where}: this {what} was trained with another config than the study's ({shown}); "
                         "restore the study's settings, or give the study another 'out' folder")


def plan_runs(study: Study) -> list[PlannedRun]:
    """Every run of the study with its state: ``finished`` (``run.json`` present), ``resume`` (``last.pt``
    present) or ``new``. A stored run, finished or interrupted, whose config differs from the study's
    (:func:`config_differences`: the same check for both) raises :class:`StudyError`."""
    import yaml

    from ls.engine.checkpoint import CheckpointError, check_resume_state, read_checkpoint

    planned = []
    for variant, seed, selection in study.identities():
        run_dir = study.run_dir(variant, seed, selection)
        cfg = study.run_config(variant, seed, selection)
        state: Literal["finished", "resume", "new"] = "new"
        if (run_dir / "run.json").is_file():
            config_path = run_dir / "config.yaml"
            if not config_path.is_file():
                raise StudyError(f"{run_dir}: run.json but no config.yaml beside it: not a run folder of ls.train")
            try:
                stored = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise StudyError(f"{config_path}: not valid YAML ({exc})") from None
            _check_stored_config(stored if isinstance(stored, dict) else {}, cfg, variant, run_dir, "finished run")
            state = "finished"
        elif (run_dir / "last.pt").is_file():
            last = run_dir / "last.pt"
            try:
                checkpoint = read_checkpoint(last)
                check_resume_state(checkpoint, variant, last)
            except CheckpointError as exc:
                raise StudyError(f"{exc}; give the study another 'out' folder or delete {run_dir}") from None
            stored = checkpoint.get("config")
            _check_stored_config(stored if isinstance(stored, dict) else {}, cfg, variant, run_dir,
                                 "interrupted run")
            state = "resume"
        planned.append(PlannedRun(variant, seed, selection, run_dir, state))
    return planned


def describe_plan(study: Study, plan: Sequence[PlannedRun]) -> str:
    s = study.settings
    counts = {k: sum(r.state == k for r in plan) for k in ("finished", "resume", "new")}
    lines = [(f"study {study.name}: {len(s.variants)} variant(s) x {len(s.seeds)} seed(s) x "
              f"{len(s.selections)} selection(s) = {len(plan)} runs in {study.out}"),
             f"  finished {counts['finished']}, to resume {counts['resume']}, to start {counts['new']}"]
    lines += [f"  {r.key:<40} {r.state}" for r in plan]
    return "\n".join(lines)


# =================================================================================================
# Executing one run (in this process or in a worker)
# =================================================================================================
@dataclass
class RunJob:
    """Everything a (possibly separate) process needs to train one planned run."""

    run: PlannedRun
    cfg: Any  # ls.config.Config
    threads: int
    tracking: dict | None = None  # {"settings", "parent_run_id", "experiment_id", "tags"}
    log_to_file: bool = False


@dataclass
class RunResult:
    key: str
    ok: bool
    seconds: float
    run_id: str | None = None
    test: dict[str, float] = field(default_factory=dict)
    error: str = ""


def _run_tracker(tracking: dict | None, run_dir: Path) -> Any:
    """A tracker whose run is a child of the study's parent run, or a no-op one."""
    from ls.engine.tracking import NullTracker, Tracker

    if tracking is None:
        return NullTracker()

    class StudyRunTracker(Tracker):
        """Adds the study's tags to the run ``train_run`` creates (a resumed run keeps its tags)."""

        def start_run(self, run_name: str | None = None, *, run_id: str | None = None,
                      tags: dict | None = None) -> str | None:
            extra = tracking["tags"] if run_id is None else {}
            return super().start_run(run_name, run_id=run_id, tags={**(tags or {}), **extra})

    tracker = StudyRunTracker(tracking["settings"], parent_run_id=tracking["parent_run_id"], buffer_dir=run_dir)
    tracker.experiment_id = tracking["experiment_id"]
    return tracker


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _output_to(path: Path | None) -> Iterator[None]:
    """Everything the run prints goes to ``path`` (appended: a resumed run continues its log)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8", buffering=1) as fh, contextlib.redirect_stdout(fh), \
            contextlib.redirect_stderr(fh):
        yield


def _log_traceback(path: Path, exc: BaseException) -> None:
    """Append the traceback of ``exc`` to ``path``; a log that cannot be written (the failure may be that the
    run folder is not writable) leaves the error in ``study.json`` only."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=fh)


def execute_run(job: RunJob) -> RunResult:
    """Train (or continue) one planned run; failures come back as a result, with the traceback in the run's
    ``train.log`` (also when the run's output went to the console), so one bad run does not stop the others."""
    from ls.train import train_run

    run = job.run
    t0 = time.perf_counter()
    log_path = run.run_dir / RUN_LOG if job.log_to_file else None
    try:
        with _output_to(log_path), _threads(job.threads):
            try:
                outcome = train_run(job.cfg, run.variant, tracker=_run_tracker(job.tracking, run.run_dir),
                                    resume=run.last if run.state == "resume" else None, run_dir=run.run_dir,
                                    progress=False)
            except Exception:
                if log_path is not None:
                    traceback.print_exc()  # into the run's log, where its output goes
                raise
    except Exception as exc:  # noqa: BLE001 - reported per run; KeyboardInterrupt still stops the study
        if log_path is None:
            _log_traceback(run.run_dir / RUN_LOG, exc)
        return RunResult(run.key, False, time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
    return RunResult(run.key, True, time.perf_counter() - t0, outcome.run_id,
                     {k: float(v) for k, v in outcome.test_metrics.items()})


def _take_gpu(queue: Any) -> None:
    """Worker initialiser on CUDA: this process sees only its own GPU."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(queue.get())


#: In a worker process: whether a run is in progress (what SIGTERM from the study's process then does).
_in_run = False


def _stop_worker(signum: int, frame: Any) -> None:
    if _in_run:
        raise KeyboardInterrupt  # as Ctrl-C: train_run ends the run's MLflow run as KILLED
    os._exit(0)  # between runs there is nothing to end


def _init_worker(gpus: Any = None) -> None:
    """Worker initialiser: Ctrl-C reaches only the study's process, which stops the workers with SIGTERM
    (:func:`_stop_workers`), so that a worker never takes another run after an interrupt; on CUDA the worker
    sees only its own GPU."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    if gpus is not None:
        _take_gpu(gpus)


def _worker_run(job: RunJob) -> RunResult:
    """:func:`execute_run` in a worker process."""
    global _in_run
    _in_run = True
    try:
        return execute_run(job)
    finally:
        _in_run = False


# =================================================================================================
# The study
# =================================================================================================
@dataclass
class StudyOutcome:
    plan: list[PlannedRun]
    results: list[RunResult]
    report: Any | None  # ls.report.Report
    report_paths: list[Path]
    parent_run_id: str | None
    seconds: float

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if not r.ok]


def _uses_cuda(cfg: Any) -> bool:
    device = cfg.training.device
    if device == "cpu":
        return False
    import torch

    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def _visible_gpus() -> list[str]:
    import torch

    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given:
        return [g.strip() for g in given.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def resolve_jobs(study: Study) -> tuple[int, list[str]]:
    """How many runs go at once, and the GPU of each worker on CUDA (empty on CPU)."""
    cuda = _uses_cuda(study.base)
    gpus = _visible_gpus() if cuda else []
    jobs = study.settings.jobs or (max(1, len(gpus)) if cuda else 1)
    if cuda and jobs > 1 and jobs > len(gpus):
        raise StudyError(f"jobs {jobs} but {len(gpus)} GPU(s) visible: on CUDA a study runs one process per GPU")
    return jobs, gpus[:jobs] if cuda and jobs > 1 else []


@contextlib.contextmanager
def study_lock(out: Path) -> Iterator[None]:
    """One process per study folder: a second ``python -m ls.study`` on it stops with an error."""
    out.mkdir(parents=True, exist_ok=True)
    fh = (out / LOCK_FILE).open("a")
    try:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - no cross-process lock on Windows
            pass
        except OSError:
            raise StudyError(f"{out}: another process is working on this study (lock {out / LOCK_FILE})") from None
        yield
    finally:
        fh.close()


def read_state(out: Path) -> dict:
    path = out / STATE_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StudyError(f"{path}: invalid JSON ({exc})") from None
    return state if isinstance(state, dict) else {}


def _write_state(study: Study, state: dict) -> None:
    atomic_write_text(study.out / STATE_FILE, json.dumps(state, indent=2, default=str) + "\n")


def _open_parent(study: Study, state: dict, tracker: Any, say: Callable[[str], None]) -> str | None:
    """Start the MLflow parent run, or reopen the one of an earlier session on the same store."""
    from ls.config import flatten
    from ls.engine.tracking import Tracker

    if not isinstance(tracker, Tracker):
        return None
    previous = state.get("mlflow") or {}
    same_store = previous.get("tracking_uri") == tracker.settings.safe_uri and \
        previous.get("experiment") == tracker.settings.experiment_name
    if previous.get("parent_run_id") and same_store:
        tracker.start_run(run_id=previous["parent_run_id"])
    else:
        import ls

        if previous.get("parent_run_id"):
            say(f"[study] the earlier parent run {previous['parent_run_id']} is on another store/experiment: "
                "starting a new one")
        tracker.start_run(f"study_{study.name}", tags={"study": study.name, "group": "study",
                                                       "ls_version": ls.__version__})
        s = study.settings
        tracker.log_params({**flatten(study.base), "study.variants": s.variants, "study.seeds": s.seeds,
                            "study.selections": s.selections, "study.baseline": s.baseline,
                            "study.threads": s.threads, "study.file": str(study.source)})
    return tracker.run_id


def run_study(study: Study, *, tracker: Any = None, say: Callable[[str], None] = print,
              report_only: bool = False) -> StudyOutcome:
    """Run every unfinished run of ``study`` (``tracker``: a checked ``ls.engine.tracking.Tracker`` for the
    parent run, or None), then write the report of the finished ones into ``<out>/report`` and attach it to
    the parent run. ``report_only`` trains nothing.

    With more than one job, worker processes are spawned: a script that calls this must start from
    ``if __name__ == "__main__":``, as every script that starts processes does.
    """
    from ls.engine.tracking import NullTracker

    tracker = tracker if tracker is not None else NullTracker()
    t0 = time.perf_counter()
    with study_lock(study.out):
        plan = plan_runs(study)
        say(describe_plan(study, plan))
        todo = [] if report_only else [r for r in plan if r.state != "finished"]
        if todo:
            check_data(study)  # before the parent run is opened: nothing is logged for a study that cannot run
        state = read_state(study.out)
        state.update({"name": study.name, "study_file": str(study.source), "out": str(study.out),
                      "variants": study.settings.variants, "seeds": study.settings.seeds,
                      "selections": study.settings.selections, "baseline": study.settings.baseline})
        state.setdefault("runs", {})
        parent_id = _open_parent(study, state, tracker, say)
        if parent_id:
            state["mlflow"] = {"tracking_uri": tracker.settings.safe_uri,
                               "experiment": tracker.settings.experiment_name, "parent_run_id": parent_id}
        _write_state(study, state)
        results: list[RunResult] = []
        status = "FINISHED"
        try:
            if todo:
                results = _execute(study, todo, tracker, parent_id, state, say)
            report, paths = _finish_report(study, plan, tracker, say)
            if any(not r.ok for r in results):
                status = "FAILED"
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            raise
        finally:
            seconds = time.perf_counter() - t0
            state.setdefault("sessions", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S",
                                                                             time.localtime(time.time() - seconds)),
                                                     "seconds": round(seconds, 1), "status": status,
                                                     "trained": len(results)})
            _write_state(study, state)
            tracker.end_run(status)
    return StudyOutcome(plan, results, report, paths, parent_id, seconds)


def check_data(study: Study) -> None:
    """Fail before any run starts when an input that every run of a variant needs is missing or unusable (every
    such run would fail the same way): the data folder(s), for a combined dataset those of its parts, and the
    pretrained-weights file of each variant (``ls.train.check_inputs``, the check each run makes)."""
    import re

    from ls.train import check_inputs
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


def _execute(study: Study, todo: list[PlannedRun], tracker: Any, parent_id: str | None, state: dict,
             say: Callable[[str], None]) -> list[RunResult]:
    from ls.engine.tracking import Tracker

    jobs, gpus = resolve_jobs(study)
    jobs = min(jobs, len(todo))
    tracking = None
    if isinstance(tracker, Tracker) and parent_id:
        tracking = {"settings": tracker.settings, "parent_run_id": parent_id,
                    "experiment_id": tracker.experiment_id, "tags": {"study": study.name}}
    work = [RunJob(r, study.run_config(r.variant, r.seed, r.selection), study.settings.threads,
                   None if tracking is None else {**tracking, "tags": {**tracking["tags"], "study_run": r.key}},
                   log_to_file=jobs > 1) for r in todo]
    results: list[RunResult] = []

    def record(result: RunResult, i: int) -> None:
        results.append(result)
        entry = {"state": "finished" if result.ok else "failed", "seconds": round(result.seconds, 1),
                 "run_id": result.run_id}
        if not result.ok:
            entry["error"] = result.error
        state["runs"][result.key] = entry
        _write_state(study, state)
        score = result.test.get("icbhi_score")
        shown = f"ICBHI Score {100 * score:.2f}" if result.ok and score is not None else f"FAILED: {result.error}"
        say(f"[study] {i}/{len(work)} {result.key}: {shown} ({result.seconds:.0f} s)")

    if jobs == 1:
        for i, job in enumerate(work, 1):
            say(f"[study] {i}/{len(work)} {job.run.key}: {'resuming' if job.run.state == 'resume' else 'training'}")
            record(execute_run(job), i)
        return results

    import importlib
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, ProcessPoolExecutor, wait

    _warm_feature_cache(study, say)
    ctx = mp.get_context("spawn")  # forking a process with torch thread pools can deadlock
    gpu_queue = None
    if gpus:
        gpu_queue = ctx.Queue()
        for g in gpus:
            gpu_queue.put(g)
    module = importlib.import_module("ls.study")  # functions by module name, also under python -m ls.study
    say(f"[study] {len(work)} runs, {jobs} at once" + (f" (GPUs {', '.join(gpus)})" if gpus else
                                                         f" ({study.settings.threads} thread(s) each)")
        + f"; each run's output goes to its {RUN_LOG}")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=module._init_worker,
                               initargs=(gpu_queue,))
    queued = iter(work)
    pending: dict[Future, RunJob] = {}

    def submit_next() -> None:
        # One run per worker, none queued: a queued run is already taken by the pool and cannot be cancelled.
        for job in queued:
            try:
                pending[pool.submit(module._worker_run, job)] = job
                return
            except BrokenExecutor as exc:  # a worker died: the pool takes no more runs
                record(RunResult(job.run.key, False, 0.0, error=f"worker failed: {exc}"), len(results) + 1)

    try:
        for _ in range(jobs):
            submit_next()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                job = pending.pop(fut)
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died (e.g. out of memory)
                    result = RunResult(job.run.key, False, 0.0, error=f"worker failed: {exc}")
                record(result, len(results) + 1)
                submit_next()
    except BaseException:
        if pending:
            say(f"[study] stopping the {len(pending)} running run(s)")
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)
    return results


#: Seconds the workers get to end their interrupted runs (MLflow runs KILLED) before they are killed.
STOP_GRACE_S = 30.0


def _stop_workers(pool: Any) -> None:
    """Stop ``pool`` now: no further run starts, each running run is interrupted as by Ctrl-C (SIGTERM, see
    :func:`_init_worker`), and a worker still alive after :data:`STOP_GRACE_S` is killed."""
    # The pool does not expose its worker processes; without them, shutdown(wait=False) would leave each
    # running run to finish its training.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    try:
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
    finally:  # also after a second Ctrl-C while waiting
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(5)


def _warm_feature_cache(study: Study, say: Callable[[str], None]) -> None:
    """Build the feature cache once before the workers start, instead of in every worker at once."""
    from ls.data import build_datasets

    say("[study] preparing the feature cache")
    build_datasets(study.base)


def _finish_report(study: Study, plan: Sequence[PlannedRun], tracker: Any,
                   say: Callable[[str], None]) -> tuple[Any, list[Path]]:
    """The report of every finished run of the plan, written to ``<out>/report`` and logged to the parent."""
    from ls.report.build import Settings, build_report
    from ls.report.render import write_report
    from ls.report.runs import load_run_dir
    from ls.report.stats import ReportError

    finished = [r for r in plan if (r.run_dir / "run.json").is_file()]
    if not finished:
        say("[study] no finished run yet: no report")
        return None, []
    r = study.settings.report
    settings = Settings(baseline=study.settings.baseline, metrics=tuple(r.metrics), confidence=r.confidence,
                        n_boot=r.bootstrap, seed=r.seed)
    try:
        report = build_report([load_run_dir(p.run_dir) for p in finished], settings,
                              source=f"study {study.name} ({study.runs_dir})")
    except ReportError as exc:
        say(f"[study] no report: {exc}")
        return None, []
    paths = write_report(report, study.report_dir)
    for path in paths:
        tracker.log_artifact(path, REPORT_FOLDER)
    tracker.log_metrics(summary_metrics(report))
    say(f"[study] report: {study.report_dir / 'report.md'}")
    say(headline(report))
    return report, paths


def summary_metrics(report: Any) -> dict[str, float]:
    """Flat metrics of a report for the parent run: ``<selection>/<variant>/<metric>_{mean,std}`` of the
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
    p.add_argument("--seeds", nargs="+", type=int, help="replace study.seeds")
    p.add_argument("--selections", nargs="+", help="replace study.selections (strict, paper)")
    p.add_argument("--jobs", type=int, help="runs at once (worker processes on CPU, one per GPU on CUDA)")
    p.add_argument("--threads", type=int, help="intra-op threads of each run on CPU (default 1)")
    p.add_argument("--out", help="replace study.out (the study folder)")
    p.add_argument("--mlflow-config", default=None, help="flat YAML with tracking_uri, experiment_name, ... "
                   "(default: MLFLOW_* environment variables, else sqlite:///mlflow.db)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--dry-run", action="store_true", help="print the plan (finished / to resume / to start) and stop")
    p.add_argument("--report-only", action="store_true", help="train nothing: rewrite the report of the finished runs")
    add_traceback_option(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; problems are one ``error:`` line and exit code 2 (``--traceback`` shows where), a failed
    run exit code 1, Ctrl-C 130."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        from ls.engine.tracking import build_tracker

        study = load_study(args.study, args.overrides, variants=args.variants, seeds=args.seeds,
                           selections=args.selections, jobs=args.jobs, threads=args.threads, out=args.out)
        if args.dry_run:
            print(describe_plan(study, plan_runs(study)))
            return 0
        tracker = build_tracker(study.base.mlflow, args.mlflow_config, enabled=not args.no_tracking,
                                buffer_dir=study.out)
        try:
            outcome = run_study(study, tracker=tracker, report_only=args.report_only)
        except KeyboardInterrupt:
            print(f"\ninterrupted: run the same command again to continue ({args.study})", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"[study] {study.name}: {len(outcome.results)} run(s) trained in {outcome.seconds:.0f} s this "
              "session")
        if outcome.failed:
            for r in outcome.failed:
                print(f"error: run {r.key} failed: {r.error}", file=sys.stderr)
            print("run the same command again to retry the failed runs", file=sys.stderr)
            return EXIT_FAILED_RUNS
        return 0

    return run_command(body, args)


if __name__ == "__main__":
    sys.exit(main())
