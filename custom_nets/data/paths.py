"""File-system checks whose messages say what is wrong and how to fix it: readable inputs, writable outputs.

Reader libraries report an unreadable file in their own words (ITK: "Could not create IO object for
reading file"), and ``os.path.isfile`` is ``False`` both for a missing file and for a file inside a folder
this user may not enter. ``input_problem`` tells these apart before any reader runs; ``as_files`` turns an entry's
path value (one file, or one per modality) into a list.
``check_writable_dir`` is called by the training configs before any work, so an output folder that
cannot be written stops the run at once with the path and the fix instead of a traceback after
preprocessing.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile

__all__ = ["as_files", "check_writable_dir", "input_problem", "permission_denied", "read_fix"]


def as_files(value) -> list:
    """An entry's path value as a list of paths: an image listed as one file, or one file per modality."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def read_fix(path) -> str:
    """How to make an input ``path`` readable."""
    path = os.fspath(path)
    return f"fix: make it readable (chmod a+r '{path}', and a+x on its folders) or run as a user who can read it"


def permission_denied(path) -> str:
    """The ``permission_denied`` reason for an input ``path`` this user may not read."""
    path = os.fspath(path)
    return f"permission_denied: '{path}' cannot be read by this user; {read_fix(path)}"


def input_problem(path) -> str | None:
    """``None`` when ``path`` is a file this process may read, else a coded reason.

    Returns:
        ``"missing: file not found"``, ``"missing: path is a folder, not an image file"`` or the
        ``permission_denied`` reason (for the file itself or a folder above it that cannot be entered).
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except PermissionError:  # a folder above the file cannot be entered
        return permission_denied(path)
    except OSError:
        return "missing: file not found"
    if stat.S_ISDIR(mode):
        return "missing: path is a folder, not an image file"
    if not os.access(path, os.R_OK):
        return permission_denied(path)
    return None


def _nearest_existing(folder: str) -> str:
    """``folder`` itself or its closest ancestor that exists."""
    current = folder
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def _refuse(folder: str, what: str, problem: str, fix: str) -> PermissionError:
    return PermissionError(f"{what} '{folder}' is not writable: {problem}; fix: {fix}")


def check_writable_dir(folder, what: str = "output folder", option: str = "--output_dir") -> str:
    """Make sure ``folder`` can be created (if absent) and written, without creating it.

    A temporary file is written and removed in ``folder`` when it exists, else in its nearest
    existing ancestor (where the missing folders would be created).

    Args:
        folder: the folder a run will write to (e.g. ``output_dir``).
        what: how messages name the folder.
        option: the setting that chooses the folder, named in the fix.

    Returns:
        ``folder`` as an absolute path.

    Raises:
        PermissionError: the folder (or the ancestor it would be created in) cannot be written, is on
            a read-only file system, or a file stands where a folder is needed; the message names the
            path and the fix.
        ValueError: ``folder`` is empty.
    """
    if folder is None or not os.fspath(folder):
        raise ValueError(f"{what} is empty: pass a folder this user can write, e.g. --output_dir runs/my_run")
    folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        raise _refuse(folder, what, f"'{existing}' is a file, not a folder", f"pass {option} <a folder path>")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write_test_", dir=existing)
    except PermissionError:
        created = "" if existing == folder else f" (it would be created inside '{existing}')"
        raise _refuse(
            folder, what, f"permission denied{created}",
            f"pass {option} <a folder you can write>, make '{existing}' writable (chmod u+w '{existing}') or run "
            "as a user who can write there",
        ) from None
    except OSError as err:
        problem = "read-only file system" if err.errno == errno.EROFS else (err.strerror or str(err))
        raise _refuse(folder, what, f"{problem} at '{existing}'", f"pass {option} <a folder on a writable disk>") from err
    os.close(handle)
    os.remove(probe)
    return folder
