"""Export a fine-tuning run as a self-contained MONAI model-zoo bundle (a folder and ``<name>_v<version>.zip``).

Layout of the export (``custom_nets`` is not needed to use it; see docs/model_zoo.md)::

    <name>/
      configs/metadata.json    model-zoo metadata (schema-checked; eval_metrics from the run's evaluation summary)
      configs/inference.yaml   segment images (+ the same as .json for monai.bundle.load and MONAI Label)
      configs/train.yaml       fine-tune further from models/model.pt (+ .json), MONAI components only
      configs/logging.conf
      models/model.pt          state dict of scripts/resenc.py's ResEncUNet (nnU-Net key names)
      models/model.ts          the same network in TorchScript, with metadata.json and inference.json inside
      scripts/                 resenc.py (the network), inferer.py (mirrored sliding windows), cases.py and
                               case_ids.py (images to segment, named by case id; prediction files)
      docs/README.md, LICENSE (the Apache-2.0 text), large_files.yml (every model file: path, sha256, URL)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import torch
import yaml

from custom_nets.export.bundle_scripts.resenc import ResEncUNet
from custom_nets.export.inference_config import TEMPLATE, check_model_info, exported_inference_config, network_kwargs
from custom_nets.export.metadata import check_version, validate_metadata, zoo_metadata
from custom_nets.export.train_config import exported_train_config
from custom_nets.nets.resenc import PRESETS
from custom_nets.transfer import encoder_layout, read_checkpoint

__all__ = [
    "LARGE_FILE_MB", "LICENSE_TEXT", "NAME_PATTERN", "export_bundle", "exported_network", "find_evaluation_summary",
    "zip_bundle",
]

logger = logging.getLogger(__name__)

#: Model files above this size (MB) must be downloadable from large_files.yml's URL (the model zoo keeps them out
#: of git); an export without ``large_files_url`` warns about them.
LARGE_FILE_MB = 25.0
#: Model-zoo bundle names: letters, digits and underscores.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
_PACKAGE = Path(__file__).resolve().parent
_REPO_BUNDLE = _PACKAGE.parent.parent / "bundles" / "s3d_finetune"
_INFERER_SOURCE = _PACKAGE.parent / "evaluation" / "inference.py"
_CASE_IDS_SOURCE = _PACKAGE.parent / "data" / "case_ids.py"
#: The Apache License 2.0, unchanged (what licence scanners and the model zoo expect in a bundle's LICENSE).
LICENSE_TEXT = _PACKAGE / "templates" / "LICENSE"


def _preset_of(state: Mapping[str, torch.Tensor]) -> str:
    found = encoder_layout(state)
    for name, p in PRESETS.items():
        if (tuple(p["features"]), tuple(p["blocks_per_stage"])) == found:
            return f"preset '{name}'"
    return f"an encoder with features {list(found[0])} and blocks {list(found[1])} (no preset)"


def state_dict_mismatches(expected: Mapping, state: Mapping) -> tuple[list[str], list[str]]:
    """``(missing keys, "key (shape) != (expected shape)" lines)`` of ``state`` against ``expected``'s tensors."""
    missing = [k for k in expected if k not in state]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items() if k in state and state[k].shape != v.shape
    ]
    return missing, wrong


