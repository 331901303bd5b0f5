"""Running a search: one Optuna study in its storage; workers ask it for trials, train each as an ordinary ls
run (``ls.runs``) and tell it how the trial went.

A worker is a loop in one process: ask for a trial, lay its parameters over the base config (built and checked
like every config), run it through :func:`ls.runs.executor.execute` in this process, with an epoch hook that
reports the validation metric to Optuna and stops the trial when the pruner says so, then tell the result.
``--jobs N`` starts N such processes (spawned; one per GPU on CUDA); the same command on another machine with the
same storage starts more, all drawing from the one study until ``n_trials`` trials are counted.

Trials never read the test split: their config turns ``training.monitor_test`` off and they run with
``evaluate_test=False`` (no final test), so neither a per-epoch nor a final test evaluation happens.

Failures:

- a trial that raises fails (Optuna state FAIL, the error kept as its ``ls_error``) and the worker goes on;
- Ctrl-C (or SIGTERM to a worker) fails the running trial and queues a retry of it;
- a worker that dies (killed, out of memory, a lost machine) leaves its trial RUNNING. The next worker that
  looks for work fails it and queues a retry: at once when the dead worker ran on the same machine (its process
  is gone), and through Optuna's heartbeat (a database storage: no heartbeat for two ``heartbeat_interval``) when
  it ran elsewhere. A retry is a new Optuna trial with the same parameters (``RetryHeartbeatStaleTrialCallback``:
  it records the number of the trial it retries), which finds the first trial's run folder by that number and
  continues from its ``last.pt``. A journal storage has no heartbeat: a trial of a machine that died stays
  RUNNING until a worker on that machine looks for work again.

How trials count toward ``n_trials``: :mod:`ls.tune.trials`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ls.runs.run import RunStopped
from ls.tune.config import Search, StorageSpec, TuneError
from ls.tune.trials import (
    ERROR_ATTR,
    EXCESS_ATTR,
    FOLDER_ATTR,
    SEARCH_ATTR,
    VARIANT_PARAM,
    WORKER_ATTR,
    has_work,
    is_excess,
    quiet_optuna,
    retried_from,
)

#: Seconds stopped workers get to end their trials' records (KILLED) before they are killed.
STOP_GRACE_S = 30.0


class TrialPruned(RunStopped, optuna.TrialPruned):
    """The pruner stopped a trial after an epoch: Optuna's signal, and for the trial's run a stop on purpose
    (its record ends FINISHED and its folder keeps the checkpoints)."""


# =================================================================================================
# Storage, sampler, pruner, study
# =================================================================================================
def retry_callback(search: Search) -> RetryHeartbeatStaleTrialCallback:
    """Queues a trial again, with its parameters and reported epochs, when its worker is gone."""
    return RetryHeartbeatStaleTrialCallback(max_retry=search.settings.max_retries, inherit_intermediate_values=True)


def open_storage(spec: StorageSpec, search: Search) -> optuna.storages.BaseStorage:
    """The Optuna storage of ``spec``: a journal file, or a database with heartbeats (a trial silent for two
    ``heartbeat_interval`` is failed and retried)."""
    from ls.runs.secrets import scrub, split_userinfo

    if spec.kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(spec.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {}
    db = spec.sqlite_file
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        # Several workers write to one file: wait for its lock rather than fail at once.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    interval = search.settings.heartbeat_interval
    try:
        return optuna.storages.RDBStorage(spec.target, heartbeat_interval=interval, grace_period=2 * interval,
                                          heartbeat_stale_trial_callback=retry_callback(search), **kwargs)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy: a missing driver, an unreachable server, bad credentials
        _, _, password = split_userinfo(spec.target)
        text = scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, [password])
        raise TuneError(f"cannot open the Optuna storage {spec.safe}: {text}") from None


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler re-made for every trial with a seed of its own, ``(seed, trial number)``: what trial k proposes
    depends on the seed, k and the trials finished before it, not on which worker asks, and workers that start
    together do not propose the same values."""

    def __init__(self, make: Callable[[int | None], optuna.samplers.BaseSampler], seed: int | None) -> None:
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._seed is not None:
            self._inner = self._make((self._seed * 1_000_003 + trial.number) % 2**32)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_sampler(search: Search) -> optuna.samplers.BaseSampler:
    s = search.settings.sampler

    def make(seed: int | None) -> optuna.samplers.BaseSampler:
        if s.type == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # constant_liar: a running trial counts as a poor result, so parallel workers spread out
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials, constant_liar=True)

    return TrialSeededSampler(make, search.settings.seed)


