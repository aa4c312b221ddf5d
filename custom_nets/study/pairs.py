"""One pair of a study on disk: its bundle settings, whether it is done, how many training cases it had.

A pair (dataset, method, seed, training-set size; :class:`custom_nets.study.schema.Pair`) runs in
``<output_dir>/runs/<dataset>/<method>/seed<seed>/<full|n<N>>``. It is **done** when its ``evaluation/summary.json``
and ``evaluation/metrics_per_case.csv`` exist (both written atomically by the bundle). The runner
(:mod:`custom_nets.study.runner`) and the reports (:mod:`custom_nets.study.results`,
:mod:`custom_nets.study.report`) read pairs through this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from custom_nets.engine.schedules import default_schedule
from custom_nets.study.schema import Pair, Study, load_study

__all__ = ["DONE_FILES", "as_study", "pair_done", "pair_settings", "training_cases"]

#: The evaluation files whose presence marks a pair as done.
DONE_FILES = ("summary.json", "metrics_per_case.csv")


def as_study(study: Study | str | os.PathLike) -> Study:
    """``study`` itself, or the study read from that YAML file (:func:`custom_nets.study.schema.load_study`)."""
    return study if isinstance(study, Study) else load_study(study)


def pair_done(run_dir: str | os.PathLike) -> bool:
    """A pair is done when the evaluation wrote both its result files (atomically, so never half-written)."""
    folder = Path(run_dir) / "evaluation"
    return all((folder / name).is_file() for name in DONE_FILES)


def pair_settings(study: Study, pair: Pair) -> dict:
    """The bundle settings of one pair: ``finetune`` < dataset settings < method settings, then what the study
    sets itself (data, checkpoint, seed, low-data size, run folder, shared cache and split file)."""
    dataset = next(d for d in study.datasets if d.name == pair.dataset)
    method = next(m for m in study.methods if m.name == pair.method)
    settings = {**study.finetune, **dataset.settings, **method.settings}
    # the schedule each method runs is written down (pair.json) and passed explicitly, with the bundle's rule for
    # the default: Sawtooth from pre-trained weights, nnU-Net's poly decay ("default") from scratch
    settings.setdefault("schedule", default_schedule(method.checkpoint))
    settings.update(
        dataset_dir=dataset.dataset_dir,
        pretrained_checkpoint=method.checkpoint,
        seed=pair.seed,
        low_data=pair.low_data,
        output_dir=str(pair.run_dir(study)),
        cache_dir=str(Path(study.output_dir, "cache", pair.dataset)),
        split_file=str(Path(study.output_dir, "splits", f"{pair.dataset}_seed{pair.seed}.json")),
    )
    return settings


def training_cases(study: Study, pair: Pair) -> int:
    """Number of training cases of a pair (low-data size, or the training list of its split file)."""
    if pair.low_data is not None:
        return pair.low_data
    settings = pair_settings(study, pair)
    splits = json.loads(Path(settings["split_file"]).read_text(encoding="utf-8"))
    if "folds" in splits:
        return len(splits["folds"][int(settings.get("fold") or 0)]["train"])
    return len(splits["train"])
