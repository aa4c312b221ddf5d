"""Pre-training speed: the S3D train step of the bundle vs nnU-Net's dense ResEnc-L step, memory kept for
backward, the data pipeline alone, and the whole bundle end to end.

Step benchmark (``python -m custom_nets.benchmark ...``), rows measured in the same process so they compare:

* ``s3d``: the pre-training bundle's own step (``bundles/s3d_pretrain/configs/train.yaml``): its ``network`` with
  its settings, ``train#iteration`` (the block-masking ``pretext``, ``S3D(image, mask)``, masked MSE, backward,
  clip, SGD step),
  ``optimizer`` and ``loss`` inside its ``SupervisedTrainer`` (with the bundle's ``compile`` switch), fed
  synthetic patches already on the device (``benchmark_baselines.build_step``).
* ``dense_dna``: the same bundle and trainer with nnU-Net's own ``ResidualEncoderUNet(**dna_kwargs(preset))`` in
  place of S3D, a pretext without mask and a plain MSE (``benchmark_baselines.DENSE_ANCHOR``): same optimiser, clip,
  precision, memory format and compile settings, read from the same config. The anchor S3D must come close to
  (goal >= 0.9x).
* ``loader``: patches/s of the bundle's ``train#dataloader`` (loading + augmentation at the benchmark's patch and
  batch size) and its ratio to the fastest model's consumption; above 1 the data pipeline is not the bottleneck.

Precision: ``--precision bf16`` sets the bundle's ``amp`` (bf16 autocast, applied on CUDA only, as in training);
``fp32`` turns it off. ``--compile``, ``--channels_last`` and ``--fused_norm`` are the bundle's own keys; left
out, the bundle's values are measured. Timing: warm-up iterations first (compilation, cuDNN autotuning), then
CUDA events around every iteration with ``torch.cuda.synchronize()`` only at the two ends of the timed window
(``time.perf_counter`` on CPU). FLOPs are counted once per model with ``FlopCounterMode`` on the ``meta`` device
(forward + backward of the bundle's network, shapes only); MFU = FLOP/step x steps/s / the GPU's dense peak.

Memory kept for backward (``--memory true``, the default): bytes per sample by dtype that autograd saves in the
forward + loss of S3D and of the dense ResEnc-L under bf16 autocast, counted without data or a GPU by
``custom_nets.memory.backward_bytes_per_sample``, and their ratio (goal S3D / dense <= 1.10).

End to end (``python -m custom_nets.benchmark end_to_end ...``): the bundle itself through ``monai.bundle``'s
``ConfigWorkflow`` (initialize, run, finalize) with its real loader for ``warmup + steps`` iterations, reporting
the ``custom_nets.engine.Throughput`` handler's samples/s, step time, data-wait share and (CUDA) peak memory over
the iterations after the warm-up.

Results are appended to a JSON file (older runs kept) and printed as Markdown tables::

    python -m custom_nets.benchmark --preset resenc_l --patch_size 160 --batch_size 6 --device cuda \\
        --precision bf16 --compile true --channels_last true --fused_norm true
    python -m custom_nets.benchmark end_to_end --dataset_dir /data/mri --cache_dir /data/cache --steps 50
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from custom_nets.benchmark_baselines import DENSE_ANCHOR, build_step, step_parser, time_trainer
from custom_nets.engine.iterations import network_inputs
from custom_nets.memory import PRECISIONS

__all__ = [
    "run_benchmark",
    "run_end_to_end",
    "run_memory",
    "count_train_step_flops",
    "measure_saved_bytes",
    "bundle_saved_bytes",
    "peak_flops",
    "markdown_table",
    "saved_bytes_table",
    "end_to_end_table",
    "append_results",
    "main",
]

MODELS = ("s3d", DENSE_ANCHOR, "loader")
REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = REPO_ROOT / "bundles" / "s3d_pretrain" / "configs" / "train.yaml"
GIB = 1024**3
MIB = 1024**2
SAVED_BYTES_GOAL = 1.10  # S3D / dense bytes kept for backward per sample

# Dense (no structured sparsity) peak FLOP/s per GPU name fragment, most specific first: (fragment, bf16, tf32).
# fp32 runs use the TF32 peak because cuDNN convolutions run in TF32 unless torch.backends.cudnn.allow_tf32 is off.
PEAK_FLOPS = (
    ("H100 PCIe", 756e12, 378e12),
    ("H100 NVL", 835e12, 418e12),
    ("H100", 989e12, 495e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12, 495e12),
    ("A100", 312e12, 156e12),
)

# Bundle keys recorded with every run: what the timed step really was.
BUNDLE_KEYS = (
    "network_preset", "patch_size", "batch_size", "block_size", "mask_ratio", "sparse", "mask_token", "densify",
    "densify_coarse_stages", "fused_norm", "channels_last", "compile", "compile_kwargs", "amp", "grad_clip_norm",
    "learning_rate", "momentum", "weight_decay", "num_workers", "device",
)


def _as_bool(value: Any, name: str) -> bool:
    """Accept True/False and the command-line spellings true/false/1/0/yes/no."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}; e.g. --{name} false")


def _as_optional_bool(value: Any, name: str) -> bool | None:
    """None (keep the bundle's value) or a boolean."""
    return None if value is None else _as_bool(value, name)


def _as_models(models: str | Sequence[str]) -> tuple[str, ...]:
    names = tuple(m.strip() for m in models.split(",")) if isinstance(models, str) else tuple(models)
    unknown = [m for m in names if m not in MODELS]
    if not names or unknown:
        raise ValueError(
            f"models must be a non-empty subset of {list(MODELS)}, got {list(names)}; e.g. --models s3d,loader"
        )
    return names


def _as_patch(patch_size: int | Sequence[int]) -> tuple[int, int, int]:
    values = (int(patch_size),) * 3 if isinstance(patch_size, (int, float, str)) else tuple(int(p) for p in patch_size)
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"patch_size must be one edge or three edges in voxels, got {patch_size}; e.g. 160")
    return values


