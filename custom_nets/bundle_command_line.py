"""The ``--config_file`` and ``--key value`` arguments of a ``python -m monai.bundle run`` command line.

Read by the override check (``custom_nets.config``) and by the error display (``custom_nets.errors``), which names
the config file a failing key came from.
"""

from __future__ import annotations

import ast
from typing import Sequence

__all__ = ["cli_pairs", "config_files_from_argv"]


def _split_files(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        return [str(v) for v in ast.literal_eval(value)]
    return [v for v in value.split(",") if v]


def cli_pairs(argv: Sequence[str]) -> list[tuple[str, str | None]]:
    """``--key value`` / ``--key=value`` pairs after the runner's positional arguments."""
    pairs, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            pairs.append((key, value if value else None))
        i += 1
    return pairs


def config_files_from_argv(argv: Sequence[str]) -> list[str]:
    """The config files named by ``--config_file`` on a ``monai.bundle run`` command line."""
    for key, value in cli_pairs(argv):
        if key == "config_file" and value:
            return _split_files(value)
    return []