def make_pruner(search: Search) -> optuna.pruners.BasePruner:
    p = search.settings.pruner
    if p.type == "none":
        return optuna.pruners.NopPruner()
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource="auto" if p.min_resource is None else p.min_resource,
                                                  reduction_factor=p.reduction_factor)


def open_study(search: Search, storage: optuna.storages.BaseStorage, spec: StorageSpec, *,
               create: bool) -> optuna.Study:
    """The search's study in ``storage``: created (or joined) when ``create``, else it must exist. A study that
    another command created with other settings (space, variants, metric, direction, run config) is refused."""
    from ls.tune.space import optuna_values

    sampler, pruner = make_sampler(search), make_pruner(search)
    if create:
        study = optuna.create_study(storage=storage, study_name=search.name, direction=search.direction,
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    else:
        try:
            study = optuna.load_study(study_name=search.name, storage=storage, sampler=sampler, pruner=pruner)
        except KeyError:
            raise TuneError(f"no search named {search.name!r} in {spec.safe}: nothing to report (run the search "
                            "first)") from None
    mine = search.fingerprint()
    theirs = study.user_attrs.get(SEARCH_ATTR)
    if theirs is None:
        if create:
            study.set_user_attr(SEARCH_ATTR, mine)
            for entry in search.settings.enqueue:
                study.enqueue_trial(optuna_values(entry, search.params), skip_if_exists=True)
        return study
    diffs = fingerprint_differences(theirs, mine, search.variants)
    if study.direction.name.lower() != search.direction:
        diffs.insert(0, f"direction: stored {study.direction.name.lower()!r} vs {search.direction!r}")
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; ... ({len(diffs)} in all)" if len(diffs) > 6 else "")
        raise TuneError(f"{search.source}: the search {search.name!r} in {spec.safe} was started with other "
                        f"settings ({shown}); restore them, or give this search another tune.name or tune.out")
    return study


def fingerprint_differences(stored: dict[str, Any], mine: dict[str, Any], variants: Sequence[str]) -> list[str]:
    from ls.config import config_differences

    diffs = [f"tune.{key}: stored {stored.get(key)!r} vs {mine[key]!r}"
             for key in ("variants", "metric", "space") if stored.get(key) != mine[key]]
    for variant in variants:
        diffs += [d for d in config_differences(stored.get("config") or {}, mine["config"], variant)
                  if d not in diffs]
    return diffs


# =================================================================================================
# Workers that are gone
# =================================================================================================
def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot), None without ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def worker_identity() -> dict[str, Any]:
    """Host, pid and start time of this process: a later worker on the same host can tell whether it is gone."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid())}


def owner_is_gone(owner: Any) -> bool:
    """Whether the worker ``owner`` (:func:`worker_identity`) ran on this machine and its process has ended (its
    pid is free, or now another process's)."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    started = _process_start(pid)
    if started is not None:
        return owner.get("started") is not None and started != owner["started"]
    if Path("/proc").is_dir():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def recover_stale(study: optuna.Study, retry: RetryHeartbeatStaleTrialCallback,
                  say: Callable[[str], None]) -> list[int]:
    """Fail the running trials whose worker is gone and queue their retries; returns their numbers."""
    optuna.storages.fail_stale_trials(study)  # a database's heartbeat: trials silent past the grace period
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(WORKER_ATTR)
        if not owner_is_gone(owner):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first
        recovered.append(t.number)
        queued = requeue(study, retry, t.number)
        say(f"[tune] trial {t.number}: its worker (pid {owner['pid']} on this machine) is gone; " + (
            "the trial is queued again and continues from its last.pt" if queued else
            "it has used up its retries (tune.max_retries): it stays failed"))
    return recovered


def requeue(study: optuna.Study, retry: RetryHeartbeatStaleTrialCallback, number: int) -> bool:
    """Queue a failed trial again (its parameters, its epochs so far); False when it has used up its retries."""
    before = len(study.get_trials(deepcopy=False))
    retry(study, trial_by_number(study, number))
    return len(study.get_trials(deepcopy=False)) > before


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=True) if t.number == number)


