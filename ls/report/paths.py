"""How a report names folders, files and stores: never by an absolute path.

A report is meant to be shared (a paper's supplement, a repository): an absolute path would show the author's
machine (user name, mount points) and mean nothing elsewhere. Run folders are named relative to the folder
that holds them all, other paths relative to the working directory when inside it, else by their last part.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

# An absolute POSIX path inside free text: a "/" that starts a token (not part of a word, a URI's "//", a
# "n/c" or "device/Meditron/icbhi_score" key), followed by a name character, up to a space or punctuation.
_ABSOLUTE_IN_TEXT = re.compile(r"(?<![\w/:.~-])/(?=[\w.~-])[^\s'\"()\[\],;]*")


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as a report shows it: as given when relative, relative to the working directory when inside
    it, else its last part (``/home/me/study/runs`` -> ``runs``)."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        return p.name or p.as_posix()


def shown_uri(uri: str) -> str:
    """A tracking URI as a report shows it: a local store's file by :func:`shown_path`
    (``sqlite:////home/me/mlflow.db`` -> ``sqlite:///mlflow.db``), a server without user name or password."""
    for scheme in ("sqlite:///", "file://"):
        if uri.startswith(scheme):
            return scheme + shown_path(uri[len(scheme):])
    parts = urlsplit(uri)
    if parts.netloc and "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
        return urlunsplit(parts)
    return uri


def without_absolute_paths(text: str) -> str:
    """``text`` with every absolute path in it replaced by :func:`shown_path` of it."""
    return _ABSOLUTE_IN_TEXT.sub(lambda m: shown_path(m.group(0)), text)


def shown_sources(sources: Sequence[str]) -> list[str]:
    """Names of runs for a report: absolute run folders relative to the folder that holds them all
    (``/x/study/runs/strict/ast/seed0`` -> ``strict/ast/seed0``; a single folder: its last part); other
    names (relative folders, MLflow runs) unchanged, except for any absolute path inside them."""
    absolute = [s for s in sources if os.path.isabs(s)]
    common = os.path.commonpath(absolute) if absolute else ""
    out = []
    for source in sources:
        if not os.path.isabs(source):
            out.append(without_absolute_paths(source))
        elif source == common:
            out.append(PurePosixPath(Path(source).as_posix()).name or source)
        else:
            out.append(Path(os.path.relpath(source, common)).as_posix())
    return out


__all__ = ["shown_path", "shown_sources", "shown_uri", "without_absolute_paths"]
