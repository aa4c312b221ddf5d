"""Reconstruction pictures, atomic checkpoints, the train step and config checks."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from custom_nets.config import check_overrides, epochs_for
from custom_nets.data.patches import FillMissingMaskd
from custom_nets.engine import atomic_torch_save, latest_checkpoint, step_seed
from custom_nets.engine.previews import preview_grid

TRAIN_YAML = str(Path(__file__).resolve().parents[2] / "bundles" / "s3d_pretrain" / "configs" / "train.yaml")
RUNNER = "/somewhere/site-packages/monai/bundle/__main__.py"


def test_preview_columns_show_input_masked_input_reconstruction_and_target():
    torch.manual_seed(0)
    image = torch.randn(1, 16, 16, 16)
    mask = torch.zeros(1, 16, 16, 16)
    mask[..., :8] = 1  # half visible
    reconstruction = -image
    picture = preview_grid(image, mask, reconstruction, gap=2, min_size=16)
    assert picture.dtype == np.uint8
    row = picture[:16]  # axial row: four 16-pixel panels separated by 2-pixel gaps
    panels = [row[:, i * 18 : i * 18 + 16] for i in range(4)]
    inp, masked, _, target = panels
    visible = np.rot90(mask[0, 8].numpy()) > 0
    # masked input equals the input where visible; the target equals the input where masked
    assert np.array_equal(masked[visible], inp[visible])
    assert np.array_equal(target[~visible], inp[~visible])
    assert not np.array_equal(masked[~visible], inp[~visible])
    # three rows (axial, coronal, sagittal)
    assert picture.shape == (3 * 16 + 2 * 2, 4 * 16 + 3 * 2)


def test_small_patches_are_enlarged():
    image = torch.rand(1, 8, 8, 8)
    picture = preview_grid(image, torch.ones_like(image), image, gap=0, min_size=32)
    assert picture.shape == (3 * 32, 4 * 32)


def test_fill_missing_mask_adds_zeros_only_when_absent():
    image = torch.rand(1, 4, 5, 6)
    filled = FillMissingMaskd(["anonymization_mask"])({"image": image})
    assert filled["anonymization_mask"].shape == (1, 4, 5, 6) and filled["anonymization_mask"].sum() == 0
    own = torch.ones(1, 4, 5, 6)
    assert FillMissingMaskd(["anonymization_mask"])({"image": image, "anonymization_mask": own})["anonymization_mask"] is own
    assert FillMissingMaskd([])({"image": image}) == {"image": image}


def test_atomic_save_leaves_no_partial_file_and_latest_ignores_temporaries(tmp_path):
    atomic_torch_save({"a": torch.ones(2)}, tmp_path / "checkpoint_iter000000002.pt")
    atomic_torch_save({"a": torch.ones(2)}, tmp_path / "checkpoint_iter000000010.pt")
    # a crash during a write leaves only a hidden temporary file, which is never picked up
    (tmp_path / ".checkpoint_iter000000012.pt.123.tmp").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "checkpoint_iter000000010.pt"
    assert sorted(os.listdir(tmp_path))[0].startswith(".")
    assert latest_checkpoint(tmp_path / "missing") is None

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"x": Unpicklable()}, tmp_path / "checkpoint_iter000000020.pt")
    assert not (tmp_path / "checkpoint_iter000000020.pt").exists()
    assert [p for p in os.listdir(tmp_path) if "000020" in p] == []  # neither the file nor its temporary


def test_step_seeds_differ_across_iterations_and_ranks():
    seeds = {step_seed(0, it, rank, 4) for it in range(1, 100) for rank in range(4)}
    assert len(seeds) == 99 * 4
    assert step_seed(3, 5) == step_seed(3, 5)


def test_typo_in_command_line_override_is_reported_with_a_suggestion():
    argv = [RUNNER, "run", "training", "--config_file", TRAIN_YAML, "--max_step", "10"]
    with pytest.raises(ValueError, match=r"unknown setting '--max_step'.*--max_steps"):
        check_overrides(argv)
    ok = [RUNNER, "run", "--config_file", f"['{TRAIN_YAML}']", "--max_steps", "10", "--network_def#block_size", "8"]
    check_overrides(ok)
    check_overrides(["pytest", "--max_step", "1"])  # not the bundle runner: nothing to check


def test_any_max_steps_gives_enough_epochs_and_a_bad_budget_names_the_settings():
    assert epochs_for(250_000, 250) == 1000
    assert epochs_for(260, 250) == 2 and epochs_for(4, 40) == 1  # the last epoch is cut short by StopAtMaxSteps
    with pytest.raises(ValueError, match="max_steps and iterations_per_epoch must be >= 1, got 0 and 250"):
        epochs_for(0, 250)


def test_pretext_preview_shows_class_outputs_as_argmax_and_skips_embeddings():
    from custom_nets.engine.previews import pretext_grid

    image = torch.rand(1, 8, 8, 8)
    logits = torch.zeros(5, 8, 8, 8)
    logits[3, :, :, :4] = 1.0  # class 3 on one half, class 0 elsewhere
    target = torch.zeros(8, 8, 8)
    target[:, :, :4] = 3
    picture, names = pretext_grid(image, logits, target, gap=0, min_size=8)
    assert names == ["network input", "output (argmax)", "target"]
    axial = picture[:8]
    out, tgt = axial[:, 8:16], axial[:, 16:24]
    # class maps are shown in the window [0, K - 1]: class 3 of 5 -> 255 * 3 / 4
    assert set(np.unique(out)) == {0, int(255 * 3 / 4)}
    assert np.array_equal(out, tgt)
    picture, names = pretext_grid(image, torch.randn(4, 16), None, gap=0, min_size=8)  # embeddings: input only
    assert names == ["network input"] and picture.shape == (24, 8)


def test_pictures_every_interval_and_once_more_at_the_end(tmp_path):
    from ignite.engine import Engine, Events

    from custom_nets.engine import PretextPreview
    from custom_nets.pretext.block_masking import BlockMasking

    image = torch.rand(1, 1, 8, 8, 8)

    def step(engine, batch):
        return {"image": image, "input": image, "mask": torch.ones_like(image), "pred": image}

    engine = Engine(step)
    PretextPreview(tmp_path, interval=2, pretext=BlockMasking()).attach(engine)
    engine.run([0] * 5, max_epochs=1)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        f"reconstruction_iter00000000{i}.png" for i in (2, 4, 5)
    ]
    again = tmp_path / "again"
    engine = Engine(step)
    PretextPreview(again, interval=2, pretext=BlockMasking()).attach(engine)
    engine.run([0] * 4, max_epochs=1)  # ends on a picture: no duplicate
    assert len(list(again.glob("*.png"))) == 2


def test_checkpoint_of_other_settings_names_the_file_the_keys_and_the_fix(tmp_path):
    from ignite.engine import Engine, Events

    from custom_nets.engine import ResumableCheckpoint
    from custom_nets.nets import S3D, resenc_unet

    def run_with(network):
        engine = Engine(lambda e, b: None)
        handler = ResumableCheckpoint(tmp_path, {"network": network}, interval=1)
        handler.attach(engine)
        engine.run([0], max_epochs=1)

    # a run of a version before the bottleneck was densified (4^3 blocks: the 8x stage of the tiny preset is coarser)
    run_with(S3D(resenc_unet("tiny"), block_size=4, densify_coarse_stages=False))
    with pytest.raises(ValueError) as info:
        run_with(S3D(resenc_unet("tiny"), block_size=4))
    text = str(info.value)
    assert "checkpoint_iter000000001.pt" in text and "Missing in the checkpoint: ['densify_convs." in text
    assert "--densify_coarse_stages false" in text and "another output_dir" in text
    # the fix the message gives works: the same settings resume at iteration 1 and train on
    engine = Engine(lambda e, b: None)
    ResumableCheckpoint(tmp_path, {"network": S3D(resenc_unet("tiny"), block_size=4, densify_coarse_stages=False)}).attach(engine)
    engine.run([0], max_epochs=2)
    assert engine.state.iteration == 2


def test_truncated_newest_checkpoint_is_kept_aside_and_the_run_resumes_from_the_older_one(tmp_path, caplog):
    from ignite.engine import Engine, Events

    from custom_nets.engine import ResumableCheckpoint

    network = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    ResumableCheckpoint(tmp_path, {"network": network}, interval=1, n_saved=2).attach(engine)
    engine.run([0, 0, 0], max_epochs=1)  # keeps iterations 2 and 3
    newest = tmp_path / "checkpoint_iter000000003.pt"
    newest.write_bytes(newest.read_bytes()[:200])  # cut short, as by a full disk

    resumed = Engine(lambda e, b: None)
    ResumableCheckpoint(tmp_path, {"network": torch.nn.Linear(2, 2)}, interval=1, n_saved=2).attach(resumed)
    started = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda e: started.append(e.state.iteration))
    with caplog.at_level("INFO"):
        resumed.run([0, 0, 0], max_epochs=2)
    assert "checkpoint_iter000000003.pt cannot be read" in caplog.text
    assert "resuming from" in caplog.text and "checkpoint_iter000000002.pt at iteration 2 (epoch 0 of 2)" in caplog.text
    assert (tmp_path / "checkpoint_iter000000003.pt.unreadable").is_file()  # nothing deleted
    assert started[0] == 3 and resumed.state.iteration == 6  # the first iteration after the restart is the 3rd
    assert torch.load(tmp_path / "checkpoint_iter000000006.pt", weights_only=True)["trainer"]["iteration"] == 6


def test_no_readable_checkpoint_names_the_folder_and_the_fix(tmp_path):
    from ignite.engine import Engine, Events

    from custom_nets.engine import ResumableCheckpoint

    (tmp_path / "checkpoint_iter000000005.pt").write_bytes(b"not a checkpoint")
    engine = Engine(lambda e, b: None)
    ResumableCheckpoint(tmp_path, {"network": torch.nn.Linear(2, 2)}).attach(engine)
    with pytest.raises(ValueError, match="none of the 1 checkpoints .* can be read .*another output_dir"):
        engine.run([0], max_epochs=1)
    assert (tmp_path / "checkpoint_iter000000005.pt.unreadable").is_file()


def test_one_preview_handler_names_and_lays_out_pictures_by_what_the_network_takes(tmp_path):
    from ignite.engine import Engine

    from custom_nets.engine import PretextPreview
    from custom_nets.engine.previews import PANELS
    from custom_nets.pretext.block_masking import BlockMasking

    image = torch.rand(1, 1, 8, 8, 8)
    output = {"image": image, "input": image, "mask": torch.ones_like(image), "target": image, "pred": image}
    masked = PretextPreview(tmp_path / "mim", interval=1, pretext=BlockMasking())
    plain = PretextPreview(tmp_path / "pretext", interval=1)  # one network input, e.g. Models Genesis
    assert (masked.tag, plain.tag) == ("reconstruction", "pretext")
    assert masked.picture(output)[1] == list(PANELS)
    assert plain.picture(output)[1] == ["network input", "output", "target"]
    engine = Engine(lambda e, b: output)
    plain.attach(engine)
    engine.run([0], max_epochs=1)
    assert [p.name for p in (tmp_path / "pretext").glob("*.png")] == ["pretext_iter000000001.png"]
