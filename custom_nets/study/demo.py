"""The demo evaluation study on synthetic data (``python -m custom_nets study demo``).

:func:`demo_study` writes two synthetic datasets, pre-trains two tiny checkpoints and runs a small study with
:func:`custom_nets.study.runner.run_study`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from custom_nets.bundle_run import bundle_configs, run_bundle
from custom_nets.data.atomic import atomic_write_text
from custom_nets.data.demo import write_demo_segmentation_dataset
from custom_nets.study.runner import run_study
from custom_nets.study.schema import SCRATCH

__all__ = ["demo_study"]

logger = logging.getLogger(__name__)


def _demo_config(epochs: int, device: str, low_data: Sequence[int], bootstrap_samples: int) -> dict:
    return {
        "output_dir": ".",
        "datasets": {name: f"data/{name}/dataset.json" for name in ("lesions_t1_flair", "lesions_t2")},
        "methods": {"scratch": SCRATCH, **{name: f"pretrain/{name}/models/model.pt" for name in ("s3d", "dense_mae")}},
        "seeds": [0],
        "low_data": list(low_data),
        "finetune": {
            "network_preset": "tiny", "patch_size": [32, 32, 32], "batch_size": 2, "epochs": int(epochs),
            "iterations_per_epoch": 2, "peak_lr": 0.01, "num_workers": 0, "checkpoint_interval": 2,
            "log_interval": 1, "device": device,
        },
        "evaluate": {"mirror_axes": [], "sw_overlap": 0.25},
        "bootstrap_samples": int(bootstrap_samples),
        "compare": ["s3d", "scratch"],
    }


def _pretrain_demo(out: Path, steps: int, device: str, runner: Callable[..., object]) -> None:
    """Pre-train the demo's two tiny checkpoints, skipping those that exist: S3D with the S3D bundle, dense MAE with
    the S3D bundle's ``train.yaml`` + the baselines' ``dense_mae.yaml``, the way a user runs each."""
    configs = {
        "s3d": bundle_configs("s3d_pretrain", "train.yaml", "demo.yaml"),
        "dense_mae": bundle_configs("s3d_pretrain", "train.yaml") + bundle_configs("baselines", "dense_mae.yaml"),
    }
    for name, files in configs.items():
        run_dir = out / "pretrain" / name
        if (run_dir / "models" / "model.pt").is_file():
            logger.info("pre-trained %s weights exist in %s: skipped", name, run_dir)
            continue
        runner(
            files,
            output_dir=str(run_dir), cache_dir=str(out / "pretrain" / "cache"), network_preset="tiny",
            patch_size=[32, 32, 32], block_size=8, batch_size=2, max_steps=int(steps), iterations_per_epoch=int(steps),
            checkpoint_interval=int(steps), preview_interval=int(steps), num_workers=0, device=device, seed=0,
        )


def demo_study(
    output_dir: str = "runs/study_demo",
    pretrain_steps: int = 10,
    epochs: int = 4,
    low_data: Sequence[int] = (4,),
    bootstrap_samples: int = 1000,
    num_cases: int = 10,
    device: str = "cpu",
    runner: Callable[..., object] | None = None,
) -> str:
    """The demo study on synthetic data: two datasets, three methods (scratch, S3D, dense MAE), tiny preset.

    Writes two synthetic labeled datasets (T1+FLAIR with dataset seed 0, and T2 alone with dataset seed 1;
    64^3 voxels, ``num_cases`` cases each, 80/20 split), pre-trains a tiny S3D and a tiny dense MAE for
    ``pretrain_steps`` iterations, writes ``<output_dir>/study.yaml`` and runs it. Everything that exists is
    reused, so a second call only re-writes the reports. Returns the results table (Markdown).

    Args:
        output_dir: the study folder (``data/``, ``pretrain/``, ``study.yaml``, ``runs/``, ``results/``).
        pretrain_steps: pre-training iterations per checkpoint. Default 10.
        epochs: fine-tuning epochs of 2 iterations. Default 4.
        low_data: training-set sizes of the low-data runs. Default (4,), next to the full 8 cases.
        bootstrap_samples: rank-stability samples. Default 1000.
        num_cases: labeled cases per dataset. Default 10 (8 training, 2 test).
        device: "cpu" or "cuda".
        runner: bundle runner (see :func:`run_study`). Default: in-process, like ``python -m monai.bundle run``.
    """
    runner = runner or run_bundle
    out = Path(output_dir).resolve()
    shape = (64, 64, 64)
    write_demo_segmentation_dataset(out / "data" / "lesions_t1_flair", num_cases=num_cases, seed=0, shape=shape,
                                    modalities=("t1", "flair"), num_test=0)
    write_demo_segmentation_dataset(out / "data" / "lesions_t2", num_cases=num_cases, seed=1, shape=shape,
                                    modalities=("t2",), num_test=0)
    _pretrain_demo(out, pretrain_steps, device, runner)
    config = _demo_config(epochs, device, list(low_data), bootstrap_samples)
    study_file = out / "study.yaml"
    atomic_write_text(study_file, "# Demo study written by `python -m custom_nets study demo`\n"
                      + yaml.safe_dump(config, sort_keys=False))
    return run_study(study_file, runner=runner)["table.md"].read_text(encoding="utf-8")