def _as_mask_ratio(value: float | Sequence[float]) -> float | list[float]:
    """A fixed masked fraction or a [low, high] range, as the bundle's ``mask_ratio`` takes it."""
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else float(value)


def _json_value(value: Any) -> Any:
    """A config value as plain JSON (tuples as lists, tensors and devices as text)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def bundle_settings(parser, keys: Sequence[str] = BUNDLE_KEYS) -> dict:
    """The resolved values of ``keys`` that the config has (after the benchmark's overrides)."""
    return {k: _json_value(parser.get_parsed_content(k)) for k in keys if k in parser}


def peak_flops(device_name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of a GPU (``torch.cuda.get_device_name()``) at ``precision``; None when unknown."""
    for fragment, bf16, tf32 in PEAK_FLOPS:
        if fragment.lower() in device_name.lower():
            if precision == "bf16":
                return bf16
            return tf32 if torch.backends.cudnn.allow_tf32 else None
    return None


def environment(device: torch.device) -> dict:
    """Versions and hardware of this run, for the results JSON."""
    import monai

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no")
    cuda = device.type == "cuda"
    cpu_name = f"CPU: {platform.processor() or platform.machine()}"
    return {
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "git_commit": commit,
        "git_uncommitted_changes": None if changes is None else bool(changes),
    }


# ---------------------------------------------------------------- model rows


def count_train_step_flops(
    name: str,
    preset: str,
    patch: Sequence[int],
    batch_size: int,
    block_size: int | None = None,
    overrides: dict | None = None,
) -> int:
    """Forward + backward FLOPs of one train step, counted on the ``meta`` device (no memory, no compute).

    The network, pretext (S3D's block masking) and loss are the bundle's (``benchmark_baselines.step_parser``), built on
    ``meta``. Counts what ``FlopCounterMode`` counts (convolutions and matrix products, 2 FLOPs per
    multiply-add); elementwise work (norms, activations, optimiser) is left out, as usual for MFU. The count does
    not depend on the mask, the precision or the memory format.

    Args:
        name: "s3d" or "dense_dna".
        preset: network preset of ``custom_nets.nets.PRESETS``.
        patch: (D, H, W) in voxels.
        batch_size: samples per step.
        block_size: S3D mask block edge in voxels; None keeps the bundle's. Defaults to None.
        overrides: further bundle settings (e.g. ``{"densify": False}``). Defaults to None.

    Returns:
        FLOPs per step (whole batch).
    """
    from torch.utils.flop_counter import FlopCounterMode

    patch = [int(p) for p in patch]
    settings = {"patch_size": patch, **({} if block_size is None else {"block_size": int(block_size)})}
    settings.update(overrides or {})
    parser = step_parser(name, preset, "cpu", scale="paper", batch_size=batch_size, overrides=settings)
    with torch.device("meta"):
        model = parser.get_parsed_content("network_def")
        loss = parser.get_parsed_content("loss")
        image = torch.empty(batch_size, 1, *patch)
        views = {"input": image, "target": image}
        if name != DENSE_ANCHOR:  # S3D's block masking, from noise: a generator cannot draw on ``meta``
            masks = parser.get_parsed_content("pretext").masks
            n_blocks = int(np.prod(masks.grid_size(patch)))
            views["mask"] = masks.mask_from_noise(torch.empty(batch_size, 1), torch.empty(batch_size, n_blocks), patch)
        inputs = [views[k] for k in network_inputs(parser.get_parsed_content("pretext"))]
        run = lambda: loss(model(*inputs), views)  # noqa: E731
        with FlopCounterMode(display=False) as counter:
            run().backward()
    return int(counter.get_total_flops())


def _percentiles(times_ms: Sequence[float]) -> dict:
    p50, p90, p99 = np.percentile(np.asarray(times_ms, dtype=np.float64), [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3)}


def _release(device: torch.device) -> None:
    """Drop compiled graphs and cached GPU blocks between rows, so one row's state does not help or hurt the next."""
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_model(
    name: str,
    preset: str,
    patch: tuple[int, int, int],
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    precision: str,
    overrides: dict,
    seed: int,
) -> dict:
    """Time the bundle's train step of one model (``build_step``); see ``run_benchmark``. Returns one result row."""
    torch.manual_seed(seed)
    try:
        step = build_step(
            name, preset, str(device), scale="paper", batch_size=batch_size, num_steps=warmup + steps,
            overrides=overrides,
        )
        compiled = bool(step.trainer.compile)
        times, window, peak = time_trainer(step.trainer, warmup, device)
    except torch.cuda.OutOfMemoryError:
        return {"model": name, "error": "out of memory"}
    finally:
        step = None
        _release(device)
    samples_per_s = batch_size * steps / window
    try:
        flops, flops_error = count_train_step_flops(name, preset, patch, batch_size, overrides=overrides), None
    except Exception as err:  # noqa: BLE001 - the count is a by-product: keep the timing, report why it is missing
        flops, flops_error = None, f"{type(err).__name__}: {err}"
    peak_rate = peak_flops(torch.cuda.get_device_name(device), precision) if device.type == "cuda" else None
    row = {
        "model": name,
        "samples_per_s": round(samples_per_s, 4),
        "step_ms": _percentiles(times),
        "peak_memory_gib": round(peak / GIB, 4),
        "memory_measure": "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss_delta",
        "batch_size": batch_size,
        "compiled": compiled,
        "flops_per_step": flops,
        "tflop_per_sample": None if flops is None else round(flops / batch_size / 1e12, 6),
        "mfu": round(flops * samples_per_s / batch_size / peak_rate, 4) if peak_rate and flops else "n/a",
    }
    if flops_error:
        row["flops_error"] = flops_error
    return row


# ---------------------------------------------------------------- memory kept for backward


def measure_saved_bytes(
    preset: str,
    patch: Sequence[int],
    device: str = "cpu",
    block_size: int = 16,
    mask_ratio: float | Sequence[float] = (0.6, 0.9),
    s3d_kwargs: dict | None = None,
) -> dict:
    """Bytes per sample that S3D and the dense ResEnc-L keep for backward under bf16 autocast, by dtype.

    Calls ``custom_nets.memory.backward_bytes_per_sample`` for "s3d" (with the bundle's S3D settings in
    ``s3d_kwargs``, ``block_size`` and ``mask_ratio``) and "dense_dna". Needs no GPU and no memory (the count
    runs on tensors without data). On ``device`` "cpu" it runs under CPU autocast, which casts the convolutions to
    bf16 as CUDA autocast does; an op whose autocast policy differs between the two may be counted in another
    dtype, so a GPU run passes "cuda".

    Returns:
        ``{"patch_size", "precision": "bf16", "device", "rows": [{"model", "bytes_per_sample": {dtype: bytes},
        "total_bytes_per_sample"}], "s3d_vs_dense", "goal"}``.
    """
    from custom_nets.memory import backward_bytes_per_sample

    rows = []
    for name in ("s3d", DENSE_ANCHOR):
        counted = backward_bytes_per_sample(
            name, preset=preset, patch_size=tuple(int(p) for p in patch), precision="bf16", device=device,
            s3d_kwargs=s3d_kwargs if name == "s3d" else None, block_size=int(block_size), mask_ratio=mask_ratio,
        )
        rows.append(
            {
                "model": name,
                "bytes_per_sample": {str(k): int(v) for k, v in counted["bytes_per_sample"].items()},
                "total_bytes_per_sample": int(counted["total_bytes_per_sample"]),
            }
        )
    s3d, dense = (r["total_bytes_per_sample"] for r in rows)
    return {
        "patch_size": [int(p) for p in patch],
        "precision": "bf16",
        "device": str(device),
        "rows": rows,
        "s3d_vs_dense": round(s3d / dense, 4) if dense else None,
        "goal": SAVED_BYTES_GOAL,
    }


def bundle_saved_bytes(preset: str, patch: Sequence[int], device: str = "cpu", overrides: dict | None = None) -> dict:
    """``measure_saved_bytes`` with the S3D of the pre-training bundle after ``overrides`` (its block size, mask
    ratio and every other ``network_def`` argument): the memory figure of the step the benchmark times."""
    parser = step_parser("s3d", preset, device, scale="paper", overrides=overrides)
    bundle = bundle_settings(parser, ("block_size", "mask_ratio"))
    return measure_saved_bytes(preset, patch, device, bundle["block_size"], bundle["mask_ratio"], s3d_kwargs(parser))


def s3d_kwargs(parser) -> dict:
    """The bundle's ``S3D`` arguments besides the backbone and the block size (``sparse``, ``mask_token``,
    ``densify``, ``fused_norm``, ...), resolved: every setting of the network the step trains."""
    network = parser.get("network_def")
    keys = [k for k in network if not k.startswith("_") and k not in ("backbone", "block_size")]
    return {k: _json_value(parser.get_parsed_content(f"network_def#{k}")) for k in keys}


# ---------------------------------------------------------------- data pipeline


def measure_loader(
    patch: tuple[int, int, int],
    batch_size: int,
    batches: int,
    warmup: int,
    device: torch.device,
    workers: int | None,
    dataset_dir: str | None,
    config_file: str | os.PathLike,
    overrides: dict | None,
    seed: int,
) -> dict:
    """Patches/s of the bundle's ``train#dataloader`` alone (no model); see ``run_benchmark``.

    The loader is built from ``config_file`` with the benchmark's patch and batch size, ``dataset_dir``
    (None = the synthetic demo MRIs) and a preprocessing cache in a temporary folder (preprocessing is not
    timed). ``warmup`` batches (worker start-up) are drawn before the ``batches`` timed ones.
    """
    from monai.bundle import ConfigParser

    config_file = Path(config_file)
    if not config_file.is_file():
        raise FileNotFoundError(
            f"pre-training config {config_file} not found: run from a checkout of the repository or pass "
            "--config_file bundles/s3d_pretrain/configs/train.yaml"
        )
    with tempfile.TemporaryDirectory(prefix="s3d_benchmark_") as tmp:
        parser = ConfigParser()
        parser.read_config(str(config_file))
        settings = {
            "dataset_dir": dataset_dir,
            "cache_dir": os.path.join(tmp, "cache"),
            "output_dir": os.path.join(tmp, "run"),
            "patch_size": list(patch),
            "batch_size": batch_size,
            "max_steps": warmup + batches,  # the sampler draws exactly max_steps x batch_size patches
            "device": str(device),
            "seed": seed,
            **({} if workers is None else {"num_workers": int(workers)}),
            **(overrides or {}),
        }
        parser.update(settings)
        loader = parser.get_parsed_content("train#dataloader")
        num_workers = loader.num_workers
        iterator = iter(loader)
        for _ in range(warmup):
            next(iterator)
        start = time.perf_counter()
        patches = 0
        for _ in range(batches):
            patches += int(next(iterator)["image"].shape[0])
        window = time.perf_counter() - start
        del iterator, loader
    return {
        "model": "loader",
        "patches_per_s": round(patches / window, 4),
        "batch_ms": round(window / batches * 1e3, 3),
        "num_workers": num_workers,
        "dataset": "synthetic demo MRIs" if dataset_dir is None else str(dataset_dir),
    }


# ---------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


def _gflop(flops_per_sample: float) -> str:
    """GFLOP with 3 significant digits for the tiny preset (0.728) and thousands separators for ResEnc-L."""
    gflop = flops_per_sample / 1e9
    return f"{gflop:,.0f}" if gflop >= 100 else f"{gflop:.3g}"


def saved_bytes_table(saved: dict) -> str:
    """The memory-kept-for-backward result of ``measure_saved_bytes`` as a Markdown table plus its ratio line."""
    lines = [
        "| model | bf16 MiB/sample | fp32 MiB/sample | other MiB/sample | total MiB/sample | ratio to dense |",
        "|---|---|---|---|---|---|",
    ]
    dense = next(r["total_bytes_per_sample"] for r in saved["rows"] if r["model"] == DENSE_ANCHOR)
    for row in saved["rows"]:
        by_dtype = row["bytes_per_sample"]
        bf16, fp32 = by_dtype.get("bfloat16", 0), by_dtype.get("float32", 0)
        other = sum(v for k, v in by_dtype.items() if k not in ("bfloat16", "float32"))
        ratio = row["total_bytes_per_sample"] / dense if dense else float("nan")
        lines.append(
            f"| {row['model']} | {bf16 / MIB:,.1f} | {fp32 / MIB:,.1f} | {other / MIB:,.1f} | "
            f"{row['total_bytes_per_sample'] / MIB:,.1f} | {ratio:.3f} |"
        )
    patch = "x".join(str(p) for p in saved["patch_size"])
    lines.append(
        f"\nKept for backward, S3D / dense: {saved['s3d_vs_dense']:.3f} (goal <= {saved['goal']:.2f}); "
        f"bf16 autocast, {patch} patch, counted on {saved['device']} without data"
    )
    return "\n".join(lines)


def markdown_table(entry: dict) -> str:
    """The rows of one step-benchmark entry as Markdown: speed table, the two ratios of the goal, and the
    memory-kept-for-backward table when measured."""
    lines = [
        "| row | samples/s | step p50 ms | p90 ms | p99 ms | peak memory GiB | GFLOP/sample | MFU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in entry["results"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['error']} | - | - | - | - | - | - |")
        elif row["model"] == "loader":
            lines.append(
                f"| loader ({row['num_workers']} workers) | {_fmt(row['patches_per_s'])} patches/s | "
                f"{_fmt(row['batch_ms'], 1)} per batch | - | - | - | - | - |"
            )
        else:
            ms = row["step_ms"]
            memory = _fmt(row["peak_memory_gib"])
            if row["memory_measure"] == "cpu_peak_rss_delta":
                memory = "RSS +" + memory
            mfu = f"{row['mfu'] * 100:.1f} %" if isinstance(row["mfu"], float) else row["mfu"]
            flops = row["flops_per_step"]
            gflop = "n/a" if flops is None else _gflop(flops / row["batch_size"])
            lines.append(
                f"| {row['model']} | {_fmt(row['samples_per_s'])} | {_fmt(ms['p50'], 1)} | {_fmt(ms['p90'], 1)} | "
                f"{_fmt(ms['p99'], 1)} | {memory} | {gflop} | {mfu} |"
            )
    summary = entry["summary"]
    if summary.get("s3d_vs_dense") is not None:
        lines.append(f"\nS3D / dense step throughput: {summary['s3d_vs_dense']:.3f} (goal >= 0.9)")
    if summary.get("loader_vs_model") is not None:
        verdict = "keeps up" if summary["loader_vs_model"] >= 1 else "is the BOTTLENECK"
        lines.append(f"Data pipeline / fastest model: {summary['loader_vs_model']:.2f} (the data pipeline {verdict})")
    if entry.get("saved_bytes"):
        lines.append("\n" + saved_bytes_table(entry["saved_bytes"]))
    return "\n".join(lines)


def end_to_end_table(entry: dict) -> str:
    """One end-to-end entry (``run_end_to_end``) as a one-row Markdown table."""
    row, s = entry["results"][0], entry["settings"]["bundle"]
    patch = "x".join(str(p) for p in s.get("patch_size", [])) or "-"
    peak = _fmt(row["peak_memory_gib"]) if "peak_memory_gib" in row else "n/a (CPU)"
    lines = [
        "| bundle | preset | patch | batch | amp | compile | workers | samples/s | step ms | data wait | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {entry['settings']['config_name']} | {s.get('network_preset', '-')} | {patch} | "
        f"{s.get('batch_size', '-')} | "
        f"{s.get('amp', '-')} | {s.get('compile', '-')} | {s.get('num_workers', '-')} | {_fmt(row['samples_per_s'])} | "
        f"{_fmt(row['step_ms'], 1)} | {row['data_wait_share'] * 100:.1f} % | {peak} |",
    ]
    return "\n".join(lines) + f"\n\n{row['iterations']} iterations timed after {row['warmup']} warm-up iterations."


def append_results(path: str | os.PathLike, entry: dict) -> None:
    """Append ``entry`` to ``{"runs": [...]}`` in the JSON file ``path`` (created if missing; written atomically)."""
    from custom_nets.data.atomic import atomic_write_text

    path = Path(path)
    runs: list = []
    if path.is_file():
        try:
            runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{path} is not a benchmark results file ({{'runs': [...]}}): move it away or pass another --output"
            ) from err
    atomic_write_text(path, json.dumps({"runs": runs + [entry]}, indent=2) + "\n")


# ---------------------------------------------------------------- shared by both entry points


def _check_device(device: str) -> torch.device:
    """``device`` ("cuda" or "cpu") as a ``torch.device``; raises when it is neither, or "cuda" without a GPU."""
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no GPU: run on a GPU machine or pass --device cpu")
    return torch.device(device)


def _check_precision(precision: str) -> None:
    """Raise unless ``precision`` is one of ``custom_nets.memory.PRECISIONS`` (the bundle's ``amp`` on or off)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}; e.g. --precision bf16")


def _speed_overrides(compile: Any, channels_last: Any, fused_norm: Any) -> dict:
    """The bundle's speed switches the caller set (None: keep the bundle's value)."""
    values = {
        "compile": _as_optional_bool(compile, "compile"),
        "channels_last": _as_optional_bool(channels_last, "channels_last"),
        "fused_norm": _as_optional_bool(fused_norm, "fused_norm"),
    }
    return {k: v for k, v in values.items() if v is not None}


def _entry_head(device: torch.device, settings: dict, mode: str | None = None) -> dict:
    """The first keys of a run in the results file: ``date`` (UTC, to the second), ``mode`` when given,
    ``environment`` (versions and hardware of ``device``) and ``settings``; each entry point adds its ``results``
    and ``summary`` after them, so both kinds of run read the same way in the JSON."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **({} if mode is None else {"mode": mode}),
        "environment": environment(device),
        "settings": settings,
    }


