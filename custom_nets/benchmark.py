"""Pre-training speed: S3D train step vs nnU-Net's dense ResEnc-L step, and the data pipeline alone.

Three rows, each measured in the same process so they can be compared:

* ``s3d``: one full S3D train step: block-mask generation, ``S3D(image, mask)``, masked MSE, backward,
  gradient-norm clipping at 12, SGD Nesterov step (the step of ``engine.iterations``, without Ignite).
* ``dense_dna``: the same step for ``dynamic_network_architectures``' ``ResidualEncoderUNet(**dna_kwargs(preset))``
  (nnU-Net's own class) with a plain MSE: the anchor the sparse model must come close to (goal >= 0.9x).
* ``loader``: patches/s of the pre-training bundle's ``train#dataloader`` (``bundles/s3d_pretrain/configs/
  train.yaml``, loading + augmentation at the benchmark's patch and batch size) and its ratio to the fastest
  model's consumption; above 1 the data pipeline is not the bottleneck.

Model rows use synthetic data already on the device. Precision, ``torch.compile`` and channels_last_3d apply
to both models alike. Timing: warm-up steps first (compilation, cuDNN autotuning), then per-step CUDA events
with ``torch.cuda.synchronize()`` only at the two ends of the timed window (``time.perf_counter`` on CPU).
FLOPs are counted once per model with ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device
(forward + backward, shapes only, no memory); MFU = FLOP/step x steps/s / the GPU's dense peak.

Results are appended to a JSON file (older runs kept) and printed as a Markdown table::

    python -m custom_nets.benchmark --preset resenc_l --patch_size 160 --batch_size 6 --device cuda \\
        --precision bf16 --compile true --channels_last true
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["run_benchmark", "count_train_step_flops", "peak_flops", "markdown_table", "append_results", "main"]

MODELS = ("s3d", "dense_dna", "loader")
PRECISIONS = ("bf16", "fp32")
REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = REPO_ROOT / "bundles" / "s3d_pretrain" / "configs" / "train.yaml"
GIB = 1024**3

# Dense (no structured sparsity) peak FLOP/s per GPU name fragment, most specific first: (fragment, bf16, tf32).
# fp32 runs use the TF32 peak because cuDNN convolutions run in TF32 unless torch.backends.cudnn.allow_tf32 is off.
PEAK_FLOPS = (
    ("H100 PCIe", 756e12, 378e12),
    ("H100 NVL", 835e12, 418e12),
    ("H100", 989e12, 495e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12, 495e12),
    ("A100", 312e12, 156e12),
)

# Train-step settings of the paper (docs/method.md section 2).
LEARNING_RATE, MOMENTUM, WEIGHT_DECAY, GRAD_CLIP_NORM = 1e-2, 0.99, 3e-5, 12.0


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


# ---------------------------------------------------------------- models and train steps


def build_model(name: str, preset: str, block_size: int, fused_norm: bool) -> torch.nn.Module:
    """``s3d``: S3D around ``resenc_unet(preset)``; ``dense_dna``: nnU-Net's ResidualEncoderUNet (1 in, 1 out)."""
    from custom_nets.nets import S3D, dna_kwargs, resenc_unet

    if name == "s3d":
        return S3D(resenc_unet(preset), block_size=block_size, fused_norm=fused_norm)
    try:
        from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
    except ImportError as err:
        raise ImportError(
            "the dense anchor needs nnU-Net's network package: pip install --no-deps "
            "dynamic-network-architectures==0.4.4, or leave dense_dna out of --models"
        ) from err
    return ResidualEncoderUNet(**dna_kwargs(preset))


def _loss(name: str, pred: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if name == "s3d":
        from custom_nets.losses import MaskedMSELoss

        return MaskedMSELoss()(pred, image, mask)
    return F.mse_loss(pred.float(), image.float())


def count_train_step_flops(name: str, preset: str, patch: Sequence[int], batch_size: int, block_size: int = 16) -> int:
    """Forward + backward FLOPs of one train step, counted on the ``meta`` device (no memory, no compute).

    Counts what ``FlopCounterMode`` counts (convolutions and matrix products, 2 FLOPs per multiply-add);
    elementwise work (norms, activations, optimiser) is left out, as usual for MFU. The count does not depend
    on the mask, the precision or the memory format.

    Args:
        name: "s3d" or "dense_dna".
        preset: network preset of ``custom_nets.nets.PRESETS``.
        patch: (D, H, W) in voxels.
        batch_size: samples per step.
        block_size: S3D mask block edge in voxels.

    Returns:
        FLOPs per step (whole batch).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from custom_nets.masking import BlockMaskGenerator

    with torch.device("meta"):
        model = build_model(name, preset, block_size, fused_norm=True)
        image = torch.empty(batch_size, 1, *patch)
        mask = None
        if name == "s3d":
            generator = BlockMaskGenerator(block_size, (0.6, 0.9))
            n_blocks = int(np.prod(generator.grid_size(patch)))
            mask = generator.mask_from_noise(torch.empty(batch_size, 1), torch.empty(batch_size, n_blocks), patch)
        with FlopCounterMode(display=False) as counter:
            pred = model(image, mask) if name == "s3d" else model(image)
            _loss(name, pred, image, mask).backward()
    return int(counter.get_total_flops())


def _make_step(name: str, model, optimizer, params, image: torch.Tensor, autocast, mask_fn) -> Callable[[int], None]:
    """One train step ``step(i)``; mask generation (S3D) is part of it, as in training."""

    def step(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        mask = mask_fn(i) if mask_fn is not None else None
        with autocast():
            pred = model(image, mask) if name == "s3d" else model(image)
            loss = _loss(name, pred, image, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP_NORM)  # no host sync: the clip factor stays a tensor
        optimizer.step()

    return step


def _peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _time_steps(
    step: Callable[[int], None], steps: int, warmup: int, device: torch.device
) -> tuple[list[float], float, float]:
    """Run ``warmup`` then ``steps`` steps; return (per-step ms, timed window s, peak memory bytes).

    GPU: CUDA events around every step, synchronised once after the window; peak = max allocated since the
    warm-up ended. CPU: ``perf_counter`` per step; peak = growth of the process's peak RSS over warm-up and
    timed steps (0 when an earlier row already reached a higher mark).
    """
    cuda = device.type == "cuda"
    rss_before = _peak_rss_bytes()
    for i in range(warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        start = time.perf_counter()
        for i, (begin, end) in enumerate(events):
            begin.record()
            step(warmup + i)
            end.record()
        torch.cuda.synchronize(device)
        window = time.perf_counter() - start
        times = [begin.elapsed_time(end) for begin, end in events]
        return times, window, float(torch.cuda.max_memory_allocated(device))
    times = []
    start = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        step(warmup + i)
        times.append((time.perf_counter() - t0) * 1e3)
    window = time.perf_counter() - start
    return times, window, float(max(0, _peak_rss_bytes() - rss_before))


def _percentiles(times_ms: Sequence[float]) -> dict:
    p50, p90, p99 = np.percentile(np.asarray(times_ms, dtype=np.float64), [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3)}


def measure_model(
    name: str,
    preset: str,
    patch: tuple[int, int, int],
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    precision: str,
    compile: bool,
    channels_last: bool,
    block_size: int,
    mask_ratio: Sequence[float],
    fused_norm: bool,
    seed: int,
) -> dict:
    """Time the train step of one model; see ``run_benchmark`` for the arguments. Returns one result row."""
    from custom_nets.masking import BlockMaskGenerator

    torch.manual_seed(seed)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = build_model(name, preset, block_size, fused_norm).to(device=device, memory_format=memory_format)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LEARNING_RATE, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)
    image = torch.randn(batch_size, 1, *patch, device=device).contiguous(memory_format=memory_format)
    generator = BlockMaskGenerator(block_size, mask_ratio)

    def make_mask(i: int) -> torch.Tensor:
        return generator(batch_size, patch, device, seed=seed + i).contiguous(memory_format=memory_format)

    mask_fn = make_mask if name == "s3d" else None

    runner = model
    if compile:
        # S3D must trace without graph breaks (that is what the masked-sum design buys); nnU-Net's class may break.
        runner = torch.compile(model, fullgraph=name == "s3d", dynamic=False)

    def autocast():
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    step = _make_step(name, runner, optimizer, params, image, autocast, mask_fn)
    try:
        times, window, peak = _time_steps(step, steps, warmup, device)
    except torch.cuda.OutOfMemoryError:
        return {"model": name, "error": "out of memory"}
    finally:
        del step, runner, model, optimizer, params, image
        gc.collect()
        if compile:
            torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    samples_per_s = batch_size * steps / window
    flops = count_train_step_flops(name, preset, patch, batch_size, block_size)
    peak_rate = peak_flops(torch.cuda.get_device_name(device), precision) if device.type == "cuda" else None
    return {
        "model": name,
        "samples_per_s": round(samples_per_s, 4),
        "step_ms": _percentiles(times),
        "peak_memory_gib": round(peak / GIB, 4),
        "memory_measure": "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss_delta",
        "batch_size": batch_size,
        "flops_per_step": flops,
        "tflop_per_sample": round(flops / batch_size / 1e12, 6),
        "mfu": round(flops * samples_per_s / batch_size / peak_rate, 4) if peak_rate else "n/a",
    }


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


def markdown_table(entry: dict) -> str:
    """The rows of one run entry as a Markdown table plus the two ratios the goal is stated in."""
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
            lines.append(
                f"| {row['model']} | {_fmt(row['samples_per_s'])} | {_fmt(ms['p50'], 1)} | {_fmt(ms['p90'], 1)} | "
                f"{_fmt(ms['p99'], 1)} | {memory} | {_gflop(row['flops_per_step'] / row['batch_size'])} | {mfu} |"
            )
    summary = entry["summary"]
    if summary.get("s3d_vs_dense") is not None:
        lines.append(f"\nS3D / dense step throughput: {summary['s3d_vs_dense']:.3f} (goal >= 0.9)")
    if summary.get("loader_vs_model") is not None:
        verdict = "keeps up" if summary["loader_vs_model"] >= 1 else "is the BOTTLENECK"
        lines.append(f"Data pipeline / fastest model: {summary['loader_vs_model']:.2f} (the data pipeline {verdict})")
    return "\n".join(lines)


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


# ---------------------------------------------------------------- entry point


def run_benchmark(
    preset: str = "resenc_l",
    patch_size: int | Sequence[int] = 160,
    batch_size: int = 6,
    steps: int = 20,
    warmup: int = 5,
    device: str = "cuda",
    precision: str = "bf16",
    compile: bool | str = True,
    channels_last: bool | str = True,
    models: str | Sequence[str] = MODELS,
    output: str | os.PathLike | None = "docs/benchmark_results.json",
    loader_workers: int | None = None,
    block_size: int = 16,
    mask_ratio: Sequence[float] = (0.6, 0.9),
    fused_norm: bool | str = True,
    cudnn_benchmark: bool | str = True,
    dataset_dir: str | None = None,
    config_file: str | os.PathLike = TRAIN_CONFIG,
    loader_overrides: dict | None = None,
    seed: int = 0,
) -> dict:
    """Measure the rows of ``models``, append them to ``output`` and print a Markdown table.

    Args:
        preset: network preset (``custom_nets.nets.PRESETS``). Defaults to "resenc_l".
        patch_size: cubic edge or (D, H, W) in voxels. Defaults to 160.
        batch_size: samples per step (per GPU). Defaults to 6.
        steps: timed steps per model (timed batches for the loader). Defaults to 20.
        warmup: untimed steps first (compilation, autotuning, loader workers). Defaults to 5.
        device: "cuda" or "cpu". Defaults to "cuda".
        precision: "bf16" (autocast) or "fp32". Defaults to "bf16".
        compile: ``torch.compile`` both models (S3D with ``fullgraph=True``). Defaults to True.
        channels_last: model, input and mask in ``torch.channels_last_3d``. Defaults to True.
        models: rows to measure, a subset of ("s3d", "dense_dna", "loader"). Defaults to all three.
        output: results JSON to append the run to; None writes nothing. Defaults to "docs/benchmark_results.json".
        loader_workers: data-loading processes; None keeps train.yaml's ``num_workers``. Defaults to None.
        block_size: S3D mask block edge in voxels. Defaults to 16.
        mask_ratio: S3D masked fraction range. Defaults to (0.6, 0.9).
        fused_norm: S3D uses the memory-lean ``masked_instance_norm_fused``. Defaults to True.
        cudnn_benchmark: let cuDNN autotune convolution algorithms (GPU only; restored afterwards). Defaults to True.
        dataset_dir: the loader's data; None = the synthetic demo MRIs. Defaults to None.
        config_file: pre-training bundle config the loader is built from. Defaults to the repository's train.yaml.
        loader_overrides: extra config overrides for the loader (e.g. ``{"quality_thresholds": {...}}``).
        seed: seed for weights, synthetic data and masks. Defaults to 0.

    Returns:
        The run entry written to ``output``: ``date``, ``environment``, ``settings``, ``results`` (one row per
        model) and ``summary`` (``s3d_vs_dense``, ``loader_vs_model``).
    """
    from custom_nets.nets import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; choose one of {sorted(PRESETS)}, e.g. --preset tiny")
    patch = _as_patch(patch_size)
    names = _as_models(models)
    compile, channels_last = _as_bool(compile, "compile"), _as_bool(channels_last, "channels_last")
    fused_norm, cudnn_benchmark = _as_bool(fused_norm, "fused_norm"), _as_bool(cudnn_benchmark, "cudnn_benchmark")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}; e.g. --precision bf16")
    if int(batch_size) < 1 or int(steps) < 1 or int(warmup) < 0:
        raise ValueError(f"need batch_size >= 1, steps >= 1 and warmup >= 0, got {batch_size}, {steps}, {warmup}")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no GPU: run on a GPU machine or pass --device cpu")
    divisor = int(np.prod(PRESETS[preset]["strides"]))
    if any(p % divisor for p in patch):
        raise ValueError(
            f"patch_size {patch} must be a multiple of {divisor} for preset '{preset}'; e.g. {divisor * 5}"
        )
    torch_device = torch.device(device)
    settings = {
        "preset": preset, "patch_size": list(patch), "batch_size": int(batch_size), "steps": int(steps),
        "warmup": int(warmup), "device": device, "precision": precision, "compile": compile,
        "channels_last": channels_last, "models": list(names), "block_size": int(block_size),
        "mask_ratio": list(mask_ratio), "fused_norm": fused_norm,
        "cudnn_benchmark": cudnn_benchmark and device == "cuda",
        "loader_workers": loader_workers, "dataset_dir": dataset_dir, "seed": int(seed),
    }
    entry = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(torch_device),
        "settings": settings,
        "results": [],
    }
    previous_cudnn = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark and device == "cuda"
    try:
        for name in names:
            if name == "loader":
                row = measure_loader(
                    patch, int(batch_size), int(steps), max(1, int(warmup)), torch_device, loader_workers,
                    dataset_dir, config_file, loader_overrides, int(seed),
                )
            else:
                row = measure_model(
                    name, preset, patch, int(batch_size), int(steps), int(warmup), torch_device, precision,
                    compile, channels_last, int(block_size), tuple(mask_ratio), fused_norm, int(seed),
                )
            entry["results"].append(row)
    finally:
        torch.backends.cudnn.benchmark = previous_cudnn
    rates = {r["model"]: r.get("samples_per_s") for r in entry["results"]}
    model_rates = [v for k, v in rates.items() if k != "loader" and v]
    loader_rate = next((r.get("patches_per_s") for r in entry["results"] if r["model"] == "loader"), None)
    both = rates.get("s3d") and rates.get("dense_dna")
    entry["summary"] = {
        "s3d_vs_dense": round(rates["s3d"] / rates["dense_dna"], 4) if both else None,
        "loader_vs_model": round(loader_rate / max(model_rates), 4) if loader_rate and model_rates else None,
    }
    print(markdown_table(entry))
    if output is not None:
        append_results(output, entry)
    return entry


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m custom_nets.benchmark --preset tiny --patch_size 32 --device cpu ...``."""
    import fire

    # serialize: the table is already printed; fire would otherwise print the returned entry as well
    command = None if argv is None else list(argv)
    fire.Fire(run_benchmark, command=command, name="custom_nets.benchmark", serialize=lambda _: None)


if __name__ == "__main__":
    main()
