"""Memory kept for backward: the saved-tensor counter against hand-computed graphs, S3D's dtype discipline under
bf16 autocast, and S3D against nnU-Net's dense ResEnc U-Net (the goal: at most 1.10x the bytes per sample)."""

import inspect
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from custom_nets.masking import BlockMaskGenerator
from custom_nets.memory import backward_bytes_per_sample, saved_tensor_bytes, saved_tensor_records
from custom_nets.nets import S3D, resenc_unet

TRAIN_YAML = Path(__file__).resolve().parents[1] / "bundles" / "s3d_pretrain" / "configs" / "train.yaml"
BF16 = torch.bfloat16


# ---------------- the counter ----------------


def test_counter_on_a_hand_built_graph():
    torch.manual_seed(0)
    conv = nn.Conv3d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 4, 4, 4)
    cond = torch.rand(1, 1, 4, 4, 4) > 0.5

    def fn():
        r = torch.relu(conv(x))  # conv keeps x (for the weight's gradient) and its weight; relu keeps r
        s = r * r  # keeps r twice: the same storage, counted once
        return torch.where(cond, s, 0.0).sum()  # keeps the bool condition

    # x: 2 * 64 float32; r: 3 * 64 float32; cond: 64 bool; the weight is a Parameter and not counted
    assert saved_tensor_bytes(fn) == {"float32": (2 * 64 + 3 * 64) * 4, "bool": 64}
    records = saved_tensor_records(fn)
    assert [r["shape"] for r in records if r["parameter"]] == [(3, 2, 3, 3, 3)]
    assert sum(r["shape"] == (1, 3, 4, 4, 4) for r in records) == 3  # relu once, mul twice
    assert sum(r["new"] for r in records if r["shape"] == (1, 3, 4, 4, 4)) == 1


def test_counter_counts_a_view_by_its_storage_and_autocast_weight_copies():
    weight = nn.Parameter(torch.randn(8, 4))
    x = torch.randn(16, 8, requires_grad=True)

    def fn():
        with torch.autocast("cpu", dtype=BF16):
            y = x @ weight  # both need a gradient: the product keeps autocast's bf16 copies of x and of the weight
        return (y.float()[:, :2] ** 2).sum()  # pow keeps a view of the float32 copy of y: its whole storage

    assert saved_tensor_bytes(fn) == {"bfloat16": (16 * 8 + 8 * 4) * 2, "float32": 16 * 4 * 4}


# ---------------- S3D under bf16 autocast ----------------


def _tiny_s3d(block_size=8, seed=0, **kwargs):
    torch.manual_seed(seed)
    return S3D(resenc_unet("tiny"), block_size=block_size, **kwargs)


def _batch(block_size=8, seed=0, batch_size=2):
    torch.manual_seed(seed)
    image = torch.randn(batch_size, 1, 32, 32, 32)
    return image, BlockMaskGenerator(block_size, (0.6, 0.9))(batch_size, (32, 32, 32), seed=seed)


@pytest.mark.parametrize("block_size", [4, 8])
def test_every_activation_keeps_the_conv_output_dtype_under_bf16_autocast(block_size):
    model = _tiny_s3d(block_size)
    image, mask = _batch(block_size)
    dtypes = {}

    def record(name):
        def hook(module, args, output):
            outputs = output if isinstance(output, (list, tuple)) else [output]
            dtypes[name] = {o.dtype for o in outputs}

        return hook

    # CPU autocast runs average pooling in float32 (CUDA autocast does not touch it): its own output is left out,
    # the blocks cast it back; everything else, sparse and dense, must stay in the conv output's dtype.
    for name, module in model.named_modules():
        if name and not isinstance(module, nn.AvgPool3d):
            module.register_forward_hook(record(name))
    with torch.autocast("cpu", dtype=BF16):
        model(image, mask).float().mean().backward()
    conv_dtype = dtypes["backbone.encoder.stem.convs.0.conv"]
    assert conv_dtype == {BF16}
    wrong = {name: d for name, d in dtypes.items() if d != conv_dtype}
    assert not wrong, wrong
    assert any(name.startswith("backbone.encoder.stages") and name.endswith("norm") for name in dtypes)
    assert any(name.startswith("densify_convs") for name in dtypes)


@pytest.mark.parametrize("block_size", [4, 8])
def test_bf16_output_is_exactly_independent_of_masked_content(block_size):
    model = _tiny_s3d(block_size)  # train.yaml's settings: sparse, token, densify (coarse stages too), fused norm
    image, mask = _batch(block_size, seed=1)
    altered = image + (1 - mask) * 100 * torch.randn_like(image)
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        out, out_altered = model(image, mask), model(altered, mask)
    assert out.dtype == BF16
    torch.testing.assert_close(out_altered, out, rtol=0, atol=0)


