"""``option(default, "help")``: a dataclass field with its help text beside it.

Config dataclasses declare every key with :func:`option`, so the meaning of a key lives next to its default;
``docs/config.md`` is generated from these help texts (``scripts/gen_config_docs.py``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

HELP = "help"


def option(default: Any = dataclasses.MISSING, help: str = "") -> Any:
    """A dataclass field with ``help`` in its metadata; mutable defaults (lists, dicts) are copied per instance."""
    meta = {HELP: help}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d), metadata=meta)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class FieldError(ValueError):
    """A ``__post_init__`` problem with one key: the config loader names ``<section>.<key>``, not the section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get(HELP, "")


def field_default(f: dataclasses.Field) -> Any:
    """The default value of a field (its factory called), or ``dataclasses.MISSING``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING
