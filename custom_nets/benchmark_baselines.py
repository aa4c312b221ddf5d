"""Per-method train-step speed of the baselines next to S3D, built from the bundles' own configs.

Every row is one real train step of a bundle, as ``monai.bundle run`` would execute it: the config's
``train#trainer`` (MONAI's ``SupervisedTrainer`` with the config's ``network``, ``optimizer``, ``loss``, step
function and ``compile`` setting), with two things replaced: the data loader by synthetic patches already on the
device, so the numbers measure the method, not the disk, and the handlers by none (no checkpoints, pictures or
logs). Each method's pretext transform is also timed alone (``pretext ms``; S3D's is its block masking): it runs
on the training device inside the step, and this column shows what it costs.

``build_step`` is the one place such a step is built; ``custom_nets.benchmark`` uses it for its ``s3d`` row and
for the dense anchor ``dense_dna``: nnU-Net's own ``ResidualEncoderUNet`` put into the S3D bundle in place of
S3D (same optimiser, clipping, precision, memory format and compile settings, read from the same config), with
the bundle's step with a pretext that hands the patch through unchanged, and a plain MSE.

    python -m custom_nets.benchmark_baselines --device cuda --preset resenc_l --scale paper
    python -m custom_nets.benchmark_baselines --device cpu --preset tiny --scale tiny      # seconds, for a smoke run

``--scale paper`` uses each method file's own patch, crop and batch sizes (the paper's); ``--scale tiny`` uses
``TINY_SETTINGS`` (32^3 patches, batch 2), which the bundle tests use as well. Samples/s counts loader patches.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

__all__ = [
    "METHODS",
    "method_files",
    "DENSE_ANCHOR",
    "TINY_SETTINGS",
    "Step",
    "step_parser",
    "build_step",
    "time_trainer",
    "measure_method",
    "synthetic_batches",
    "run",
    "main",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINES = REPO_ROOT / "bundles" / "baselines" / "configs"
S3D_TRAIN = REPO_ROOT / "bundles" / "s3d_pretrain" / "configs" / "train.yaml"


def method_files(folder: Path = BASELINES) -> tuple[str, ...]:
    """The baselines' method names: the config files in ``folder`` that set ``method`` (not ``scratch.yaml``, a
    fine-tuning override), sorted. A new method file is benchmarked and tested without being listed anywhere."""
    return tuple(sorted(p.stem for p in folder.glob("*.yaml") if ConfigParser.load_config_file(p).get("method")))


METHODS = ("s3d",) + method_files()
DENSE_ANCHOR = "dense_dna"

# Settings that shrink each method to 32^3 patches and the tiny preset (1/8 bottleneck): a CPU step takes well under
# a second. Views cut from the patch shrink with it (VoCo: a 2 x 2 x 1 grid of 16^3 base crops).
# Methods whose views fit a 32^3 patch need no entry.
TINY_SETTINGS = {
    "s3d": {"block_size": 8},
    "dense_mae": {"block_size": 8},
    "simclr": {"crop_size": [16, 16, 16]},
    "voco": {"voco_grid": [2, 2, 1], "crop_size": [16, 16, 16], "patch_size": [32, 32, 16]},
}

# The dense anchor in the S3D bundle: nnU-Net's network, a pretext without mask, an MSE over every voxel. The step,
# optimiser, clipping (grad_clip_norm), precision (amp), memory format (channels_last) and compile stay the bundle's.
_DENSE_ANCHOR_OVERRIDES = {
    "network_def": {"_target_": "custom_nets.nets.dna_resenc_unet", "preset": "@network_preset"},
    "pretext": {"_target_": "custom_nets.benchmark_baselines.ReconstructInput"},
    "loss": {"_target_": "custom_nets.losses.view_mse.ViewMSELoss"},
}


class ReconstructInput:
    """Pretext of the dense anchor: the network gets the patch and restores it (``{"input": x, "target": x}``)."""

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"input": image, "target": image}


def synthetic_batches(
    batch_size: int, patch_size: Sequence[int], device: str | torch.device, num_steps: int, channels: int = 1
) -> list[dict]:
    """``num_steps`` references to one batch ``{"image": (B, C, *patch_size)}`` of N(0, 1) noise on ``device``
    (seeded, so every row of a benchmark sees the same numbers); what the trainer's loader yields instead of disk
    patches."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn((int(batch_size), int(channels), *[int(s) for s in patch_size]), generator=generator)
    return [{"image": image.to(device)}] * int(num_steps)


