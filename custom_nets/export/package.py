"""Export a fine-tuning run as a self-contained MONAI model-zoo bundle (a folder and ``<name>_v<version>.zip``).

Layout of the export (``custom_nets`` is not needed to use it; see docs/model_zoo.md)::

    <name>/
      configs/metadata.json    model-zoo metadata (schema-checked), configs/inference.yaml (+ the same as .json
                               for monai.bundle.load), configs/logging.conf
      models/model.pt          state dict of scripts/resenc.py's ResEncUNet (nnU-Net key names)
      models/model.ts          the same network in TorchScript, with metadata.json and inference.json inside
      scripts/                 resenc.py (the network), inferer.py (mirrored sliding windows)
      docs/README.md, LICENSE, large_files.yml (only when a model file is over the size limit)
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
from typing import Mapping

import torch
import yaml

from custom_nets.export.bundle_scripts.resenc import ResEncUNet
from custom_nets.export.inference_config import TEMPLATE, check_model_info, exported_inference_config, network_kwargs
from custom_nets.export.metadata import check_version, validate_metadata, zoo_metadata
from custom_nets.nets.resenc import PRESETS
from custom_nets.transfer import encoder_layout, read_checkpoint

__all__ = ["LARGE_FILE_MB", "NAME_PATTERN", "export_bundle", "exported_network", "zip_bundle"]

logger = logging.getLogger(__name__)

#: Files above this size (MB) go into large_files.yml (the model zoo keeps them out of git).
LARGE_FILE_MB = 25.0
#: Model-zoo bundle names: letters, digits and underscores.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
_PACKAGE = Path(__file__).resolve().parent
_REPO_BUNDLE = _PACKAGE.parent.parent / "bundles" / "s3d_finetune"
_INFERER_SOURCE = _PACKAGE.parent / "evaluation" / "inference.py"


def _preset_of(state: Mapping[str, torch.Tensor]) -> str:
    found = encoder_layout(state)
    for name, p in PRESETS.items():
        if (tuple(p["features"]), tuple(p["blocks_per_stage"])) == found:
            return f"preset '{name}'"
    return f"an encoder with features {list(found[0])} and blocks {list(found[1])} (no preset)"


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
    missing = [k for k in expected if k not in state]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
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
  Gaussian weighting and test-time mirroring.
- Pre-trained weights used for fine-tuning: `{info.get('pretrained_checkpoint')}`; schedule `{info.get('schedule')}`.

## Segment images

```bash
cd {name}
python -m monai.bundle run --config_file configs/inference.yaml --input_dir /data/images --output_dir /data/labels
```

`--input_dir` is a NIfTI file (3D, or 4D with the modalities on the last axis), a folder of them, or a JSON datalist
`{{"test": [{{"image": ["t1.nii.gz", "flair.nii.gz"]}}]}}`. `--mirror_axes "[]"` is 8 times faster.

## Load the network in Python

```python
import sys, monai
sys.path.insert(0, "<bundle_dir>/{name}")           # makes scripts/ importable for network_def
net = monai.bundle.load(name="{name}", bundle_dir="<bundle_dir>", workflow_type="inference")
ts, meta, extra = monai.bundle.load(name="{name}", bundle_dir="<bundle_dir>", load_ts_module=True)  # no scripts needed
```

## Intended use

{meta.get('intended_use', 'Research only.')}

## References

""" + "\n".join(f"- {r}" for r in meta.get("references", [])) + "\n"


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
) -> Path:
    """Write ``<output_dir>/<name>/`` (and ``<output_dir>/<name>_v<version>.zip``) from a fine-tuning run.

    Args:
        run_dir: the fine-tuning ``output_dir`` (holding ``models/model.pt`` and ``models/model_info.json``).
        output_dir: where the bundle folder and zip are written.
        name: bundle name (letters, digits, underscores); the folder, zip and download name.
        version: release version, MAJOR.MINOR.PATCH.
        changelog: one line for this version.
        checkpoint: the weights. Defaults to ``<run_dir>/models/model.pt``; ``model_info.json`` is read beside it.
        source_bundle: bundle whose metadata (descriptions, references), LICENSE and logging.conf are reused.
        large_file_mb: model files larger than this are listed in ``large_files.yml``. Defaults to 25.
        large_files_url: base URL where the large files will be published (e.g. the GitHub release), written
            into ``large_files.yml``; a placeholder when None.
        make_zip: also write the zip. Defaults to True.
        overwrite: replace an existing export of the same name. Defaults to False.

    Returns:
        The bundle folder.
    """
    if not NAME_PATTERN.match(str(name)):
        raise ValueError(f"bundle name must use letters, digits and underscores only (model-zoo rule), got {name!r}.")
    check_version(version)
    checkpoint = Path(checkpoint) if checkpoint is not None else Path(run_dir) / "models" / "model.pt"
    info_path = checkpoint.parent / "model_info.json"
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{info_path} not found: export a fine-tuning run's models/model.pt, which has model_info.json beside it."
        )
    info = json.loads(info_path.read_text(encoding="utf-8"))
    check_model_info(info, str(info_path))
    source_bundle = Path(source_bundle)
    network = exported_network(checkpoint, info)
    config = exported_inference_config(info)
    meta = zoo_metadata(json.loads((source_bundle / "configs" / "metadata.json").read_text()), info, version, changelog)
    validate_metadata(meta, "exported metadata.json", version)

    output_dir = Path(output_dir)
    target = output_dir / name
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists: choose another output_dir or name, or pass overwrite=True.")
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}_", dir=output_dir))
    staging.chmod(0o755)
    try:
        _write_bundle(staging, network, config, meta, info, name, source_bundle, large_file_mb, large_files_url)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    if make_zip:
        zip_bundle(target, output_dir / f"{name}_v{version}.zip")
    logger.info("exported bundle %s (version %s) to %s", name, version, target)
    return target


def _write_bundle(folder, network, config, meta, info, name, source_bundle, large_file_mb, large_files_url) -> None:
    from monai.data import save_net_with_metadata

    for sub in ("configs", "models", "scripts", "docs"):
        (folder / sub).mkdir()
    (folder / "configs" / "inference.yaml").write_text(
        _header(TEMPLATE) + yaml.safe_dump(config, sort_keys=False, width=120), encoding="utf-8"
    )
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=4), encoding="utf-8")
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4), encoding="utf-8")
    if (source_bundle / "configs" / "logging.conf").is_file():
        shutil.copyfile(source_bundle / "configs" / "logging.conf", folder / "configs" / "logging.conf")
    shutil.copyfile(_PACKAGE / "bundle_scripts" / "__init__.py", folder / "scripts" / "__init__.py")
    shutil.copyfile(_PACKAGE / "bundle_scripts" / "resenc.py", folder / "scripts" / "resenc.py")
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
    if (source_bundle / "LICENSE").is_file():
        shutil.copyfile(source_bundle / "LICENSE", folder / "LICENSE")
    large = [p for p in sorted((folder / "models").iterdir()) if p.stat().st_size > large_file_mb * 1024 * 1024]
    if large:
        base = (large_files_url or "https://<where the release assets are published>").rstrip("/")
        entries = [
            {"path": f"models/{p.name}", "url": f"{base}/{p.name}", "hash_val": _sha256(p), "hash_type": "sha256"}
            for p in large
        ]
        (folder / "large_files.yml").write_text(yaml.safe_dump({"large_files": entries}, sort_keys=False))


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
