"""Atomic file writes: write to a temp file in the same folder, fsync, then rename over the target.

A crash mid-write leaves either the old file or the new one, never a truncated one. The file gets the mode a
plain ``open()`` would give it (``0666`` minus the umask), not the ``0600`` of the temp file. A write that
fails raises :class:`WriteError` naming the path and the reason ("no space left on device", "read-only file
system", ...), whatever layer (e.g. ``torch.save``) hit the failure.

Also here: what kind of file a path holds (:func:`file_kind`), so a text file given as a checkpoint is
reported as such, and the message for a ``torch.load`` failure (:func:`torch_load_problem`).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: errno -> the words a user searches for.
_WRITE_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "no space left on device (disk quota exceeded)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied (the folder is read-only for this user)",
    errno.EPERM: "permission denied (the folder is read-only for this user)",
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EFBIG: "file too large for this file system",
}


class WriteError(OSError):
    """A file could not be written; ``str()`` is one line naming the path and why."""

    def __str__(self) -> str:
        return self.strerror or "write failed"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly process-wide)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """What ``open(path, "w")`` would create: ``0o666`` minus the umask."""
    return 0o666 & ~current_umask()


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception in its cause/context chain, each once (chains can loop)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__]


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (itself, or one in its cause/context chain, e.g. under torch's RuntimeError)."""
    return next((e for e in _exception_chain(exc) if isinstance(e, OSError) and e.errno is not None), None)


def write_failure_reason(exc: BaseException, folder: str | Path | None = None) -> str:
    """Why a write failed, in words: from the errno when one is known, else from the free space of
    ``folder`` (a full disk shows up inside torch as ``enforce fail at inline_container.cc``)."""
    err = _os_error(exc)
    if err is not None:
        return _WRITE_REASONS.get(err.errno, err.strerror or str(err))
    if folder is not None:
        try:
            if shutil.disk_usage(folder).free < 1 << 20:
                return "no space left on device"
        except OSError:
            pass
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"the write failed ({first})"


def _write_error(path: Path, exc: BaseException) -> WriteError:
    err = _os_error(exc)
    return WriteError(err.errno if err is not None else errno.EIO,
                      f"cannot write {path}: {write_failure_reason(exc, path.parent)}")


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit it replaces ``path`` atomically.

    Failures to create, write or rename raise :class:`WriteError` naming ``path`` and the reason; the temp
    file is removed. Errors raised by the caller's own code inside the block pass through unchanged: only a
    failure of the file's own ``write``/``writelines``/``flush`` (or what a writer such as ``torch.save``
    turns it into) counts as a write failure there. A Ctrl-C during the block comes out as itself, also when
    the writer raised another error on top of it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    failures: list[OSError] = []
    callers = False  # the exception came from the caller's block, not from a write of the file
    try:
        with os.fdopen(fd, mode) as fh:
            _record_write_failures(fh, failures)
            try:
                yield fh
            except BaseException as exc:
                interrupt = next((e for e in _exception_chain(exc) if isinstance(e, KeyboardInterrupt)), None)
                if interrupt is not None and interrupt is not exc:
                    # Ctrl-C mid-write: the writer's follow-on error (torch's zip writer fails on close) would
                    # hide it, and an interrupted run must end as interrupted, not as failed.
                    raise interrupt from None
                callers = not _from_failed_write(exc, failures)
                raise
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp creates 0600; give what open() would
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if callers or isinstance(exc, WriteError) or not isinstance(exc, (OSError, RuntimeError)):
            raise
        raise _write_error(path, exc) from exc


def _record_write_failures(fh: IO, failures: list[OSError]) -> None:
    """Make the file note the OSErrors of its own writes, so a failure inside the caller's block is known
    to be the file's (code that writes through it, e.g. torch.save, may raise something else on top)."""
    def tracked(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except OSError as exc:
                failures.append(exc)
                raise

        return call

    for name in ("write", "writelines", "flush"):
        setattr(fh, name, tracked(getattr(fh, name)))  # an instance attribute: still the real file object


def _from_failed_write(exc: BaseException, failures: list[OSError]) -> bool:
    """Whether ``exc`` is one of the file's failed writes, has one in its cause/context chain, or is torch's
    ``inline_container`` error after one (torch does not always chain it)."""
    if not failures:
        return False
    if any(e is f for e in _exception_chain(exc) for f in failures):
        return True
    return isinstance(exc, RuntimeError) and "inline_container" in str(exc)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_copy(src: str | Path, path: str | Path) -> None:
    """Copy the file ``src`` to ``path`` through a temp file + rename."""
    with open(src, "rb") as source, atomic_open(path, "wb") as fh:
        shutil.copyfileobj(source, fh)


@contextmanager
def file_lock(path: str | Path, *, wait_s: float = 0.0) -> Iterator[bool]:
    """An exclusive lock on ``path`` (a file, created if absent, or a folder) for as long as the block runs;
    the lock goes with the process that holds it, also when it is killed. Yields whether it was taken within
    ``wait_s`` seconds (0: one try)."""
    import time

    path = Path(path)
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no cross-process lock on Windows
            yield True
            return
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """``torch.save`` through a temp file + rename (checkpoints are never half-written)."""
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


# -- reading -----------------------------------------------------------------------------------------------
def file_kind(path: str | Path) -> str:
    """What ``path`` holds, from its first bytes: ``torch-zip`` (``torch.save`` since 1.6, any zip),
    ``torch-legacy`` (a pickle), ``safetensors``, ``empty``, ``text`` or ``unknown``. ``directory`` for a
    folder."""
    path = Path(path)
    if path.is_dir():
        return "directory"
    with path.open("rb") as fh:
        head = fh.read(4096)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-legacy"
    if len(head) >= 9:
        size = int.from_bytes(head[:8], "little")
        if 0 < size < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        # a cut multi-byte character at the end of the sample is still text
        try:
            head[:-3].decode("utf-8")
            return "text" if len(head) > 3 else "unknown"
        except UnicodeDecodeError:
            return "unknown"


def describe_kind(kind: str) -> str:
    return {
        "empty": "an empty file",
        "text": "a text file",
        "unknown": "not a PyTorch or safetensors file",
        "directory": "a folder",
        "safetensors": "a safetensors file",
        "torch-zip": "a PyTorch file",
        "torch-legacy": "a PyTorch (legacy pickle) file",
    }.get(kind, kind)


def torch_load_problem(exc: BaseException) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed, without PyTorch's advice to load with
    ``weights_only=False`` (which would run whatever code the file carries)."""
    text = str(exc)
    if "weights_only" in text or "Unsupported global" in text or "WeightsUnpickler" in text:
        found = re.search(r"(?:unsupported|Unsupported global:)\s+GLOBAL\s+([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds Python objects other than tensors and plain values{what}, which are refused "
                "because loading them could run arbitrary code")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"it is corrupt or not a checkpoint ({type(exc).__name__}: {first})"


__all__ = [
    "WriteError",
    "atomic_copy",
    "atomic_open",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "default_file_mode",
    "describe_kind",
    "file_kind",
    "file_lock",
    "torch_load_problem",
    "write_failure_reason",
]
