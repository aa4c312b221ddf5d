"""The resumable runner of an evaluation study: fine-tune and evaluate every (method, dataset, seed) pair.

Every pair (dataset, method, seed, training-set size) runs in its own folder
``<output_dir>/runs/<dataset>/<method>/seed<seed>/<full|n<N>>`` with the fine-tuning bundle (``train.yaml``,
then ``train.yaml + evaluate.yaml``). A pair is **done** when its ``evaluation/summary.json`` and
``evaluation/metrics_per_case.csv`` exist (both written atomically by the bundle; :mod:`custom_nets.study.pairs`);
done pairs are skipped, so a killed study restarts where it stopped. Training is skipped when ``models/model.pt``
and ``models/model_info.json`` (written at the end of training) exist; an interrupted training resumes from its own
newest checkpoint. Each pair's ``pair.json`` records its settings, among them the schedule it ran (the
study's, or the bundle's rule: Sawtooth with a checkpoint, nnU-Net's poly "default" from scratch). All methods
share a dataset's preprocessing cache (``<output_dir>/cache/<dataset>``) and, per seed, one split file
(``<output_dir>/splits/<dataset>_seed<seed>.json``), so they see the same cases. Every bundle run is appended to
``<output_dir>/bundle_runs.jsonl`` before it starts. The reports are written at the end
(:func:`custom_nets.study.report.report_study`).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from custom_nets.bundle_run import run_bundle
from custom_nets.data.atomic import atomic_write_text
from custom_nets.study.pairs import as_study, pair_done, pair_settings
from custom_nets.study.report import report_study
from custom_nets.study.schema import Pair, Study, study_pairs

__all__ = ["run_study"]

logger = logging.getLogger(__name__)

_TRAINED_FILES = ("model.pt", "model_info.json")
_DERIVED_PATHS = ("output_dir", "cache_dir", "split_file")
_SCHEDULE_BEFORE_RECORDING = "sawtooth"  # the bundle's default for every run before it followed the weights


def _record_settings(run_dir: Path, settings: dict, evaluate: dict) -> None:
    """Write ``pair.json`` once; refuse a folder that holds a run made with other settings.

    The folders the study derives from its own ``output_dir`` are left out, so a study folder can be moved. A
    ``pair.json`` written before studies recorded the schedule ran the bundle's default of then, "sawtooth".
    """
    kept = {k: v for k, v in settings.items() if k not in _DERIVED_PATHS}
    record = json.loads(json.dumps({"train": kept, "evaluate": evaluate}))
    path = run_dir / "pair.json"
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        previous.setdefault("train", {}).setdefault("schedule", _SCHEDULE_BEFORE_RECORDING)
        if previous != record:
            changed = sorted(
                f"{part}.{k}" for part in ("train", "evaluate")
                for k in set(previous.get(part, {})) | set(record[part])
                if previous.get(part, {}).get(k) != record[part].get(k)
            )
            raise ValueError(
                f"run folder '{run_dir}' was made with other settings ({', '.join(changed)} differ from the study "
                "file): delete the folder to redo this pair, or give the study another output_dir"
            )
        return
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def _log_bundle_run(study: Study, pair: Pair, stage: str) -> None:
    line = json.dumps({"time": datetime.datetime.now().isoformat(timespec="seconds"), "pair": str(pair),
                       "stage": stage, "pid": os.getpid()})
    path = Path(study.output_dir, "bundle_runs.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:  # one short line per append
        handle.write(line + "\n")


def run_study(
    study: Study | str | os.PathLike,
    runner: Callable[..., object] | None = None,
    report: bool = True,
) -> dict[str, Path]:
    """Run every pair that is not done yet, then write the reports.

    Args:
        study: a :class:`Study` or the path of its YAML file.
        runner: ``runner(config_files, **overrides)`` runs one bundle; default: in-process like
            ``python -m monai.bundle run`` (:func:`custom_nets.bundle_run.run_bundle`).
        report: write the reports at the end. Default True.

    Returns:
        The report files (see :func:`report_study`); empty when ``report`` is False.

    Raises:
        FileNotFoundError: a method's checkpoint or a dataset is missing (all are listed, before any run).
    """
    study = as_study(study)
    runner = runner or run_bundle
    missing = [f"method '{m.name}': {m.checkpoint}" for m in study.methods
               if m.checkpoint is not None and not Path(m.checkpoint).is_file()]
    missing += [f"dataset '{d.name}': {d.dataset_dir}" for d in study.datasets if not Path(d.dataset_dir).exists()]
    if missing:
        raise FileNotFoundError("study inputs not found (pre-train the checkpoints or fix the paths in "
                                f"{study.path}): " + "; ".join(missing))
    configs = Path(study.bundle, "configs")
    train = [str(configs / "train.yaml")]
    evaluate = [*train, str(configs / "evaluate.yaml")]
    pairs = study_pairs(study)
    for number, pair in enumerate(pairs, start=1):
        run_dir = pair.run_dir(study)
        settings = pair_settings(study, pair)
        if pair_done(run_dir):
            _record_settings(run_dir, settings, study.evaluate)
            logger.info("[%d/%d] %s: done, skipped", number, len(pairs), pair)
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        _record_settings(run_dir, settings, study.evaluate)
        if not all((run_dir / "models" / name).is_file() for name in _TRAINED_FILES):
            logger.info("[%d/%d] %s: fine-tuning", number, len(pairs), pair)
            _log_bundle_run(study, pair, "train")
            runner(train, **settings)
        logger.info("[%d/%d] %s: evaluating", number, len(pairs), pair)
        _log_bundle_run(study, pair, "evaluate")
        runner(evaluate, **{**settings, **study.evaluate})
    return report_study(study) if report else {}
