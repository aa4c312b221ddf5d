"""The speed benchmark runs end to end on CPU with the tiny preset and writes the results file it promises."""

import json

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


def test_cli_runs_all_three_rows_on_cpu_and_appends_to_the_results_file(tmp_path, one_image_datalist, capsys):
    output = tmp_path / "results.json"
    output.write_text(json.dumps({"runs": [{"date": "older run"}]}))
    argv = [
        "--preset", "tiny", "--patch_size", "32", "--batch_size", "2", "--device", "cpu", "--precision", "fp32",
        "--compile", "false", "--channels_last", "false", "--steps", "2", "--warmup", "1", "--block_size", "8",
        "--loader_workers", "0", "--output", str(output),
        # a ready datalist skips preprocessing, which is not what the loader row times
        "--loader_overrides", json.dumps({"datalist": one_image_datalist}),
    ]
    benchmark.main(argv)
    table = capsys.readouterr().out
    runs = json.loads(output.read_text())["runs"]
    assert len(runs) == 2 and runs[0] == {"date": "older run"}
    entry = runs[1]
    assert {"date", "environment", "settings", "results", "summary"} <= entry.keys()
    assert {"device_name", "torch", "monai", "cuda", "cudnn"} <= entry["environment"].keys()
    assert entry["settings"]["preset"] == "tiny" and entry["settings"]["compile"] is False
    rows = {r["model"]: r for r in entry["results"]}
    assert list(rows) == ["s3d", "dense_dna", "loader"]
    for name in ("s3d", "dense_dna"):
        row = rows[name]
        assert row["samples_per_s"] > 0 and row["mfu"] == "n/a"
        assert row["step_ms"]["p50"] <= row["step_ms"]["p90"] <= row["step_ms"]["p99"]
        assert row["memory_measure"] == "cpu_peak_rss_delta" and row["peak_memory_gib"] >= 0
        assert row["flops_per_step"] > 0
    # S3D adds densification convolutions to the same backbone: a few percent more work than the dense net
    assert 1.0 < rows["s3d"]["flops_per_step"] / rows["dense_dna"]["flops_per_step"] < 1.5
    assert rows["loader"]["patches_per_s"] > 0 and rows["loader"]["num_workers"] == 0
    assert entry["summary"]["s3d_vs_dense"] > 0 and entry["summary"]["loader_vs_model"] > 0
    assert "| s3d |" in table and "| dense_dna |" in table and "loader (0 workers)" in table
    assert "S3D / dense step throughput" in table


def test_resenc_l_flop_count_matches_the_published_figure():
    # docs/method.md section 7: one train step at 160^3 costs about 8.4 TFLOP per sample (dense ResEnc-L)
    flops = benchmark.count_train_step_flops("dense_dna", "resenc_l", (160, 160, 160), batch_size=1)
    assert flops / 1e12 == pytest.approx(8.4, rel=0.02)


def test_peak_table_and_argument_errors():
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


def test_results_file_that_is_not_a_benchmark_file_is_not_overwritten(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a benchmark results file"):
        benchmark.append_results(path, {"date": "now"})
    assert path.read_text() == "[1, 2]"