def _report(entry: dict, table: str, output: str | os.PathLike | None) -> None:
    """Print ``table`` (the finished ``entry`` as Markdown) and append ``entry`` to the results JSON ``output``
    (older runs kept); None writes nothing."""
    print(table)
    if output is not None:
        append_results(output, entry)


# ---------------------------------------------------------------- step benchmark


@dataclass(frozen=True)
class StepPlan:
    """The checked arguments of one step-benchmark run (``run_benchmark``): what every row is measured with."""

    preset: str  # network preset of custom_nets.nets.PRESETS
    patch: tuple[int, int, int]  # (D, H, W) in voxels, multiples of the preset's total stride
    names: tuple[str, ...]  # rows to measure, in order: a subset of MODELS
    batch_size: int  # samples per step
    steps: int  # timed iterations per row
    warmup: int  # untimed iterations first
    device: str  # "cuda" or "cpu", as given
    torch_device: torch.device
    precision: str  # "bf16" or "fp32"
    cudnn_benchmark: bool  # torch.backends.cudnn.benchmark while the rows run: asked for and on CUDA
    memory: bool  # count the bytes kept for backward
    seed: int  # weights, synthetic data and masks
    overrides: dict  # bundle settings every model row and the memory count are built with


def _step_plan(
    preset: str, patch_size: int | Sequence[int], batch_size: int, steps: int, warmup: int, device: str,
    precision: str, compile: bool | str | None, channels_last: bool | str | None, fused_norm: bool | str | None,
    models: str | Sequence[str], cudnn_benchmark: bool | str, memory: bool | str, block_size: int | None,
    mask_ratio: Sequence[float] | None, seed: int,
) -> StepPlan:
    """Check ``run_benchmark``'s arguments before anything is built or timed (the first wrong one raises, naming
    the value) and resolve them into a ``StepPlan``."""
    from custom_nets.nets import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; choose one of {sorted(PRESETS)}, e.g. --preset tiny")
    patch = _as_patch(patch_size)
    names = _as_models(models)
    speed = _speed_overrides(compile, channels_last, fused_norm)
    cudnn_benchmark, memory = _as_bool(cudnn_benchmark, "cudnn_benchmark"), _as_bool(memory, "memory")
    _check_precision(precision)
    if int(batch_size) < 1 or int(steps) < 1 or int(warmup) < 0:
        raise ValueError(f"need batch_size >= 1, steps >= 1 and warmup >= 0, got {batch_size}, {steps}, {warmup}")
    torch_device = _check_device(device)
    divisor = int(np.prod(PRESETS[preset]["strides"]))
    if any(p % divisor for p in patch):
        raise ValueError(
            f"patch_size {patch} must be a multiple of {divisor} for preset '{preset}'; e.g. {divisor * 5}"
        )
    overrides = {
        "patch_size": list(patch), "batch_size": int(batch_size), "amp": precision == "bf16", "seed": int(seed),
        **speed,
        **({} if block_size is None else {"block_size": int(block_size)}),
        **({} if mask_ratio is None else {"mask_ratio": _as_mask_ratio(mask_ratio)}),
    }
    return StepPlan(
        preset=preset, patch=patch, names=names, batch_size=int(batch_size), steps=int(steps), warmup=int(warmup),
        device=device, torch_device=torch_device, precision=precision,
        cudnn_benchmark=cudnn_benchmark and device == "cuda", memory=memory, seed=int(seed), overrides=overrides,
    )


