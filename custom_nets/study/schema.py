"""The study file: its YAML schema, validation and the Study, DatasetSpec, MethodSpec and Pair dataclasses.

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
    finetune: {epochs: 150}                # bundle settings shared by every run (schedule: follows the weights)
    evaluate: {mirror_axes: [0, 1, 2]}            # evaluation-only bundle settings
    bootstrap_samples: 1000
    compare: [s3d, scratch]                # methods of the paired Wilcoxon test

:func:`load_study` reads and validates the file; :func:`study_pairs` lists its runs. The other modules of
:mod:`custom_nets.study` build on it (see the package docstring).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from custom_nets.bundle_run import REPO_BUNDLES

__all__ = [
    "DatasetSpec",
    "MethodSpec",
    "Pair",
    "Study",
    "load_study",
    "study_pairs",
]

DEFAULT_BUNDLE = REPO_BUNDLES / "s3d_finetune"
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
