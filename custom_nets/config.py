"""Checks that bundle configs run in ``initialize``, so bad settings fail at once with a message that says the fix.

MONAI's bundle runner accepts any ``--key value`` on the command line: a misspelt key (``--max_step``) silently
adds an unused setting and the run trains for the default 250k iterations. ``check_overrides`` compares the
command line with the keys of the config files and suggests the closest known key.
"""

from __future__ import annotations

import ast
import difflib
import math
import sys
from pathlib import Path
from typing import Sequence

from custom_nets.errors import ConfigError

__all__ = ["check_overrides", "epochs_for", "config_files_from_argv", "require_method"]

# Arguments of ``python -m monai.bundle run`` itself, not config overrides.
RUNNER_ARGUMENTS = frozenset(
    {
        "config_file", "meta_file", "logging_file", "args_file", "run_id", "init_id", "final_id", "tracking",
        "workflow_type", "workflow_name", "properties_path",
    }
)


def _split_files(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        return [str(v) for v in ast.literal_eval(value)]
    return [v for v in value.split(",") if v]


def _cli_pairs(argv: Sequence[str]) -> list[tuple[str, str | None]]:
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
    for key, value in _cli_pairs(argv):
        if key == "config_file" and value:
            return _split_files(value)
    return []


def _is_bundle_runner(argv: Sequence[str]) -> bool:
    first = Path(argv[0]) if argv else Path()
    return first.name == "__main__.py" and first.parent.name == "bundle"


def check_overrides(argv: Sequence[str] | None = None) -> None:
    """Raise ConfigError (a ValueError) for a command-line override that names no key of the config files.

    Only checks ``python -m monai.bundle run ...`` command lines; does nothing when the bundle is used from
    Python (``monai.bundle.load``, tests) since there is no command line to check.

    Args:
        argv: the command line; defaults to ``sys.argv``.
    """
    from monai.bundle import ConfigParser

    argv = list(sys.argv if argv is None else argv)
    if not _is_bundle_runner(argv):
        return
    files = config_files_from_argv(argv)
    if not files:
        return
    known: set[str] = set()
    for f in files:
        known.update(ConfigParser.load_config_file(f).keys())
    for key, _ in _cli_pairs(argv):
        top = key.split("#")[0].split("::")[0]
        if top in RUNNER_ARGUMENTS or top in known:
            continue
        close = difflib.get_close_matches(top, sorted(known), n=3)
        hint = f" Did you mean {' or '.join('--' + c for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown setting '--{key}' on the command line: no config file ({', '.join(files)}) has a key "
            f"'{top}'.{hint} Settings users usually change: dataset_dir, output_dir, max_steps, batch_size, "
            "patch_size, mask_ratio, device, seed."
        )


def epochs_for(max_steps: int, iterations_per_epoch: int) -> int:
    """Number of Ignite epochs for an iteration budget; the budget must be a whole number of epochs.

    Raises ConfigError (a ValueError) naming valid alternatives otherwise (a partial last epoch would end the poly
    schedule early or late).
    """
    max_steps, iterations_per_epoch = int(max_steps), int(iterations_per_epoch)
    if max_steps < 1 or iterations_per_epoch < 1:
        raise ConfigError(
            f"max_steps and iterations_per_epoch must be >= 1, got {max_steps} and {iterations_per_epoch}."
        )
    if max_steps % iterations_per_epoch:
        lower = max(iterations_per_epoch, max_steps // iterations_per_epoch * iterations_per_epoch)
        raise ConfigError(
            f"max_steps={max_steps} is not a multiple of iterations_per_epoch={iterations_per_epoch}; use "
            f"--max_steps {lower} or {lower + iterations_per_epoch}, or set --iterations_per_epoch to a divisor."
        )
    return math.ceil(max_steps / iterations_per_epoch)


def require_method(method: str | None, argv: Sequence[str] | None = None) -> str:
    """Raise a ConfigError (a ValueError) listing the method files when the baselines' ``common.yaml`` runs alone.

    Args:
        method: the ``method`` setting (None when no method file followed ``common.yaml``).
        argv: the command line; defaults to ``sys.argv`` (used only to find the method files beside common.yaml).
    """
    if method:
        return str(method)
    files = config_files_from_argv(list(sys.argv if argv is None else argv))
    folder = Path(files[0]).parent if files else Path("bundles/baselines/configs")
    from monai.bundle import ConfigParser

    # method files are the ones that name a method (not the shared, multi-GPU or fine-tuning overrides)
    choices = sorted(p.name for p in folder.glob("*.yaml") if ConfigParser.load_config_file(p).get("method"))
    raise ConfigError(
        "common.yaml holds only the settings shared by the baselines: name a method file after it, e.g. "
        f"--config_file \"['{folder / 'common.yaml'}','{folder / (choices[0] if choices else 'models_genesis.yaml')}']\""
        f" (method files in {folder}: {', '.join(choices) or 'none found'})."
    )
