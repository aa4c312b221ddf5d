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
``python -m monai.bundle run``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

__all__ = ["run_bundle", "demo", "preprocess", "export_nnssl", "export_bundle", "import_nnssl", "main"]

REPO_BUNDLES = Path(__file__).resolve().parent.parent / "bundles"
logger = logging.getLogger(__name__)


def _bundle_configs(bundle: str, *names: str) -> list[str]:
    folder = REPO_BUNDLES / bundle / "configs"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"bundle configs not found in {folder}: run from a checkout of the repository (pip install -e .)."
        )
    return [str(folder / name) for name in names]


def run_bundle(config_files: list[str], **overrides) -> object:
    """Run a bundle like ``python -m monai.bundle run`` (initialize, run, finalize); returns the workflow."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=config_files, workflow_type="train", **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def _table(rows: list[tuple[str, dict]], labels: dict) -> str:
    names = [labels[k] for k in sorted(labels, key=int) if int(k) != 0]
    head = "| method | mean DSC | mean NSD | " + " | ".join(f"DSC {n}" for n in names) + " |"
    lines = [head, "|" + "---|" * (3 + len(names))]
    for method, summary in rows:
        per_class = summary.get("per_class") or summary.get("classes") or {}
        cells = []
        for n in names:
            value = (per_class.get(n) or {}).get("dsc", {})
            value = value.get("mean") if isinstance(value, dict) else value
            cells.append("-" if value is None else f"{100 * value:.2f}")
        lines.append(
            f"| {method} | {100 * summary['mean_dsc']:.2f} | {100 * summary['mean_nsd']:.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def demo(output_dir: str = "runs/demo", pretrain_steps: int = 100, finetune_epochs: int = 24, device: str = "cpu") -> str:
    """Whole pipeline on the embedded synthetic data; returns (the command line prints) a report with the Markdown
    table of test DSC/NSD, also written to ``<output_dir>/results.md``.

    Args:
        output_dir: where every stage writes (``pretrain/``, ``scratch/``, ``s3d/``, shared caches).
        pretrain_steps: S3D iterations (multiple of 20).
        finetune_epochs: fine-tuning epochs of 8 iterations (from scratch: nnU-Net's poly schedule; from the S3D
            weights: the Sawtooth schedule scaled to this length).
        device: "cpu" or "cuda".
    """
    start = time.time()
    out = Path(output_dir).resolve()
    common = {"device": device, "seed": 0}
    run_bundle(
        _bundle_configs("s3d_pretrain", "train.yaml", "demo.yaml"),
        output_dir=str(out / "pretrain"), max_steps=pretrain_steps, iterations_per_epoch=20,
        checkpoint_interval=pretrain_steps, preview_interval=pretrain_steps // 2, **common,
    )
    weights = out / "pretrain" / "models" / "model.pt"
    finetune = _bundle_configs("s3d_finetune", "train.yaml", "demo.yaml")
    evaluate = _bundle_configs("s3d_finetune", "train.yaml", "demo.yaml", "evaluate.yaml")
    rows = []
    for method, checkpoint in (("from scratch", None), ("S3D pre-trained", str(weights))):
        run_dir = out / ("scratch" if checkpoint is None else "s3d")
        settings = dict(
            output_dir=str(run_dir), cache_dir=str(out / "finetune_cache"), pretrained_checkpoint=checkpoint,
            epochs=finetune_epochs, **common,
        )
        run_bundle(finetune, **settings)
        run_bundle(evaluate, mirror_axes=[], **settings)
        rows.append((method, json.loads((run_dir / "evaluation" / "summary.json").read_text())))
    info = json.loads((out / "s3d" / "models" / "model_info.json").read_text())
    table = _table(rows, info["labels"])
    minutes = (time.time() - start) / 60
    report = (
        f"\nDemo results on the synthetic test cases ({minutes:.1f} min; same seed, data, split and steps for both,"
        " poly schedule from scratch and Sawtooth from the pre-trained weights;"
        f" {pretrain_steps} pre-training and {finetune_epochs * 8} fine-tuning iterations are far too few for a"
        " meaningful comparison - this shows the pipeline, not the method):\n\n"
        f"{table}\n\nOutputs: {out}\n"
    )
    (out / "results.md").write_text(report)
    return report  # the command line prints it


def preprocess(dataset_dir: str, cache_dir: str, num_workers: int | None = None, target_spacing: float = 1.0) -> str:
    """Preprocess an unlabeled collection once (quality filter, RAS, crop, z-score, resampling); returns the
    cache's datalist path. Pass the same ``--cache_dir`` to pre-training afterwards."""
    from custom_nets.data import prepare_dataset

    entries = prepare_dataset(dataset_dir, cache_dir, num_workers=num_workers, target_spacing=target_spacing)
    logger.info("%d images ready in %s", len(entries), cache_dir)
    return os.path.join(cache_dir, "datalist.json")


