"""Import OpenMind/nnssl pre-trained checkpoints from the Hugging Face Hub for fine-tuning, in one call
(``python -m custom_nets import_nnssl``; the other direction is ``nnssl_export``).

nnssl releases (e.g. the OpenMind models) publish ``checkpoint_final.pth`` and its ``adaptation_plan.json``.
``import_nnssl`` fetches both (or takes them from a local folder), puts the plan into the checkpoint when it is
not there already, checks that the weights are a ResEnc U-Net this project can fine-tune, and writes one nnssl
checkpoint that ``--pretrained_checkpoint`` of the fine-tuning bundle reads.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

import torch

from custom_nets.data.atomic import atomic_torch_save
from custom_nets.transfer.layout import encoder_layout, preset_name
from custom_nets.transfer.reading import read_checkpoint

__all__ = ["CHECKPOINT_NAME", "PLAN_NAME", "import_nnssl"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_final.pth"
PLAN_NAME = "adaptation_plan.json"


def _hub_download(repo_id: str, filename: str, revision: str | None) -> str:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise ImportError(
            "downloading from the Hugging Face Hub needs the huggingface_hub package: pip install huggingface_hub "
            "(or download the files yourself and pass their folder as source)."
        ) from error
    return hf_hub_download(repo_id=repo_id, filename=filename, revision=revision)


def _fetch(source: str, filename: str, revision: str | None, download: Callable | None, required: bool) -> Path | None:
    folder = Path(source)
    if folder.is_dir():
        path = folder / filename
        if path.is_file():
            return path
        if required:
            raise FileNotFoundError(f"{path} not found: the folder must hold nnssl's {filename}.")
        return None
    try:
        return Path((download or _hub_download)(source, filename, revision))
    except Exception as error:  # hub errors come in many types; say what was asked for
        if not required:
            logger.info("no %s in %s (%s)", filename, source, type(error).__name__)
            return None
        raise ValueError(
            f"could not fetch {filename} from the Hugging Face Hub repo '{source}' (revision {revision or 'main'}): "
            f"{type(error).__name__}: {error}. Check the repo id (owner/name), the revision and your network or "
            "HF token; or download the files and pass their folder."
        ) from error


def import_nnssl(
    source: str,
    output: str | os.PathLike,
    revision: str | None = None,
    checkpoint_name: str = CHECKPOINT_NAME,
    plan_name: str = PLAN_NAME,
    download: Callable[[str, str, str | None], str] | None = None,
) -> Path:
    """Fetch an nnssl checkpoint (+ adaptation plan) and write a fine-tuning-ready nnssl checkpoint.

    Args:
        source: a Hugging Face Hub repo id ("owner/name") or a local folder holding the files.
        output: the checkpoint to write; pass it to the fine-tuning bundle as ``--pretrained_checkpoint``.
        revision: Hub revision (branch, tag or commit). Defaults to the default branch.
        checkpoint_name, plan_name: file names in the repo. Default to nnssl's.
        download: ``(repo_id, filename, revision) -> local path``; defaults to ``huggingface_hub.hf_hub_download``.

    Returns:
        ``output`` as a Path.

    Raises:
        ValueError: the files cannot be fetched, the plan is not JSON, or the weights are not a ResEnc U-Net.
    """
    checkpoint_path = _fetch(source, checkpoint_name, revision, download, required=True)
    plan_path = _fetch(source, plan_name, revision, download, required=False)
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception:
        read_checkpoint(checkpoint_path)  # raises the project's message naming the file and the fix
        raise
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise ValueError(
            f"{checkpoint_path} is not an nnssl checkpoint (no 'network_weights'); for other checkpoints pass the "
            "file to --pretrained_checkpoint directly."
        )
    if plan_path is not None:
        try:
            plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{plan_path} is not valid JSON ({error}); download it again.") from error
        checkpoint = {**checkpoint, "nnssl_adaptation_plan": checkpoint.get("nnssl_adaptation_plan") or plan}
    elif "nnssl_adaptation_plan" not in checkpoint:
        raise ValueError(f"neither {checkpoint_path} nor the source '{source}' has an adaptation plan ({plan_name}).")
    state, _ = read_checkpoint(checkpoint)  # raises for non-ResEnc architectures (Primus, SwinUNETR, ...)
    layout = encoder_layout(state, checkpoint["nnssl_adaptation_plan"].get("key_to_encoder") or "encoder.stages")
    preset = preset_name(*layout)
    output = Path(output)
    atomic_torch_save({"network_weights": checkpoint["network_weights"],
                       "nnssl_adaptation_plan": checkpoint["nnssl_adaptation_plan"]}, output)
    logger.info(
        "wrote %s from %s (%s); fine-tune with --pretrained_checkpoint %s%s", output, source,
        f"preset '{preset}'" if preset else f"encoder {layout}", output,
        f" --network_preset {preset}" if preset else "",
    )
    return output