# =================================================================================================
# One trial
# =================================================================================================
@contextlib.contextmanager
def _heartbeat(storage: Any, trial: optuna.Trial) -> Iterator[None]:
    """Record the running trial's heartbeat every interval (database storages with heartbeats)."""
    interval = storage.get_heartbeat_interval() if isinstance(storage, optuna.storages.RDBStorage) else None
    if not interval:
        yield
        return
    trial_id = trial._trial_id  # Optuna's Trial has no public id; its storage methods take this one
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a missed beat is retried at the next interval
                storage.record_heartbeat(trial_id)
            stop.wait(interval)

    thread = threading.Thread(target=beat, name="ls-tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def pruning_hook(trial: optuna.Trial, metric: str, reported: set[int]) -> Callable[[int, dict[str, float]], None]:
    """The Trainer's ``epoch_end`` hook of a trial: reports the epoch's validation ``metric`` (from the epoch's
    record) to Optuna and stops the trial when the pruner says so. ``reported``: epochs already reported (a
    retried trial inherits them)."""
    key = f"val/{metric}"

    def report(epoch: int, record: dict[str, float]) -> None:
        value = record.get(key)
        if value is None or not math.isfinite(float(value)):
            return
        if epoch not in reported:
            trial.report(float(value), epoch)
            reported.add(epoch)
        if trial.should_prune():
            raise TrialPruned(f"pruned after epoch {epoch} ({metric} {float(value):.4f})")

    return report


def validation_value(folder: Path, metric: str, epoch: int) -> float:
    """``val/<metric>`` at ``epoch`` in the run record of ``folder`` (the last value logged for that epoch)."""
    from ls.runs.record import EventLog

    value = math.nan
    if epoch < 1:
        return value
    for event in EventLog(folder).events():
        if event.get("event") == "metrics" and event.get("step") == epoch:
            value = float(event["metrics"].get(f"val/{metric}", value))
    return value


def _annotate(folder: Path, mirror: Any, trial_number: int, state: TrialState, value: float) -> None:
    """The trial's state and value in its run's record (its MLflow run's tags and metric)."""
    from ls.runs.record import EventLog, RunRecord

    if not EventLog(folder).exists():
        return
    record = RunRecord(folder, mirror)
    record.set_tags({"tune.state": state.name, "tune.trial": str(trial_number)})
    if math.isfinite(value):
        record.log_metrics({"tune/value": value})
    if mirror is not None and not record.synced:  # after the run's last sync: say how to sync these too
        mirror.mark_unsynced(folder)


def _params_text(values: dict[Any, Any], variant: str, several: bool) -> str:
    from ls.tune.space import label

    parts = [f"variant={variant}"] if several else []
    return ", ".join(parts + [f"{p.key}={label(v) if p.kind == 'choice' else _fmt(v)}" for p, v in values.items()])


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass
class WorkerSetup:
    """What a worker (this process or a spawned one) needs; ``tracking``/``experiment_id`` make a spawned
    worker's own MLflow mirror."""

    search: Search
    storage: StorageSpec
    index: int = 0
    tracking: Any = None  # ls.runs.mirror.TrackingSettings
    experiment_id: str | None = None
    threads: int | None = None
    gpu: str | None = None
    log_to_file: bool = False


def run_trial(setup: WorkerSetup, study: optuna.Study, storage: Any, trial: optuna.Trial, frozen: FrozenTrial,
              retry: RetryHeartbeatStaleTrialCallback, mirror: Any, say: Callable[[str], None]) -> TrialState:
    """Train one trial in this process and tell Optuna how it went."""
    from ls.runs import folder as layout
    from ls.runs.executor import execute, output_to
    from ls.runs.plan import Plan, RunSpec
    from ls.utils.cli import error_message

    search = setup.search
    origin = retried_from(frozen)
    home = origin if origin is not None else trial.number
    folder = search.trial_dir(home)
    trial.set_user_attr(FOLDER_ATTR, folder.relative_to(search.out).as_posix())
    trial.set_user_attr(WORKER_ATTR, worker_identity())
    several = len(search.variants) > 1
    variant = trial.suggest_categorical(VARIANT_PARAM, search.variants) if several else search.variants[0]
    values = {p: p.suggest(trial) for p in search.params_of(variant)}
    if origin is None and folder.exists():
        message = (f"{folder} exists but trial {trial.number} is new in {setup.storage.safe}: that folder belongs "
                   "to another search (another storage or tune.name); give this search another tune.out")
        trial.set_user_attr(ERROR_ATTR, message)
        study.tell(trial, state=TrialState.FAIL)
        raise TuneError(message)
    resume = folder / layout.LAST if origin is not None and (folder / layout.LAST).is_file() else None
    what = f"retry of trial {origin}, " + ("from its last.pt" if resume else "from the start") if origin is not None \
        else "new"
    say(f"[tune] trial {trial.number} ({what}): {_params_text(values, variant, several)}")
    t0 = time.perf_counter()
    state, value, note = TrialState.FAIL, math.nan, ""
    try:
        cfg = search.trial_config(variant, values)
        spec = RunSpec(variant, cfg, folder, resume=resume, tags={"tune": search.name, "trial": str(home)},
                       evaluate_test=False)
        hook = pruning_hook(trial, search.metric, set(frozen.intermediate_values))
        with _heartbeat(storage, trial), output_to(folder / layout.LOG_FILE if setup.log_to_file else None):
            result = execute(Plan([spec], parent=search.out), mirror=mirror, threads=setup.threads,
                             progress=False if setup.log_to_file else None, epoch_end=[hook])[0]
        value = validation_value(folder, search.metric, result.best_epoch)
        if math.isfinite(value):
            state = TrialState.COMPLETE
            note = f"{search.metric} {value:.4f} (epoch {result.best_epoch})"
        else:
            note = f"no finite validation {search.metric} at the selected epoch {result.best_epoch}"
            trial.set_user_attr(ERROR_ATTR, note)
    except TrialPruned as exc:
        state, note = TrialState.PRUNED, str(exc)
    except KeyboardInterrupt:
        trial.set_user_attr(ERROR_ATTR, "interrupted (Ctrl-C or SIGTERM)")
        study.tell(trial, state=TrialState.FAIL)
        requeue(study, retry, trial.number)
        raise
    except Exception as exc:  # noqa: BLE001 - a failed trial is a result of the search; the worker goes on
        note = f"FAILED: {error_message(exc)}"
        trial.set_user_attr(ERROR_ATTR, note[8:2000])
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
    else:
        study.tell(trial, state=state)
    if state == TrialState.PRUNED:  # Optuna keeps no value for it: the last one it reported before pruning
        reported = trial_by_number(study, trial.number).intermediate_values
        value = reported[max(reported)] if reported else math.nan
    _annotate(folder, mirror, trial.number, state, value)
    say(f"[tune] trial {trial.number}: {note} ({time.perf_counter() - t0:.0f} s)")
    return state


def work(setup: WorkerSetup, *, mirror: Any = None, say: Callable[[str], None] = print) -> int:
    """A worker: ask for trials and run them until ``n_trials`` are counted; returns how many it ran."""
    from ls.runs.mirror import Mirror

    search = setup.search
    n_trials = search.settings.n_trials
    with quiet_optuna():
        storage = open_storage(setup.storage, search)
        study = open_study(search, storage, setup.storage, create=False)
        retry = retry_callback(search)
        if mirror is None and setup.tracking is not None:
            mirror = Mirror(setup.tracking, experiment_id=setup.experiment_id)
        ran = 0
        while True:
            recover_stale(study, retry, say)
            if not has_work(study.get_trials(deepcopy=False), n_trials):
                break
            trial = study.ask()
            frozen = trial_by_number(study, trial.number)
            if is_excess(study.get_trials(deepcopy=False), frozen, n_trials):
                trial.set_user_attr(EXCESS_ATTR, True)
                study.tell(trial, state=TrialState.FAIL)
                break
            run_trial(setup, study, storage, trial, frozen, retry, mirror, say)
            ran += 1
    return ran


# =================================================================================================
# Worker processes
# =================================================================================================
def _stop_worker(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # as Ctrl-C: the running trial's record ends KILLED and the trial is queued again


def worker_main(setup: WorkerSetup) -> None:
    """A spawned worker: Ctrl-C reaches only the command's process, which stops the workers with SIGTERM; on
    CUDA the worker sees only its GPU."""
    from ls.utils.cli import run_command

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    if setup.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = setup.gpu

    def say(text: str) -> None:
        print(text.replace("[tune]", f"[tune w{setup.index}]", 1), flush=True)

    def body() -> int:
        work(setup, say=say)
        return 0

    sys.exit(run_command(body))


def run_workers(setups: Sequence[WorkerSetup], say: Callable[[str], None]) -> list[tuple[int, int]]:
    """Start a spawned process per setup and wait for all; returns their (pid, exit code). Ctrl-C stops them: each
    running trial is interrupted (record KILLED, trial queued again); one still alive after
    :data:`STOP_GRACE_S` is killed."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # forking a process with torch thread pools can deadlock
    processes = [ctx.Process(target=worker_main, args=(s,), name=f"ls-tune-worker-{s.index}") for s in setups]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except BaseException:
        say(f"[tune] stopping the {sum(p.is_alive() for p in processes)} worker(s)")
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
        finally:
            for process in processes:
                if process.is_alive():
                    process.kill()
                    process.join(5)
        raise
    return [(int(p.pid or 0), int(p.exitcode or 0)) for p in processes]


# =================================================================================================
# The search
# =================================================================================================
@dataclass
class SearchOutcome:
    """How a command's search went: every trial of the study at its end, the best one, what was written."""

    trials: list[FrozenTrial]
    best: FrozenTrial | None
    best_config: Path | None
    report_paths: list[Path]
    parent_run_id: str | None
    seconds: float
    ran: int
    worker_failures: list[int]

    @property
    def running(self) -> int:
        """Trials still running (on other machines' workers) or queued."""
        return sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in self.trials)


def check_inputs(search: Search) -> None:
    """What every trial needs, before any starts: the data folder(s) and each variant's weights file."""
    from ls.runs.run import check_inputs as check_run_inputs
    from ls.utils.cli import error_message

    for variant in search.variants:
        try:
            check_run_inputs(search.base, variant)
        except (OSError, ValueError) as exc:
            raise TuneError(f"{error_message(exc)} (from {search.source}, variant {variant}); no trial was "
                            "started") from None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_search(search: Search, storage_spec: StorageSpec, *, jobs: int | None = None, mirror: Any = None,
               say: Callable[[str], None] = print, report_only: bool = False) -> SearchOutcome:
    """Run the search until ``n_trials`` trials are counted (this command's workers and any other command's on
    the same storage), then write ``best_config.yaml`` and the report into the tune folder and record them in the
    search's record (the MLflow parent run of every trial). ``report_only``: train nothing.

    With more than one job, worker processes are spawned: a script that calls this must start from
    ``if __name__ == "__main__":``.
    """
    from ls.config import flatten
    from ls.runs.executor import open_parent, resolve_jobs
    from ls.runs.run import stored_config
    from ls.tune.report import write_outputs

    t0 = time.perf_counter()
    if not report_only:
        check_inputs(search)  # before the storage and the record: nothing is left behind by a search that cannot run
    with quiet_optuna():
        storage = open_storage(storage_spec, search)
        study = open_study(search, storage, storage_spec, create=not report_only)
    if report_only:
        with quiet_optuna():
            best_config, paths = write_outputs(search, study, storage_spec, say)
        trials = study.get_trials()
        return SearchOutcome(trials, _best(study), best_config, paths, None, time.perf_counter() - t0, 0, [])
    n, gpus = resolve_jobs(search.base, jobs)
    s = search.settings
    params = {**flatten(stored_config(search.base)), "tune.variants": search.variants, "tune.metric": search.metric,
              "tune.direction": search.direction, "tune.n_trials": s.n_trials, "tune.sampler": s.sampler.type,
              "tune.pruner": s.pruner.type, "tune.seed": s.seed, "tune.storage": storage_spec.safe,
              "tune.file": str(search.source), **{f"tune.space.{p.key}": p.describe() for p in search.params}}
    parent = open_parent(search.out, f"tune_{search.name}", mirror=mirror, tags={"tune": search.name, "group": "tune"},
                         params=params)
    status = "FINISHED"
    ran, failures = 0, []
    try:
        if n == 1:
            ran = work(WorkerSetup(search, storage_spec, threads=s.threads), mirror=mirror, say=say)
        else:
            _warm_feature_cache(search, say)
            threads = s.threads or (None if gpus else max(1, _cores() // n))
            setups = [WorkerSetup(search, storage_spec, index=i, tracking=None if mirror is None else mirror.settings,
                                  experiment_id=None if mirror is None else mirror.experiment_id, threads=threads,
                                  gpu=gpus[i] if gpus else None, log_to_file=True) for i in range(n)]
            say(f"[tune] {n} workers" + (f" (GPUs {', '.join(gpus)})" if gpus else f" ({threads} thread(s) each)")
                + "; each trial's output goes to its train.log")
            ended = run_workers(setups, say)
            failures = [i for i, (_, code) in enumerate(ended) if code != 0]
            for i in failures:
                say(f"warning: worker {i} ended with exit code {ended[i][1]} (its error is above)")
            ran = _run_by(study, {pid for pid, _ in ended})
            if mirror is not None:  # the workers' mirrors are gone: what they left unsynced is listed here
                _list_unsynced(search, mirror)
        with quiet_optuna():
            best_config, paths = write_outputs(search, study, storage_spec, say)
        for path in [p for p in (best_config,) if p is not None] + paths:
            parent.log_artifact(path, None if path == best_config else "report")
        parent.log_metrics(_summary_metrics(study))
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        raise
    finally:
        parent.end(status)
    return SearchOutcome(study.get_trials(), _best(study), best_config, paths, parent.run_id,
                         time.perf_counter() - t0, ran, failures)


def _list_unsynced(search: Search, mirror: Any) -> None:
    """Trial records the store lacks events of, listed with the command that syncs them."""
    from ls.runs.record import EventLog

    for folder in sorted(search.trials_dir.glob("*")) if search.trials_dir.is_dir() else []:
        if EventLog(folder).exists() and mirror.pending(folder):
            mirror.mark_unsynced(folder)


def _run_by(study: optuna.Study, pids: set[int]) -> int:
    """Trials started by the processes ``pids`` of this machine."""
    host = socket.gethostname()
    return sum(1 for t in study.get_trials(deepcopy=False)
               if (w := t.user_attrs.get(WORKER_ATTR)) and w.get("host") == host and w.get("pid") in pids)


def _warm_feature_cache(search: Search, say: Callable[[str], None]) -> None:
    """Build the base config's feature cache once, before the workers start, instead of in each at once."""
    from ls.data import build_datasets

    say("[tune] preparing the feature cache")
    build_datasets(search.base)


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _summary_metrics(study: optuna.Study) -> dict[str, float]:
    trials = study.get_trials(deepcopy=False)
    out = {f"trials_{state.name.lower()}": float(sum(t.state == state for t in trials))
           for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    best = _best(study)
    if best is not None and best.value is not None:
        out["best_value"] = float(best.value)
        out["best_trial"] = float(best.number)
    return out


__all__ = [
    "SearchOutcome",
    "TrialPruned",
    "TrialSeededSampler",
    "WorkerSetup",
    "open_storage",
    "open_study",
    "owner_is_gone",
    "recover_stale",
    "run_search",
    "run_trial",
    "validation_value",
    "work",
    "worker_identity",
]
