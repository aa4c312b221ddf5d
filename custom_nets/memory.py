"""Memory kept for backward, counted without a GPU: bytes of every tensor autograd saves, by dtype.

Activation memory is what limits the batch of 3D pre-training, and it is a property of the graph, not of the
hardware: the tensors autograd keeps between forward and backward have the same dtypes and shapes on a CPU as
on a GPU (with the same autocast dtype). ``saved_tensor_bytes`` registers ``saved_tensors_hooks`` around a
forward + loss and adds up the storages packed for backward, each storage once.

``backward_bytes_per_sample`` does this for S3D (``custom_nets.nets.S3D`` with the pre-training bundle's
settings) and for nnU-Net's dense ``ResidualEncoderUNet`` at batch 2 and batch 1; the difference is the memory
one more sample costs, without per-step constants such as the bf16 copies of the weights that autocast keeps.
By default the count runs under ``FakeTensorMode``: tensors carry dtype, shape and device but no data, so the
paper's 160^3 x 6 is counted in seconds with no memory and no compute. Every activation-sized tensor is counted
as in a real run; only ``F.instance_norm``'s per-(sample, channel) statistics differ (the fake kernel reports
them in bf16, the CPU kernel keeps float32), a few bytes per channel (``tests/test_memory.py`` compares both).

What is counted follows the autocast policy of ``device``'s type. Without a GPU that is CPU autocast, which
matches CUDA's for everything these networks do except average pooling: CPU autocast runs it in float32 and keeps
a float32 copy of its input (in nnU-Net's network and in S3D alike: about 42 MiB per sample for ResEnc-L at 64^3),
CUDA autocast leaves it in bf16.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["saved_tensor_bytes", "saved_tensor_records", "backward_bytes_per_sample", "MODELS", "PRECISIONS"]

MODELS = ("s3d", "dense_dna")
PRECISIONS = ("bf16", "fp32")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _storage_key(tensor: torch.Tensor) -> tuple:
    """Identity of the memory behind ``tensor``: its data pointer, or for data-less (fake, meta) tensors the
    storage object itself (their data pointer is 0 for all of them)."""
    from torch._subclasses.fake_tensor import FakeTensor

    storage = tensor.untyped_storage()
    if isinstance(tensor, FakeTensor) or tensor.device.type == "meta":
        return ("storage", storage._cdata)
    return ("data", tensor.device, storage.data_ptr())


def saved_tensor_records(fn: Callable[[], Any]) -> list[dict]:
    """Every tensor that ``fn()`` saves for backward, in the order autograd packs them.

    Args:
        fn: runs a forward pass and a loss (no backward), e.g. ``lambda: loss(model(x), x)``.

    Returns:
        One dict per packed tensor: ``dtype`` (name, e.g. "bfloat16"), ``shape``, ``storage_bytes`` (bytes of
        the whole storage behind it), ``parameter`` (it is an ``nn.Parameter``) and ``new`` (its storage was not
        packed before, i.e. it adds memory).
    """
    records: list[dict] = []
    keys: set = set()
    # Holding every packed tensor until the end keeps its storage alive, so a data pointer seen twice is the
    # same memory and never a new allocation that reused a freed address.
    kept: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        records.append(
            {
                "dtype": _dtype_name(tensor.dtype),
                "shape": tuple(tensor.shape),
                "storage_bytes": int(tensor.untyped_storage().nbytes()),
                "parameter": isinstance(tensor, nn.Parameter),
                "new": key not in keys,
            }
        )
        keys.add(key)
        kept.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    del result, kept
    return records


def saved_tensor_bytes(fn: Callable[[], Any]) -> dict[str, int]:
    """Bytes that ``fn()`` keeps for backward, by dtype name.

    Every storage packed by autograd is counted once (a tensor saved by two operations, or a view of a saved
    tensor, adds nothing). ``nn.Parameter`` objects themselves are left out: they exist whether or not a graph
    is built. Copies and views of parameters made in the forward (autocast's bf16 weights) are counted.

    Args:
        fn: runs a forward pass and a loss (no backward), e.g. ``lambda: loss(model(x), x)``.

    Returns:
        ``{"bfloat16": bytes, "float32": bytes, "bool": bytes, ...}``; only dtypes that occur.
    """
    out: dict[str, int] = {}
    for record in saved_tensor_records(fn):
        if record["new"] and not record["parameter"]:
            out[record["dtype"]] = out.get(record["dtype"], 0) + record["storage_bytes"]
    return out


def _build_model(model: str, preset: str, block_size: int, s3d_kwargs: dict | None) -> nn.Module:
    from custom_nets.nets import S3D, dna_resenc_unet, resenc_unet

    if model == "s3d":
        return S3D(resenc_unet(preset), block_size=block_size, **(s3d_kwargs or {}))
    return dna_resenc_unet(preset)


def _give_empty_storage(net: nn.Module, device: torch.device) -> None:
    """Replace every parameter and buffer of a "meta" model by an empty tensor made in the active (fake) mode.

    Done module by module so a module registered twice (nnU-Net's ``decoder.encoder``) still shares its tensors.
    """
    for module in net.modules():
        for name, param in module._parameters.items():
            if param is not None:
                empty = torch.empty(param.shape, dtype=param.dtype, device=device)
                module._parameters[name] = nn.Parameter(empty, requires_grad=param.requires_grad)
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = torch.empty(buffer.shape, dtype=buffer.dtype, device=device)


def _forward_and_loss(
    model: str, net: nn.Module, batch_size: int, patch_size: Sequence[int], device: torch.device,
    block_size: int, mask_ratio: Sequence[float], autocast,
) -> Callable[[], torch.Tensor]:
    """The forward + loss of one train step, as ``custom_nets.benchmark`` runs it (masked MSE for S3D)."""
    from custom_nets.losses import MaskedMSELoss
    from custom_nets.masking import BlockMaskGenerator

    image = torch.randn(batch_size, 1, *patch_size, device=device)
    mask = BlockMaskGenerator(block_size, mask_ratio)(batch_size, patch_size, device=device, seed=0)

    def fn() -> torch.Tensor:
        with autocast():
            if model == "s3d":
                return MaskedMSELoss()(net(image, mask), image, mask)
            return F.mse_loss(net(image).float(), image)

    return fn


def backward_bytes_per_sample(
    model: str,
    preset: str = "resenc_l",
    patch_size: Sequence[int] = (64, 64, 64),
    precision: str = "bf16",
    device: torch.device | str = "cpu",
    s3d_kwargs: dict | None = None,
    block_size: int = 16,
    mask_ratio: float | Sequence[float] = (0.6, 0.9),
    fake: bool = True,
) -> dict:
    """Bytes one more sample keeps for backward in a pre-training step (forward + loss), by dtype.

    Counts ``saved_tensor_bytes`` at batch 2 and batch 1 and returns the difference, so per-step constants
    (autocast's bf16 weight copies, per-channel statistics of the weights) cancel.

    Args:
        model: "s3d" (``S3D(resenc_unet(preset), block_size, **s3d_kwargs)``; S3D's defaults are the
            pre-training bundle's settings) or "dense_dna" (nnU-Net's ``ResidualEncoderUNet(**dna_kwargs(preset))``).
        preset: network preset of ``custom_nets.nets.PRESETS``. Defaults to "resenc_l".
        patch_size: (D, H, W) in voxels, a multiple of the network's total downsampling. Defaults to 64^3.
        precision: "bf16" (autocast to bfloat16 on ``device``) or "fp32". Defaults to "bf16".
        device: where the tensors live (CPU autocast applies to CPU tensors, CUDA autocast to CUDA ones).
        s3d_kwargs: extra ``S3D`` arguments (e.g. ``{"fused_norm": False}``). Defaults to None.
        block_size: S3D mask block edge in voxels. Defaults to 16.
        mask_ratio: S3D masked fraction, fixed or [low, high]. Defaults to (0.6, 0.9).
        fake: count under ``FakeTensorMode`` (shapes and dtypes only; no memory, no compute). Defaults to True;
            False runs the forward for real.

    Returns:
        ``{"model", "preset", "patch_size", "precision", "fake", "bytes_per_sample": {dtype: bytes},
        "total_bytes_per_sample": bytes}``.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got '{model}'.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'.")
    if model == "dense_dna" and s3d_kwargs:
        raise ValueError(f"s3d_kwargs {s3d_kwargs} only apply to model='s3d'; leave them out for 'dense_dna'.")
    device = torch.device(device)
    patch_size = tuple(int(s) for s in patch_size)

    def autocast():
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        mode = FakeTensorMode()
    else:
        mode = contextlib.nullcontext()
    counts = {}
    if fake:
        # built on "meta" (initialisers may read values, which fake tensors do not have), then given fake storage
        with torch.device("meta"):
            net = _build_model(model, preset, int(block_size), s3d_kwargs)
    else:
        net = _build_model(model, preset, int(block_size), s3d_kwargs)
    with mode:
        if fake:
            _give_empty_storage(net, device)
        else:
            net = net.to(device)
        for batch_size in (1, 2):
            fn = _forward_and_loss(model, net, batch_size, patch_size, device, int(block_size), mask_ratio, autocast)
            counts[batch_size] = saved_tensor_bytes(fn)
    dtypes = sorted(set(counts[1]) | set(counts[2]))
    per_sample = {d: counts[2].get(d, 0) - counts[1].get(d, 0) for d in dtypes}
    return {
        "model": model,
        "preset": preset,
        "patch_size": list(patch_size),
        "precision": precision,
        "fake": bool(fake),
        "bytes_per_sample": {d: b for d, b in per_sample.items() if b},
        "total_bytes_per_sample": sum(counts[2].values()) - sum(counts[1].values()),
    }
