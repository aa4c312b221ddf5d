"""An evaluation study: fine-tune and evaluate every (method, dataset, seed) pair, then rank the methods.

A study is one YAML file (schema in ``docs/study.md``, example in ``docs/study_example.yaml``)::

    output_dir: runs/study                 # relative paths are relative to this file
    datasets:                              # name -> MSD dataset folder / dataset.json
      brain_lesions: data/lesions/dataset.json
      tof_vessels: {dataset_dir: data/tof, settings: {target_spacing: median}}
    methods:                               # name -> pre-trained checkpoint, or "scratch"
      scratch: scratch
      s3d: checkpoints/s3d/model.pt
    seeds: [0]
    low_data: [10, 20, 30, 40]             # extra runs on the first N training cases
    finetune: {schedule: sawtooth, epochs: 150}   # bundle settings shared by every run
    evaluate: {mirror_axes: [0, 1, 2]}            # evaluation-only bundle settings
    bootstrap_samples: 1000
    compare: [s3d, scratch]                # methods of the paired Wilcoxon test

Every pair (dataset, method, seed, training-set size) runs in its own folder
``<output_dir>/runs/<dataset>/<method>/seed<seed>/<full|n<N>>`` with the fine-tuning bundle (``train.yaml``,
then ``train.yaml + evaluate.yaml``). A pair is **done** when its ``evaluation/summary.json`` and
``evaluation/metrics_per_case.csv`` exist (both written atomically by the bundle); done pairs are skipped, so a
killed study restarts where it stopped. Training is skipped when ``models/model.pt`` and
``models/model_info.json`` (written at the end of training) exist; an interrupted training resumes from its own
newest checkpoint. All methods share a dataset's preprocessing cache (``<output_dir>/cache/<dataset>``) and, per
seed, one split file (``<output_dir>/splits/<dataset>_seed<seed>.json``), so they see the same cases. Every
bundle run is appended to ``<output_dir>/bundle_runs.jsonl`` before it starts.

Reports (``<output_dir>/results/``): ``table.md``/``table.csv`` (DSC and NSD per dataset, means, ranks per
dataset, average rank), ``per_case.csv``, ``rank_stability.{csv,md,png}``, ``low_data.{csv,png}`` and
``compare_<a>_vs_<b>.{md,csv}``. The ranking rules are those of :mod:`custom_nets.evaluation.ranking`.
"""

from __future__ import annotations

import csv
import datetime
import difflib
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from custom_nets.data.atomic import atomic_write_text
from custom_nets.evaluation.plots import line_plot, rank_heatmap
from custom_nets.evaluation.ranking import (
    average_rank,
    bootstrap_ranks,
    dataset_scores,
    rank_frequencies,
    rank_methods,
    tied_ranks,
)
from custom_nets.evaluation.significance import wilcoxon_signed_rank

__all__ = [
    "cli_commands",
    "DatasetSpec",
    "MethodSpec",
    "Pair",
    "Study",
    "compare_methods",
    "demo_study",
    "load_study",
    "pair_done",
    "report_study",
    "run_study",
    "study_pairs",
]

logger = logging.getLogger(__name__)

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "s3d_finetune"
STUDY_KEYS = (
    "output_dir", "datasets", "methods", "seeds", "low_data", "finetune", "evaluate", "bootstrap_samples",
    "bootstrap_seed", "compare", "bundle",
)
#: Bundle settings the study sets itself for every pair.
RESERVED_SETTINGS = (
    "dataset_dir", "pretrained_checkpoint", "output_dir", "seed", "low_data", "cache_dir", "split_file",
    "checkpoint", "eval_dataset_dir",
)
#: Settings that change the preprocessing cache, which all methods of a dataset share.
PREPROCESSING_SETTINGS = ("target_spacing", "modality")
SCRATCH = "scratch"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_DONE_FILES = ("summary.json", "metrics_per_case.csv")
_TRAINED_FILES = ("model.pt", "model_info.json")
_DERIVED_PATHS = ("output_dir", "cache_dir", "split_file")


