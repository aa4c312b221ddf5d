"""Run a bundle of this repository in-process, exactly like ``python -m monai.bundle run``.

:func:`run_bundle` is the one place that runs a bundle from Python: the ``demo`` command
(:mod:`custom_nets.demo`) and the evaluation studies (:mod:`custom_nets.study.runner`) both call it.
:func:`bundle_configs` finds a bundle's config files in the repository checkout (``bundles/<bundle>/configs``).
"""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ConfigWorkflow

__all__ = ["REPO_BUNDLES", "bundle_configs", "run_bundle"]

#: The repository's bundles (``bundles/s3d_pretrain``, ``bundles/s3d_finetune``, ``bundles/baselines``).
REPO_BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def bundle_configs(bundle: str, *names: str) -> list[str]:
    """Paths of config files of one of the repository's bundles, e.g. ``("s3d_finetune", "train.yaml")``.

    Raises:
        FileNotFoundError: the package is not run from a checkout of the repository (no ``bundles/`` beside it).
    """
    folder = REPO_BUNDLES / bundle / "configs"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"bundle configs not found in {folder}: run from a checkout of the repository (pip install -e .)."
        )
    return [str(folder / name) for name in names]


def run_bundle(config_files: list[str], **overrides) -> ConfigWorkflow:
    """Run a bundle like ``python -m monai.bundle run`` (initialize, run, finalize); returns the workflow.

    Args:
        config_files: the config files, merged in order (later files override earlier ones).
        overrides: top-level config keys to set, as ``--key value`` on the command line.
    """
    workflow = ConfigWorkflow(config_file=config_files, workflow_type="train", **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow
