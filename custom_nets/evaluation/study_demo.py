"""The demo evaluation study on synthetic data, and the ``study`` sub-commands of ``python -m custom_nets``.

:func:`demo_study` writes two synthetic datasets, pre-trains two tiny checkpoints and runs a small study with
:func:`custom_nets.evaluation.study.run_study`. :func:`cli_commands` maps ``study run | report | compare | demo``
to the runner (:mod:`custom_nets.evaluation.study`), the reports (:mod:`custom_nets.evaluation.study_report`)
and the demo; the study file itself is read by :mod:`custom_nets.evaluation.study_schema`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from custom_nets.data.atomic import atomic_write_text
from custom_nets.evaluation.study import _default_runner, run_study
from custom_nets.evaluation.study_report import compare_methods, report_study
from custom_nets.evaluation.study_schema import SCRATCH

__all__ = ["cli_commands", "demo_study"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ demo


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
    the baselines bundle (``common.yaml`` + ``dense_mae.yaml``), the way a user runs each."""
    bundles = Path(__file__).resolve().parents[2] / "bundles"
    s3d, baselines = bundles / "s3d_pretrain" / "configs", bundles / "baselines" / "configs"
    configs = {
        "s3d": [str(s3d / "train.yaml"), str(s3d / "demo.yaml")],
        "dense_mae": [str(baselines / "common.yaml"), str(baselines / "dense_mae.yaml")],
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
        runner: bundle runner (see :func:`run_study`).
    """
    from custom_nets.data.demo_segmentation import write_demo_segmentation_dataset

    runner = runner or _default_runner
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


# ------------------------------------------------------------------------------------------------ command line


def _run_command(study_file: str) -> str:
    """Fine-tune and evaluate every pair not done yet, write the reports; prints the results table."""
    return run_study(study_file)["table.md"].read_text(encoding="utf-8")


def _report_command(study_file: str) -> str:
    """Re-write the reports from the finished pairs (no training); prints the results table."""
    written = report_study(study_file)
    return written["table.md"].read_text(encoding="utf-8") if "table.md" in written else "no dataset finished yet"


def _compare_command(study_file: str, method_a: str, method_b: str) -> str:
    """Paired Wilcoxon signed-rank test of two methods' per-case DSC, per dataset and pooled."""
    return compare_methods(study_file, method_a, method_b)


def cli_commands() -> dict[str, Callable[..., str]]:
    """The ``study`` sub-commands of ``python -m custom_nets``: run, report, compare, demo."""
    return {"run": _run_command, "report": _report_command, "compare": _compare_command, "demo": demo_study}