def _step_settings(plan: StepPlan, bundle: dict, loader_workers: int | None, dataset_dir: str | None) -> dict:
    """The ``settings`` of a step-benchmark entry: the plan, and from ``bundle`` (the S3D step's resolved bundle
    settings, kept whole under ``bundle``) the values the command line may have left to the bundle."""
    cuda_bf16 = plan.precision == "bf16" and plan.device == "cuda"
    return {
        "preset": plan.preset, "patch_size": list(plan.patch), "batch_size": plan.batch_size, "steps": plan.steps,
        "warmup": plan.warmup, "device": plan.device, "precision": plan.precision,
        "autocast": "bf16" if cuda_bf16 else "none (the bundle autocasts on CUDA only)",
        "compile": bundle["compile"], "channels_last": bundle["channels_last"], "fused_norm": bundle["fused_norm"],
        "models": list(plan.names), "block_size": bundle["block_size"], "mask_ratio": bundle["mask_ratio"],
        "cudnn_benchmark": plan.cudnn_benchmark, "loader_workers": loader_workers,
        "dataset_dir": dataset_dir, "seed": plan.seed, "bundle": bundle,
    }


@contextlib.contextmanager
def _cudnn_autotuning(enabled: bool):
    """Set ``torch.backends.cudnn.benchmark`` to ``enabled`` inside the block and give the caller's value back
    afterwards, also on error, so a benchmark leaves the process as it found it."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _measure_rows(
    plan: StepPlan, loader_workers: int | None, dataset_dir: str | None, config_file: str | os.PathLike,
    loader_overrides: dict | None,
) -> list[dict]:
    """One result row per name of ``plan.names``, measured one after the other in this process (so they compare):
    ``measure_loader`` for "loader" (at least one warm-up batch, for the workers to start), ``measure_model`` for
    the models, all under the plan's cuDNN autotuning."""
    rows = []
    with _cudnn_autotuning(plan.cudnn_benchmark):
        for name in plan.names:
            if name == "loader":
                row = measure_loader(
                    plan.patch, plan.batch_size, plan.steps, max(1, plan.warmup), plan.torch_device, loader_workers,
                    dataset_dir, config_file, loader_overrides, plan.seed,
                )
            else:
                row = measure_model(
                    name, plan.preset, plan.patch, plan.batch_size, plan.steps, plan.warmup, plan.torch_device,
                    plan.precision, plan.overrides, plan.seed,
                )
            rows.append(row)
    return rows


