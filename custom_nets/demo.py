"""The whole pipeline on the embedded synthetic MRIs (``python -m custom_nets demo``).

:func:`run_demo` pre-trains S3D with ``bundles/s3d_pretrain`` (``train.yaml`` + ``demo.yaml``), fine-tunes
``bundles/s3d_finetune`` from scratch and from the pre-trained weights with the same seed, data, split and steps,
evaluates both on the held-out cases (``evaluate.yaml``) and returns a report with :func:`results_table`, the
Markdown table of the registered metrics (``custom_nets.evaluation.metrics.METRICS``: mean DSC, mean NSD, then
the DSC of every class). Every stage runs in-process like ``python -m monai.bundle run``
(:func:`custom_nets.bundle_run.run_bundle`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from custom_nets.bundle_run import bundle_configs, run_bundle
from custom_nets.evaluation.metrics import METRICS

__all__ = ["results_table", "run_demo"]


def results_table(rows: list[tuple[str, dict]], labels: dict) -> str:
    """Markdown table of evaluation summaries: mean of every registered metric, then the primary metric (DSC)
    per class, in %.

    Args:
        rows: ``(method, summary)`` pairs, the summary as ``summary.json`` holds it
            (:func:`custom_nets.evaluation.summary.summarise`).
        labels: ``{value: class name}`` of the model (``model_info.json``'s ``labels``), background included.
    """
    names = [labels[k] for k in sorted(labels, key=int) if int(k) != 0]
    metrics, primary = list(METRICS), METRICS.primary
    head = ["method", *[f"mean {m.display_name}" for m in metrics], *[f"{primary.display_name} {n}" for n in names]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, summary in rows:
        per_class = summary.get("per_class") or summary.get("classes") or {}
        cells = []
        for n in names:
            value = (per_class.get(n) or {}).get(primary.name, {})
            cells.append(primary.format(value.get("mean") if isinstance(value, dict) else value))
        means = [m.format(summary[f"mean_{m.name}"]) for m in metrics]
        lines.append("| " + " | ".join([method, *means, *cells]) + " |")
    return "\n".join(lines)


def run_demo(output_dir: str = "runs/demo", pretrain_steps: int = 100, finetune_epochs: int = 24,
             device: str = "cpu") -> str:
    """Pre-train, fine-tune twice (from scratch, from the S3D weights), evaluate both; returns the report.

    The report (the table and where the outputs are) is also written to ``<output_dir>/results.md``.

    Args:
        output_dir: where every stage writes (``pretrain/``, ``scratch/``, ``s3d/``, shared caches).
        pretrain_steps: S3D iterations (multiple of 20).
        finetune_epochs: fine-tuning epochs (of ``iterations_per_epoch`` in the fine-tuning ``demo.yaml``: 8).
        device: "cpu" or "cuda".
    """
    start = time.time()
    out = Path(output_dir).resolve()
    common = {"device": device, "seed": 0}
    run_bundle(
        bundle_configs("s3d_pretrain", "train.yaml", "demo.yaml"),
        output_dir=str(out / "pretrain"), max_steps=pretrain_steps, iterations_per_epoch=20,
        checkpoint_interval=pretrain_steps, preview_interval=pretrain_steps // 2, **common,
    )
    weights = out / "pretrain" / "models" / "model.pt"
    finetune = bundle_configs("s3d_finetune", "train.yaml", "demo.yaml")
    iterations_per_epoch = yaml.safe_load(Path(finetune[-1]).read_text(encoding="utf-8"))["iterations_per_epoch"]
    evaluate = bundle_configs("s3d_finetune", "train.yaml", "demo.yaml", "evaluate.yaml")
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
    table = results_table(rows, info["labels"])
    minutes = (time.time() - start) / 60
    report = (
        f"\nDemo results on the synthetic test cases ({minutes:.1f} min; same seed, data, split and steps for both,"
        " poly schedule from scratch and Sawtooth from the pre-trained weights;"
        f" {pretrain_steps} pre-training and {finetune_epochs * iterations_per_epoch} fine-tuning"
        " iterations are far too few for a meaningful comparison - this shows the pipeline, not the method):\n\n"
        f"{table}\n\nOutputs: {out}\n"
    )
    (out / "results.md").write_text(report)
    return report