def config_files(method: str) -> list[str]:
    """The config files of ``method``: the S3D pre-training bundle, then the baseline's method file ("s3d" and the
    dense anchor have none)."""
    if method in ("s3d", DENSE_ANCHOR):
        return [str(S3D_TRAIN)]
    path = BASELINES / f"{method}.yaml"
    if not path.is_file():
        raise ValueError(f"no config for method '{method}' in {BASELINES}; choose from {list(METHODS)}.")
    return [str(S3D_TRAIN), str(path)]


def step_parser(
    method: str,
    preset: str,
    device: str,
    scale: str = "tiny",
    batch_size: int | None = None,
    overrides: dict | None = None,
) -> ConfigParser:
    """The config of ``method`` with the benchmark's settings applied (nothing parsed yet).

    Args:
        method: one of ``METHODS`` or ``DENSE_ANCHOR``.
        preset: ``network_preset``.
        device: "cpu" or "cuda".
        scale: "paper" keeps the method file's patch, crop and batch sizes; "tiny" applies ``TINY_SETTINGS``.
        batch_size: overrides the batch size when given.
        overrides: further config keys (``patch_size``, ``amp``, ``compile``, ``channels_last``, ...), applied
            last.
    """
    if scale not in ("tiny", "paper"):
        raise ValueError(f"scale must be 'tiny' or 'paper', got {scale!r}.")
    settings: dict = {"network_preset": preset, "device": device, "num_workers": 0}
    if scale == "tiny":
        settings.update({"patch_size": [32, 32, 32], "batch_size": 2, **TINY_SETTINGS.get(method, {})})
    if batch_size is not None:
        settings["batch_size"] = int(batch_size)
    settings.update(overrides or {})
    parser = ConfigParser()
    parser.read_config(config_files(method))
    if method == DENSE_ANCHOR:
        parser.update(_DENSE_ANCHOR_OVERRIDES)
    parser.update(settings)
    return parser


class Step(NamedTuple):
    """A bundle's train step ready to run: ``trainer.run()`` executes ``num_steps`` iterations on ``image``."""

    trainer: object  # monai.engines.SupervisedTrainer
    iteration: Callable  # the config's step function (``iteration_update``)
    image: torch.Tensor  # (B, C, *patch) synthetic patches on the device
    settings: dict  # {"patch_size": [...], "batch_size": B}
    parser: ConfigParser  # the config, parsed as far as the trainer needs


