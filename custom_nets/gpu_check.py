"""One call that checks a GPU machine for pre-training and fine-tuning, in at most 6 minutes, and prints one table.

    python -m custom_nets.gpu_check                          # one GPU: ResEnc-L, 160^3, batch 6, bf16
    python -m custom_nets.gpu_check --device cpu --tiny      # the same checks, tiny, on a CPU (about a minute)

Each check is one row with its status (``ok``, the error, ``timeout after N s`` or ``skipped for time``); a failing
check never stops the others. In order:

1. ``environment``: GPU name, torch, CUDA and cuDNN versions.
2. ``data``: a few synthetic head MRIs at the MNI size (182 x 218 x 182 at 1 mm) and a small labeled set
   (``custom_nets.data.demo``), preprocessed once into the caches the bundles use.
3. ``saved for backward``: bytes per sample S3D and the dense ResEnc-L keep for backward under bf16 autocast, and
   their ratio (``custom_nets.benchmark.bundle_saved_bytes``; goal <= 1.10).
4. ``pre-training, eager``: the pre-training bundle end to end with its real loader (``custom_nets.benchmark.
   run_end_to_end``): samples/s, step time, data-wait share and peak memory after the warm-up iterations
   (goals: >= 16.5 samples/s at batch 6, <= 32 GiB).
5. ``fine-tuning``: a few iterations of ``bundles/s3d_finetune/configs/train.yaml`` on the labeled set.
6. ``inference``: ``bundles/s3d_finetune/configs/inference.yaml`` on one full-size case with the fine-tuned weights.
7. ``torchrun DDP``: ``torchrun --standalone --nproc_per_node 1`` with the pre-training bundle's multi-GPU overlay
   on NCCL (gloo on a CPU), a few iterations.
8. ``S3D vs dense step``: the step benchmark's ``s3d`` and ``dense_dna`` rows in one process (``custom_nets.
   benchmark.run_benchmark``), eager: samples/s, ratio (goal >= 0.9) and peak memory.
9. ``pre-training, compiled``: row 4 with ``compile`` on (Inductor's compile time falls in the warm-up).

The compiled run comes last: its compile time is the least predictable part, so a slow compiler costs that row
and not the others. Every check runs in its own process with a time limit (the whole run stays within
``time_budget_s``), so a crash, a hang or a CUDA error in one does not take the others down; its output goes to
``<output_dir>/logs/<check>.log``. The table and all numbers are written to ``<output_dir>/gpu_check.md`` and
``gpu_check.json``; the generated data stay in ``<output_dir>/data`` and are reused by the next run.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["Plan", "plan_for", "gpu_check", "markdown", "main"]

REPO_ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = REPO_ROOT / "bundles" / "s3d_pretrain" / "configs"
FINETUNE = REPO_ROOT / "bundles" / "s3d_finetune" / "configs"
MNI_SHAPE = (182, 218, 182)  # MNI152 at 1 mm, voxels

# Goals of the issue "Pre-training speed on one GPU" (docs/benchmarks.md), checked on the full-size plan only.
GOAL_SAMPLES_PER_S = 16.5  # end to end, batch 6, 160^3
GOAL_VS_DENSE = 0.9  # S3D step / dense ResEnc-L step
GOAL_PEAK_GIB = 32.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """Sizes and iteration counts of every check; ``plan_for`` gives the GPU plan and the tiny CPU one.

    Iteration counts are warm-up + timed; the defaults of the full plan fit an H100/H200 in 6 minutes with
    compilation (estimates per check in docs/benchmarks.md).
    """

    device: str
    tiny: bool
    preset: str
    patch_size: int
    batch_size: int
    block_size: int | None  # None: the bundle's
    precision: str
    volumes: int
    volume_shape: tuple[int, int, int]
    labeled_cases: int
    labeled_shape: tuple[int, int, int]
    num_workers: int | None  # None: the bundle's
    pretrain_warmup: int
    pretrain_steps: int
    compile_modes: tuple[bool, ...]
    step_warmup: int
    step_steps: int
    step_compile: bool
    finetune_warmup: int
    finetune_steps: int
    finetune_batch: int | None  # None: the bundle's
    mirror_axes: tuple[int, ...] | None  # None: the bundle's test-time mirroring
    sw_batch_size: int | None  # sliding-window patches per forward; None: the bundle's
    ddp_warmup: int
    ddp_steps: int
    ddp_backend: str


def plan_for(device: str = "cuda", tiny: bool = False) -> Plan:
    """The full plan (ResEnc-L, 160^3, batch 6, bf16, compile off and on) or the tiny one (tiny preset, 32^3,
    batch 2, a handful of iterations, no compile)."""
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}; e.g. --device cpu --tiny")
    backend = "nccl" if device == "cuda" else "gloo"
    if tiny:
        return Plan(
            device=device, tiny=True, preset="tiny", patch_size=32, batch_size=2, block_size=8, precision="bf16",
            volumes=4, volume_shape=(80, 96, 80), labeled_cases=3, labeled_shape=(64, 64, 64), num_workers=0,
            pretrain_warmup=2, pretrain_steps=4, compile_modes=(False,), step_warmup=1, step_steps=2,
            step_compile=False, finetune_warmup=3, finetune_steps=2, finetune_batch=2, mirror_axes=(), sw_batch_size=8,
            ddp_warmup=1, ddp_steps=2, ddp_backend=backend,
        )
    return Plan(
        device=device, tiny=False, preset="resenc_l", patch_size=160, batch_size=6, block_size=None, precision="bf16",
        volumes=4, volume_shape=MNI_SHAPE, labeled_cases=3, labeled_shape=MNI_SHAPE, num_workers=None,
        pretrain_warmup=10, pretrain_steps=50, compile_modes=(False, True), step_warmup=3, step_steps=10,
        step_compile=False, finetune_warmup=4, finetune_steps=8, finetune_batch=None, mirror_axes=None,
        sw_batch_size=None,
        ddp_warmup=3, ddp_steps=5, ddp_backend=backend,
    )


def _paths(out: Path) -> dict[str, str]:
    """Where the data and runs of a check live under the output folder (reused by a second run)."""
    return {
        "unlabeled": str(out / "data" / "unlabeled"),
        "pretrain_cache": str(out / "data" / "pretrain_cache"),
        "labeled": str(out / "data" / "labeled"),
        "labeled_json": str(out / "data" / "labeled" / "dataset.json"),
        "finetune_cache": str(out / "data" / "finetune_cache"),
        "finetune_run": str(out / "runs" / "finetune"),
        "predictions": str(out / "runs" / "predictions"),
    }


# ---------------------------------------------------------------- checks (each runs in its own process)


def _write_unlabeled(folder: str, images: int, seed: int, shape: Sequence[int]) -> None:
    from custom_nets.data import write_demo_dataset

    write_demo_dataset(folder, num_images=images, seed=seed, shape=tuple(shape))


def _write_labeled(folder: str, cases: int, shape: Sequence[int]) -> None:
    from custom_nets.data.demo import write_demo_segmentation_dataset

    write_demo_segmentation_dataset(folder, num_cases=cases, num_test=1, seed=0, shape=tuple(shape))


def check_data(plan: dict, paths: dict) -> dict:
    """Write the synthetic volumes (in parallel where there are cores), then preprocess both sets once through
    the bundles' own ``datalist`` / ``dataset`` items, so the later checks time training, not preprocessing."""
    from monai.bundle import ConfigParser

    start = time.perf_counter()
    # two images per folder: seeds k*1000 and k*1000+1 give one T1-like (1 mm, RAS) and one T2-like (anisotropic)
    jobs: list[tuple[Callable, tuple]] = [
        (_write_unlabeled, (os.path.join(paths["unlabeled"], f"part{k}"), min(2, plan["volumes"] - 2 * k), k,
                            plan["volume_shape"]))
        for k in range((plan["volumes"] + 1) // 2)
    ]
    jobs.append((_write_labeled, (paths["labeled"], plan["labeled_cases"], plan["labeled_shape"])))
    workers = min(len(jobs), max(1, (os.cpu_count() or 1) // 2))
    if workers > 1:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in [pool.submit(fn, *args) for fn, args in jobs]:
                future.result()
    else:
        for fn, args in jobs:
            fn(*args)
    generated = time.perf_counter() - start

    start = time.perf_counter()
    pretrain = ConfigParser()
    pretrain.read_config(str(PRETRAIN / "train.yaml"))
    pretrain.update({
        "dataset_dir": paths["unlabeled"], "cache_dir": paths["pretrain_cache"], "output_dir": paths["pretrain_cache"],
        "patch_size": [plan["patch_size"]] * 3,
    })
    entries = pretrain.get_parsed_content("datalist")
    finetune = ConfigParser()
    finetune.read_config(str(FINETUNE / "train.yaml"))
    finetune.update({
        "dataset_dir": paths["labeled_json"], "cache_dir": paths["finetune_cache"], "output_dir": paths["finetune_run"],
    })
    labeled = finetune.get_parsed_content("dataset")
    return {
        "volumes": len(entries),
        "volume_shape": list(plan["volume_shape"]),
        "labeled_cases": len(labeled["training"]),
        "labeled_shape": list(plan["labeled_shape"]),
        "generate_s": round(generated, 1),
        "preprocess_s": round(time.perf_counter() - start, 1),
    }


def check_saved_bytes(plan: dict, paths: dict) -> dict:
    """Bytes kept for backward per sample, S3D and dense ResEnc-L, bf16 autocast, at the plan's patch."""
    from custom_nets.benchmark import bundle_saved_bytes

    overrides = {} if plan["block_size"] is None else {"block_size": plan["block_size"]}
    return bundle_saved_bytes(plan["preset"], [plan["patch_size"]] * 3, plan["device"], overrides)


def _end_to_end(plan: dict, **kwargs) -> dict:
    from custom_nets.benchmark import run_end_to_end

    overrides = kwargs.pop("overrides", {})
    if plan["block_size"] is not None and "block_size" not in overrides:
        overrides["block_size"] = plan["block_size"]
    entry = run_end_to_end(
        preset=plan["preset"], patch_size=plan["patch_size"], precision=plan["precision"],
        num_workers=plan["num_workers"], overrides=overrides, output=None, **kwargs,
    )
    return {**entry["results"][0], "bundle": entry["settings"]["bundle"]}


def check_pretrain(plan: dict, paths: dict, compile: bool) -> dict:
    """The pre-training bundle end to end on the generated MRIs, with ``compile`` on or off."""
    return _end_to_end(
        plan, config_file=str(PRETRAIN / "train.yaml"), steps=plan["pretrain_steps"], warmup=plan["pretrain_warmup"],
        dataset_dir=paths["unlabeled"], cache_dir=paths["pretrain_cache"], batch_size=plan["batch_size"],
        compile=compile, device=plan["device"],
    )


def check_finetune(plan: dict, paths: dict) -> dict:
    """A few iterations of the fine-tuning bundle on the generated labeled set; keeps its weights for inference."""
    import shutil

    shutil.rmtree(paths["finetune_run"], ignore_errors=True)
    row = _end_to_end(
        {**plan, "block_size": None}, config_file=str(FINETUNE / "train.yaml"), steps=plan["finetune_steps"],
        warmup=plan["finetune_warmup"], dataset_dir=paths["labeled_json"], cache_dir=paths["finetune_cache"],
        output_dir=paths["finetune_run"], batch_size=plan["finetune_batch"], device=plan["device"],
        # the periodic validation runs once, after the timed iterations: a few batches show it works on the device
        overrides={"validation_iterations": 4},
    )
    weights = Path(paths["finetune_run"]) / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"the fine-tuning run wrote no weights at {weights}")
    return row


def check_inference(plan: dict, paths: dict) -> dict:
    """The inference bundle alone on the labeled set's one test case, with the fine-tuned weights."""
    import shutil

    import nibabel as nib
    import torch
    from monai.bundle import ConfigWorkflow

    shutil.rmtree(paths["predictions"], ignore_errors=True)
    settings = {
        "checkpoint": str(Path(paths["finetune_run"]) / "models" / "model.pt"),
        "input_dir": paths["labeled_json"],
        "output_dir": paths["predictions"],
        "device": plan["device"],
        **({} if plan["mirror_axes"] is None else {"mirror_axes": list(plan["mirror_axes"])}),
        **({} if plan["sw_batch_size"] is None else {"sw_batch_size": plan["sw_batch_size"]}),
    }
    workflow = ConfigWorkflow(
        config_file=str(FINETUNE / "inference.yaml"), workflow_type="infer", logging_file=False, **settings
    )
    cuda = plan["device"] == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    seconds = time.perf_counter() - start
    written = sorted(Path(paths["predictions"]).glob("*.nii.gz"))
    if not written:
        raise FileNotFoundError(f"inference wrote no label map to {paths['predictions']}")
    row = {"cases": len(written), "shape": list(nib.load(written[0]).shape), "seconds": round(seconds, 2)}
    if cuda:
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return row


def check_ddp(plan: dict, paths: dict) -> dict:
    """The pre-training bundle with its multi-GPU overlay; run under torchrun (one process)."""
    return _end_to_end(
        plan, config_file=[str(PRETRAIN / "train.yaml"), str(PRETRAIN / "multi_gpu_train.yaml")],
        steps=plan["ddp_steps"], warmup=plan["ddp_warmup"], dataset_dir=paths["unlabeled"],
        cache_dir=paths["pretrain_cache"], batch_size=plan["batch_size"],  # backend: follows the device
    )


def check_step_rows(plan: dict, paths: dict) -> dict:
    """The step benchmark's ``s3d`` and ``dense_dna`` rows, measured one after the other in this process."""
    from custom_nets.benchmark import run_benchmark

    entry = run_benchmark(
        preset=plan["preset"], patch_size=plan["patch_size"], batch_size=plan["batch_size"],
        steps=plan["step_steps"], warmup=plan["step_warmup"], device=plan["device"], precision=plan["precision"],
        compile=plan["step_compile"], models="s3d,dense_dna", output=None, memory=False,
        block_size=plan["block_size"],
    )
    rows = {r["model"]: r for r in entry["results"]}
    errors = [f"{name}: {r['error']}" for name, r in rows.items() if "error" in r]
    if errors:
        raise RuntimeError("; ".join(errors))
    return {"rows": entry["results"], "s3d_vs_dense": entry["summary"]["s3d_vs_dense"]}


CHECKS: dict[str, Callable[..., dict]] = {
    "data": check_data,
    "saved_bytes": check_saved_bytes,
    "pretrain": check_pretrain,
    "finetune": check_finetune,
    "inference": check_inference,
    "ddp": check_ddp,
    "step_rows": check_step_rows,
}


def _error_text(err: BaseException) -> str:
    """The error and its causes on one line, the root cause first (MONAI wraps errors raised in config
    expressions, so the outermost message alone rarely says what went wrong)."""
    chain = []
    while err is not None and len(chain) < 5:
        chain.append(f"{type(err).__name__}: {' '.join(str(err).split())}")
        err = err.__cause__ or err.__context__
    return " <- ".join(reversed(chain))


def run_check_request(request_file: str) -> int:
    """Child-process side: run the check named in ``request_file`` and write its result (or error) next to it.

    Returns the exit status (0 ok, 1 the check raised). Under torchrun only rank 0 writes.
    """
    request = json.loads(Path(request_file).read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    try:
        result = {"ok": True, "result": CHECKS[request["check"]](**request["kwargs"])}
        status = 0
    except Exception as err:  # noqa: BLE001 - reported in the table, with the traceback in the log
        traceback.print_exc()
        result = {"ok": False, "error": _error_text(err)}
        status = 1
    if rank == 0:
        Path(request["result_file"]).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return status


# ---------------------------------------------------------------- the parent: time budget, rows, table


@dataclass
class Row:
    """One line of the table."""

    check: str
    status: str = "ok"
    measured: str = "-"
    goal: str = "-"
    verdict: str = "-"
    seconds: float = 0.0
    values: dict | None = None


def _child_env(device: str) -> dict:
    """The environment of a check's process: this checkout first on the path; on a CPU one thread per process
    unless OMP_NUM_THREADS says otherwise (the tiny checks are overhead-bound, and spinning OpenMP threads
    slow down many times over on a CPU shared with other processes)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run_process(command: list[str], timeout: float, log_file: Path, device: str) -> int | None:
    """Run ``command`` in its own process group with output to ``log_file``; None when it ran past ``timeout``
    (then the whole group, loader workers and torchrun's children included, is killed)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=_child_env(device), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return None


def _isolated(
    check: str, kwargs: dict, name: str, out: Path, timeout: float, torchrun: bool = False
) -> tuple[str, dict | None]:
    """Run ``CHECKS[check](**kwargs)`` in a child process (under ``torchrun`` when asked); (status, result)."""
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    result_file = parts / f"{name}.json"
    result_file.unlink(missing_ok=True)
    request_file = parts / f"{name}.request.json"
    request_file.write_text(json.dumps({"check": check, "kwargs": kwargs, "result_file": str(result_file)}))
    command = [sys.executable, "-m", "custom_nets.gpu_check", "run_check", str(request_file)]
    if torchrun:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *command[1:]]
    log_file = out / "logs" / f"{name}.log"
    code = _run_process(command, timeout, log_file, kwargs["plan"]["device"])
    if code is None:
        return f"timeout after {timeout:.0f} s (log: logs/{name}.log)", None
    if result_file.is_file():
        answer = json.loads(result_file.read_text(encoding="utf-8"))
        if answer["ok"]:
            return "ok", answer["result"]
        return f"error: {answer['error']}"[:400], None
    return f"error: exit code {code}, no result (log: logs/{name}.log)", None


def _environment(device: str) -> tuple[Row, dict]:
    import torch

    info = {
        "device_name": None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    row = Row("environment")
    if device == "cuda":
        if not torch.cuda.is_available():
            row.status = "error: torch sees no GPU (CUDA build? driver? CUDA_VISIBLE_DEVICES?)"
        else:
            info["device_name"] = torch.cuda.get_device_name(0)
    else:
        import platform

        info["device_name"] = f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    row.measured = f"{info['device_name']}; torch {info['torch']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}"
    row.values = info
    return row, info


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} GiB"


def _describe(name: str, result: dict, plan: Plan) -> tuple[str, str, str]:
    """(measured, goal, verdict) of a check's result; goals only on the full-size GPU plan."""
    goals = plan.device == "cuda" and not plan.tiny
    if name == "data":
        shape = "x".join(map(str, result["volume_shape"]))
        text = (f"{result['volumes']} MRIs {shape} + {result['labeled_cases']} labeled cases; generated in "
                f"{result['generate_s']:.0f} s, preprocessed in {result['preprocess_s']:.0f} s")
        return text, "-", "-"
    if name == "saved_bytes":
        rows = {r["model"]: r["total_bytes_per_sample"] / 2**20 for r in result["rows"]}
        ratio = result["s3d_vs_dense"]
        text = f"S3D {rows['s3d']:,.0f} MiB, dense {rows['dense_dna']:,.0f} MiB per sample: ratio {ratio:.3f}"
        goal = result["goal"]  # the benchmark's SAVED_BYTES_GOAL, carried in the result
        return text, f"<= {goal:.2f}", ("met" if ratio <= goal else "missed")
    if name.startswith("pretrain") or name in ("finetune", "ddp"):
        peak = result.get("peak_memory_gib")
        text = (f"{result['samples_per_s']:.2f} samples/s, step {result['step_ms']:.0f} ms, data wait "
                f"{100 * result['data_wait_share']:.1f} %, peak {_gib(peak)}")
        if not (goals and name.startswith("pretrain")):
            return text, "-", "-"
        met = result["samples_per_s"] >= GOAL_SAMPLES_PER_S and peak is not None and peak <= GOAL_PEAK_GIB
        return text, f">= {GOAL_SAMPLES_PER_S} samples/s, <= {GOAL_PEAK_GIB:.0f} GiB", ("met" if met else "missed")
    if name == "inference":
        shape = "x".join(map(str, result["shape"]))
        peak = _gib(result.get("peak_memory_gib"))
        return f"{result['cases']} case {shape} in {result['seconds']:.1f} s, peak {peak}", "-", "-"
    if name == "step_rows":
        rows = {r["model"]: r for r in result["rows"]}
        s3d, dense = rows["s3d"], rows["dense_dna"]
        ratio = result["s3d_vs_dense"]
        memory = s3d["peak_memory_gib"] if s3d["memory_measure"] == "cuda_max_memory_allocated" else None
        text = (f"S3D {s3d['samples_per_s']:.2f}, dense {dense['samples_per_s']:.2f} samples/s: ratio {ratio:.3f}; "
                f"peak S3D {_gib(memory)}")
        if not goals:
            return text, "-", "-"
        met = ratio >= GOAL_VS_DENSE and memory is not None and memory <= GOAL_PEAK_GIB
        return text, f">= {GOAL_VS_DENSE}x dense, <= {GOAL_PEAK_GIB:.0f} GiB", ("met" if met else "missed")
    return json.dumps(result)[:200], "-", "-"


def markdown(rows: Sequence[Row], header: str) -> str:
    """The check's one table, with a header line."""
    lines = [header, "", "| check | status | measured | goal | verdict | s |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.check, r.status, r.measured, r.goal, r.verdict, f"{r.seconds:.0f}"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Step:
    """One planned check: its row label, check function, keyword arguments, time cap, the least time worth
    starting it with, and the row it needs to have succeeded."""

    name: str
    label: str
    check: str
    kwargs: dict
    cap_s: float
    min_s: float
    needs: str | None = None
    torchrun: bool = False


def _steps(plan: Plan) -> list[_Step]:
    """The checks in run order: cheap and functional first, the compiled pre-training run (whose Inductor compile
    time is the least predictable part) last. Caps and least start times are sized for an H100/H200
    (docs/benchmarks.md); the tiny plan starts every check that has any time left."""
    least = 0.0 if plan.tiny else 1.0
    steps = [
        _Step("data", "data", "data", {}, 90, 20 * least),
        _Step("saved_bytes", "saved for backward (bf16)", "saved_bytes", {}, 40, 5 * least),
    ]
    if False in plan.compile_modes:
        steps.append(
            _Step("pretrain_eager", "pre-training, eager", "pretrain", {"compile": False}, 110, 30 * least, "data")
        )
    steps += [
        _Step("finetune", "fine-tuning", "finetune", {}, 80, 20 * least, "data"),
        _Step("inference", "inference", "inference", {}, 45, 10 * least, "finetune"),
        _Step("ddp", f"torchrun DDP ({plan.ddp_backend})", "ddp", {}, 80, 20 * least, "data", torchrun=True),
        _Step("step_rows", "S3D vs dense step" + (", compiled" if plan.step_compile else ", eager"), "step_rows",
              {}, 120, 30 * least),
    ]
    if True in plan.compile_modes:
        steps.append(_Step("pretrain_compiled", "pre-training, compiled", "pretrain", {"compile": True}, 170,
                           60 * least, "data"))
    return steps


def gpu_check(
    device: str = "cuda",
    tiny: bool = False,
    output_dir: str = "runs/gpu_check",
    time_budget_s: float = 360.0,
) -> str:
    """Run every check within ``time_budget_s`` seconds; print, write and return the Markdown table.

    Args:
        device: "cuda" (one GPU) or "cpu".
        tiny: the tiny plan (tiny preset, 32^3, batch 2, a handful of iterations, no compile); with
            ``--device cpu`` it runs in about a minute on two cores.
        output_dir: generated data (reused by the next run), logs, ``gpu_check.md`` and ``gpu_check.json``.
        time_budget_s: wall-clock budget for the whole check; a check that cannot start with the least time it
            needs is "skipped for time", one that runs past its share is stopped ("timeout"). Defaults to 360.

    Returns:
        The Markdown table (also printed and written to ``<output_dir>/gpu_check.md``).
    """
    start = time.perf_counter()
    deadline = start + float(time_budget_s)
    tiny = tiny if isinstance(tiny, bool) else str(tiny).strip().lower() in ("true", "1", "yes")
    plan = plan_for(device, tiny)
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths = _paths(out)
    env_row, info = _environment(device)
    rows = [env_row]
    done: dict[str, bool] = {}
    plan_dict = {**asdict(plan)}
    for step in _steps(plan):
        row = Row(step.label)
        remaining = deadline - time.perf_counter()
        if step.needs is not None and not done.get(step.needs, False):
            row.status = f"skipped: needs {step.needs}"
        elif remaining < max(step.min_s, 1.0):
            row.status = f"skipped for time ({remaining:.0f} s left)"
        else:
            began = time.perf_counter()
            kwargs = {"plan": plan_dict, "paths": paths, **step.kwargs}
            timeout = min(step.cap_s, remaining)
            row.status, result = _isolated(step.check, kwargs, step.name, out, timeout, step.torchrun)
            row.seconds = time.perf_counter() - began
            if result is not None:
                try:
                    row.measured, row.goal, row.verdict = _describe(step.check, result, plan)
                except (KeyError, TypeError, ValueError) as err:
                    row.status = f"error: unexpected result ({type(err).__name__}: {err})"
                row.values = result
        done[step.name] = row.status == "ok"
        rows.append(row)
        logger.info("%s: %s (%.0f s)", row.check, row.status, row.seconds)
    total = time.perf_counter() - start
    mode = "tiny plan" if plan.tiny else f"{plan.preset} {plan.patch_size}^3, batch {plan.batch_size}, {plan.precision}"
    header = (
        f"GPU check on {info['device_name']} (torch {info['torch']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}); "
        f"{mode}; {total:.0f} s of a {float(time_budget_s):.0f} s budget"
    )
    table = markdown(rows, header)
    from custom_nets.data.atomic import atomic_write_text

    atomic_write_text(out / "gpu_check.md", table + "\n")
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": info,
        "plan": plan_dict,
        "seconds": round(total, 1),
        "time_budget_s": float(time_budget_s),
        "rows": [asdict(r) for r in rows],
    }
    atomic_write_text(out / "gpu_check.json", json.dumps(report, indent=2, default=str) + "\n")
    print(table)
    return table


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m custom_nets.gpu_check [--device cpu --tiny] [--output_dir ...] [--time_budget_s 360]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "run_check":  # a child process started by gpu_check
        logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
        sys.exit(run_check_request(args[1]))
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(levelname)s - %(message)s")
    fire.Fire(gpu_check, command=args, name="custom_nets.gpu_check", serialize=lambda _: None)


if __name__ == "__main__":
    main()