def _step_summary(results: Sequence[dict], saved_bytes: dict | None) -> dict:
    """The goal's ratios from the rows: S3D / dense samples/s, loader patches/s / the fastest model's samples/s,
    and the S3D / dense bytes kept for backward; None where a row is missing or failed (``error``)."""
    rates = {r["model"]: r.get("samples_per_s") for r in results}
    model_rates = [v for k, v in rates.items() if k != "loader" and v]
    loader_rate = next((r.get("patches_per_s") for r in results if r["model"] == "loader"), None)
    both = rates.get("s3d") and rates.get(DENSE_ANCHOR)
    return {
        "s3d_vs_dense": round(rates["s3d"] / rates[DENSE_ANCHOR], 4) if both else None,
        "loader_vs_model": round(loader_rate / max(model_rates), 4) if loader_rate and model_rates else None,
        "saved_bytes_s3d_vs_dense": saved_bytes["s3d_vs_dense"] if saved_bytes else None,
    }


def run_benchmark(
    preset: str = "resenc_l",
    patch_size: int | Sequence[int] = 160,
    batch_size: int = 6,
    steps: int = 20,
    warmup: int = 5,
    device: str = "cuda",
    precision: str = "bf16",
    compile: bool | str | None = None,
    channels_last: bool | str | None = None,
    fused_norm: bool | str | None = None,
    models: str | Sequence[str] = MODELS,
    output: str | os.PathLike | None = "docs/benchmark_results.json",
    loader_workers: int | None = None,
    block_size: int | None = None,
    mask_ratio: Sequence[float] | None = None,
    cudnn_benchmark: bool | str = True,
    dataset_dir: str | None = None,
    config_file: str | os.PathLike = TRAIN_CONFIG,
    loader_overrides: dict | None = None,
    memory: bool | str = True,
    saved_bytes_patch: int | Sequence[int] | None = None,
    seed: int = 0,
) -> dict:
    """Measure the rows of ``models`` (and the memory kept for backward), append them to ``output`` and print
    Markdown tables.

    Args:
        preset: network preset (``custom_nets.nets.PRESETS``). Defaults to "resenc_l".
        patch_size: cubic edge or (D, H, W) in voxels. Defaults to 160.
        batch_size: samples per step (per GPU). Defaults to 6.
        steps: timed steps per model (timed batches for the loader). Defaults to 20.
        warmup: untimed steps first (compilation, autotuning, loader workers). Defaults to 5.
        device: "cuda" or "cpu". Defaults to "cuda".
        precision: "bf16" (the bundle's ``amp`` on: bf16 autocast on CUDA) or "fp32" (``amp`` off). Defaults to "bf16".
        compile: the bundle's ``compile`` (``torch.compile`` by the trainer, ``compile_kwargs`` from the bundle);
            None keeps the bundle's value. Defaults to None.
        channels_last: the bundle's ``channels_last`` (network and patches in ``torch.channels_last_3d``); None
            keeps the bundle's value. Defaults to None.
        fused_norm: the bundle's ``fused_norm`` (S3D's memory-lean masked norm); None keeps the bundle's value.
            Defaults to None.
        models: rows to measure, a subset of ("s3d", "dense_dna", "loader"). Defaults to all three.
        output: results JSON to append the run to; None writes nothing. Defaults to "docs/benchmark_results.json".
        loader_workers: data-loading processes; None keeps train.yaml's ``num_workers``. Defaults to None.
        block_size: S3D mask block edge in voxels; None keeps the bundle's. Defaults to None.
        mask_ratio: S3D masked fraction range; None keeps the bundle's. Defaults to None.
        cudnn_benchmark: let cuDNN autotune convolution algorithms (GPU only; restored afterwards). Defaults to True.
        dataset_dir: the loader's data; None = the synthetic demo MRIs. Defaults to None.
        config_file: pre-training bundle config the loader is built from. Defaults to the repository's train.yaml.
        loader_overrides: extra config overrides for the loader (e.g. ``{"quality_thresholds": {...}}``).
        memory: count the bytes S3D and the dense ResEnc-L keep for backward per sample (bf16 autocast, no GPU
            needed, seconds). Defaults to True.
        saved_bytes_patch: cubic edge or (D, H, W) of that count; None uses ``patch_size`` (the count runs
            without data, so 160^3 costs no more than 64^3). Defaults to None.
        seed: seed for weights, synthetic data and masks. Defaults to 0.

    Returns:
        The run entry written to ``output``: ``date``, ``environment``, ``settings`` (with ``bundle``: the
        resolved bundle settings of the S3D step), ``results`` (one row per model), ``saved_bytes`` (see
        ``measure_saved_bytes``; None without ``memory``) and ``summary`` (``s3d_vs_dense``, ``loader_vs_model``,
        ``saved_bytes_s3d_vs_dense``).
    """
    plan = _step_plan(
        preset, patch_size, batch_size, steps, warmup, device, precision, compile, channels_last, fused_norm, models,
        cudnn_benchmark, memory, block_size, mask_ratio, seed,
    )
    bundle = bundle_settings(step_parser("s3d", preset, device, scale="paper", overrides=plan.overrides))
    entry = {
        **_entry_head(plan.torch_device, _step_settings(plan, bundle, loader_workers, dataset_dir)),
        "results": [],
        "saved_bytes": None,
    }
    if plan.memory:
        saved_patch = plan.patch if saved_bytes_patch is None else _as_patch(saved_bytes_patch)
        entry["saved_bytes"] = bundle_saved_bytes(preset, saved_patch, device, plan.overrides)
    entry["results"] = _measure_rows(plan, loader_workers, dataset_dir, config_file, loader_overrides)
    entry["summary"] = _step_summary(entry["results"], entry["saved_bytes"])
    _report(entry, markdown_table(entry), output)
    return entry


