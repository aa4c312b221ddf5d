"""Readable errors: a configuration or data error ends the run with this project's own message, not a traceback.

A bad setting raised inside a bundle config surfaces through MONAI as 70-180 lines of traceback ending in
``RuntimeError: Failed to evaluate ConfigExpression: "$custom_nets..."``, with the useful message in the middle.
``install()`` (called when ``custom_nets`` is imported, so by every bundle, ``python -m custom_nets`` and every
``torchrun`` worker) sets a ``sys.excepthook`` that looks through the chain of an uncaught exception
(``__cause__``/``__context__``) for an error of this project and, if it finds one, prints one short block as the
last lines: the config key and file it came from, where it was raised, and the message (what is wrong and the fix).
The full traceback is printed only with ``S3D_DEBUG=1`` (the block then follows it). Errors of MONAI, torch or
any other library, and bugs, keep Python's usual traceback.

An exception is this project's user error when it is

* an instance of ``UserError`` (new error classes mix it in, e.g. ``ConfigError(UserError, ValueError)``), or
* a ``ValueError``, ``KeyError`` or file error (``FileNotFoundError``, ``PermissionError``, ``NotADirectoryError``,
  ``IsADirectoryError``, ``FileExistsError``) with a message, raised by a ``raise`` statement of a module of the
  ``custom_nets`` package (the deepest traceback frame). A ``KeyError``/``ValueError`` that Python raises for a
  lookup or conversion inside the package (``d[key]``, ``int(text)``) is a bug and is not recognised.

Under ``torchrun`` the block is also written to the worker's ``TORCHELASTIC_ERROR_FILE``, so torchrun's closing
failure summary shows it instead of "To enable traceback see: ...".
"""

from __future__ import annotations

import json
import linecache
import os
import sys
import time
import traceback
from pathlib import Path
from types import TracebackType

from custom_nets.bundle_command_line import config_files_from_argv

__all__ = ["UserError", "ConfigError", "CheckpointError", "DEBUG_VARIABLE", "install", "project_error", "error_block"]

DEBUG_VARIABLE = "S3D_DEBUG"
PACKAGE_DIR = Path(__file__).resolve().parent
# built-in exception types whose message, when raised by the package itself, is meant for the user
RECOGNISED_TYPES = (
    ValueError, KeyError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError,
)


class UserError(Exception):
    """Marker base class of errors in the user's settings, data or files (not bugs).

    The message says what is wrong, names the file, key or value, and the fix; the command line shows it without a
    traceback. Mix it into a built-in type so that callers can keep catching that type:
    ``class ConfigError(UserError, ValueError)``.
    """


class ConfigError(UserError, ValueError):
    """A bundle setting or command-line override that cannot work (a ``ValueError``)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not fit this run or cannot be read (a ``ValueError``)."""


def debug_enabled() -> bool:
    """True when ``S3D_DEBUG`` is set to anything but "", "0", "false" or "no"."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def _deepest_frame(tb: TracebackType | None) -> tuple[str, int, str] | None:
    """(file, line, function) of the frame that raised."""
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return None
    code = last.tb_frame.f_code
    return code.co_filename, last.tb_lineno, code.co_name


def _in_package(filename: str) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(PACKAGE_DIR)
    except (OSError, ValueError):
        return False


def _message(exc: BaseException) -> str:
    """The exception's message; a KeyError's is unquoted (``str(KeyError("x"))`` is ``"'x'"``)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def project_error(exc: BaseException) -> bool:
    """Whether ``exc`` itself (not its chain) is a user error of this project (see the module docstring)."""
    if isinstance(exc, UserError):
        return True
    if not isinstance(exc, RECOGNISED_TYPES) or not _message(exc).strip():
        return False
    frame = _deepest_frame(exc.__traceback__)
    if frame is None or not _in_package(frame[0]):
        return False
    return linecache.getline(frame[0], frame[1]).lstrip().startswith("raise")


