"""One executor for every group of runs: a :class:`~ls.runs.plan.Plan` runs in this process, one run after
another, or in a pool of worker processes (spawned; on CUDA one GPU per worker).

In a pool, each run's output goes to its ``train.log``; Ctrl-C reaches only this process, which stops the
workers at once (SIGTERM interrupts a run as Ctrl-C would, so its record ends KILLED and its ``last.pt`` can be
resumed) and starts no further run. On CPU every run uses ``threads`` intra-op threads whatever the number of
workers, because float reductions depend on the thread count: a run's numbers do not depend on how many ran
beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ls.engine.distributed import DistContext
from ls.engine.trainer import TrainingInterrupted
from ls.runs import folder as layout
from ls.runs.mirror import Mirror, TrackingSettings, open_hint
from ls.runs.plan import Plan, RunSpec
from ls.runs.record import EVENTS_FILE, RunRecord, SyncInterrupted
from ls.runs.run import train_run

#: Seconds the workers get to end their interrupted runs (records KILLED) before they are killed.
STOP_GRACE_S = 30.0


@dataclass
class RunResult:
    """How one run of a plan went."""

    key: str
    ok: bool
    seconds: float
    run_dir: Path | None = None
    run_id: str | None = None
    test: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    error: str = ""
    #: Records a worker's mirror could not sync: folder -> the command that syncs it.
    unsynced: dict[Path, str] = field(default_factory=dict)


class PlanInterrupted(TrainingInterrupted):
    """Ctrl-C during one run of a plan: which run, how many finished before it, and where it can continue."""

    def __init__(self, epoch: int, checkpoint: Path | None, spec: RunSpec, finished: int) -> None:
        super().__init__(epoch, checkpoint)
        self.spec, self.finished = spec, finished


# =================================================================================================
# Parent records
# =================================================================================================
def open_parent(folder: Path, name: str, *, mirror: Mirror | None, tags: Mapping[str, str] | None = None,
                params: Mapping[str, Any] | None = None) -> RunRecord:
    """The record a plan's runs are nested under (MLflow's parent run): started, or continued when ``folder``
    holds it already (a study run again)."""
    import ls

    record = RunRecord(folder, mirror)
    resumed = (folder / EVENTS_FILE).is_file()
    record.start(name, tags={"ls_version": ls.__version__, **(tags or {})})
    if params and not resumed:
        record.log_params(params)
    return record


def summarize(results: Sequence[RunResult]) -> dict[str, float]:
    """Mean and (sample, ddof=1) std of every test metric the finished runs share: ``{"<k>_mean", "<k>_std"}``."""
    done = [r for r in results if r.ok]
    keys = sorted(set.intersection(*(set(r.test) for r in done))) if done else []
    out: dict[str, float] = {"n_runs": float(len(done))}
    for k in keys:
        vals = np.array([r.test[k] for r in done], dtype=np.float64)
        out[f"{k}_mean"] = float(vals.mean())
        out[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return out


def tracking_summary(mirror: Mirror | None) -> str | None:
    """The last lines of a command that trained: how to look at its runs, or the commands that sync what the
    store did not take."""
    if mirror is None:
        return None
    if mirror.unsynced:
        return (f"MLflow: {mirror.settings.safe_uri} stayed out of reach; the records are kept in the run folders. "
                "Sync them when it is back with:\n" + "\n".join(f"  {c}" for c in mirror.unsynced.values()))
    return (f"MLflow: {mirror.settings.safe_uri} (experiment {mirror.settings.experiment_name!r}); "
            f"{open_hint(mirror.settings)}")


# =================================================================================================
# Executing
# =================================================================================================
@dataclass
class _Job:
    """Everything a (possibly separate) process needs to train one spec."""

    spec: RunSpec
    parent: Path | None
    settings: TrackingSettings | None
    experiment_id: str | None
    threads: int | None
    log_to_file: bool
    keep_going: bool
    epoch_end: Sequence[Callable[[int, dict[str, float]], None]] = ()


def execute(plan: Plan, *, mirror: Mirror | None = None, jobs: int = 1, gpus: Sequence[str] = (),
            threads: int | None = None, ctx: DistContext | None = None, progress: bool | None = None,
            keep_going: bool = False, on_start: Callable[[RunSpec, int], None] | None = None,
            on_result: Callable[[RunResult, int], None] | None = None,
            epoch_end: Sequence[Callable[[int, dict[str, float]], None]] = ()) -> list[RunResult]:
    """Run every spec of ``plan``; returns their results in the order they finished.

    ``keep_going``: a run that fails becomes a failed result (its traceback in its ``train.log``) and the others
    go on; otherwise its error propagates. In a pool a run's failure is always a result, and a worker process
    that dies fails the runs its pool held while the rest go on in a new pool. Ctrl-C raises
    :class:`PlanInterrupted` (``KeyboardInterrupt`` from a pool, once its workers are stopped; a run that had
    finished and was only being synced raises :class:`~ls.runs.record.SyncInterrupted`). ``jobs > 1`` runs a
    pool (``gpus``: one per worker on CUDA); ``threads``:
    intra-op threads of each run on CPU. ``on_start(spec, i)`` / ``on_result(result, i)`` follow progress
    (``i`` counts from 1). ``epoch_end`` goes to each Trainer (in-process runs only).
    """
    results: list[RunResult] = []

    def record(result: RunResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result, len(results))

    settings = None if mirror is None else mirror.settings
    experiment = None if mirror is None else mirror.experiment_id
    jobs = min(jobs, len(plan.specs))
    if jobs <= 1:
        for i, spec in enumerate(plan.specs, 1):
            if on_start is not None:
                on_start(spec, i)
            job = _Job(spec, plan.parent, settings, experiment, threads, False, keep_going, epoch_end)
            try:
                record(_run(job, mirror=mirror, ctx=ctx, progress=progress))
            except SyncInterrupted:  # the run finished; only its last sync was cut short
                raise
            except KeyboardInterrupt as exc:
                stopped = exc if isinstance(exc, TrainingInterrupted) else TrainingInterrupted(0, None)
                raise PlanInterrupted(stopped.epoch, stopped.checkpoint, spec, len(results)) from None
        return results
    if epoch_end:
        raise ValueError("epoch hooks run in this process only: use jobs=1")
    _warm_feature_caches(plan.specs)
    work = [_Job(spec, plan.parent, settings, experiment, threads, True, True) for spec in plan.specs]
    try:
        _run_pool(work, jobs, list(gpus), record, on_start)
    finally:
        if mirror is not None:  # the workers' records left unsynced are reported with this process's own
            for result in results:
                mirror.unsynced.update(result.unsynced)
    return results


def _run(job: _Job, *, mirror: Mirror | None = None, ctx: DistContext | None = None,
         progress: bool | None = None) -> RunResult:
    """Train (or continue) one spec. With ``keep_going`` a failure comes back as a result, with the traceback in
    the run's ``train.log`` (also when the run's output went to the console), so one bad run stops no other."""
    spec = job.spec
    own_mirror = mirror is None and job.settings is not None
    if own_mirror:  # a worker process: its own mirror of the same store
        mirror = Mirror(job.settings, experiment_id=job.experiment_id)
    left = (lambda: dict(mirror.unsynced)) if own_mirror else dict
    log_path = spec.run_dir / layout.LOG_FILE if job.log_to_file and spec.run_dir is not None else None
    t0 = time.perf_counter()
    try:
        with output_to(log_path), _threads(job.threads):
            try:
                outcome = train_run(spec.cfg, spec.variant, run_dir=spec.run_dir if spec.resume is None else None,
                                    resume=spec.resume, parent=job.parent, tags=spec.tags, mirror=mirror, ctx=ctx,
                                    fold=spec.fold, member=spec.member, progress=False if log_path else progress,
                                    epoch_end=job.epoch_end, evaluate_test=spec.evaluate_test)
            except Exception:
                if log_path is not None:
                    traceback.print_exc()  # into the run's log, where its output goes
                raise
    except Exception as exc:
        if not job.keep_going:
            raise
        if log_path is None and spec.run_dir is not None:
            _log_traceback(spec.run_dir / layout.LOG_FILE, exc)
        return RunResult(spec.key, False, time.perf_counter() - t0, spec.run_dir,
                         error=f"{type(exc).__name__}: {exc}", unsynced=left())
    return RunResult(spec.key, True, time.perf_counter() - t0, outcome.run_dir, outcome.run_id,
                     {k: float(v) for k, v in outcome.test_metrics.items()}, outcome.best_epoch, unsynced=left())


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def output_to(path: Path | None) -> Iterator[None]:
    """Everything a run prints goes to ``path`` (appended: a resumed run continues its log); None: the console."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8", buffering=1) as fh, contextlib.redirect_stdout(fh), \
            contextlib.redirect_stderr(fh):
        yield


