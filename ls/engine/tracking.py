"""What the Trainer needs of experiment tracking: somewhere to put each epoch's metrics.

The engine knows no tracker implementation: a run's record and its MLflow mirror live in :mod:`ls.runs`
(``ls.runs.record.RunRecord``), and a notebook may pass anything with these two methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """Receives a run's metrics (``step``: the epoch) and its end (``FINISHED``, ``FAILED``, ``KILLED``)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def end(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """Records nothing: non-zero DDP ranks, unit tests, a Trainer used on its own."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass


__all__ = ["NullTracker", "Tracker"]