def _chain(exc: BaseException):
    """``exc``, then what caused it, outermost first (the order of Python's own traceback, reversed)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)


def find_project_error(exc: BaseException) -> BaseException | None:
    """The outermost user error of this project in the chain of ``exc``; None if there is none."""
    return next((e for e in _chain(exc) if project_error(e)), None)


def _config_key(exc: BaseException) -> str | None:
    """The id of the innermost bundle config item (``ConfigExpression``/``ConfigComponent``) being evaluated or
    instantiated when ``exc`` or one of its wrappers was raised, with ``#`` as separator (``train#trainer``)."""
    key = None
    for e in _chain(exc):
        tb = e.__traceback__
        while tb is not None:
            item = tb.tb_frame.f_locals.get("self")
            if type(item).__module__ == "monai.bundle.config_item" and hasattr(item, "get_id"):
                key = str(item.get_id()).replace("::", "#") or key
            tb = tb.tb_next
        if key is not None:
            return key
    return None


def _config_file_of(key: str, argv: list[str]) -> str | None:
    """The last ``--config_file`` of a ``monai.bundle run`` command line that defines ``key``'s top-level entry."""
    from monai.bundle import ConfigParser

    top = key.split("#")[0]
    found = None
    for f in config_files_from_argv(argv):
        if top in ConfigParser.load_config_file(f):
            found = f
    return found


def error_block(error: BaseException, top: BaseException | None = None, argv: list[str] | None = None) -> str:
    """The lines shown for a user error ``error`` (found in the chain of ``top``): its type, the config key and
    file it came from, where the package raised it, then the message (what is wrong and the fix) indented.

    Example (one line, then the indented message)::

        FileNotFoundError in config key 'datalist' of train.yaml (raised at custom_nets/data/datalist.py:159):
          dataset '/nonexistent/mri' does not exist: pass a folder of .nii/.nii.gz files or a datalist JSON file
    """
    head = type(error).__name__
    try:
        key = _config_key(top if top is not None else error)
        if key is not None:
            source = _config_file_of(key, list(sys.argv if argv is None else argv))
            head += f" in config key '{key}'" + (f" of {source}" if source else "")
    except Exception:  # the block must never fail: the location is a courtesy
        pass
    frame = _deepest_frame(error.__traceback__)
    if frame is not None and _in_package(frame[0]):
        head += f" (raised at {Path(frame[0]).resolve().relative_to(PACKAGE_DIR.parent).as_posix()}:{frame[1]})"
    body = "\n".join("  " + line for line in _message(error).strip().splitlines())
    return f"{head}:\n{body}"


def _write_torchelastic_error_file(error: BaseException, block: str) -> None:
    """Give torchrun's failure summary the block (its ``traceback :`` field shows ``py_callstack``)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or os.path.exists(path):
        return
    data = {"message": {"message": f"{type(error).__name__}: {_message(error)}",
                        "extraInfo": {"py_callstack": block, "timestamp": str(int(time.time()))}}}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


def excepthook(exc_type, exc, tb, fallback=sys.__excepthook__) -> None:
    """``sys.excepthook``: a user error of this project as a short block, anything else as Python prints it."""
    try:
        error = find_project_error(exc) if isinstance(exc, Exception) else None
    except Exception:
        error = None
    if error is None:
        fallback(exc_type, exc, tb)
        return
    try:
        block = error_block(error, exc)
    except Exception:
        fallback(exc_type, exc, tb)
        return
    if debug_enabled():
        fallback(exc_type, exc, tb)
        sys.stderr.write("\n")
    else:
        sys.stderr.write(f"(full traceback: set {DEBUG_VARIABLE}=1)\n")
    sys.stderr.write(block + "\n")
    sys.stderr.flush()
    try:
        _write_torchelastic_error_file(error, block if not debug_enabled() else "".join(
            traceback.format_exception(exc_type, exc, tb)) + "\n" + block)
    except OSError:
        pass


def install() -> None:
    """Set ``excepthook`` as ``sys.excepthook`` unless another tool (IPython, a debugger) already replaced Python's."""
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = excepthook
