"""The one-call GPU check runs every check in its CPU mode, and one failing, slow or unaffordable check never stops
the others."""

import json
from dataclasses import asdict

import pytest

from custom_nets import gpu_check

TINY_ROWS = [
    "environment",
    "data",
    "saved for backward (bf16)",
    "pre-training, eager",
    "fine-tuning",
    "inference",
    "torchrun DDP (gloo)",
    "S3D vs dense step, eager",
]


def _table_rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]  # without the header row
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


@pytest.mark.slow
def test_tiny_cpu_check_runs_every_row_ok(tmp_path, capsys):
    out = tmp_path / "check"
    gpu_check.main(["--device", "cpu", "--tiny", "--output_dir", str(out)])
    printed = capsys.readouterr().out
    rows = _table_rows(printed)
    assert [r[0] for r in rows] == TINY_ROWS
    assert [r[1] for r in rows] == ["ok"] * len(TINY_ROWS), printed
    written = (out / "gpu_check.md").read_text()
    assert all(f"| {name} | ok |" in written for name in TINY_ROWS)
    report = json.loads((out / "gpu_check.json").read_text())
    assert [r["check"] for r in report["rows"]] == TINY_ROWS and report["seconds"] < report["time_budget_s"]
    values = {r["check"]: r["values"] for r in report["rows"]}
    assert values["data"]["volumes"] == 4 and values["data"]["labeled_cases"] == 3
    assert values["pre-training, eager"]["samples_per_s"] > 0
    assert values["pre-training, eager"]["bundle"]["network_preset"] == "tiny"
    assert values["torchrun DDP (gloo)"]["iterations"] == 2
    assert values["inference"]["cases"] == 1 and values["inference"]["shape"] == [64, 64, 64]
    step_rows = {r["model"]: r for r in values["S3D vs dense step, eager"]["rows"]}
    assert step_rows["s3d"]["batch_size"] == 2 and step_rows["dense_dna"]["compiled"] is False
    saved = values["saved for backward (bf16)"]
    assert saved["patch_size"] == [32, 32, 32] and saved["s3d_vs_dense"] > 0
    # the second run reuses the generated data
    assert (out / "data" / "unlabeled" / "part0" / "datalist.json").is_file()


def test_the_full_plan_is_the_papers_setting_on_one_gpu():
    plan = gpu_check.plan_for("cuda")
    assert (plan.preset, plan.patch_size, plan.batch_size, plan.precision) == ("resenc_l", 160, 6, "bf16")
    assert plan.compile_modes == (False, True) and plan.ddp_backend == "nccl"
    assert plan.volume_shape == (182, 218, 182) and plan.pretrain_warmup + plan.pretrain_steps == 60
    tiny = gpu_check.plan_for("cpu", tiny=True)
    assert (tiny.preset, tiny.patch_size, tiny.batch_size, tiny.compile_modes) == ("tiny", 32, 2, (False,))
    assert tiny.ddp_backend == "gloo" and not tiny.step_compile
    with pytest.raises(ValueError, match="device must be"):
        gpu_check.plan_for("tpu")


def test_a_spent_budget_skips_the_rest_and_still_writes_the_table(tmp_path):
    table = gpu_check.gpu_check(device="cpu", tiny=True, output_dir=str(tmp_path), time_budget_s=0)
    rows = _table_rows(table)
    assert [r[0] for r in rows] == TINY_ROWS
    statuses = {r[0]: r[1] for r in rows}
    assert statuses["environment"] == "ok"
    assert statuses["data"].startswith("skipped for time")
    assert statuses["saved for backward (bf16)"].startswith("skipped for time")
    assert statuses["pre-training, eager"] == "skipped: needs data"
    assert statuses["inference"] == "skipped: needs finetune"
    assert (tmp_path / "gpu_check.md").is_file() and (tmp_path / "gpu_check.json").is_file()


def test_a_failing_check_and_a_slow_one_become_rows(tmp_path):
    plan = asdict(gpu_check.plan_for("cpu", tiny=True))
    paths = gpu_check._paths(tmp_path)
    status, result = gpu_check._isolated("inference", {"plan": plan, "paths": paths}, "inference", tmp_path, 120)
    assert result is None and status.startswith("error: FileNotFoundError") and "model_info.json" in status  # no fine-tuning ran here
    assert "Traceback" in (tmp_path / "logs" / "inference.log").read_text()
    status, result = gpu_check._isolated("data", {"plan": plan, "paths": paths}, "data", tmp_path, 1)
    assert result is None and status.startswith("timeout after 1 s")