def exported_network(checkpoint: str | os.PathLike, info: Mapping) -> ResEncUNet:
    """The bundle's network (``scripts/resenc.py``) with the run's weights loaded strictly.

    Args:
        checkpoint: the run's ``models/model.pt`` (or any file ``custom_nets.transfer.read_checkpoint`` reads).
        info: the run's ``model_info.json``.

    Raises:
        ValueError: the checkpoint is not a ResEnc U-Net, or not the one ``model_info.json`` describes; the
            message names the preset the weights look like.
    """
    check_model_info(info)
    kwargs = network_kwargs(info["network_preset"])
    network = ResEncUNet(int(info["num_channels"]), len(info["labels"]), **kwargs)
    state, _ = read_checkpoint(checkpoint)  # raises for other architectures, naming the file
    expected = network.state_dict()
    missing, wrong = state_dict_mismatches(expected, state)
    if missing or wrong:
        raise ValueError(
            f"checkpoint {checkpoint} does not fit the network of model_info.json (preset '{info['network_preset']}', "
            f"{info['num_channels']} input channels, {len(info['labels'])} classes): {len(missing)} tensors missing, "
            f"{len(wrong)} with another shape (e.g. {(wrong + missing)[:2]}). The checkpoint has "
            f"{_preset_of(state)}. Export the model.pt that sits beside this model_info.json, or fix the preset."
        )
    network.load_state_dict({k: state[k] for k in expected}, strict=True)
    return network.eval()


