"""Opening one dataset source: its path, its text and JSON, the entry lists and paths inside it, with one wording.

Every reader of a dataset source (the datalist reader ``custom_nets.data.datalist``, the collection layouts of
``custom_nets.data.layouts``, the labeled layer ``custom_nets.data.labeled_dataset``) goes through these
functions, so the same problem raises the same exception type with the same message whichever reader meets it.
Each message names the source as ``dataset '<absolute path>'`` (an entry as ``entry <i> of the '<key>' list of
dataset '<path>'``), says what is wrong, and after a colon the fix:

* ``FileNotFoundError``: the source does not exist;
* ``PermissionError``: the source exists but this user may not read it;
* ``ValueError``: everything else (empty source, not UTF-8, invalid JSON, a missing or empty list, a malformed
  entry or path, an unset ``$VARIABLE`` in a path).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from custom_nets.data.paths import read_fix

__all__ = ["ENTRY_EXAMPLE", "entry_list", "entry_where", "read_json", "read_text", "resolve_path", "source_path"]

#: ``$name/rest`` or ``${name}/rest``: a path below the folder an environment variable names (nnssl writes
#: ``$nnssl_raw/...``).
_ENV_PATH = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?(.*)$")

#: What an entry looks like, for the fixes of the messages.
ENTRY_EXAMPLE = '{"image": "imagesTr/case_000_0000.nii.gz"} (plus "label": "labelsTr/case_000.nii.gz" when labeled)'


def source_path(source, accepted: str) -> Path:
    """``source`` as an absolute, normalised path that exists.

    Args:
        source: a file or folder (``str`` or ``os.PathLike``; ``~`` is expanded).
        accepted: what the caller reads, for the fix (e.g. ``"a folder of images ... or a datalist JSON file"``).

    Raises:
        ValueError: ``source`` is ``None`` or empty.
        FileNotFoundError: ``source`` does not exist.
    """
    if source is None or not os.fspath(source):
        raise ValueError(f"dataset source is empty: pass {accepted}")
    path = Path(os.path.normpath(Path(os.path.expanduser(os.fspath(source))).absolute()))
    if not path.exists():
        raise FileNotFoundError(f"dataset '{path}' does not exist: pass {accepted}")
    return path


def read_text(path: Path) -> str:
    """The UTF-8 text of a source file.

    Raises:
        PermissionError: this user may not read ``path`` (the message has the ``chmod`` fix).
        ValueError: ``path`` is not a readable file or not UTF-8 text.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except PermissionError as err:
        raise PermissionError(f"dataset '{path}' cannot be read by this user; {read_fix(path)}") from err
    except UnicodeDecodeError as err:
        raise ValueError(
            f"dataset '{path}' is not UTF-8 text (byte {err.start}): pass a JSON or csv file saved as UTF-8"
        ) from err
    except OSError as err:
        raise ValueError(f"dataset '{path}' cannot be read ({err.strerror or err}): pass a readable file") from err


def read_json(path: Path):
    """The parsed JSON of a source file; syntax errors name the line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"dataset '{path}' is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}): "
            "fix the file, e.g. check for a trailing comma or a missing quote"
        ) from err


def entry_list(data, key: str, path: Path) -> list:
    """The entry list of parsed JSON: ``data`` itself when it is a list, else ``data[key]``.

    Raises:
        ValueError: ``data`` is neither a list nor a dict, has no ``key``, or ``data[key]`` is not a list.
    """
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise ValueError(
            f"dataset '{path}' holds a JSON {type(data).__name__}: it must be a list of entries "
            f"or a dict with a '{key}' list"
        )
    if key not in data:
        raise ValueError(
            f"dataset '{path}' has no key '{key}' (available keys: {sorted(data)}): "
            "pass key=<one of them>, or add the list of entries under that key"
        )
    entries = data[key]
    if not isinstance(entries, list):
        raise ValueError(
            f"dataset '{path}' '{key}' holds a {type(entries).__name__}, not a list: make it a list of entries "
            f"like {ENTRY_EXAMPLE}"
        )
    return entries


def entry_where(path: Path, key: str | None, index) -> str:
    """How messages name entry ``index`` of list ``key`` (``None``: the file is the list) of source ``path``."""
    return f"entry {index} of " + (f"the '{key}' list of " if key else "") + f"dataset '{path}'"


def resolve_path(value, base: Path, where: str, key: str = "image", many: bool = False):
    """An entry's path made absolute: ``~`` and a leading ``$VARIABLE`` expanded, relative paths against ``base``.

    Args:
        value: a path string, or with ``many`` a non-empty list of them (one file per modality).
        base: the folder relative paths are resolved against.
        where: the entry, for messages (see ``entry_where``).
        key: the entry key that holds ``value``, for messages.
        many: a list of paths is accepted (``image``); otherwise ``value`` must be one path.

    Returns:
        A normalised absolute path string, or a list of them for a list ``value``.

    Raises:
        ValueError: an empty list, a list where one path is needed, a value that is not a non-empty string, or
            a ``$VARIABLE`` that is not set.
    """
    if isinstance(value, (list, tuple)):
        if not many:
            raise ValueError(f"{where} has a list under '{key}': give one file path")
        if not value:
            raise ValueError(f"{where} has an empty list of '{key}' files: give at least one path")
        return [resolve_path(v, base, where, key) for v in value]
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ValueError(
            f"{where} has a '{key}' value that is not a non-empty path string: {value!r}; give a file path"
        )
    text = os.fspath(value)
    match = _ENV_PATH.match(text)
    if match:
        name, rest = match.groups()
        if name not in os.environ:
            raise ValueError(
                f"{where} has the path '{text}', which starts with ${name}, but the environment variable {name} is "
                f"not set: export {name}=<the folder it stands for> (nnssl writes $nnssl_raw/... paths), or make "
                "the paths absolute"
            )
        text = os.environ[name].rstrip("/\\") + rest
    path = Path(os.path.expanduser(text))
    return os.path.normpath(path if path.is_absolute() else Path(base) / path)