# ---------------------------------------------------------------- end to end


def _config_files(config_file: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    files = [config_file] if isinstance(config_file, (str, os.PathLike)) else list(config_file)
    missing = [str(f) for f in files if not Path(f).is_file()]
    if not files or missing:
        raise FileNotFoundError(
            f"bundle config(s) {missing or files} not found: run from a checkout of the repository or pass "
            "--config_file bundles/s3d_pretrain/configs/train.yaml (a list for overlays: \"['a.yaml','b.yaml']\")"
        )
    return [str(f) for f in files]


def _throughput_handler(parser, warmup: int) -> None:
    """Make ``train#handlers`` hold a ``custom_nets.engine.Throughput`` with ``warmup`` warm-up iterations: the
    bundle's own one when it has one, else one appended."""
    handlers = parser.get("train#handlers")
    if not isinstance(handlers, list):
        raise ValueError(
            "the bundle has no list 'train#handlers' to time the run with; end_to_end needs a training bundle "
            "(e.g. bundles/s3d_pretrain/configs/train.yaml)"
        )
    for index, handler in enumerate(handlers):
        if isinstance(handler, dict) and str(handler.get("_target_", "")).rsplit(".", 1)[-1] == "Throughput":
            parser[f"train#handlers#{index}#warmup"] = int(warmup)
            return
    parser["train#handlers"] = handlers + [{"_target_": "custom_nets.engine.Throughput", "warmup": int(warmup)}]


def _repo_relative(path: str) -> str:
    """``path`` relative to the repository when inside it (results files hold no machine paths), else as given."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)


def find_throughput(handlers: Sequence[Any]):
    """The ``custom_nets.engine.Throughput`` instance among parsed ``train#handlers``."""
    from custom_nets.engine import Throughput

    for handler in handlers:
        if isinstance(handler, Throughput):
            return handler
    raise ValueError("no custom_nets.engine.Throughput handler in train#handlers after the run")


def _check_end_to_end_arguments(steps: int, warmup: int, precision: str | None, device: str | None) -> None:
    """Check ``run_end_to_end``'s counts, precision and device (None: the bundle's) before the bundle is read."""
    if int(steps) < 1 or int(warmup) < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}; e.g. --steps 50")
    if precision is not None:
        _check_precision(precision)
    if device is not None:
        _check_device(device)