def _log_traceback(path: Path, exc: BaseException) -> None:
    """Append the traceback of ``exc`` to ``path``; a log that cannot be written (the failure may be that the
    folder is not writable) leaves the error in the result only."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=fh)


def _warm_feature_caches(specs: Sequence[RunSpec]) -> None:
    """Build each feature cache once before the workers start, instead of in every worker at once."""
    from ls.config import to_dict
    from ls.data import build_datasets

    seen = set()
    for spec in specs:
        key = json.dumps([to_dict(spec.cfg.dataset), to_dict(spec.cfg.audio)], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            print("[runs] preparing the feature cache", flush=True)
            build_datasets(spec.cfg)


# -- the pool --------------------------------------------------------------------------------------------------
#: In a worker process: whether a run is in progress (what SIGTERM from the executor's process then does).
_in_run = False


def _stop_worker(signum: int, frame: Any) -> None:
    if _in_run:
        raise KeyboardInterrupt  # as Ctrl-C: the run's record ends KILLED
    os._exit(0)  # between runs there is nothing to end


def _init_worker(gpus: Any = None) -> None:
    """Ctrl-C reaches only the executor's process, which stops the workers with SIGTERM, so that a worker never
    takes another run after an interrupt; on CUDA the worker sees only its own GPU."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())


