"""Bases of ls's own error classes, for the ones that cannot simply derive from ``ValueError`` or ``OSError``.

The command lines (:mod:`ls.utils.cli`) print ``ValueError``, ``OSError`` and :class:`LsError` as one plain
``error:`` line; anything else is reported as unexpected (a likely bug). Most ls errors derive from
``ValueError`` (``ConfigError``, ``CheckpointError``, ...) or ``OSError`` (``WriteError``); an error that
keeps another built-in base for its callers (``TrackingError`` is a ``RuntimeError``) adds :class:`LsError`.
"""

from __future__ import annotations


class LsError(Exception):
    """Marks an error class of ls whose message is meant for the user (a problem of input, data or setup)."""


class UnknownNameError(LsError, KeyError):
    """A name (task, table column, metadata factor) that is not among the known ones. A ``KeyError`` for
    callers that look names up; ``str()`` is the message itself, not its quoted repr."""

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


__all__ = ["LsError", "UnknownNameError"]
