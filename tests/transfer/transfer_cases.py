"""Tiny-preset networks, checkpoints and comparisons shared by the tests of custom_nets.transfer."""

from __future__ import annotations

import torch

from custom_nets.nets import resenc_unet

STEM, ENCODER = "encoder.stem", "encoder.stages"
IN_PROJ = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")

# Tiny preset, counted by hand from its state dict (each tensor once, duplicate nnU-Net names not counted):
#   stem: conv weight + bias, norm weight + bias                                   = 4
#   residual block: conv1 (4) + conv2 (4)                                          = 8
#   first block of a stage that changes width: + skip 1x1 conv (no bias) + norm (2) = 11
#   stage 0 (1 block, 4 -> 4): 8; stages 1 and 2 (2 blocks): 11 + 8 each; stage 3 (1 block): 11
N_ENCODER = 4 + 8 + (11 + 8) + (11 + 8) + 11  # 61
N_DECODER = 3 * (2 + 4)  # 3 decoder stages: transposed conv weight + bias, one conv-norm (4)
N_SEG_HEAD = 3 * 2  # one 1x1 head per decoder stage

ENCODER_PREFIXES = (STEM + ".", ENCODER + ".", "decoder.encoder.")
DECODER_PREFIXES = ("decoder.stages.", "decoder.transpconvs.")


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return resenc_unet("tiny", **kw)


def randomise(network, seed=1):
    """Random values everywhere (norm weights are 1 and biases 0 at init, which would hide wrong copies)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn_like(p))
    return network


def nnssl_dict(state, in_channels=1, **plan_overrides):
    """An nnssl checkpoint_final.pth as nnssl writes it (dict plan, training state beside the weights)."""
    plan = {
        "architecture_plans": {"arch_class_name": "ResidualEncoderUNet", "arch_kwargs": None},
        "pretrain_plan": {"dataset_name": "Dataset745_OpenMind"},
        "pretrain_num_input_channels": in_channels,
        "recommended_downstream_patchsize": [160, 160, 160],
        "key_to_encoder": ENCODER,
        "key_to_stem": STEM,
        "keys_to_in_proj": list(IN_PROJ),
        "key_to_lpe": None,
    }
    plan.update(plan_overrides)
    return {
        "network_weights": dict(state),
        "nnssl_adaptation_plan": plan,
        "optimizer_state": {},
        "current_epoch": 1000,
        "trainer_name": "SparkMAETrainer",
    }


def save(obj, tmp_path, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def assert_equal(network, source_state, prefixes):
    """Every network tensor under ``prefixes`` (all its names) equals the source tensor of the same name."""
    target = network.state_dict()
    keys = [k for k in target if k.startswith(prefixes)]
    assert keys
    for key in keys:
        torch.testing.assert_close(target[key], source_state[key], rtol=0, atol=0, msg=key)


def assert_fresh(network, fresh_state, prefixes):
    for key, value in network.state_dict().items():
        if key.startswith(prefixes):
            torch.testing.assert_close(value, fresh_state[key], rtol=0, atol=0, msg=key)