def _header(template: Path) -> str:
    lines = []
    for line in template.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _scores(meta: Mapping) -> str:
    metrics = meta.get("eval_metrics") or {}
    if not metrics:
        return "None: no evaluation summary was given at export."
    return "\n".join(["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in metrics.items()])


def _readme(meta: Mapping, info: Mapping, name: str) -> str:
    labels = ", ".join(f"{k} = {v}" for k, v in meta["network_data_format"]["outputs"]["pred"]["channel_def"].items())
    modalities = ", ".join(f"{k} = {v}" for k, v in meta["network_data_format"]["inputs"]["image"]["channel_def"].items())
    return f"""# {meta.get('name', name)} (version {meta['version']})

{meta.get('description', '')}

Exported from a fine-tuning run of the s3d-monai project. This bundle needs only `monai` (1.5.2 or newer),
`torch`, `nibabel`, `pytorch-ignite` and `pyyaml`; the network is defined in `scripts/resenc.py`.

- Input: {info['num_channels']} channel(s) ({modalities}), resampled to {info['spacing']} mm, intensity
  normalisation `{(info.get('normalisation') or {}).get('modality')}` as in training.
- Output: {labels}.
- Network: ResEnc U-Net, preset `{info['network_preset']}`, sliding windows of {info['patch_size']} voxels with
  Gaussian weighting; test-time mirroring (mean over the 8 flips) on a GPU by default.
- Pre-trained weights used for fine-tuning: `{info.get('pretrained_checkpoint')}`; schedule `{info.get('schedule')}`.

## Scores (`eval_metrics` in configs/metadata.json)

{_scores(meta)}

## Segment images

```bash
cd {name}
python -m monai.bundle run --config_file configs/inference.yaml --input_dir /data/images --output_dir /data/labels
```

`--input_dir` (or MONAI's `--dataset_dir`) is a NIfTI file (3D, or 4D with the modalities on the last axis), a
folder of them, or a JSON datalist `{{"test": [{{"image": ["t1.nii.gz", "flair.nii.gz"]}}]}}`. Test-time mirroring
is on when the network runs on a GPU and off on a CPU, where it costs 8 times the time; `--mirroring true` or
`--mirroring false` decides it. From another folder add `--bundle_root <this folder>`.

## Fine-tune further

```bash
python -m monai.bundle run training --config_file configs/train.yaml --dataset_dir /data/task --output_dir /runs/more
```

`--dataset_dir` is an MSD-style folder with `dataset.json` (the classes of this bundle). Training starts from
`models/model.pt` and writes `<output_dir>/model.pt`; `configs/train.yaml` lists the settings (`epochs`,
`learning_rate`, `batch_size`, ...). It is a short recipe with MONAI components only (see its header).

## MONAI Label

MONAI Label serves this folder with its `BundleInferTask`. A request's `mirroring` parameter
(`params={{"mirroring": false}}`) switches test-time mirroring per request; its default is on with a GPU, off on a
CPU.

## Load the network in Python

```python
import sys, monai
sys.path.insert(0, "<bundle_dir>/{name}")           # makes scripts/ importable for network_def
net = monai.bundle.load(name="{name}", bundle_dir="<bundle_dir>", workflow_type="inference")
ts, meta, extra = monai.bundle.load(name="{name}", bundle_dir="<bundle_dir>", load_ts_module=True)  # no scripts needed
```

## Intended use

{meta.get('intended_use', 'Research only.')}

## Licence

Apache License 2.0 (`LICENSE`). {meta.get('copyright', '')}

## References

""" + "\n".join(f"- {r}" for r in meta.get("references", [])) + "\n"


def find_evaluation_summary(checkpoint: str | os.PathLike, evaluation_summary=None) -> Path | None:
    """The evaluation ``summary.json`` whose scores go into ``eval_metrics``, or None.

    Args:
        checkpoint: the exported ``model.pt`` (``<run>/models/model.pt``).
        evaluation_summary: None: ``<run>/evaluation/summary.json`` if it exists (where
            ``bundles/s3d_finetune/configs/evaluate.yaml`` writes it), else None; a path: that file, which must
            exist; False: None (export without scores).

    Raises:
        FileNotFoundError: a given path does not exist.
    """
    if evaluation_summary is False:
        return None
    if evaluation_summary is None:
        default = Path(checkpoint).resolve().parent.parent / "evaluation" / "summary.json"
        return default if default.is_file() else None
    path = Path(evaluation_summary)
    if not path.is_file():
        raise FileNotFoundError(
            f"evaluation summary {path} not found: pass the summary.json that evaluate.yaml wrote for this run "
            "(<output_dir>/evaluation/summary.json), or evaluation_summary=False to export without scores."
        )
    return path


def export_bundle(
    run_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    name: str = "s3d_finetune",
    version: str = "0.1.0",
    changelog: str = "exported fine-tuned weights",
    checkpoint: str | os.PathLike | None = None,
    source_bundle: str | os.PathLike = _REPO_BUNDLE,
    large_file_mb: float = LARGE_FILE_MB,
    large_files_url: str | None = None,
    make_zip: bool = True,
    overwrite: bool = False,
    evaluation_summary: str | os.PathLike | bool | None = None,
    title: str | None = None,
) -> Path:
    """Write ``<output_dir>/<name>/`` (and ``<output_dir>/<name>_v<version>.zip``) from a fine-tuning run.

    Args:
        run_dir: the fine-tuning ``output_dir`` (holding ``models/model.pt`` and ``models/model_info.json``).
        output_dir: where the bundle folder and zip are written.
        name: bundle name (letters, digits, underscores); the folder, zip and download name.
        version: release version, MAJOR.MINOR.PATCH.
        changelog: one line for this version.
        checkpoint: the weights. Defaults to ``<run_dir>/models/model.pt``; ``model_info.json`` is read beside it.
        source_bundle: bundle whose metadata (authors, references, intended use) and logging.conf are reused.
        large_file_mb: the model zoo's size limit for files kept in git (MB); without ``large_files_url`` a
            warning names the model files above it. Defaults to 25.
        large_files_url: base URL where ``models/model.pt`` and ``models/model.ts`` are published (e.g. a GitHub
            release, ``https://github.com/<owner>/<repo>/releases/download/<tag>``); each file's URL in
            ``large_files.yml`` is ``<large_files_url>/<file name>``. None: the URLs are left empty (the files
            travel in the zip) and ``large_files.yml`` says so.
        make_zip: also write the zip. Defaults to True.
        overwrite: replace an existing export of the same name. Defaults to False.
        evaluation_summary: the evaluation ``summary.json`` whose scores become ``eval_metrics``. None (default):
            ``<run>/evaluation/summary.json`` when the run has one, else no scores (a warning, and the description
            says the bundle was not evaluated); a path: that file; False: no scores.
        title: the metadata's human-readable ``name``. Defaults to one built from the network, classes and patch.

    Returns:
        The bundle folder.
    """
    _check_release(name, version)
    checkpoint, info = _run_model(run_dir, checkpoint)
    source_bundle = Path(source_bundle)
    network = exported_network(checkpoint, info)
    config, train_config = exported_inference_config(info), exported_train_config(info)
    meta = _exported_metadata(source_bundle, info, checkpoint, evaluation_summary, version, changelog, title)
    target = _write_atomically(Path(output_dir), name, overwrite, lambda folder: _write_bundle(
        folder, network, config, train_config, meta, info, name, source_bundle, large_file_mb, large_files_url))
    if make_zip:
        zip_bundle(target, Path(output_dir) / f"{name}_v{version}.zip")
    logger.info("exported bundle %s (version %s) to %s", name, version, target)
    return target


def _check_release(name: str, version: str) -> None:
    """Raise a ValueError unless ``name`` is a model-zoo bundle name and ``version`` is MAJOR.MINOR.PATCH."""
    if not NAME_PATTERN.match(str(name)):
        raise ValueError(f"bundle name must use letters, digits and underscores only (model-zoo rule), got {name!r}.")
    check_version(version)


def _run_model(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None) -> tuple[Path, dict]:
    """``(checkpoint, model_info)`` of the run: the weights (``<run_dir>/models/model.pt`` unless given) and the
    checked ``model_info.json`` beside them, which says what network, channels and classes the weights are for.

    Raises:
        FileNotFoundError: there is no ``model_info.json`` beside the weights.
    """
    checkpoint = Path(checkpoint) if checkpoint is not None else Path(run_dir) / "models" / "model.pt"
    info_path = checkpoint.parent / "model_info.json"
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{info_path} not found: export a fine-tuning run's models/model.pt, which has model_info.json beside it."
        )
    info = json.loads(info_path.read_text(encoding="utf-8"))
    check_model_info(info, str(info_path))
    return checkpoint, info


def _read_evaluation_summary(
    checkpoint: Path, evaluation_summary: str | os.PathLike | bool | None
) -> tuple[dict | None, Path | None]:
    """``(summary, its path)`` of the run's evaluation (see ``find_evaluation_summary``), or ``(None, None)``.

    A run without ``evaluation/summary.json`` gets a warning unless ``evaluation_summary`` is False: its bundle
    would be published without scores, and the warning says how to add them.
    """
    summary_path = find_evaluation_summary(checkpoint, evaluation_summary)
    if summary_path is None and evaluation_summary is None:
        logger.warning(
            "%s has no evaluation/summary.json: eval_metrics stays empty and the description says the bundle was "
            "not evaluated. Run evaluate.yaml on this run first, or pass evaluation_summary=<summary.json>.",
            checkpoint.resolve().parent.parent,
        )
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path is not None else None
    return summary, summary_path


def _exported_metadata(
    source_bundle: Path,
    info: Mapping,
    checkpoint: Path,
    evaluation_summary: str | os.PathLike | bool | None,
    version: str,
    changelog: str,
    title: str | None,
) -> dict:
    """The bundle's ``metadata.json`` (``zoo_metadata`` of the source bundle's metadata, the run and its scores),
    checked against the model-zoo schema before anything is written."""
    summary, summary_path = _read_evaluation_summary(checkpoint, evaluation_summary)
    meta = zoo_metadata(
        json.loads((source_bundle / "configs" / "metadata.json").read_text()), info, version, changelog,
        name=title, summary=summary, summary_source=str(summary_path),
    )
    validate_metadata(meta, "exported metadata.json", version)
    return meta


def _write_atomically(output_dir: Path, name: str, overwrite: bool, write: Callable[[Path], None]) -> Path:
    """Write ``<output_dir>/<name>/`` with ``write(folder)`` in a staging folder beside it, then rename it into
    place: a failed export leaves no half-written bundle and, with ``overwrite``, the previous one untouched.

    Raises:
        FileExistsError: ``<output_dir>/<name>`` exists and ``overwrite`` is False.
    """
    target = output_dir / name
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists: choose another output_dir or name, or pass overwrite=True.")
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}_", dir=output_dir))
    staging.chmod(0o755)
    try:
        write(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _write_config(folder: Path, stem: str, template: Path, config: Mapping) -> None:
    """``configs/<stem>.yaml`` (the template's header comment + the filled config) and the same as ``.json``."""
    (folder / "configs" / f"{stem}.yaml").write_text(
        _header(template) + yaml.safe_dump(dict(config), sort_keys=False, width=120), encoding="utf-8"
    )
    (folder / "configs" / f"{stem}.json").write_text(json.dumps(config, indent=4), encoding="utf-8")


def _large_files(folder: Path, large_file_mb: float, large_files_url: str | None) -> str:
    """``large_files.yml``: every model file with its sha256 and download URL (empty without ``large_files_url``)."""
    models = sorted(p for p in (folder / "models").iterdir() if p.is_file())
    base = large_files_url.rstrip("/") if large_files_url else None
    entries = [
        {"path": f"models/{p.name}", "url": f"{base}/{p.name}" if base else "", "hash_val": _sha256(p),
         "hash_type": "sha256"}
        for p in models
    ]
    if base:
        header = f"# Download URLs: the files published under {base}/ (set by --large_files_url at export).\n"
    else:
        header = (
            "# The files are inside this bundle (zip); no download URL was declared at export. To publish them\n"
            "# separately, export again with --large_files_url <where they are published>.\n"
        )
        over = [f"models/{p.name}" for p in models if p.stat().st_size > large_file_mb * 1024 * 1024]
        if over:
            logger.warning(
                "%s are over the model zoo's %g MB limit for files in git and large_files.yml has no URL for them: "
                "export with --large_files_url <release URL> before submitting the bundle to the model zoo.",
                over, large_file_mb,
            )
    return header + yaml.safe_dump({"large_files": entries}, sort_keys=False)


def _write_bundle(folder, network, config, train_config, meta, info, name, source_bundle, large_file_mb,
                  large_files_url) -> None:
    from monai.data import save_net_with_metadata

    from custom_nets.export.train_config import TRAIN_TEMPLATE

    for sub in ("configs", "models", "scripts", "docs"):
        (folder / sub).mkdir()
    _write_config(folder, "inference", TEMPLATE, config)
    _write_config(folder, "train", TRAIN_TEMPLATE, train_config)
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4), encoding="utf-8")
    if (source_bundle / "configs" / "logging.conf").is_file():
        shutil.copyfile(source_bundle / "configs" / "logging.conf", folder / "configs" / "logging.conf")
    shutil.copyfile(_PACKAGE / "bundle_scripts" / "__init__.py", folder / "scripts" / "__init__.py")
    shutil.copyfile(_PACKAGE / "bundle_scripts" / "resenc.py", folder / "scripts" / "resenc.py")
    shutil.copyfile(_PACKAGE / "bundle_scripts" / "cases.py", folder / "scripts" / "cases.py")
    shutil.copyfile(_CASE_IDS_SOURCE, folder / "scripts" / "case_ids.py")
    shutil.copyfile(_INFERER_SOURCE, folder / "scripts" / "inferer.py")
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    save_net_with_metadata(
        torch.jit.script(network),
        str(folder / "models" / "model"),
        include_config_vals=False,
        append_timestamp=False,
        meta_values=meta,
        more_extra_files={"inference.json": json.dumps(config).encode()},
    )
    (folder / "docs" / "README.md").write_text(_readme(meta, info, name), encoding="utf-8")
    shutil.copyfile(LICENSE_TEXT, folder / "LICENSE")
    (folder / "large_files.yml").write_text(_large_files(folder, large_file_mb, large_files_url), encoding="utf-8")


def zip_bundle(folder: str | os.PathLike, zip_path: str | os.PathLike) -> Path:
    """Zip a bundle folder as ``<folder name>/...`` (what ``monai.bundle.download`` extracts), atomically."""
    folder, zip_path = Path(folder), Path(zip_path)
    partial = zip_path.with_name(zip_path.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    os.replace(partial, zip_path)
    return zip_path