def _worker_run(job: _Job) -> RunResult:
    global _in_run
    _in_run = True
    try:
        return _run(job)
    finally:
        _in_run = False


def _run_pool(work: list[_Job], jobs: int, gpus: list[str], record: Callable[[RunResult], None],
              on_start: Callable[[RunSpec, int], None] | None) -> None:
    import importlib
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # forking a process with torch thread pools can deadlock
    module = importlib.import_module(__name__)  # functions by module name, also when run as __main__

    def new_pool() -> Any:
        gpu_queue = None  # each worker takes one GPU when it starts
        if gpus:
            gpu_queue = ctx.Queue()
            for g in gpus[:jobs]:
                gpu_queue.put(g)
        return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=module._init_worker,
                                   initargs=(gpu_queue,))

    pool = new_pool()
    queued = iter(enumerate(work, 1))
    pending: dict[Future, tuple[_Job, Any]] = {}  # each run with the pool that holds it

    def submit_next() -> bool:
        """Start the next queued run; False when none is left."""
        nonlocal pool
        for i, job in queued:
            if on_start is not None:
                on_start(job.spec, i)
            try:
                future = pool.submit(module._worker_run, job)
            except BrokenExecutor:  # a worker died since the last result: a new pool takes the run
                pool.shutdown(wait=True)
                pool = new_pool()
                future = pool.submit(module._worker_run, job)
            pending[future] = (job, pool)
            return True
        return False

    def fill() -> None:
        # One run per worker, none queued: a queued run is already taken by the pool and cannot be cancelled.
        while len(pending) < jobs and submit_next():
            pass

    try:
        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                job, owner = pending.pop(fut)
                try:
                    result = fut.result()
                except BrokenExecutor:
                    # A worker died (out of memory, killed): its pool ends every run it holds. Those runs keep
                    # their folders; running the command again continues them.
                    result = RunResult(job.spec.key, False, 0.0, job.spec.run_dir,
                                       error="its worker process died (out of memory or killed?); running the "
                                             "command again continues it")
                    if owner is pool:  # the rest of its runs fail at once; new runs go to a new pool
                        pool.shutdown(wait=True)
                        pool = new_pool()
                except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be sent back
                    result = RunResult(job.spec.key, False, 0.0, job.spec.run_dir, error=f"worker failed: {exc}")
                record(result)
            fill()
    except BaseException:
        if pending:
            print(f"[runs] stopping the {len(pending)} running run(s)", flush=True)
        for owner in {id(p): p for p in [pool, *(p for _, p in pending.values())]}.values():
            _stop_workers(owner)
        raise
    pool.shutdown(wait=True)


def _stop_workers(pool: Any) -> None:
    """Stop ``pool`` now: no further run starts, each running run is interrupted as by Ctrl-C (SIGTERM, see
    :func:`_init_worker`), and a worker still alive after :data:`STOP_GRACE_S` is killed."""
    # The pool does not expose its worker processes; without them, shutdown(wait=False) would leave each running
    # run to finish its training.
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


# -- how many at once ------------------------------------------------------------------------------------------
def uses_cuda(cfg: Any) -> bool:
    device = cfg.training.device
    if device == "cpu":
        return False
    import torch

    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def visible_gpus() -> list[str]:
    import torch

    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given:
        return [g.strip() for g in given.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def resolve_jobs(cfg: Any, jobs: int | None) -> tuple[int, list[str]]:
    """How many runs go at once (``jobs``; None: 1 on CPU, every visible GPU on CUDA), and the GPU of each
    worker on CUDA (empty on CPU). On CUDA a pool runs one process per GPU."""
    cuda = uses_cuda(cfg)
    gpus = visible_gpus() if cuda else []
    n = jobs or (max(1, len(gpus)) if cuda else 1)
    if cuda and n > 1 and n > len(gpus):
        raise ValueError(f"jobs {n} but {len(gpus)} GPU(s) visible: on CUDA runs go one process per GPU")
    return n, gpus[:n] if cuda and n > 1 else []


__all__ = [
    "STOP_GRACE_S",
    "PlanInterrupted",
    "RunResult",
    "execute",
    "open_parent",
    "output_to",
    "resolve_jobs",
    "summarize",
    "tracking_summary",
]