def test_s3d_defaults_are_the_pretraining_bundles_settings():
    # backward_bytes_per_sample("s3d") builds S3D with its defaults: they must be what train.yaml ships
    config = yaml.safe_load(TRAIN_YAML.read_text())
    defaults = {k: p.default for k, p in inspect.signature(S3D).parameters.items() if k != "backbone"}
    for key in ("block_size", "sparse", "mask_token", "densify", "densify_coarse_stages", "fused_norm"):
        assert config[key] == defaults[key], key
        assert config["network_def"][key] == f"@{key}", key
    counter = inspect.signature(backward_bytes_per_sample).parameters
    assert config["block_size"] == counter["block_size"].default
    assert tuple(config["mask_ratio"]) == tuple(counter["mask_ratio"].default)


# ---------------- S3D against nnU-Net's dense ResEnc U-Net ----------------

def _ratio(preset, size, block_size, fake=True):
    pytest.importorskip("dynamic_network_architectures.architectures.unet")
    s3d = backward_bytes_per_sample("s3d", preset, (size,) * 3, block_size=block_size, fake=fake)
    dense = backward_bytes_per_sample("dense_dna", preset, (size,) * 3, fake=fake)
    return s3d, dense, s3d["total_bytes_per_sample"] / dense["total_bytes_per_sample"]


def test_s3d_keeps_at_most_1_1x_the_dense_bytes_per_sample_small_and_real():
    s3d, dense, ratio = _ratio("tiny", 32, 8, fake=False)  # real compute, a second
    assert ratio <= 1.10, (s3d, dense)
    # no float32 activation beyond the dense network's (the loss's float32 error and CPU autocast's pooling)
    assert s3d["bytes_per_sample"]["float32"] <= 1.01 * dense["bytes_per_sample"]["float32"]
    assert s3d["total_bytes_per_sample"] > 0.9 * dense["total_bytes_per_sample"]  # both counted the same way


def test_s3d_keeps_at_most_1_1x_the_dense_bytes_per_sample_for_resenc_l():
    s3d, dense, ratio = _ratio("resenc_l", 64, 16)  # fake tensors: shapes and dtypes only, about 2 s
    assert ratio <= 1.10, (s3d, dense)
    assert s3d["bytes_per_sample"]["float32"] <= 1.01 * dense["bytes_per_sample"]["float32"]


@pytest.mark.parametrize("model", ["s3d", "dense_dna"])
def test_fake_count_agrees_with_the_real_count(model):
    pytest.importorskip("dynamic_network_architectures.architectures.unet")
    fake = backward_bytes_per_sample(model, "tiny", (32, 32, 32), block_size=8, fake=True)
    real = backward_bytes_per_sample(model, "tiny", (32, 32, 32), block_size=8, fake=False)
    assert fake["fake"] and not real["fake"]
    assert fake["bytes_per_sample"].get("bool") == real["bytes_per_sample"].get("bool")
    # Every activation-sized tensor agrees exactly; only F.instance_norm's per-(sample, channel) statistics
    # differ, which the fake kernel reports as bf16 and the CPU kernel keeps as float32 (a few bytes per channel).
    assert abs(fake["total_bytes_per_sample"] - real["total_bytes_per_sample"]) < 1e-3 * real["total_bytes_per_sample"]
    for dtype in ("bfloat16", "float32"):
        fake_bytes, real_bytes = fake["bytes_per_sample"][dtype], real["bytes_per_sample"][dtype]
        assert abs(fake_bytes - real_bytes) < 5e-3 * real_bytes, dtype


def test_per_sample_bytes_scale_with_voxels_and_cancel_per_step_constants():
    small = backward_bytes_per_sample("s3d", "tiny", (32, 32, 32), block_size=8)
    large = backward_bytes_per_sample("s3d", "tiny", (64, 64, 64), block_size=8)
    # 8x the voxels: 8x the bytes, up to the per-(sample, channel) statistics that do not grow with the volume
    assert large["total_bytes_per_sample"] == pytest.approx(8 * small["total_bytes_per_sample"], rel=1e-3)
    assert small["model"] == "s3d" and small["patch_size"] == [32, 32, 32] and small["precision"] == "bf16"
    fp32 = backward_bytes_per_sample("s3d", "tiny", (32, 32, 32), block_size=8, precision="fp32")
    assert set(fp32["bytes_per_sample"]) == {"float32", "bool"}


def test_bad_arguments_and_missing_dense_package_are_explained(monkeypatch):
    with pytest.raises(ValueError, match="model must be one of"):
        backward_bytes_per_sample("unet")
    with pytest.raises(ValueError, match="precision must be one of"):
        backward_bytes_per_sample("s3d", precision="fp16")
    with pytest.raises(ValueError, match="only apply to model='s3d'"):
        backward_bytes_per_sample("dense_dna", s3d_kwargs={"fused_norm": False})
    monkeypatch.setitem(sys.modules, "dynamic_network_architectures.architectures.unet", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps dynamic-network-architectures==0\.4\.4"):
        backward_bytes_per_sample("dense_dna", "tiny", (32, 32, 32))