# ------------------------------------------------------------------------------------------------ schema


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a study: ``dataset_dir`` (MSD folder or dataset.json) and extra bundle settings."""

    name: str
    dataset_dir: str
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """One method of a study: a pre-trained checkpoint (None = from scratch) and extra bundle settings."""

    name: str
    checkpoint: str | None
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """A validated study (see :func:`load_study`); paths are absolute."""

    path: str
    output_dir: str
    datasets: tuple[DatasetSpec, ...]
    methods: tuple[MethodSpec, ...]
    seeds: tuple[int, ...] = (0,)
    low_data: tuple[int, ...] = ()
    finetune: dict = field(default_factory=dict)
    evaluate: dict = field(default_factory=dict)
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0
    compare: tuple[str, str] | None = None
    bundle: str = str(DEFAULT_BUNDLE)

    @property
    def method_names(self) -> list[str]:
        return [m.name for m in self.methods]

    @property
    def dataset_names(self) -> list[str]:
        return [d.name for d in self.datasets]


@dataclass(frozen=True)
class Pair:
    """One fine-tuning run: ``low_data`` None means the full training set."""

    dataset: str
    method: str
    seed: int
    low_data: int | None = None

    @property
    def size_name(self) -> str:
        return "full" if self.low_data is None else f"n{self.low_data}"

    def run_dir(self, study: Study) -> Path:
        return Path(study.output_dir, "runs", self.dataset, self.method, f"seed{self.seed}", self.size_name)

    def __str__(self) -> str:
        return f"{self.dataset}/{self.method}/seed{self.seed}/{self.size_name}"


def _fail(source: str, message: str) -> ValueError:
    return ValueError(f"study '{source}': {message}")


def _bundle_keys(bundle: Path, names: Sequence[str]) -> set[str]:
    keys: set[str] = set()
    for name in names:
        path = bundle / "configs" / name
        if not path.is_file():
            raise FileNotFoundError(f"bundle config {path} not found: set 'bundle' to a fine-tuning bundle folder")
        keys.update((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).keys())
    return keys


def _check_settings(source: str, where: str, settings, known: set[str], forbidden: Sequence[str] = ()) -> dict:
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise _fail(source, f"{where} must be a mapping of bundle settings, e.g. {{epochs: 150}}, got {settings!r}")
    for key in settings:
        if key in RESERVED_SETTINGS:
            raise _fail(source, f"{where} sets '{key}', which the study sets for every run: remove it "
                                f"(the study sets {', '.join(RESERVED_SETTINGS)})")
        if key in forbidden:
            raise _fail(source, f"{where} sets '{key}', which changes the preprocessing cache that every method "
                                "of a dataset shares: set it in the dataset's settings instead")
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=3)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise _fail(source, f"{where} has an unknown bundle setting '{key}'.{hint}")
    return dict(settings)


def _check_name(source: str, what: str, name) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(source, f"{what} name {name!r} must be a folder-safe word (letters, digits, _ . + -), e.g. s3d")
    return name


def _resolve(base: Path, value) -> str:
    path = Path(os.path.expanduser(str(value)))
    return str(path if path.is_absolute() else (base / path).resolve())


def _int_list(source: str, key: str, value, minimum: int, default: list) -> tuple[int, ...]:
    value = default if value is None else value
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value):
        example = default or [10, 20]
        raise _fail(source, f"{key} must be a list of integers >= {minimum}, e.g. {key}: {example}, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(source, f"{key} lists a value twice: {value}")
    return tuple(value)


def _datasets(source: str, base: Path, raw, known: set[str]) -> tuple[DatasetSpec, ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(source, "datasets must be a non-empty mapping {name: dataset.json or folder}, "
                            "e.g. datasets: {brain: data/brain/dataset.json}")
    specs = []
    for name, value in raw.items():
        _check_name(source, "dataset", name)
        settings = None
        if isinstance(value, Mapping):
            unknown = set(value) - {"dataset_dir", "settings"}
            if unknown:
                raise _fail(source, f"dataset '{name}' has unknown keys {sorted(unknown)}: use dataset_dir and settings")
            value, settings = value.get("dataset_dir"), value.get("settings")
        if not isinstance(value, str) or not value:
            raise _fail(source, f"dataset '{name}' needs a dataset_dir (MSD folder or dataset.json), got {value!r}")
        specs.append(DatasetSpec(name, _resolve(base, value),
                                 _check_settings(source, f"dataset '{name}' settings", settings, known)))
    return tuple(specs)


def _methods(source: str, base: Path, raw, known: set[str]) -> tuple[MethodSpec, ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(source, "methods must be a non-empty mapping {name: checkpoint or scratch}, "
                            "e.g. methods: {scratch: scratch, s3d: runs/s3d_pretrain/models/model.pt}")
    specs = []
    for name, value in raw.items():
        _check_name(source, "method", name)
        settings = None
        if isinstance(value, Mapping):
            unknown = set(value) - {"checkpoint", "settings"}
            if unknown:
                raise _fail(source, f"method '{name}' has unknown keys {sorted(unknown)}: use checkpoint and settings")
            value, settings = value.get("checkpoint"), value.get("settings")
        if value is not None and not isinstance(value, str):
            raise _fail(source, f"method '{name}': checkpoint must be a path or 'scratch', got {value!r}")
        checkpoint = None if value in (None, "", SCRATCH) else _resolve(base, value)
        specs.append(MethodSpec(name, checkpoint, _check_settings(
            source, f"method '{name}' settings", settings, known, forbidden=PREPROCESSING_SETTINGS)))
    return tuple(specs)


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study YAML file.

    Relative paths (``output_dir``, dataset folders, checkpoints, ``bundle``) are relative to the file's folder.
    Checkpoint files are not required to exist yet (they are checked when the study runs).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: any schema error; the message names the file, the key and the fix.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"study file '{path}' not found")
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise _fail(source, f"not valid YAML: {error}") from None
    if not isinstance(raw, Mapping):
        raise _fail(source, "must be a YAML mapping with at least 'datasets' and 'methods'")
    for key in raw:
        if key not in STUDY_KEYS:
            close = difflib.get_close_matches(str(key), STUDY_KEYS, n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise _fail(source, f"unknown key '{key}'.{hint} Study keys: {', '.join(STUDY_KEYS)}")
    base = path.parent
    bundle = Path(_resolve(base, raw["bundle"])) if raw.get("bundle") else DEFAULT_BUNDLE
    train_keys = _bundle_keys(bundle, ["train.yaml"])
    eval_keys = train_keys | _bundle_keys(bundle, ["evaluate.yaml"])
    datasets = _datasets(source, base, raw.get("datasets"), train_keys)
    methods = _methods(source, base, raw.get("methods"), train_keys)
    finetune = _check_settings(source, "finetune", raw.get("finetune"), train_keys, forbidden=())
    evaluate = _check_settings(source, "evaluate", raw.get("evaluate"), eval_keys)
    seeds = _int_list(source, "seeds", raw.get("seeds"), 0, [0])
    if not seeds:
        raise _fail(source, "seeds is empty: give at least one, e.g. seeds: [0]")
    low_data = _int_list(source, "low_data", raw.get("low_data"), 1, [])
    samples = raw.get("bootstrap_samples", 1000)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise _fail(source, f"bootstrap_samples must be a positive integer (the paper uses 1000), got {samples!r}")
    boot_seed = raw.get("bootstrap_seed", 0)
    if isinstance(boot_seed, bool) or not isinstance(boot_seed, int) or boot_seed < 0:
        raise _fail(source, f"bootstrap_seed must be an integer >= 0, got {boot_seed!r}")
    names = [m.name for m in methods]
    compare = raw.get("compare")
    if compare is not None:
        if (not isinstance(compare, list) or len(compare) != 2 or compare[0] == compare[1]
                or any(c not in names for c in compare)):
            raise _fail(source, f"compare must name two different methods of {names}, e.g. compare: "
                                f"[{names[-1]}, {names[0]}], got {compare!r}")
        compare = (compare[0], compare[1])
    output_dir = _resolve(base, raw.get("output_dir") or "study_output")
    return Study(source, output_dir, datasets, methods, seeds, low_data, finetune, evaluate, samples, boot_seed,
                 compare, str(bundle))


def study_pairs(study: Study) -> list[Pair]:
    """Every run of the study: the full training sets first (the results table), then the low-data sizes."""
    pairs = []
    for size in (None, *study.low_data):
        for dataset in study.datasets:
            for seed in study.seeds:
                pairs += [Pair(dataset.name, method.name, seed, size) for method in study.methods]
    return pairs


# ------------------------------------------------------------------------------------------------ runner


def pair_done(run_dir: str | os.PathLike) -> bool:
    """A pair is done when the evaluation wrote both its result files (atomically, so never half-written)."""
    folder = Path(run_dir) / "evaluation"
    return all((folder / name).is_file() for name in _DONE_FILES)


def _pair_settings(study: Study, pair: Pair) -> dict:
    dataset = next(d for d in study.datasets if d.name == pair.dataset)
    method = next(m for m in study.methods if m.name == pair.method)
    settings = {**study.finetune, **dataset.settings, **method.settings}
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


def _record_settings(run_dir: Path, settings: dict, evaluate: dict) -> None:
    """Write ``pair.json`` once; refuse a folder that holds a run made with other settings.

    The folders the study derives from its own ``output_dir`` are left out, so a study folder can be moved.
    """
    kept = {k: v for k, v in settings.items() if k not in _DERIVED_PATHS}
    record = json.loads(json.dumps({"train": kept, "evaluate": evaluate}))
    path = run_dir / "pair.json"
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
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


def _default_runner(config_files: list[str], **overrides) -> None:
    from custom_nets.cli import run_bundle

    run_bundle(config_files, **overrides)


def _as_study(study: Study | str | os.PathLike) -> Study:
    return study if isinstance(study, Study) else load_study(study)


def run_study(
    study: Study | str | os.PathLike,
    runner: Callable[..., object] | None = None,
    report: bool = True,
) -> dict[str, Path]:
    """Run every pair that is not done yet, then write the reports.

    Args:
        study: a :class:`Study` or the path of its YAML file.
        runner: ``runner(config_files, **overrides)`` runs one bundle; default: in-process like
            ``python -m monai.bundle run`` (:func:`custom_nets.cli.run_bundle`).
        report: write the reports at the end. Default True.

    Returns:
        The report files (see :func:`report_study`); empty when ``report`` is False.

    Raises:
        FileNotFoundError: a method's checkpoint or a dataset is missing (all are listed, before any run).
    """
    study = _as_study(study)
    runner = runner or _default_runner
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
        settings = _pair_settings(study, pair)
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


# ------------------------------------------------------------------------------------------------ results


def _read_per_case(path: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """``{case: {class: (dsc, nsd)}}`` from an evaluation's ``metrics_per_case.csv``."""
    cases: dict[str, dict[str, tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            cases.setdefault(row["case"], {})[row["class"]] = (float(row["dsc"]), float(row["nsd"]))
    return cases


def _training_cases(study: Study, pair: Pair) -> int:
    """Number of training cases of a pair (low-data size, or the training list of its split file)."""
    if pair.low_data is not None:
        return pair.low_data
    settings = _pair_settings(study, pair)
    splits = json.loads(Path(settings["split_file"]).read_text(encoding="utf-8"))
    if "folds" in splits:
        return len(splits["folds"][int(settings.get("fold") or 0)]["train"])
    return len(splits["train"])


@dataclass(frozen=True)
class _DatasetResults:
    """Per-case values of one dataset and training-set size: arrays ``(methods, seeds, cases, classes)``."""

    cases: tuple[tuple[str, ...], ...]  # per seed
    classes: tuple[str, ...]
    dsc: np.ndarray
    nsd: np.ndarray


def _collect(study: Study, dataset: str, size: int | None) -> _DatasetResults | None:
    """Stack the per-case results of every method and seed; None when some pair is not done."""
    tables = {}
    for method in study.method_names:
        for seed in study.seeds:
            run_dir = Pair(dataset, method, seed, size).run_dir(study)
            if not pair_done(run_dir):
                return None
            tables[method, seed] = _read_per_case(run_dir / "evaluation" / "metrics_per_case.csv")
    cases_per_seed, classes = [], None
    for seed in study.seeds:
        reference = tables[study.method_names[0], seed]
        cases = tuple(sorted(reference))
        for method in study.method_names:
            table = tables[method, seed]
            if tuple(sorted(table)) != cases:
                raise ValueError(
                    f"dataset '{dataset}', seed {seed}: method '{method}' was evaluated on other test cases than "
                    f"'{study.method_names[0]}'; the methods must share the split: delete the run folders of this "
                    "dataset and run the study again"
                )
            found = tuple(sorted({k for row in table.values() for k in row}))
            if classes is None:
                classes = found
            elif found != classes:
                raise ValueError(f"dataset '{dataset}': method '{method}' scored classes {found}, others {classes}")
        cases_per_seed.append(cases)
    n_cases = {len(c) for c in cases_per_seed}
    if len(n_cases) != 1:
        raise ValueError(f"dataset '{dataset}': the seeds' splits have different numbers of test cases {n_cases}")
    shape = (len(study.methods), len(study.seeds), n_cases.pop(), len(classes))
    dsc, nsd = np.full(shape, np.nan), np.full(shape, np.nan)
    for m, method in enumerate(study.method_names):
        for s, seed in enumerate(study.seeds):
            for c, case in enumerate(cases_per_seed[s]):
                for k, name in enumerate(classes):
                    dsc[m, s, c, k], nsd[m, s, c, k] = tables[method, seed][case][name]
    return _DatasetResults(tuple(cases_per_seed), classes, dsc, nsd)


def _csv_text(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _results_table(study: Study, results: dict[str, _DatasetResults]) -> tuple[str, str, dict]:
    """Markdown and CSV of the Table-4-like results, and the numbers behind them."""
    datasets, methods = list(results), study.method_names
    dsc = {d: dict(zip(methods, dataset_scores(results[d].dsc).tolist())) for d in datasets}
    nsd = {d: dict(zip(methods, dataset_scores(results[d].nsd).tolist())) for d in datasets}
    ranks = {d: rank_methods(dsc[d]) for d in datasets}
    mean_rank = average_rank(ranks)
    mean_dsc = {m: float(np.mean([dsc[d][m] for d in datasets])) for m in methods}
    mean_nsd = {m: float(np.mean([nsd[d][m] for d in datasets])) for m in methods}
    order = sorted(methods, key=lambda m: (mean_rank[m], -mean_dsc[m]))
    head = ["method", *[f"{d} {metric}" for d in datasets for metric in ("DSC", "NSD")], "mean DSC", "mean NSD",
            *[f"rank {d}" for d in datasets], "average rank"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [["method", *[f"{d}_{metric}" for d in datasets for metric in ("dsc", "nsd")], "mean_dsc", "mean_nsd",
             *[f"{d}_rank" for d in datasets], "average_rank"]]
    for m in order:
        cells = [m, *[_pct(v) for d in datasets for v in (dsc[d][m], nsd[d][m])], _pct(mean_dsc[m]),
                 _pct(mean_nsd[m]), *[f"{ranks[d][m]:g}" for d in datasets], f"{mean_rank[m]:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
        rows.append([m, *[repr(v) for d in datasets for v in (dsc[d][m], nsd[d][m])], repr(mean_dsc[m]),
                     repr(mean_nsd[m]), *[repr(ranks[d][m]) for d in datasets], repr(mean_rank[m])])
    numbers = {"dsc": dsc, "nsd": nsd, "ranks": ranks, "average_rank": mean_rank, "mean_dsc": mean_dsc}
    return "\n".join(lines) + "\n", _csv_text(rows), numbers


def _rank_stability(study: Study, results: dict[str, _DatasetResults], observed: dict) -> tuple[str, str, dict]:
    """Bootstrapped ranks per dataset and of the average rank: CSV of rank frequencies, Markdown summary, and
    the frequency arrays for the heat map."""
    methods = study.method_names
    per_dataset = {d: bootstrap_ranks(r.dsc, study.bootstrap_samples, study.bootstrap_seed, d)
                   for d, r in results.items()}
    averages = np.mean(np.stack(list(per_dataset.values())), axis=0)  # (samples, methods)
    overall = np.stack([tied_ranks(row, higher_is_better=False) for row in averages])
    frequencies = {d: rank_frequencies(r) for d, r in per_dataset.items()}
    frequencies["average rank"] = rank_frequencies(overall)
    rows = [["dataset", "method", "rank", "fraction"]]
    for name, array in frequencies.items():
        for m, method in enumerate(methods):
            rows += [[name, method, p + 1, repr(float(array[m, p]))] for p in range(len(methods))]
    lines = [
        f"Rank stability: {study.bootstrap_samples} bootstrap samples of the test cases per dataset "
        f"(seed {study.bootstrap_seed}).", "",
        "| method | average rank | bootstrap mean | 95% interval | first overall |", "|---|---|---|---|---|",
    ]
    for m in sorted(range(len(methods)), key=lambda i: observed[methods[i]]):
        low, high = np.percentile(averages[:, m], [2.5, 97.5])
        lines.append(f"| {methods[m]} | {observed[methods[m]]:.2f} | {averages[:, m].mean():.2f} | "
                     f"{low:.2f} - {high:.2f} | {100 * frequencies['average rank'][m, 0]:.1f}% |")
    return "\n".join(lines) + "\n", _csv_text(rows), frequencies


def _per_case_rows(study: Study, results_by_size: dict) -> str:
    rows = [["dataset", "training_cases", "seed", "method", "case", "class", "dsc", "nsd"]]
    for (dataset, size), results in results_by_size.items():
        for m, method in enumerate(study.method_names):
            for s, seed in enumerate(study.seeds):
                n_train = _training_cases(study, Pair(dataset, method, seed, size))
                for c, case in enumerate(results.cases[s]):
                    for k, name in enumerate(results.classes):
                        rows.append([dataset, n_train, seed, method, case, name,
                                     repr(float(results.dsc[m, s, c, k])), repr(float(results.nsd[m, s, c, k]))])
    return _csv_text(rows)


def _case_means(values: np.ndarray) -> np.ndarray:
    """Mean over the defined classes of each case: ``(..., classes) -> (...)`` (NaN when none is defined)."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.where(defined, values, 0.0).sum(axis=-1) / np.maximum(count, 1), np.nan)


def _write_results(study: Study, written: dict, name: str, text: str) -> None:
    path = Path(study.output_dir, "results", name)
    atomic_write_text(path, text)
    written[name] = path


def compare_methods(study: Study | str | os.PathLike, method_a: str, method_b: str) -> str:
    """Paired Wilcoxon signed-rank tests of two methods' per-case mean DSC, per dataset and pooled.

    A pair of observations is one test case of one seed on the full training set, scored by the mean DSC over
    the classes defined in that case; cases without a defined class in either method are dropped.

    Returns:
        The Markdown report (also written to ``results/compare_<a>_vs_<b>.md`` with a CSV beside it).
    """
    study = _as_study(study)
    for name in (method_a, method_b):
        if name not in study.method_names:
            raise ValueError(f"method '{name}' is not in the study {study.path}: choose from {study.method_names}")
    if method_a == method_b:
        raise ValueError(f"compare two different methods, got '{method_a}' twice")
    a, b = study.method_names.index(method_a), study.method_names.index(method_b)
    diffs = {}
    for dataset in study.dataset_names:
        results = _collect(study, dataset, None)
        if results is None:
            raise ValueError(f"dataset '{dataset}' is not finished for every method and seed: run the study first")
        x, y = _case_means(results.dsc[a]).ravel(), _case_means(results.dsc[b]).ravel()
        keep = ~(np.isnan(x) | np.isnan(y))
        diffs[dataset] = (x[keep], y[keep])
    diffs["all datasets"] = tuple(np.concatenate([v[i] for v in diffs.values()]) for i in (0, 1))
    lines = [f"Paired Wilcoxon signed-rank test, {method_a} vs {method_b}: per-case mean DSC (two-sided; exact "
             "distribution up to 50 non-zero differences, normal approximation above).", "",
             f"| dataset | cases | mean DSC {method_a} | mean DSC {method_b} | mean difference | W+ | W- | p | test |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [["dataset", "n", f"mean_{method_a}", f"mean_{method_b}", "mean_difference", "w_plus", "w_minus",
             "pvalue", "method"]]
    for dataset, (x, y) in diffs.items():
        try:
            result = wilcoxon_signed_rank(x, y)
            stats = [f"{result.w_plus:g}", f"{result.w_minus:g}", f"{result.pvalue:.4g}", result.method]
            raw = [repr(result.w_plus), repr(result.w_minus), repr(result.pvalue), result.method]
        except ValueError as error:  # no non-zero difference
            logger.warning("%s: %s", dataset, error)
            stats, raw = ["-", "-", "-", "identical"], ["", "", "", "identical"]
        mean_x, mean_y = (float(np.mean(v)) if v.size else math.nan for v in (x, y))
        lines.append(f"| {dataset} | {x.size} | {_pct(mean_x)} | {_pct(mean_y)} | {_pct(mean_x - mean_y)} | "
                     + " | ".join(stats) + " |")
        rows.append([dataset, x.size, repr(mean_x), repr(mean_y), repr(mean_x - mean_y), *raw])
    text = "\n".join(lines) + "\n"
    stem = f"compare_{method_a}_vs_{method_b}"
    atomic_write_text(Path(study.output_dir, "results", f"{stem}.md"), text)
    atomic_write_text(Path(study.output_dir, "results", f"{stem}.csv"), _csv_text(rows))
    return text


def report_study(study: Study | str | os.PathLike) -> dict[str, Path]:
    """Write the study's reports from the finished pairs (see the module docstring for the files).

    The table and the rank stability need every method and seed on a dataset; datasets that are not complete
    are left out with a warning. The low-data plot uses every complete (dataset, size).

    Returns:
        ``{file name: path}`` of the files written.
    """
    study = _as_study(study)
    written: dict[str, Path] = {}
    results_by_size = {}
    for size in (None, *study.low_data):
        for dataset in study.dataset_names:
            results = _collect(study, dataset, size)
            if results is None:
                logger.warning("dataset '%s' (%s) is not complete yet: left out of the reports", dataset,
                               "full" if size is None else f"{size} cases")
            else:
                results_by_size[dataset, size] = results
    full = {d: r for (d, size), r in results_by_size.items() if size is None}
    if not full:
        logger.warning("no dataset is complete: nothing to report yet")
        return written
    table_md, table_csv, numbers = _results_table(study, full)
    _write_results(study, written, "table.md", table_md)
    _write_results(study, written, "table.csv", table_csv)
    _write_results(study, written, "per_case.csv", _per_case_rows(study, results_by_size))
    stability_md, stability_csv, frequencies = _rank_stability(study, full, numbers["average_rank"])
    _write_results(study, written, "rank_stability.md", stability_md)
    _write_results(study, written, "rank_stability.csv", stability_csv)
    path = Path(study.output_dir, "results", "rank_stability.png")
    rank_heatmap(frequencies, study.method_names, path,
                 title=f"Rank stability ({study.bootstrap_samples} bootstrap samples of the test cases)")
    written["rank_stability.png"] = path
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    rows = [["dataset", "method", "training_cases", "mean_dsc", "mean_nsd"]]
    for (dataset, size), results in sorted(results_by_size.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        scores_dsc, scores_nsd = dataset_scores(results.dsc), dataset_scores(results.nsd)
        for m, method in enumerate(study.method_names):
            n_train = _training_cases(study, Pair(dataset, method, study.seeds[0], size))
            curves.setdefault(dataset, {}).setdefault(method, []).append((n_train, 100 * float(scores_dsc[m])))
            rows.append([dataset, method, n_train, repr(float(scores_dsc[m])), repr(float(scores_nsd[m]))])
    _write_results(study, written, "low_data.csv", _csv_text(rows))
    path = Path(study.output_dir, "results", "low_data.png")
    line_plot(curves, path, "training cases", "mean DSC (%)", title="DSC vs number of training cases")
    written["low_data.png"] = path
    if study.compare is not None and len(full) == len(study.datasets):
        compare_methods(study, *study.compare)
        stem = f"compare_{study.compare[0]}_vs_{study.compare[1]}"
        written[f"{stem}.md"] = Path(study.output_dir, "results", f"{stem}.md")
    logger.info("Study results in %s:\n%s", Path(study.output_dir, "results"), table_md)
    return written


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
    """Pre-train the demo's two tiny checkpoints (S3D and dense MAE), skipping those that exist."""
    configs = Path(__file__).resolve().parents[2] / "bundles" / "s3d_pretrain" / "configs"
    variants = {"s3d": {}, "dense_mae": {"sparse": False, "mask_token": False, "densify": False, "mask_ratio": 0.75}}
    for name, switches in variants.items():
        run_dir = out / "pretrain" / name
        if (run_dir / "models" / "model.pt").is_file():
            logger.info("pre-trained %s weights exist in %s: skipped", name, run_dir)
            continue
        runner(
            [str(configs / "train.yaml"), str(configs / "demo.yaml")],
            output_dir=str(run_dir), cache_dir=str(out / "pretrain" / "cache"), network_preset="tiny",
            patch_size=[32, 32, 32], block_size=8, batch_size=2, max_steps=int(steps), iterations_per_epoch=int(steps),
            checkpoint_interval=int(steps), preview_interval=int(steps), num_workers=0, device=device, seed=0,
            **switches,
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
    run_study(study_file, runner=runner)
    return Path(out, "results", "table.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------ command line


def _run_command(study_file: str) -> str:
    """Fine-tune and evaluate every pair not done yet, write the reports; prints the results table."""
    run_study(study_file)
    return Path(load_study(study_file).output_dir, "results", "table.md").read_text(encoding="utf-8")


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
