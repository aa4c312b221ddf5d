"""Checks that bundle configs run in ``initialize``, so bad settings fail at once with a message that says the fix.

MONAI's bundle runner accepts any ``--key value`` on the command line: a misspelt key (``--max_step``) silently
adds an unused setting and the run trains for the default 250k iterations. ``check_overrides`` compares the
command line with the keys of the config files and suggests the closest known key.
"""

from __future__ import annotations

import difflib
import math
import sys
from pathlib import Path
from typing import Sequence

from custom_nets.bundle_command_line import cli_pairs, config_files_from_argv
from custom_nets.errors import ConfigError

__all__ = ["check_overrides", "epochs_for"]

# Arguments of ``python -m monai.bundle run`` itself, not config overrides.
RUNNER_ARGUMENTS = frozenset(
    {
        "config_file", "meta_file", "logging_file", "args_file", "run_id", "init_id", "final_id", "tracking",
        "workflow_type", "workflow_name", "properties_path",
    }
)


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
    for key, _ in cli_pairs(argv):
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
    """Number of Ignite epochs for an iteration budget: ``ceil(max_steps / iterations_per_epoch)``.

    Any ``max_steps`` works: when it is not a whole number of epochs, the last epoch is cut short at iteration
    ``max_steps`` by ``engine.StopAtMaxSteps`` (the bundles list it in ``train#handlers``). The poly schedule,
    checkpoints and pictures count iterations, not epochs, so they end at ``max_steps`` either way.

    Raises ConfigError (a ValueError) for a budget or epoch length below 1.
    """
    max_steps, iterations_per_epoch = int(max_steps), int(iterations_per_epoch)
    if max_steps < 1 or iterations_per_epoch < 1:
        raise ConfigError(
            f"max_steps and iterations_per_epoch must be >= 1, got {max_steps} and {iterations_per_epoch}: set "
            "--max_steps to the number of training iterations and --iterations_per_epoch to the logging epoch "
            "length (250 as in nnU-Net)."
        )
    return math.ceil(max_steps / iterations_per_epoch)
