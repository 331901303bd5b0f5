"""One error style for every command line of ls: ``error: <what, where, what was expected>`` and exit code 2.

A user-facing problem (bad config or argument, missing or unreadable file, data, audio, weights or checkpoint
problem, tracking server, a failed write) is one ``error:`` line on stderr, no traceback. ``--traceback`` (or
the environment variable ``LS_TRACEBACK=1``) prints the traceback as well. Anything else is reported the same
way but marked as unexpected: likely a bug in ls, worth the traceback.

Warnings raised while a command runs are printed as ``warning: <message>`` (no source line).

Every command line gets the common options with one call, :func:`add_common_options` (``--traceback``, and
``-p/--plugin MODULE``: a plugin module to load, ``ls.utils.plugins``), and runs its body through
:func:`run_command`, which loads the ``-p`` plugins before the body and turns errors into the one line. A new
command needs nothing else::

    p = argparse.ArgumentParser(prog="python -m ls.mine")
    ...
    add_common_options(p)
    args = p.parse_args(argv)
    return run_command(lambda: body(args), args)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from ls.utils.errors import LsError

#: Environment variable that makes every ls command print tracebacks (same as ``--traceback``).
TRACEBACK_ENV = "LS_TRACEBACK"
#: Exit code of every user-facing error.
EXIT_ERROR = 2
#: Exit code after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

#: Exception types whose message is meant for the user: ls's own errors derive from these. Not RuntimeError,
#: KeyError, IndexError, ...: raised by ls's own code or a library, those are bugs and need their type.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, LsError)
#: Library errors that still describe the user's setup, by class name (importing torch here would be slow).
_SETUP_ERROR_NAMES = frozenset({"OutOfMemoryError"})  # torch: CUDA out of memory (batch size, model size)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a problem of the input or setup (one plain line) rather than a likely bug."""
    return isinstance(exc, USER_ERRORS) or any(c.__name__ in _SETUP_ERROR_NAMES for c in type(exc).__mro__)


#: Under the ``ausc`` command (``ls.cli``) the program name of a subcommand's parser, e.g. ``ausc evaluate``.
_prog: str | None = None


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--traceback`` and ``-p/--plugin MODULE`` (repeatable), the options of every ls command line."""
    parser.add_argument("--traceback", action="store_true",
                        help=f"on an error, print the Python traceback too (or set {TRACEBACK_ENV}=1)")
    parser.add_argument("-p", "--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                        help="load this plugin module first (a mechanism or dataset reader defined outside ls; "
                             "repeatable; also LS_PLUGINS=mod1,mod2 or plugins: [module] in the config); child "
                             "processes load it too")
    if _prog is not None:
        parser.prog = _prog


def load_command_plugins(args: Any) -> None:
    """Load the plugin modules given with ``-p/--plugin`` (``args.plugins``)."""
    names = getattr(args, "plugins", None)
    if names:
        from ls.utils import plugins

        plugins.load(names, "--plugin")


def want_traceback(args: Any = None) -> bool:
    flag = bool(getattr(args, "traceback", False))
    return flag or os.environ.get(TRACEBACK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def error_message(exc: BaseException) -> str:
    """The user-facing text of ``exc``: its message, with file errors as ``<path>: <reason>``."""
    if isinstance(exc, OSError) and exc.strerror:
        if exc.filename is None:  # OSError(errno, message): the message says it all, "[Errno n]" does not
            return str(exc.strerror)
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return f"{where}: {exc.strerror}"
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    text = str(exc).strip()
    return text or type(exc).__name__


def report_error(exc: BaseException, args: Any = None, file: Any = None) -> int:
    """Print ``exc`` in the ls style (with the traceback when asked) and return the exit code."""
    file = file or sys.stderr
    if want_traceback(args):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=file)
    text = error_message(exc)
    if not is_user_error(exc):
        hint = "" if want_traceback(args) else f"; run again with --traceback ({TRACEBACK_ENV}=1) to see where"
        text = f"unexpected {type(exc).__name__}: {text}{hint}"
    print(f"error: {text}", file=file, flush=True)
    return EXIT_ERROR


def fail(message: str, file: Any = None) -> int:
    """An argument problem found by the command itself: one ``error:`` line, exit code 2."""
    print(f"error: {message}", file=file or sys.stderr, flush=True)
    return EXIT_ERROR


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


@contextlib.contextmanager
def plain_warnings() -> Iterator[None]:
    """While a command runs, print warnings as ``warning: <message>``, without the source line Python adds."""
    previous = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        yield
    finally:
        warnings.formatwarning = previous


def run_command(body: Callable[[], int], args: Any = None) -> int:
    """Run a command's ``body`` after loading its ``-p`` plugins; user errors become one ``error:`` line and
    exit code 2, Ctrl-C exit 130."""
    with plain_warnings():
        try:
            load_command_plugins(args)
            return body()
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        except Exception as exc:  # noqa: BLE001 - the one place a command turns exceptions into messages
            return report_error(exc, args)


__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "TRACEBACK_ENV",
    "USER_ERRORS",
    "add_common_options",
    "error_message",
    "fail",
    "is_user_error",
    "load_command_plugins",
    "plain_warnings",
    "report_error",
    "run_command",
    "want_traceback",
]
