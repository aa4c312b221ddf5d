"""The evaluation study: YAML schema errors, the runner's skip/resume logic and reports (with a stand-in bundle
runner that writes real evaluation files), and the demo study end to end through the command line, killed after
its first pair and restarted."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from custom_nets.evaluation.summary import summarise, write_reports
from custom_nets.study import load_study, pair_done, run_study, study_pairs

REPO = Path(__file__).resolve().parents[2]

# per-case DSC of class "lesion" and "ventricles" for (dataset, method); the cases are c0, c1
SCORES = {
    ("brain", "s3d"): [(0.9, 0.8), (0.7, float("nan"))],
    ("brain", "scratch"): [(0.5, 0.6), (0.4, float("nan"))],
    ("tof", "s3d"): [(0.6, 0.6), (0.8, 0.8)],
    ("tof", "scratch"): [(0.8, 0.8), (0.6, 0.6)],  # same mean as s3d: ranks shared (1.5 each)
}


class FakeBundle:
    """Stands in for the fine-tuning bundle: records every call and writes what the real one writes."""

    def __init__(self):
        self.calls = []

    def __call__(self, config_files, **overrides):
        stage = "evaluate" if config_files[-1].endswith("evaluate.yaml") else "train"
        self.calls.append((stage, overrides))
        out = Path(overrides["output_dir"])
        split = Path(overrides["split_file"])
        if not split.is_file():
            split.parent.mkdir(parents=True, exist_ok=True)
            split.write_text(json.dumps({"scheme": "80/20", "seed": overrides["seed"],
                                         "train": ["t0", "t1", "t2", "t3"], "test": ["c0", "c1"]}))
        if stage == "train":
            (out / "models").mkdir(parents=True, exist_ok=True)
            (out / "models" / "model.pt").write_text("weights")
            (out / "models" / "model_info.json").write_text("{}")
            return
        dataset = Path(overrides["dataset_dir"]).name
        method = out.parts[-3]
        shift = 0.0 if overrides["low_data"] is None else -0.1 * (4 - overrides["low_data"])
        results = [
            {"case": f"c{i}", "dsc": {"lesion": a + shift, "ventricles": b}, "nsd": {"lesion": a / 2, "ventricles": b / 2}}
            for i, (a, b) in enumerate(SCORES[dataset, method])
        ]
        names = ["lesion", "ventricles"]
        write_reports(results, summarise(results, names, {n: 2.0 for n in names}), out / "evaluation")


def _write_study(folder: Path, **changes) -> Path:
    for name in ("brain", "tof"):
        (folder / "data" / name).mkdir(parents=True, exist_ok=True)
    (folder / "s3d.pt").write_text("weights")
    config = {
        "output_dir": "out",
        "datasets": {"brain": "data/brain", "tof": {"dataset_dir": "data/tof", "settings": {"target_spacing": "median"}}},
        "methods": {"s3d": {"checkpoint": "s3d.pt", "settings": {"peak_lr": 0.001}}, "scratch": "scratch"},
        "seeds": [0],
        "low_data": [2],
        "finetune": {"epochs": 4, "network_preset": "tiny"},
        "evaluate": {"mirror_axes": []},
        "bootstrap_samples": 200,
        "compare": ["s3d", "scratch"],
    }
    config.update(changes)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_runner_passes_the_settings_and_skips_finished_pairs(tmp_path):
    path = _write_study(tmp_path)
    study = load_study(path)
    bundle = FakeBundle()
    run_study(study, runner=bundle)
    pairs = study_pairs(study)
    assert len(pairs) == 2 * 2 * 1 * 2 and [c[0] for c in bundle.calls] == ["train", "evaluate"] * len(pairs)
    train = {(Path(o["output_dir"]).relative_to(tmp_path / "out").as_posix()): o for s, o in bundle.calls if s == "train"}
    s3d = train["runs/tof/s3d/seed0/full"]
    assert s3d["pretrained_checkpoint"] == str(tmp_path / "s3d.pt") and s3d["peak_lr"] == 0.001
    assert s3d["target_spacing"] == "median" and s3d["epochs"] == 4 and s3d["low_data"] is None
    assert s3d["cache_dir"] == str(tmp_path / "out" / "cache" / "tof")
    assert s3d["split_file"] == str(tmp_path / "out" / "splits" / "tof_seed0.json")
    scratch = train["runs/brain/scratch/seed0/n2"]
    assert scratch["pretrained_checkpoint"] is None and scratch["low_data"] == 2 and "peak_lr" not in scratch
    assert "mirror_axes" not in s3d and all(o["mirror_axes"] == [] for s, o in bundle.calls if s == "evaluate")
    assert all(pair_done(p.run_dir(study)) for p in pairs)

    # a restarted study redoes nothing; a pair whose training finished redoes only the evaluation
    log = (tmp_path / "out" / "bundle_runs.jsonl").read_text().splitlines()
    assert len(log) == 2 * len(pairs)
    again = FakeBundle()
    run_study(path, runner=again)
    assert again.calls == []
    evaluation = Path(tmp_path / "out" / "runs" / "brain" / "s3d" / "seed0" / "full" / "evaluation")
    (evaluation / "summary.json").unlink()
    run_study(path, runner=again)
    assert [(s, Path(o["output_dir"]).name) for s, o in again.calls] == [("evaluate", "full")]


def test_reports_rank_as_the_paper_by_hand(tmp_path):
    path = _write_study(tmp_path)
    run_study(path, runner=FakeBundle())
    results = tmp_path / "out" / "results"
    rows = {r["method"]: r for r in _read_csv(results / "table.csv")}
    # brain: s3d lesion mean 0.8, ventricles 0.8 (NaN case left out) -> 0.8; scratch (0.45 + 0.6) / 2 = 0.525
    assert float(rows["s3d"]["brain_dsc"]) == pytest.approx(0.8)
    assert float(rows["scratch"]["brain_dsc"]) == pytest.approx(0.525)
    # tof: both 0.7 -> tied, ranks shared
    assert float(rows["s3d"]["tof_rank"]) == 1.5 and float(rows["scratch"]["tof_rank"]) == 1.5
    assert float(rows["s3d"]["brain_rank"]) == 1.0 and float(rows["scratch"]["brain_rank"]) == 2.0
    assert float(rows["s3d"]["average_rank"]) == pytest.approx(1.25)
    assert float(rows["scratch"]["average_rank"]) == pytest.approx(1.75)
    assert float(rows["s3d"]["mean_dsc"]) == pytest.approx((0.8 + 0.7) / 2)
    table = (results / "table.md").read_text()
    assert table.splitlines()[2].startswith("| s3d | 80.00 |")  # best average rank first, DSC in %
    # low data: 2 and the full 4 training cases per method and dataset; the lesion DSC drops by 0.2 at n=2
    low = {(r["dataset"], r["method"], int(r["training_cases"])): float(r["mean_dsc"])
           for r in _read_csv(results / "low_data.csv")}
    assert set(low) == {(d, m, n) for d in ("brain", "tof") for m in ("s3d", "scratch") for n in (2, 4)}
    assert low["tof", "s3d", 2] == pytest.approx(low["tof", "s3d", 4] - 0.1)
    per_case = _read_csv(results / "per_case.csv")
    assert len(per_case) == 2 * 2 * 2 * 2 * 2  # datasets x sizes x methods x cases x classes
    stability = _read_csv(results / "rank_stability.csv")
    for dataset in ("brain", "tof", "average rank"):
        for position in ("1", "2"):
            total = sum(float(r["fraction"]) for r in stability if r["dataset"] == dataset and r["rank"] == position)
            assert total == pytest.approx(1.0)
    for name in ("rank_stability.png", "low_data.png"):
        with Image.open(results / name) as image:
            assert image.format == "PNG" and image.width > 200
    compare = (results / "compare_s3d_vs_scratch.md").read_text()
    assert "| brain | 2 |" in compare and "| all datasets | 4 |" in compare


def test_changed_settings_are_not_mixed_with_old_results(tmp_path):
    path = _write_study(tmp_path)
    run_study(path, runner=FakeBundle(), report=False)
    _write_study(tmp_path, finetune={"epochs": 8, "network_preset": "tiny"})
    with pytest.raises(ValueError, match=r"other settings \(train.epochs differ"):
        run_study(path, runner=FakeBundle(), report=False)


def test_each_pair_records_the_schedule_it_ran(tmp_path):
    path = _write_study(tmp_path)
    bundle = FakeBundle()
    run_study(path, runner=bundle, report=False)
    runs = tmp_path / "out" / "runs" / "brain"
    schedules = {Path(o["output_dir"]).parts[-3]: o["schedule"] for stage, o in bundle.calls if stage == "train"}
    assert schedules == {"s3d": "sawtooth", "scratch": "default"}  # the bundle's rule, passed explicitly
    for method, schedule in schedules.items():
        assert json.loads((runs / method / "seed0" / "full" / "pair.json").read_text())["train"]["schedule"] == schedule

    # a study that names the schedule runs it for every method
    other = tmp_path / "other"
    other.mkdir()
    bundle = FakeBundle()
    run_study(_write_study(other, finetune={"epochs": 4, "network_preset": "tiny", "schedule": "warm_up"}),
              runner=bundle, report=False)
    assert {o["schedule"] for _, o in bundle.calls} == {"warm_up"}


def test_pairs_recorded_before_schedules_were_recorded_ran_sawtooth(tmp_path):
    path = _write_study(tmp_path)
    run_study(path, runner=FakeBundle(), report=False)
    for record in (tmp_path / "out" / "runs").glob("*/*/*/*/pair.json"):
        old = json.loads(record.read_text())
        del old["train"]["schedule"]
        record.write_text(json.dumps(old))
    # pre-trained pairs ran Sawtooth then as now and pass (brain/s3d comes first); scratch pairs ran Sawtooth, which
    # is no longer their default
    with pytest.raises(ValueError, match=r"brain/scratch/seed0/full' was made with other settings \(train.schedule"):
        run_study(path, runner=FakeBundle(), report=False)


def test_missing_checkpoints_fail_before_any_run(tmp_path):
    path = _write_study(tmp_path)
    (tmp_path / "s3d.pt").unlink()
    bundle = FakeBundle()
    with pytest.raises(FileNotFoundError, match="method 's3d'"):
        run_study(path, runner=bundle)
    assert bundle.calls == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": {"a": "scratch"}}, "unknown key 'method'. Did you mean methods"),
        ({"finetune": {"epoch": 3}}, "unknown bundle setting 'epoch'. Did you mean epochs"),
        ({"finetune": {"seed": 3}}, "sets 'seed', which the study sets for every run"),
        ({"methods": {"s3d": {"checkpoint": "s3d.pt", "settings": {"target_spacing": 2.0}}}}, "dataset's settings"),
        ({"evaluate": {"sw_overlap": 0.25, "mirror_axis": []}}, "Did you mean mirror_axes"),
        ({"compare": ["s3d", "mae"]}, "compare must name two different methods"),
        ({"low_data": [10, 0]}, "low_data must be a list of integers >= 1"),
        ({"seeds": []}, "seeds is empty"),
        ({"methods": {"s3d/x": "scratch"}}, "folder-safe"),
        ({"datasets": {}}, "datasets must be a non-empty mapping"),
        ({"bootstrap_samples": 0}, "bootstrap_samples must be a positive integer"),
    ],
)
def test_schema_errors_name_the_file_the_key_and_the_fix(tmp_path, changes, message):
    path = _write_study(tmp_path, **changes)
    with pytest.raises(ValueError, match=message) as error:
        load_study(path)
    assert str(path) in str(error.value)


def test_example_study_in_docs_is_valid():
    study = load_study(REPO / "docs" / "study_example.yaml")
    assert study.bootstrap_samples == 1000 and study.low_data == (10, 20, 30, 40)
    assert "scratch" in study.method_names and study.methods[study.method_names.index("scratch")].checkpoint is None


@pytest.mark.slow
def test_demo_study_killed_after_its_first_pair_resumes_and_renders_the_reports(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "custom_nets", "study", "demo", "--output_dir", str(out), "--pretrain_steps", "4",
               "--epochs", "2", "--low_data", "[3]", "--num_cases", "8", "--bootstrap_samples", "200"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # one thread: steady on a shared 2-core machine
    first_done = out / "runs" / "lesions_t1_flair" / "scratch" / "seed0" / "full" / "evaluation" / "summary.json"
    with open(tmp_path / "first.log", "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            deadline = time.time() + 600
            while not first_done.is_file() and process.poll() is None and time.time() < deadline:
                time.sleep(0.5)
            assert first_done.is_file(), (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(2.0)  # let the next pair start, then kill the whole process group without warning
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    finished_mtime = first_done.stat().st_mtime_ns
    runs_before = [json.loads(line) for line in (out / "bundle_runs.jsonl").read_text().splitlines()]

    restarted = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert restarted.returncode == 0, restarted.stdout[-3000:] + restarted.stderr[-3000:]
    assert first_done.stat().st_mtime_ns == finished_mtime
    runs_after = [json.loads(line) for line in (out / "bundle_runs.jsonl").read_text().splitlines()][len(runs_before):]
    first_pair = "lesions_t1_flair/scratch/seed0/full"
    assert first_pair not in {r["pair"] for r in runs_after}  # the finished pair was not redone
    # every pair ran its evaluation exactly once to completion; 2 datasets x 3 methods x (full + 3 cases)
    study = load_study(out / "study.yaml")
    assert len(study_pairs(study)) == 12 and all(pair_done(p.run_dir(study)) for p in study_pairs(study))
    results = out / "results"
    table = (results / "table.md").read_text()
    assert table.count("\n") == 2 + 3 and "average rank" in table and "lesions_t2 DSC" in table
    for name in ("table.csv", "per_case.csv", "rank_stability.md", "low_data.csv", "compare_s3d_vs_scratch.md"):
        assert (results / name).is_file()
    for name in ("rank_stability.png", "low_data.png"):
        with Image.open(results / name) as image:
            assert image.format == "PNG"
    low = _read_csv(results / "low_data.csv")
    assert sorted({int(r["training_cases"]) for r in low}) == [3, 6]