def export_nnssl(checkpoint: str, output: str, preset: str | None = None) -> str:
    """Write this project's (or any ResEnc) weights as an nnssl ``checkpoint_final.pth``."""
    from custom_nets.transfer import export_nnssl as _export

    _export(checkpoint, output, preset=preset)
    return output


def export_bundle(
    run_dir: str, output_dir: str, name: str = "s3d_finetune", version: str = "0.1.0",
    changelog: str = "exported fine-tuned weights", large_files_url: str | None = None, overwrite: bool = False,
) -> str:
    """Export a fine-tuning run as a MONAI model-zoo bundle ``<output_dir>/<name>/`` and ``<name>_v<version>.zip``
    that runs without this package (see ``docs/model_zoo.md``)."""
    from custom_nets.export import export_bundle as _export

    return str(_export(run_dir, output_dir, name=name, version=version, changelog=changelog,
                       large_files_url=large_files_url, overwrite=overwrite))


def import_nnssl(source: str, output: str, revision: str | None = None) -> str:
    """Fetch an nnssl/OpenMind ``checkpoint_final.pth`` + ``adaptation_plan.json`` from a Hugging Face Hub repo
    (or a local folder) into one checkpoint for the fine-tuning bundle's ``--pretrained_checkpoint``."""
    from custom_nets.export.nnssl_hub import import_nnssl as _import

    return str(_import(source, output, revision=revision))


def nnunet_splits(splits_file: str, output: str, low_data: int | None = None) -> str:
    """Write our ``splits.json`` as nnU-Net v2's ``splits_final.json`` (80/20: one fold validating on our test
    cases), so nnU-Net's own per-dataset plans ("No (Dyn.)") train and test on the same cases."""
    from custom_nets.data.nnunet_splits import write_nnunet_splits

    return write_nnunet_splits(splits_file, output, low_data=low_data)


def evaluate(
    pred_dir: str, labels_dir: str, dataset_json: str, output_dir: str | None = None, tolerance_mm: float = 2.0,
    cases: str | None = None,
) -> dict:
    """Score predicted label maps (``<case>.nii.gz``) against the references in ``labels_dir`` with the same DSC and
    NSD code as the fine-tuning bundle's evaluation; class names come from ``dataset_json``'s "labels". With
    ``cases`` (a ``splits.json``), only its test cases are scored. Writes ``metrics_per_case.csv``,
    ``summary.json`` and ``summary.csv`` to ``output_dir`` (default ``pred_dir``)."""
    from custom_nets.evaluation import evaluate_folder
    from custom_nets.evaluation.evaluate import case_id_of

    labels = json.loads(Path(dataset_json).read_text(encoding="utf-8"))["labels"]
    references = sorted(str(p) for p in Path(labels_dir).glob("*.nii*"))
    if cases is not None:
        wanted = set(json.loads(Path(cases).read_text(encoding="utf-8"))["test"])
        references = [r for r in references if case_id_of(r) in wanted]
    if not references:
        raise FileNotFoundError(f"no reference label maps (*.nii, *.nii.gz) for the requested cases in '{labels_dir}'.")
    return evaluate_folder(pred_dir, references, labels, tolerance_mm=tolerance_mm, output_dir=output_dir)


def gpu_check(
    device: str = "cuda", tiny: bool = False, output_dir: str = "runs/gpu_check", time_budget_s: float = 360.0
) -> None:
    """Check a GPU machine in one call and print one table (``custom_nets.gpu_check``); the table and its numbers
    are also written to ``<output_dir>/gpu_check.md`` and ``gpu_check.json``."""
    from custom_nets.gpu_check import gpu_check as _check

    _check(device=device, tiny=tiny, output_dir=output_dir, time_budget_s=time_budget_s)  # prints the table


def _study_commands() -> dict:
    """``study run | report | compare | demo`` (``custom_nets.evaluation.study``)."""
    from custom_nets.evaluation.study_demo import cli_commands

    return cli_commands()


def main() -> None:
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    fire.Fire({"demo": demo, "preprocess": preprocess, "export_nnssl": export_nnssl,
               "export_bundle": export_bundle, "import_nnssl": import_nnssl,
               "evaluate": evaluate, "nnunet_splits": nnunet_splits, "study": _study_commands(),
               "gpu_check": gpu_check})
