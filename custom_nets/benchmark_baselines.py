"""Per-method train-step speed of the baselines next to S3D, built from the bundles' own configs.

Every row is one real train step of a bundle, as ``monai.bundle run`` would execute it: the config's
``network``, ``optimizer``, ``loss`` and step function (``PretextIteration`` for the baselines, the masked image
modelling step for S3D and dense MAE) inside MONAI's ``SupervisedTrainer``; only the data loader is replaced by
synthetic patches already on the device, so the numbers measure the method, not the disk. Each baseline's pretext
transform is also timed alone (``pretext ms``): it runs on the training device inside the step, and this column
shows what it costs.

    python -m custom_nets.benchmark_baselines --device cuda --preset resenc_l --scale paper
    python -m custom_nets.benchmark_baselines --device cpu --preset tiny --scale tiny      # seconds, for a smoke run

``--scale paper`` uses each method file's own patch, crop and batch sizes (the paper's); ``--scale tiny`` uses
``TINY_SETTINGS`` (32^3 patches, batch 2), which the bundle tests use as well. Samples/s counts loader patches.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer
from ignite.engine import Events

__all__ = ["METHODS", "TINY_SETTINGS", "build_step", "measure_method", "run", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINES = REPO_ROOT / "bundles" / "baselines" / "configs"
S3D_TRAIN = REPO_ROOT / "bundles" / "s3d_pretrain" / "configs" / "train.yaml"
METHODS = ("s3d", "dense_mae", "models_genesis", "volume_fusion", "amaes", "simclr", "voco", "swinunetr")

# Settings that shrink each method to 32^3 patches and the tiny preset (1/8 bottleneck): a CPU step takes well under
# a second. Views cut from the patch shrink with it (VoCo: a 2 x 2 x 1 grid of 16^3 base crops).
TINY_SETTINGS = {
    "s3d": {"block_size": 8},
    "dense_mae": {"block_size": 8},
    "models_genesis": {},
    "volume_fusion": {},
    "amaes": {},
    "simclr": {"crop_size": [16, 16, 16]},
    "voco": {"voco_grid": [2, 2, 1], "crop_size": [16, 16, 16], "patch_size": [32, 32, 16]},
    "swinunetr": {},
}


def config_files(method: str) -> list[str]:
    """The config files of ``method`` ("s3d" is the S3D pre-training bundle)."""
    if method == "s3d":
        return [str(S3D_TRAIN)]
    path = BASELINES / f"{method}.yaml"
    if not path.is_file():
        raise ValueError(f"no config for method '{method}' in {BASELINES}; choose from {list(METHODS)}.")
    return [str(BASELINES / "common.yaml"), str(path)]


def _parser(method: str, overrides: dict) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(config_files(method))
    parser.update(overrides)
    return parser


def build_step(
    method: str, preset: str, device: str, scale: str = "tiny", batch_size: int | None = None, num_steps: int = 1
):
    """The bundle's trainer for ``method`` fed ``num_steps`` times with one batch of synthetic patches.

    Returns:
        (trainer, iteration function, patches (B, C, *patch) on the device, settings dict).
    """
    if scale not in ("tiny", "paper"):
        raise ValueError(f"scale must be 'tiny' or 'paper', got {scale!r}.")
    overrides = {"network_preset": preset, "device": device, "num_workers": 0}
    if scale == "tiny":
        overrides.update({"patch_size": [32, 32, 32], "batch_size": 2, **TINY_SETTINGS.get(method, {})})
    if batch_size is not None:
        overrides["batch_size"] = int(batch_size)
    parser = _parser(method, overrides)
    patch = [int(s) for s in parser.get_parsed_content("patch_size")]
    batch = int(parser.get_parsed_content("batch_size"))
    network = parser.get_parsed_content("network")
    optimizer = parser.get_parsed_content("optimizer")
    loss = parser.get_parsed_content("loss")
    iteration = parser.get_parsed_content("train#iteration" if method == "s3d" else "iteration")
    generator = torch.Generator().manual_seed(0)
    image = torch.randn((batch, 1, *patch), generator=generator).to(device)
    trainer = SupervisedTrainer(
        device=torch.device(device),
        max_epochs=1,
        train_data_loader=[{"image": image}] * int(num_steps),
        network=network,
        optimizer=optimizer,
        loss_function=loss,
        iteration_update=iteration,
        decollate=False,
    )
    return trainer, iteration, image, {"patch_size": patch, "batch_size": batch}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_method(
    method: str, preset: str = "tiny", device: str = "cpu", scale: str = "tiny", steps: int = 5, warmup: int = 2,
    batch_size: int | None = None,
) -> dict:
    """Median ms per train step, samples/s and median ms of the pretext transform alone for one method."""
    trainer, iteration, image, settings = build_step(method, preset, device, scale, batch_size, steps + warmup)
    dev = torch.device(device)
    times: list[float] = []

    def tick(engine):
        _sync(dev)
        now = time.perf_counter()
        if engine.state.iteration > warmup:
            times.append((now - engine.state.started) * 1e3)

    def start(engine):
        _sync(dev)
        engine.state.started = time.perf_counter()

    trainer.add_event_handler(Events.ITERATION_STARTED, start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, tick)
    trainer.run()
    pretext_ms = None
    if hasattr(iteration, "views"):
        views_times = []
        for k in range(steps + warmup):
            _sync(dev)
            t0 = time.perf_counter()
            with torch.no_grad():
                iteration.views(image, k)
            _sync(dev)
            if k >= warmup:
                views_times.append((time.perf_counter() - t0) * 1e3)
        pretext_ms = float(np.median(views_times))
    step_ms = float(np.median(times))
    return {
        "method": method,
        "preset": preset,
        "device": device,
        **settings,
        "step_ms": round(step_ms, 2),
        "samples_per_s": round(settings["batch_size"] / step_ms * 1e3, 2),
        "pretext_ms": None if pretext_ms is None else round(pretext_ms, 2),
        "parameters": sum(p.numel() for p in trainer.network.parameters()),
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
            f"| {r['method']} | {patch} | {r['batch_size']} | {r['step_ms']:.1f} | {r['samples_per_s']:.2f} | {ratio} | {pretext} |"
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