def _chosen_settings(
    dataset_dir: str | None, cache_dir: str | None, preset: str | None, patch_size: int | Sequence[int] | None,
    batch_size: int | None, precision: str | None, num_workers: int | None, device: str | None, seed: int,
    compile: bool | str | None, channels_last: bool | str | None, fused_norm: bool | str | None,
) -> dict:
    """``run_end_to_end``'s settings under the bundle's key names (``network_preset``, ``amp``, ...); None where
    the caller left the bundle's value (dropped when applied), the speed switches only when set."""
    return {
        "dataset_dir": dataset_dir,
        "cache_dir": cache_dir,
        "network_preset": preset,
        "patch_size": None if patch_size is None else list(_as_patch(patch_size)),
        "batch_size": None if batch_size is None else int(batch_size),
        "amp": None if precision is None else precision == "bf16",
        "num_workers": None if num_workers is None else int(num_workers),
        "device": device,
        "seed": int(seed),
        **_speed_overrides(compile, channels_last, fused_norm),
    }


@contextlib.contextmanager
def _run_folder(output_dir: str | None):
    """Yield the bundle's ``output_dir``: ``output_dir`` made absolute (kept), or ``run`` in a temporary folder
    deleted when the block ends (also on error)."""
    if output_dir is not None:
        yield os.path.abspath(output_dir)
        return
    with tempfile.TemporaryDirectory(prefix="s3d_end_to_end_") as tmp:
        yield os.path.join(tmp, "run")


def _configure_run(parser, run_dir: str, chosen: dict, total: int, warmup: int, overrides: dict | None) -> None:
    """Apply the benchmark's settings to the bundle's config, last ``overrides``: one epoch of ``total`` iterations
    (``max_steps`` for pre-training, ``epochs`` = 1 for fine-tuning), checkpoint, preview and log intervals beyond
    the run (no save, picture or logged value inside the timing), and a ``Throughput`` handler with ``warmup``."""
    if "max_steps" in parser:
        length = {"max_steps": total, "iterations_per_epoch": total}
    else:
        length = {"epochs": 1, "iterations_per_epoch": total}
    quiet = {k: total + 1 for k in ("checkpoint_interval", "preview_interval", "log_interval") if k in parser}
    parser.update(
        {
            "output_dir": run_dir,
            **{k: v for k, v in chosen.items() if v is not None and k in parser},
            **length,
            **quiet,
            **(overrides or {}),
        }
    )
    _throughput_handler(parser, warmup)


def _run_bundle(
    files: list[str], run_dir: str, chosen: dict, total: int, warmup: int, overrides: dict | None
) -> tuple[dict, dict, float]:
    """Run the bundle as ``python -m monai.bundle run`` does (``ConfigWorkflow``: initialize, run, finalize) for
    ``total`` iterations in ``run_dir``.

    Returns:
        The ``Throughput`` handler's summary over the iterations after ``warmup``, the resolved bundle settings
        (``bundle_settings``) and the wall time of initialize + run in seconds (finalize, which writes the weights,
        is left out).
    """
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=files, workflow_type="train", logging_file=False)
    _configure_run(workflow.parser, run_dir, chosen, total, warmup, overrides)
    start = time.perf_counter()
    workflow.initialize()
    workflow.run()
    wall = time.perf_counter() - start
    summary = find_throughput(workflow.parser.get_parsed_content("train#handlers")).summary()
    bundle = bundle_settings(workflow.parser)
    workflow.finalize()
    return summary, bundle, wall


def _end_to_end_settings(
    files: list[str], steps: int, warmup: int, dataset_dir: str | None, cache_dir: str | None,
    output_dir: str | None, overrides: dict | None, bundle: dict,
) -> dict:
    """The ``settings`` of an end-to-end entry: the configs (repository-relative, and as ``bundle/file`` names
    joined by "+"), the run's arguments and the resolved bundle settings."""
    return {
        "config_file": [_repo_relative(f) for f in files],
        "config_name": "+".join(Path(f).parent.parent.name + "/" + Path(f).name for f in files),
        "steps": int(steps), "warmup": int(warmup), "dataset_dir": dataset_dir, "cache_dir": cache_dir,
        "output_dir": output_dir,
        "overrides": _json_value(overrides or {}), "bundle": bundle,
    }


