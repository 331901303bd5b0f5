"""Credentials never leave the process: what looks like one is masked before anything is written or logged.

A run folder's files (``config.yaml``, ``run.json``, the event log, checkpoints) and everything mirrored to
MLflow pass through :func:`without_credentials` or :func:`redact_params`; messages pass through :func:`scrub`.
"""

from __future__ import annotations

import json
import mmap
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ls.utils.credentials import is_credential_key

#: Replaces credentials in params, tags and messages.
REDACTED = "***"
#: Shorter "secrets" would be scrubbed out of unrelated text.
MIN_SECRET_CHARS = 4

#: Files whose secrets can be cut out (a redacted copy is kept or uploaded); another file holding one is withheld.
TEXT_SUFFIXES = frozenset({".yaml", ".yml", ".json", ".jsonl", ".txt", ".csv", ".tsv", ".md", ".log", ".cfg", ".ini",
                           ".toml", ".py", ".sh", ".tex"})
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def strip_userinfo(text: str, replacement: str = REDACTED + "@") -> str:
    """``text`` with the ``user:password@`` part of every URI in it replaced by ``replacement``."""
    return _USERINFO.sub(lambda m: m.group("scheme") + replacement, text)


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """``http://user:pw@host/x`` -> (``http://host/x``, ``user``, ``pw``), percent-decoded; other URIs as they are."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri, None, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), unquote(user) or None, unquote(password) if password else None


def secret_values(secrets: Iterable[str | None]) -> list[str]:
    """The secrets worth scrubbing, longest first (so that a secret containing another goes whole)."""
    return sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without URI userinfo and without any of ``secrets``."""
    text = strip_userinfo(str(text))
    for secret in secret_values(secrets):
        text = text.replace(secret, REDACTED)
    return text


def redact_params(params: Mapping[str, Any], secrets: Iterable[str | None] = ()) -> dict[str, Any]:
    """A copy of flat ``params`` that is safe to store or log: credential-like keys get ``"***"`` (unset values
    stay as they are), ``user:password@`` is cut out of URIs in values, and ``secrets`` are masked wherever
    they occur in a string value (also inside lists and mappings)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if is_credential_key(key) and value not in (None, ""):
            out[key] = REDACTED
        elif isinstance(value, str):
            out[key] = scrub(value, secrets)
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value, default=str)
            clean = scrub(text, secrets)
            out[key] = value if clean == text else clean
        else:
            out[key] = value
    return out


def holds_secret(path: str | Path, secrets: Iterable[str | None]) -> bool:
    """Whether the file ``path`` contains any of ``secrets`` (its bytes are searched, text or not)."""
    needles = [s.encode() for s in secret_values(secrets)]
    path = Path(path)
    if not needles or path.stat().st_size == 0:
        return False
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return any(data.find(n) != -1 for n in needles)


def redacted_text(path: str | Path, secrets: Iterable[str | None]) -> str | None:
    """The text of ``path`` with ``secrets`` (and URI userinfo) masked, or None when it is not a text file
    (:data:`TEXT_SUFFIXES`): a binary file holding a secret cannot be redacted, only withheld."""
    path = Path(path)
    if path.suffix.lower() not in TEXT_SUFFIXES:
        return None
    return scrub(path.read_text(encoding="utf-8", errors="replace"), secrets)


def without_credentials(node: Any) -> Any:
    """A nested config tree (plain dicts/lists) with every credential-like value set to None and the
    ``user:password@`` part of every URI removed: what a run folder stores and the mirror logs."""
    if isinstance(node, dict):
        return {k: (None if is_credential_key(k) and v is not None and not isinstance(v, (dict, list))
                    else without_credentials(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [without_credentials(v) for v in node]
    return strip_userinfo(node, "") if isinstance(node, str) else node


__all__ = [
    "REDACTED",
    "TEXT_SUFFIXES",
    "holds_secret",
    "is_credential_key",
    "redact_params",
    "redacted_text",
    "scrub",
    "secret_values",
    "split_userinfo",
    "strip_userinfo",
    "without_credentials",
]