def build_step(
    method: str,
    preset: str,
    device: str,
    scale: str = "tiny",
    batch_size: int | None = None,
    num_steps: int = 1,
    overrides: dict | None = None,
) -> Step:
    """The bundle's ``train#trainer`` for ``method``, fed ``num_steps`` times with one batch of synthetic patches.

    The trainer is the config's own (network, optimiser, loss, step function, ``compile``); only its data loader
    (synthetic patches on the device, see ``synthetic_batches``), its handlers (none) and its length (one epoch of
    ``num_steps`` iterations) are replaced. See ``step_parser`` for the arguments.
    """
    parser = step_parser(method, preset, device, scale, batch_size, overrides)
    parser.update(
        {
            "train#trainer#train_data_loader": {
                "_target_": "custom_nets.benchmark_baselines.synthetic_batches",
                "batch_size": "@batch_size",
                "patch_size": "@patch_size",
                "device": "@device",
                "num_steps": int(num_steps),
                "channels": int(parser.get("in_channels", 1)),
            },
            "train#trainer#train_handlers": [],
            "train#trainer#max_epochs": 1,
            "train#trainer#epoch_length": int(num_steps),
        }
    )
    trainer = parser.get_parsed_content("train#trainer")
    iteration = parser.get_parsed_content("train#iteration")
    image = trainer.data_loader[0]["image"]
    settings = {"patch_size": [int(s) for s in image.shape[2:]], "batch_size": int(image.shape[0])}
    return Step(trainer, iteration, image, settings, parser)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_bytes() -> int:
    """High-water mark of this process's resident memory (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def time_trainer(trainer, warmup: int, device: str | torch.device) -> tuple[list[float], float, float]:
    """Run ``trainer`` (one epoch); time every iteration after the first ``warmup``.

    GPU: a pair of CUDA events around each timed iteration and one ``torch.cuda.synchronize`` at each end of the
    timed window (none in between, as in training); peak = ``torch.cuda.max_memory_allocated`` since warm-up
    ended. CPU: ``time.perf_counter`` per iteration; peak = growth of the process's peak RSS over the whole run
    (0 when an earlier measurement already reached a higher mark).

    Returns:
        (per-iteration ms, timed window in s, peak memory in bytes).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    marks: list = []  # (begin, end) per timed iteration: CUDA events or perf_counter seconds
    window: dict[str, float] = {}

    def started(engine) -> None:
        if engine.state.iteration <= warmup:
            return
        if engine.state.iteration == warmup + 1:
            _sync(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            window["start"] = time.perf_counter()
        if cuda:
            begin = torch.cuda.Event(enable_timing=True)
            begin.record()
            marks.append([begin, None])
        else:
            marks.append([time.perf_counter(), None])

    def completed(engine) -> None:
        if engine.state.iteration <= warmup:
            return
        if cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            marks[-1][1] = end
        else:
            marks[-1][1] = time.perf_counter()
        if engine.state.iteration == engine.state.epoch_length * engine.state.max_epochs:
            _sync(device)
            window["end"] = time.perf_counter()

    rss_before = _peak_rss_bytes()
    trainer.add_event_handler(Events.ITERATION_STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    trainer.run()
    if not marks:
        raise ValueError(f"no iteration was timed: the trainer ran {trainer.state.iteration} with warmup={warmup}.")
    if cuda:
        times = [begin.elapsed_time(end) for begin, end in marks]
        peak = float(torch.cuda.max_memory_allocated(device))
    else:
        times = [(end - begin) * 1e3 for begin, end in marks]
        peak = float(max(0, _peak_rss_bytes() - rss_before))
    return times, window["end"] - window["start"], peak


def measure_method(
    method: str, preset: str = "tiny", device: str = "cpu", scale: str = "tiny", steps: int = 5, warmup: int = 2,
    batch_size: int | None = None,
) -> dict:
    """Median ms per train step, samples/s and median ms of the pretext transform alone for one method."""
    step = build_step(method, preset, device, scale, batch_size, steps + warmup)
    dev = torch.device(device)
    times, _, _ = time_trainer(step.trainer, warmup, dev)
    pretext_ms = None
    if hasattr(step.iteration, "views"):
        views_times = []
        for k in range(steps + warmup):
            _sync(dev)
            t0 = time.perf_counter()
            with torch.no_grad():
                step.iteration.views(step.image, k)
            _sync(dev)
            if k >= warmup:
                views_times.append((time.perf_counter() - t0) * 1e3)
        pretext_ms = float(np.median(views_times))
    step_ms = float(np.median(times))
    return {
        "method": method,
        "preset": preset,
        "device": device,
        **step.settings,
        "step_ms": round(step_ms, 2),
        "samples_per_s": round(step.settings["batch_size"] / step_ms * 1e3, 2),
        "pretext_ms": None if pretext_ms is None else round(pretext_ms, 2),
        "parameters": sum(p.numel() for p in step.trainer.network.parameters()),
    }


def markdown(rows: Sequence[dict]) -> str:
    """Rows as a Markdown table, with each method's step time relative to S3D's when S3D was measured."""
    s3d = next((r["samples_per_s"] for r in rows if r["method"] == "s3d"), None)
    lines = [
        "| method | patch | batch | ms / step | samples/s | vs S3D | pretext ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['samples_per_s'] / s3d:.2f}" if s3d else "-"
        pretext = "-" if r["pretext_ms"] is None else f"{r['pretext_ms']:.1f}"
        patch = "x".join(str(s) for s in r["patch_size"])
        lines.append(
            f"| {r['method']} | {patch} | {r['batch_size']} | {r['step_ms']:.1f} | {r['samples_per_s']:.2f} | {ratio} "
            f"| {pretext} |"
        )
    return "\n".join(lines)


def run(
    methods: str | Sequence[str] = METHODS, preset: str = "tiny", device: str = "cpu", scale: str = "tiny",
    steps: int = 5, warmup: int = 2, batch_size: int | None = None,
) -> str:
    """Measure ``methods`` one after the other in this process; print and return the Markdown table."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}.")
    torch.manual_seed(0)
    rows = [measure_method(m, preset, device, scale, steps, warmup, batch_size) for m in names]
    table = markdown(rows)
    print(table)
    return table


def main() -> None:
    import fire

    fire.Fire(run, serialize=lambda _: None)  # run() prints the table itself


if __name__ == "__main__":
    main()