def run_end_to_end(
    config_file: str | os.PathLike | Sequence[str | os.PathLike] = TRAIN_CONFIG,
    steps: int = 50,
    warmup: int = 10,
    dataset_dir: str | None = None,
    cache_dir: str | None = None,
    output_dir: str | None = None,
    preset: str | None = None,
    patch_size: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    compile: bool | str | None = None,
    channels_last: bool | str | None = None,
    fused_norm: bool | str | None = None,
    num_workers: int | None = None,
    device: str | None = None,
    overrides: dict | None = None,
    output: str | os.PathLike | None = "docs/benchmark_results.json",
    seed: int = 0,
) -> dict:
    """Run a training bundle itself for ``warmup + steps`` iterations and report its throughput after warm-up.

    The bundle runs as ``python -m monai.bundle run`` runs it (``ConfigWorkflow``: initialize, run, finalize),
    with its real data loader, handlers and trainer, by default in a temporary ``output_dir``. Its length becomes one
    epoch of ``warmup + steps`` iterations (``max_steps`` and ``iterations_per_epoch``; ``epochs`` = 1 for the
    fine-tuning bundle); checkpoint, preview and log intervals are set beyond the run so no save, picture or
    logged value falls inside it (checkpoint and weights are still written once at the end, after the timing).
    The numbers come from the bundle's ``custom_nets.engine.Throughput`` handler (appended when the bundle has
    none) over the iterations after ``warmup``. Settings left at None keep the bundle's values.

    Args:
        config_file: bundle config, or a list of configs merged in order (e.g. with an overlay).
            Defaults to the pre-training bundle's train.yaml.
        steps: timed iterations. Defaults to 50.
        warmup: untimed iterations first (workers start, cuDNN autotuning, ``torch.compile``). Defaults to 10.
        dataset_dir: the bundle's ``dataset_dir`` (None: the bundle's synthetic demo data). Defaults to None.
        cache_dir: preprocessing cache; pass one to reuse preprocessed data across runs. None: a fresh cache in the
            temporary output folder (preprocessing runs when the loader is built, before the timed iterations).
        output_dir: keep the run's outputs (weights, checkpoint, logs) here; None: a temporary folder, deleted
            afterwards. Defaults to None.
        preset: ``network_preset``. patch_size: cubic edge or (D, H, W). batch_size: per GPU.
        precision: "bf16" (``amp`` on) or "fp32" (``amp`` off).
        compile, channels_last, fused_norm: the bundle's speed switches.
        num_workers: data-loading processes.
        device: "cuda" or "cpu".
        overrides: any further config keys, applied last.
        output: results JSON to append the run to; None writes nothing. Defaults to "docs/benchmark_results.json".
        seed: the bundle's ``seed``. Defaults to 0.

    Returns:
        The run entry: ``date``, ``mode`` ("end_to_end"), ``environment``, ``settings`` (with ``bundle``: the
        resolved settings), ``results`` (one row: ``samples_per_s``, ``step_ms``, ``data_wait_share``,
        ``peak_memory_gib`` on CUDA, ``iterations``, ``warmup``, ``wall_s``) and ``summary``.
    """
    files = _config_files(config_file)
    _check_end_to_end_arguments(steps, warmup, precision, device)
    total = int(warmup) + int(steps)
    chosen = _chosen_settings(
        dataset_dir, cache_dir, preset, patch_size, batch_size, precision, num_workers, device, seed, compile,
        channels_last, fused_norm,
    )
    with _run_folder(output_dir) as run_dir:
        summary, bundle, wall = _run_bundle(files, run_dir, chosen, total, int(warmup), overrides)
    resolved_device = torch.device(bundle.get("device", "cpu"))
    _release(resolved_device)
    row = {
        "model": "bundle",
        **{k: round(float(v), 4) for k, v in summary.items()},  # samples/s, step ms, data-wait share, peak GiB
        "iterations": int(steps),
        "warmup": int(warmup),
        "wall_s": round(wall, 2),
    }
    settings = _end_to_end_settings(files, steps, warmup, dataset_dir, cache_dir, output_dir, overrides, bundle)
    entry = {
        **_entry_head(resolved_device, settings, mode="end_to_end"),
        "results": [row],
        "summary": {"samples_per_s": row["samples_per_s"], "peak_memory_gib": row.get("peak_memory_gib")},
    }
    _report(entry, end_to_end_table(entry), output)
    return entry


def run_memory(
    preset: str = "resenc_l",
    patch_size: int | Sequence[int] = 160,
    device: str = "cpu",
    fused_norm: bool | str | None = None,
    block_size: int | None = None,
    mask_ratio: Sequence[float] | None = None,
) -> dict:
    """Only the memory kept for backward (``bundle_saved_bytes``), printed as its table; seconds on a CPU.

    ``python -m custom_nets.benchmark memory --preset resenc_l --patch_size 160`` gives the goal's figure without a
    GPU. Settings left at None keep the bundle's.
    """
    overrides = {
        **_speed_overrides(None, None, fused_norm),
        **({} if block_size is None else {"block_size": int(block_size)}),
        **({} if mask_ratio is None else {"mask_ratio": _as_mask_ratio(mask_ratio)}),
    }
    saved = bundle_saved_bytes(preset, _as_patch(patch_size), device, overrides)
    print(saved_bytes_table(saved))
    return saved


COMMANDS = {"end_to_end": run_end_to_end, "memory": run_memory}


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m custom_nets.benchmark --preset tiny --patch_size 32 --device cpu ...`` for the step
    benchmark, ``python -m custom_nets.benchmark end_to_end --steps 50 ...`` for the whole bundle,
    ``python -m custom_nets.benchmark memory --patch_size 160`` for the memory kept for backward alone."""
    import fire

    args = list(sys.argv[1:] if argv is None else argv)
    # serialize: the tables are already printed; fire would otherwise print the returned entry as well
    if args and args[0] in COMMANDS:
        command, name = COMMANDS[args[0]], f"custom_nets.benchmark {args[0]}"
        fire.Fire(command, command=args[1:], name=name, serialize=lambda _: None)
    else:
        fire.Fire(run_benchmark, command=args, name="custom_nets.benchmark", serialize=lambda _: None)


if __name__ == "__main__":
    main()
