"""The speed benchmark times the bundle's own step, counts memory kept for backward, runs the bundle end to end,
and writes the results file it promises (all on CPU with the tiny preset)."""

import json
from pathlib import Path

import pytest

from custom_nets import benchmark


@pytest.fixture(scope="module")
def one_image_datalist(tmp_path_factory):
    """A datalist of one small z-scored volume, used as the loader's ready-made (already preprocessed) datalist."""
    import nibabel as nib
    import numpy as np

    path = tmp_path_factory.mktemp("bench_mri") / "image.nii.gz"
    volume = np.random.default_rng(0).standard_normal((40, 40, 40)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    return [{"image": str(path)}]


@pytest.mark.slow
def test_cli_runs_all_three_rows_on_cpu_and_appends_to_the_results_file(tmp_path, one_image_datalist, capsys):
    output = tmp_path / "results.json"
    output.write_text(json.dumps({"runs": [{"date": "older run"}]}))
    argv = [
        "--preset", "tiny", "--patch_size", "32", "--batch_size", "2", "--device", "cpu", "--precision", "fp32",
        "--compile", "false", "--channels_last", "false", "--fused_norm", "true", "--steps", "2", "--warmup", "1",
        "--block_size", "8", "--loader_workers", "0", "--output", str(output),
        # a ready datalist skips preprocessing, which is not what the loader row times
        "--loader_overrides", json.dumps({"datalist": one_image_datalist}),
    ]
    benchmark.main(argv)
    table = capsys.readouterr().out
    runs = json.loads(output.read_text())["runs"]
    assert len(runs) == 2 and runs[0] == {"date": "older run"}
    entry = runs[1]
    assert {"date", "environment", "settings", "results", "saved_bytes", "summary"} <= entry.keys()
    assert {"device_name", "torch", "monai", "cuda", "cudnn"} <= entry["environment"].keys()
    settings = entry["settings"]
    assert settings["preset"] == "tiny" and settings["compile"] is False and settings["fused_norm"] is True
    # the resolved bundle settings of the timed step: the command line's, the rest from train.yaml
    bundle = settings["bundle"]
    assert bundle["block_size"] == 8 and bundle["amp"] is False and bundle["grad_clip_norm"] == 12.0
    assert bundle["learning_rate"] == 0.01 and bundle["momentum"] == 0.99 and bundle["weight_decay"] == 3e-5
    rows = {r["model"]: r for r in entry["results"]}
    assert list(rows) == ["s3d", "dense_dna", "loader"]
    for name in ("s3d", "dense_dna"):
        row = rows[name]
        assert row["samples_per_s"] > 0 and row["mfu"] == "n/a" and row["compiled"] is False
        assert row["step_ms"]["p50"] <= row["step_ms"]["p90"] <= row["step_ms"]["p99"]
        assert row["memory_measure"] == "cpu_peak_rss_delta" and row["peak_memory_gib"] >= 0
        assert row["flops_per_step"] > 0 and "flops_error" not in row
    # S3D adds densification convolutions to the same backbone: a few percent more work than the dense net
    assert 1.0 < rows["s3d"]["flops_per_step"] / rows["dense_dna"]["flops_per_step"] < 1.5
    assert rows["loader"]["patches_per_s"] > 0 and rows["loader"]["num_workers"] == 0
    summary = entry["summary"]
    assert summary["s3d_vs_dense"] > 0 and summary["loader_vs_model"] > 0
    saved = entry["saved_bytes"]
    assert saved["patch_size"] == [32, 32, 32] and saved["precision"] == "bf16"
    totals = {r["model"]: r["total_bytes_per_sample"] for r in saved["rows"]}
    assert summary["saved_bytes_s3d_vs_dense"] == pytest.approx(totals["s3d"] / totals["dense_dna"], abs=1e-4)
    assert "| s3d |" in table and "| dense_dna |" in table and "loader (0 workers)" in table
    assert "S3D / dense step throughput" in table and "Kept for backward, S3D / dense" in table


def test_memory_table_reports_the_bundles_s3d_settings_and_the_counted_bytes(monkeypatch):
    """Against a fake counter: the call carries the bundle's S3D settings and the table's MiB and ratio are the
    counted bytes."""
    import custom_nets.memory
    from monai.bundle import ConfigParser

    calls = []
    counted = {
        "s3d": {"bfloat16": 3 * 2**20, "float32": 2**20, "bool": 2**19},
        "dense_dna": {"bfloat16": 3 * 2**20, "float32": 2**19},
    }

    def fake(model, preset="resenc_l", patch_size=(64, 64, 64), precision="bf16", device="cpu", s3d_kwargs=None,
             block_size=16, mask_ratio=(0.6, 0.9)):
        calls.append(dict(model=model, preset=preset, patch_size=patch_size, precision=precision, device=device,
                          s3d_kwargs=s3d_kwargs, block_size=block_size, mask_ratio=mask_ratio))
        by_dtype = counted[model]
        return {"model": model, "patch_size": list(patch_size), "precision": precision,
                "bytes_per_sample": by_dtype, "total_bytes_per_sample": sum(by_dtype.values())}

    monkeypatch.setattr(custom_nets.memory, "backward_bytes_per_sample", fake)
    overrides = {"block_size": 8, "densify": False, "fused_norm": True}
    saved = benchmark.bundle_saved_bytes("tiny", (48, 48, 48), "cpu", overrides)
    train = ConfigParser()
    train.read_config(str(benchmark.TRAIN_CONFIG))
    # every S3D argument of the bundle's network_def but the backbone and block size, after the overrides
    keys = [k for k in train["network_def"] if k not in ("_target_", "backbone", "block_size")]
    assert {"sparse", "mask_token", "densify", "fused_norm"} <= set(keys)
    expected = {k: overrides.get(k, train.get_parsed_content(f"network_def#{k}")) for k in keys}
    s3d_call, dense_call = calls
    assert s3d_call["model"] == "s3d" and dense_call["model"] == "dense_dna"
    assert s3d_call["s3d_kwargs"] == expected and dense_call["s3d_kwargs"] is None
    assert s3d_call["block_size"] == 8 and list(s3d_call["mask_ratio"]) == list(train.get_parsed_content("mask_ratio"))
    assert s3d_call["patch_size"] == (48, 48, 48) and s3d_call["precision"] == "bf16"
    assert saved["s3d_vs_dense"] == pytest.approx(4.5 / 3.5, abs=1e-4)
    lines = benchmark.saved_bytes_table(saved).splitlines()
    assert lines[2] == "| s3d | 3.0 | 1.0 | 0.5 | 4.5 | 1.286 |"
    assert lines[3] == "| dense_dna | 3.0 | 0.5 | 0.0 | 3.5 | 1.000 |"
    assert "1.286 (goal <= 1.10)" in lines[-1] and "48x48x48" in lines[-1]
    calls.clear()
    benchmark.main(["memory", "--preset", "tiny", "--patch_size", "32", "--fused_norm", "true", "--block_size", "4"])
    assert calls[0]["s3d_kwargs"]["fused_norm"] is True and calls[0]["block_size"] == 4
    assert calls[0]["patch_size"] == (32, 32, 32) and calls[1]["model"] == "dense_dna"


@pytest.mark.slow
def test_end_to_end_runs_the_bundle_and_keeps_saves_out_of_the_timed_iterations(tmp_path, one_image_datalist, capsys):
    output = tmp_path / "results.json"
    run_dir = tmp_path / "run"
    argv = [
        "end_to_end", "--preset", "tiny", "--patch_size", "32", "--batch_size", "2", "--device", "cpu",
        "--steps", "3", "--warmup", "2", "--num_workers", "0", "--output_dir", str(run_dir), "--output", str(output),
        "--overrides", json.dumps({"datalist": one_image_datalist, "block_size": 8}),
    ]
    benchmark.main(argv)
    table = capsys.readouterr().out
    entry = json.loads(output.read_text())["runs"][-1]
    assert entry["mode"] == "end_to_end"
    row = entry["results"][0]
    assert row["iterations"] == 3 and row["warmup"] == 2
    assert row["samples_per_s"] > 0 and row["step_ms"] > 0 and 0 <= row["data_wait_share"] <= 1
    assert "peak_memory_gib" not in row  # CUDA only
    # Throughput's own definition over the timed iterations: batch / step time
    assert row["samples_per_s"] == pytest.approx(2 / row["step_ms"] * 1e3, rel=1e-3)
    bundle = entry["settings"]["bundle"]
    assert bundle["network_preset"] == "tiny" and bundle["patch_size"] == [32, 32, 32] and bundle["num_workers"] == 0
    assert entry["settings"]["config_file"] == ["bundles/s3d_pretrain/configs/train.yaml"]
    # intervals beyond the run: the only checkpoint is the one written when the run completes (iteration 5)
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    assert checkpoints == ["checkpoint_iter000000005.pt"]
    assert (run_dir / "models" / "model.pt").is_file()
    assert "| s3d_pretrain/train.yaml | tiny | 32x32x32 | 2 |" in table


def test_end_to_end_uses_the_bundles_throughput_handler_or_adds_one():
    from monai.bundle import ConfigParser

    throughput = {"_target_": "custom_nets.engine.Throughput", "warmup": 10}
    own = ConfigParser({"train": {"handlers": [{"_target_": "ProgressBar"}, throughput]}})
    benchmark._throughput_handler(own, 4)
    assert own["train"]["handlers"][1] == {"_target_": "custom_nets.engine.Throughput", "warmup": 4}
    assert len(own["train"]["handlers"]) == 2
    bare = ConfigParser({"train": {"handlers": [{"_target_": "ProgressBar"}]}})
    benchmark._throughput_handler(bare, 3)
    assert bare["train"]["handlers"][-1] == {"_target_": "custom_nets.engine.Throughput", "warmup": 3}
    with pytest.raises(ValueError, match="train#handlers"):
        benchmark._throughput_handler(ConfigParser({"network": 1}), 3)


def test_resenc_l_flop_count_matches_the_published_figure():
    # docs/method.md section 7: one train step at 160^3 costs about 8.4 TFLOP per sample (dense ResEnc-L)
    flops = benchmark.count_train_step_flops("dense_dna", "resenc_l", (160, 160, 160), batch_size=1)
    assert flops / 1e12 == pytest.approx(8.4, rel=0.02)


def test_peak_table_and_argument_errors(tmp_path):
    assert benchmark.peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert benchmark.peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert benchmark.peak_flops("NVIDIA A100-SXM4-40GB", "bf16") == 312e12
    assert benchmark.peak_flops("Some Future GPU", "bf16") is None
    with pytest.raises(ValueError, match="compile must be true or false"):
        benchmark.run_benchmark(preset="tiny", device="cpu", compile="maybe", output=None)
    with pytest.raises(ValueError, match="subset of"):
        benchmark.run_benchmark(preset="tiny", device="cpu", models="s3d,unet", output=None)
    with pytest.raises(ValueError, match="multiple of 8"):
        benchmark.run_benchmark(preset="tiny", patch_size=36, device="cpu", output=None)
    with pytest.raises(FileNotFoundError, match="not found"):
        benchmark.run_end_to_end(config_file=str(tmp_path / "missing.yaml"), output=None)
    with pytest.raises(ValueError, match="steps >= 1"):
        benchmark.run_end_to_end(steps=0, output=None)


def test_results_file_that_is_not_a_benchmark_file_is_not_overwritten(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a benchmark results file"):
        benchmark.append_results(path, {"date": "now"})
    assert path.read_text() == "[1, 2]"


def test_committed_results_file_is_a_benchmark_results_file():
    runs = json.loads((Path(benchmark.REPO_ROOT) / "docs" / "benchmark_results.json").read_text())["runs"]
    assert runs and all({"date", "environment", "settings", "results"} <= r.keys() for r in runs)
