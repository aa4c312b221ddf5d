"""Command line of the package (``python -m custom_nets <command>``), built with ``fire``.

Commands:
    demo        pre-train S3D on synthetic MRIs, fine-tune from scratch and from the pre-trained weights with the
                same seed, data and steps, evaluate both and print a DSC/NSD table (a few minutes on a CPU).
    preprocess  check and preprocess an unlabeled collection once, before (multi-GPU) pre-training.
    export_nnssl convert this project's weights into an nnssl/OpenMind ``checkpoint_final.pth``.
    export_bundle export a fine-tuning run as a self-contained MONAI model-zoo bundle (folder + zip).
    import_nnssl fetch an nnssl/OpenMind checkpoint + adaptation plan from the Hugging Face Hub for fine-tuning.
    evaluate    DSC/NSD of a folder of predicted label maps (e.g. nnU-Net's) against reference labels.
    nnunet_splits write a fine-tuning run's ``splits.json`` as nnU-Net's ``splits_final.json`` ("No (Dyn.)" anchor).
    gpu_check   one call on a GPU machine (at most 6 minutes): pre-training end to end (eager and compiled), S3D vs
                the dense ResEnc-L step, memory kept for backward, fine-tuning, inference and torchrun/NCCL, as one
                table with each check's status and the goals (``--device cpu --tiny`` for a CPU smoke run).
    study       ``study run study.yaml`` fine-tunes and evaluates every (method, dataset, seed) pair of an evaluation
                study and writes the ranked results table and plots; ``study report``, ``study compare study.yaml
                methodA methodB`` (paired Wilcoxon test), ``study demo`` (see ``docs/study.md``).

Every stage runs the bundles' own configs through MONAI's ``ConfigWorkflow``, exactly like
``python -m monai.bundle run`` (``custom_nets.bundle_run``). The commands are thin: the modules they call do the
work (``custom_nets.demo``, ``custom_nets.study``, ``custom_nets.evaluation``, ...); the modules of the other
commands are imported when the command runs, so that a command loads only what it needs.
``python -m custom_nets --help`` lists the commands with one line each and ``python -m custom_nets <command>
--help`` a command's flags: they are read from the Google-style docstrings below (first line: the command's
summary; ``Args:``: one description per flag).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from custom_nets.demo import run_demo
from custom_nets.evaluation import evaluate_folder
from custom_nets.study.commands import cli_commands as study_commands

__all__ = ["demo", "preprocess", "export_nnssl", "export_bundle", "import_nnssl", "main"]

logger = logging.getLogger(__name__)


def demo(output_dir: str = "runs/demo", pretrain_steps: int = 100, finetune_epochs: int = 24, device: str = "cpu") -> str:
    """Pre-train S3D on synthetic MRIs, fine-tune from scratch and from its weights, print a DSC/NSD table.

    The whole pipeline on the embedded synthetic data with the same seed, data and steps for both fine-tunings (a
    few minutes on a CPU; ``custom_nets.demo``); returns (the command line prints) a report with the Markdown table
    of test DSC/NSD, also written to ``<output_dir>/results.md``.

    Args:
        output_dir: where every stage writes (``pretrain/``, ``scratch/``, ``s3d/``, shared caches).
        pretrain_steps: S3D iterations (multiple of 20).
        finetune_epochs: fine-tuning epochs of 8 iterations (poly schedule from scratch, Sawtooth from S3D).
        device: "cpu" or "cuda".
    """
    return run_demo(output_dir, pretrain_steps=pretrain_steps, finetune_epochs=finetune_epochs, device=device)


def preprocess(
    dataset_dir: str, cache_dir: str, num_workers: int | None = None, target_spacing: float = 1.0,
    max_image_quality_score: float | None = None, modalities: list[str] | None = None,
) -> str:
    """Check and preprocess an unlabeled collection once, before (multi-GPU) pre-training.

    Quality filter, RAS, crop to the non-zero box, z-score and resampling, in parallel and resumable; prints the
    cache's datalist path. Pass the same ``--cache_dir`` to pre-training afterwards.

    Args:
        dataset_dir: folder of .nii/.nii.gz images (scanned recursively) or a datalist JSON (see the README).
        cache_dir: where the preprocessed volumes, ``datalist.json`` and ``excluded.csv`` are written.
        num_workers: preprocessing processes; 0 runs in-process. Default: the cores this process may use.
        target_spacing: isotropic voxel spacing in mm.
        max_image_quality_score: keep images whose OpenMind/nnssl quality score (1 best ... 5 worst) is at most
            this. Default: no filter (as the pre-training config; pass the same value to pre-training).
        modalities: keep only these modalities, e.g. "[T1w,T2w,FLAIR]". Default: all.
    """
    from custom_nets.data import prepare_dataset

    entries = prepare_dataset(dataset_dir, cache_dir, num_workers=num_workers, target_spacing=target_spacing,
                              max_image_quality_score=max_image_quality_score, modalities=modalities)
    logger.info("%d images ready in %s", len(entries), cache_dir)
    return os.path.join(cache_dir, "datalist.json")


def export_nnssl(checkpoint: str, output: str, preset: str | None = None) -> str:
    """Convert this project's (or any ResEnc) weights into an nnssl/OpenMind ``checkpoint_final.pth``.

    Args:
        checkpoint: weights to convert: our ``models/model.pt``, a training checkpoint or a ResEnc state dict.
        output: the ``checkpoint_final.pth`` file to write.
        preset: network preset of the weights (resenc_l, demo, tiny). Default: recognised from the weight shapes.
    """
    from custom_nets.transfer.nnssl_export import export_nnssl as _export

    _export(checkpoint, output, preset=preset)
    return output


def export_bundle(
    run_dir: str, output_dir: str, name: str = "s3d_finetune", version: str = "0.1.0",
    changelog: str = "exported fine-tuned weights", large_files_url: str | None = None, overwrite: bool = False,
    evaluation_summary: str | None = None,
) -> str:
    """Export a fine-tuning run as a self-contained MONAI model-zoo bundle (folder and zip).

    Writes ``<output_dir>/<name>/`` and ``<output_dir>/<name>_v<version>.zip``, which run without this package
    (see ``docs/model_zoo.md``); prints the bundle folder.

    Args:
        run_dir: the fine-tuning run's ``output_dir`` (with ``models/model.pt`` and ``models/model_info.json``).
        output_dir: folder for the bundle and its zip.
        name: bundle name (letters, digits, underscores).
        version: bundle version, MAJOR.MINOR.PATCH.
        changelog: this version's entry in the metadata's changelog.
        large_files_url: URL the weights will be downloaded from (listed in ``large_files.yml``). Default: none.
        overwrite: replace an existing bundle of the same name.
        evaluation_summary: the ``summary.json`` whose scores go into the metadata's ``eval_metrics``. Default: the
            run's own ``evaluation/summary.json`` (written by ``evaluate.yaml``); without one the bundle says it was
            not evaluated.
    """
    from custom_nets.export import export_bundle as _export

    return str(_export(run_dir, output_dir, name=name, version=version, changelog=changelog,
                       large_files_url=large_files_url, overwrite=overwrite, evaluation_summary=evaluation_summary))


def import_nnssl(source: str, output: str, revision: str | None = None) -> str:
    """Fetch an nnssl/OpenMind checkpoint and adaptation plan from the Hugging Face Hub for fine-tuning.

    Combines ``checkpoint_final.pth`` and ``adaptation_plan.json`` of a Hub repository (or a local folder) into one
    file for the fine-tuning bundle's ``--pretrained_checkpoint``; prints its path.

    Args:
        source: Hugging Face Hub repository ("owner/name") or a local folder holding both files.
        output: the checkpoint file to write.
        revision: Hub branch, tag or commit. Default: the repository's default branch.
    """
    from custom_nets.transfer.nnssl_hub import import_nnssl as _import

    return str(_import(source, output, revision=revision))


def nnunet_splits(splits_file: str, output: str, low_data: int | None = None) -> str:
    """Write a fine-tuning run's ``splits.json`` as nnU-Net v2's ``splits_final.json`` ("No (Dyn.)" anchor).

    One fold that validates on our test cases, so nnU-Net's own per-dataset plans train and test on the same cases.

    Args:
        splits_file: the fine-tuning run's ``splits.json``.
        output: the ``splits_final.json`` to write (in nnU-Net's preprocessed dataset folder).
        low_data: keep only the first N training cases (nested low-data subsets, as the fine-tuning bundle's
            ``low_data``). Default: all.
    """
    from custom_nets.data.nnunet_splits import write_nnunet_splits

    return write_nnunet_splits(splits_file, output, low_data=low_data)


def nnunet_plans(
    plans: str, checkpoint: str, weights_output: str | None = None, plans_name: str | None = None,
    configuration: str = "3d_fullres_s3d", spacing: float = 1.0, patch_size: int = 160, batch_size: int = 2,
    in_channels: int | None = None,
) -> str:
    """Write nnU-Net v2 plans and a weights file to fine-tune our pre-trained weights with ``nnUNetv2_train``.

    Adds the configuration ``3d_fullres_s3d`` (our network, 1 mm, 160^3, the dataset's normalisation) to a copy of
    the dataset's plans and writes the weights for its channel count (stem replicated, segmentation heads left
    out); prints the ``nnUNetv2_preprocess`` and ``nnUNetv2_train -pretrained_weights`` commands to run next (see
    ``docs/nnunet.md``).

    Args:
        plans: the dataset's plans, ``$nnUNet_preprocessed/DatasetXXX_Name/nnUNetPlans.json`` (or another plans file).
        checkpoint: our pre-trained weights, e.g. ``runs/s3d_pretrain/models/model.pt`` (any supported format).
        weights_output: the weights file to write. Default: ``<plans folder>/<plans_name>__<configuration>.pth``.
        plans_name: identifier of the new plans file (``-p`` of nnUNetv2_train). Default: ``<plans file name>_s3d``.
        configuration: name of the added configuration. Default "3d_fullres_s3d".
        spacing: target spacing in mm. Default 1.0 (as in pre-training).
        patch_size: patch edge in voxels, a multiple of the network's downsampling. Default 160 (as in pre-training).
        batch_size: patches per iteration. Default 2.
        in_channels: input channels. Default: the number of ``channel_names`` in dataset.json beside the plans.
    """
    from custom_nets.export.nnunet_plans import write_nnunet_plans

    done = write_nnunet_plans(
        plans, checkpoint, weights_output=weights_output, plans_name=plans_name, configuration=configuration,
        spacing=spacing, patch_size=patch_size, batch_size=batch_size, in_channels=in_channels,
    )
    return (
        f"Wrote {done['plans']} (configuration {done['configuration']}) and {done['weights']} "
        f"({'; '.join(done['notes'])}). Next:\n" + "\n".join(f"  {c}" for c in done["commands"])
    )


def import_nnunet(
    results_folder: str, output_dir: str, fold: str = "0", name: str | None = None, version: str = "0.1.0",
    changelog: str = "imported from nnU-Net v2", checkpoint_name: str = "checkpoint_final.pth",
    configuration: str | None = None, large_files_url: str | None = None, overwrite: bool = False,
) -> str:
    """Export a model trained with nnU-Net v2 as a MONAI model-zoo bundle (folder + zip), like ``export_bundle``.

    The network of the plans (a ResEnc U-Net of one of our presets), nnU-Net's normalisation, spacing and patch
    size, and the labels of dataset.json go into the bundle (see ``docs/nnunet.md``); prints the bundle folder.

    Args:
        results_folder: ``$nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>``.
        output_dir: where the bundle folder and ``<name>_v<version>.zip`` are written.
        fold: the fold whose weights are exported (0-4 or "all"). Default 0.
        name: bundle name (letters, digits, underscores). Default: ``<dataset>_<configuration>``.
        version: release version, MAJOR.MINOR.PATCH. Default "0.1.0".
        changelog: one line for this version. Default "imported from nnU-Net v2".
        checkpoint_name: the checkpoint in the fold folder. Default "checkpoint_final.pth".
        configuration: the nnU-Net configuration. Default: the last part of the results folder name.
        large_files_url: base URL of the release assets, for ``large_files.yml``. Default: a placeholder.
        overwrite: replace an existing export of the same name. Default False.
    """
    from custom_nets.export.nnunet_import import import_nnunet as _import

    return str(_import(results_folder, output_dir, fold=fold, name=name, version=version, changelog=changelog,
                       checkpoint_name=checkpoint_name, configuration=configuration,
                       large_files_url=large_files_url, overwrite=overwrite))


def evaluate(
    pred_dir: str, labels_dir: str, dataset_json: str, output_dir: str | None = None, tolerance_mm: float = 2.0,
    cases: str | None = None,
) -> dict:
    """DSC/NSD of a folder of predicted label maps (e.g. nnU-Net's) against reference labels.

    Same DSC and NSD code as the fine-tuning bundle's evaluation. Writes ``metrics_per_case.csv``,
    ``summary.json`` and ``summary.csv`` to ``output_dir`` and prints the summary.

    Args:
        pred_dir: folder of predicted label maps ``<case id>.nii.gz``.
        labels_dir: folder of reference label maps, searched recursively; case ids are the paths below their common
            folder (``labelsTr/a.nii.gz``, ``labelsTs/b.nii.gz`` -> ``labelsTr__a``, ``labelsTs__b``).
        dataset_json: nnU-Net/MSD ``dataset.json`` whose "labels" name the classes.
        output_dir: folder for the results files. Default: ``pred_dir``.
        tolerance_mm: NSD boundary tolerance in mm.
        cases: a ``splits.json``: only its test cases are scored. Default: every reference.
    """
    labels = json.loads(Path(dataset_json).read_text(encoding="utf-8"))["labels"]
    wanted = None if cases is None else json.loads(Path(cases).read_text(encoding="utf-8"))["test"]
    return evaluate_folder(pred_dir, labels_dir, labels, tolerance_mm=tolerance_mm, output_dir=output_dir, cases=wanted)


def gpu_check(
    device: str = "cuda", tiny: bool = False, output_dir: str = "runs/gpu_check", time_budget_s: float = 360.0
) -> None:
    """Check a GPU machine in one call (at most 6 minutes) and print one table of measurements and goals.

    Pre-training end to end (eager and compiled), S3D vs the dense ResEnc-L step, memory kept for backward,
    fine-tuning, inference and torchrun/NCCL (``custom_nets.gpu_check``); the table and its numbers are also
    written to ``<output_dir>/gpu_check.md`` and ``gpu_check.json``.

    Args:
        device: "cuda" or "cpu".
        tiny: tiny preset, 32^3 patches, a few iterations, no compile: a CPU smoke run with ``--device cpu``.
        output_dir: generated data (reused by the next run), logs, ``gpu_check.md`` and ``gpu_check.json``.
        time_budget_s: wall-clock seconds for all checks together.
    """
    from custom_nets.gpu_check import gpu_check as _check

    _check(device=device, tiny=tiny, output_dir=output_dir, time_budget_s=time_budget_s)  # prints the table


PROG = "python -m custom_nets"
DESCRIPTION = """S3D pre-training, fine-tuning, evaluation and model export: one command per task.

Training and evaluation themselves run as MONAI bundles (``python -m monai.bundle run ...``, see the README).
``python -m custom_nets <command> --help`` lists a command's flags. A configuration or data error prints the
project's message without a traceback; set S3D_DEBUG=1 for the full traceback."""


class _Commands(dict):
    """Fire commands (name -> function or group) with a description, which ``--help`` shows for the group."""

    def __init__(self, commands: dict, description: str) -> None:
        super().__init__(commands)
        self.__doc__ = description


def _study_commands() -> dict:
    """``study run | report | compare | demo`` (``custom_nets.study``)."""
    return _Commands(study_commands(), """Evaluation studies: fine-tune, evaluate, rank and compare pre-training methods.

    ``study run study.yaml`` runs the pairs not done yet and writes the ranked results table and plots;
    ``study report``, ``study compare study.yaml methodA methodB`` (paired Wilcoxon test), ``study demo``
    (see ``docs/study.md``).""")


def _fire(commands: dict) -> None:
    """``fire.Fire`` under the program name ``python -m custom_nets`` (fire would show ``__main__.py``)."""
    import fire
    from fire import trace

    # fire shell-quotes every word of a command it shows, and so the three-word program name; keep it readable
    quote = getattr(trace.FireTrace, "_Quote", None)
    if quote is not None:
        trace.FireTrace._Quote = lambda self, arg: arg if arg == PROG else quote(self, arg)
    try:
        fire.Fire(_Commands(commands, DESCRIPTION), name=PROG)
    finally:
        if quote is not None:
            trace.FireTrace._Quote = quote


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    _fire({"demo": demo, "preprocess": preprocess, "export_nnssl": export_nnssl,
               "export_bundle": export_bundle, "import_nnssl": import_nnssl,
               "evaluate": evaluate, "nnunet_splits": nnunet_splits, "study": _study_commands(),
               "gpu_check": gpu_check, "nnunet_plans": nnunet_plans, "import_nnunet": import_nnunet})
