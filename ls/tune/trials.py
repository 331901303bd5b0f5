"""What a search's trials say (Optuna's study as ls reads it): the attributes ls gives them and how they count
toward ``n_trials``. Shared by the workers (:mod:`ls.tune.search`), the report and ``best_config.yaml``.

``n_trials`` counts complete, pruned and failed trials and those running or queued, all workers together; a
failed trial that was retried counts once, through its retry; a trial asked for after ``n_trials`` was reached
(another worker's, asked at the same moment) is failed at once, marked, and counts not at all.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

#: Study user attribute: what makes commands the same search (:meth:`ls.tune.config.Search.fingerprint`).
SEARCH_ATTR = "ls_search"
#: Trial user attributes: its run folder (relative to the tune folder), the worker that ran it (host, pid,
#: process start), why it failed, and that it was asked for after ``n_trials`` were reached (never run).
FOLDER_ATTR = "ls_folder"
WORKER_ATTR = "ls_worker"
ERROR_ATTR = "ls_error"
EXCESS_ATTR = "ls_excess"
#: Optuna's parameter holding the variant when a search has several.
VARIANT_PARAM = "variant"


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's warnings about experimental features (heartbeat, retries, matplotlib figures) and its INFO
    lines off: ls says what happens itself."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # ls records heartbeats itself (ask/tell): Optuna's note that they belong to Study.optimize is moot
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with")
            yield
    finally:
        optuna.logging.set_verbosity(level)


def retried_from(trial: FrozenTrial) -> int | None:
    """The number of the trial that ``trial`` retries (None for a trial of its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def _retried(trials: Sequence[FrozenTrial]) -> set[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count toward ``n_trials``: all but failed ones that were retried (their retry counts)
    and those asked for after ``n_trials`` was reached."""
    retried = _retried(trials)
    return [t for t in trials
            if not (t.state == TrialState.FAIL and (t.number in retried or t.user_attrs.get(EXCESS_ATTR)))]


def has_work(trials: Sequence[FrozenTrial], n_trials: int) -> bool:
    """A trial is queued (a retry or an enqueued one: always run), or fewer than ``n_trials`` count."""
    return any(t.state == TrialState.WAITING for t in trials) or len(counted(trials)) < n_trials


def is_excess(trials: Sequence[FrozenTrial], trial: FrozenTrial, n_trials: int) -> bool:
    """A new trial that another worker's trials, asked for just before, have made one too many."""
    if trial.system_attrs.get("fixed_params"):  # enqueued or retried: always run
        return False
    return sum(1 for t in counted(trials) if t.number < trial.number) >= n_trials


__all__ = [
    "ERROR_ATTR",
    "EXCESS_ATTR",
    "FOLDER_ATTR",
    "SEARCH_ATTR",
    "VARIANT_PARAM",
    "WORKER_ATTR",
    "counted",
    "has_work",
    "is_excess",
    "quiet_optuna",
    "retried_from",
]
