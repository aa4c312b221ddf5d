"""Fine-tuning schedules: published learning rates, stage lengths, encoder freezing and the Ignite handler."""

import logging

import pytest
import torch
from ignite.engine import Engine, Events

from custom_nets.engine.freezing import set_trainable
from custom_nets.engine.schedule_handler import ScheduleHandler
from custom_nets.engine.schedules import SCHEDULES, Schedule, Stage, build_schedule
from custom_nets.nets import resenc_unet

PEAK = 1e-3


def poly(start, end, t, n):
    return end + (start - end) * (1 - t / n) ** 0.9


def lengths(schedule):
    return [s.iterations for s in schedule.stages]


# ----------------------------------------------------------------------------------------- learning rates


def test_sawtooth_1000_epochs_matches_the_published_table():
    s = build_schedule("sawtooth")  # 1000 epochs x 250 iterations, peak 1e-3
    assert s.total_iterations == 250_000
    assert lengths(s) == [6_250, 6_250, 12_500, 225_000]
    assert [st.trains for st in s.stages] == ["decoder", "decoder", "all", "all"]
    assert [st.fresh_optimizer for st in s.stages] == [False, False, True, False]
    assert s.stage_starts == (0, 6_250, 12_500, 25_000)
    # decoder warm-up: linear 4e-5 -> 1e-3
    assert s.lr_at(0) == pytest.approx(4e-5, rel=1e-12)
    assert s.lr_at(3_125) == pytest.approx(4e-5 + (1e-3 - 4e-5) * 0.5, rel=1e-12)
    assert s.lr_at(6_249) == pytest.approx(1e-3, rel=2e-4)
    # decoder decay: poly 1e-3 -> ~5.5e-5 (the reference's last epoch: 1e-3 * (1/25) ** 0.9 = 5.52e-5)
    floor = 1e-3 * (1 / 25) ** 0.9
    assert floor == pytest.approx(5.52e-5, rel=1e-3)
    assert s.lr_at(6_250) == pytest.approx(1e-3, rel=1e-12)
    assert s.lr_at(9_375) == pytest.approx(poly(1e-3, floor, 3_125, 6_250), rel=1e-12)
    assert s.lr_at(12_499) == pytest.approx(5.5e-5, rel=0.02)
    # whole network, fresh optimiser: linear 2e-5 -> 1e-3
    assert s.lr_at(12_500) == pytest.approx(2e-5, rel=1e-12)
    assert s.lr_at(24_999) == pytest.approx(1e-3, rel=1e-4)
    # whole network: nnU-Net poly 1e-3 -> ~0
    assert s.lr_at(25_000) == pytest.approx(1e-3, rel=1e-12)
    assert s.lr_at(25_000 + 112_500) == pytest.approx(1e-3 * 0.5**0.9, rel=1e-12)
    assert 0 < s.lr_at(249_999) < 1e-7


def test_sawtooth_150_epochs_uses_15_epoch_warm_up_stages():
    s = build_schedule("sawtooth", epochs=150)
    assert s.total_iterations == 37_500
    # decoder phase of 15 epochs split 7 + 8 (as the reference trainer), whole-network warm-up of 15 epochs
    assert lengths(s) == [7 * 250, 8 * 250, 15 * 250, 120 * 250]
    assert s.lr_at(0) == pytest.approx(1e-3 / 7, rel=1e-12)
    assert s.lr_at(1_749) == pytest.approx(1e-3, rel=1e-3)
    assert s.lr_at(1_750) == pytest.approx(1e-3, rel=1e-12)
    assert s.lr_at(3_749) == pytest.approx(1e-3 * (1 / 8) ** 0.9, rel=0.02)
    assert s.lr_at(3_750) == pytest.approx(1e-3 / 15, rel=1e-12)
    assert s.lr_at(7_500) == pytest.approx(1e-3, rel=1e-12)
    assert 0 < s.lr_at(37_499) < 1e-6


@pytest.mark.parametrize("epochs, warm", [(1000, 50), (150, 15)])
def test_warm_up_and_valley_take_the_paper_warm_up_length(epochs, warm):
    w = build_schedule("warm_up", epochs=epochs)
    assert lengths(w) == [warm * 250, (epochs - warm) * 250]
    assert [st.trains for st in w.stages] == ["all", "all"]
    assert w.lr_at(0) == pytest.approx(PEAK / warm, rel=1e-12)
    assert w.lr_at(warm * 250) == pytest.approx(PEAK, rel=1e-12)
    assert w.lr_at(warm * 250 + (epochs - warm) * 125) == pytest.approx(PEAK * 0.5**0.9, rel=1e-12)

    v = build_schedule("valley", epochs=epochs)
    assert lengths(v) == [warm * 250, warm * 250, (epochs - 2 * warm) * 250]
    assert [st.trains for st in v.stages] == ["decoder", "all", "all"]
    assert [st.fresh_optimizer for st in v.stages] == [False, True, False]
    assert v.lr_at(0) == pytest.approx(PEAK, rel=1e-12)  # decoder only, linearly decreasing
    assert v.lr_at(warm * 125) == pytest.approx(PEAK / 2, rel=1e-12)
    assert v.lr_at(warm * 250 - 1) == pytest.approx(PEAK / (warm * 250), rel=1e-9)
    assert v.lr_at(warm * 250) == pytest.approx(PEAK / warm, rel=1e-12)  # whole-network warm-up
    assert v.lr_at(2 * warm * 250) == pytest.approx(PEAK, rel=1e-12)


def test_default_and_frozen_are_poly_over_the_whole_run():
    for name, trains in (("default", "all"), ("frozen", "decoder")):
        s = build_schedule(name, epochs=1000, peak_lr=1e-2)
        assert s.total_iterations == 250_000 and len(s.stages) == 1
        assert s.stages[0].trains == trains
        assert s.lr_at(0) == pytest.approx(1e-2, rel=1e-12)
        assert s.lr_at(125_000) == pytest.approx(1e-2 * 0.5**0.9, rel=1e-12)
        assert s.lr_at(249_999) == pytest.approx(1e-2 * (1 / 250_000) ** 0.9, rel=1e-9)


def test_stage_lengths_scale_with_iterations_per_epoch_and_short_runs_scale_proportionally():
    s = build_schedule("sawtooth", epochs=1000, iterations_per_epoch=10)
    assert lengths(s) == [250, 250, 500, 9_000]
    assert [s.lr_at(i) for i in s.stage_starts] == pytest.approx([4e-5, 1e-3, 2e-5, 1e-3], rel=1e-12)
    # other epoch counts: each warm-up stage is 5 % of the run (the 1000-epoch proportion)
    assert lengths(build_schedule("sawtooth", epochs=200, iterations_per_epoch=250)) == [1_250, 1_250, 2_500, 45_000]
    assert lengths(build_schedule("sawtooth", epochs=10, iterations_per_epoch=4)) == [1, 1, 2, 36]
    assert lengths(build_schedule("valley", epochs=10, iterations_per_epoch=4)) == [2, 2, 36]
    for name in SCHEDULES:
        demo = build_schedule(name, epochs=10, iterations_per_epoch=4)
        assert demo.total_iterations == 40
        assert all(0 <= demo.lr_at(i) <= PEAK for i in range(40))


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="choose one of.*sawtooth"):
        build_schedule("cosine")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        build_schedule("sawtooth", epochs=0)
    with pytest.raises(ValueError, match="use at least 4 iterations"):
        build_schedule("sawtooth", epochs=1, iterations_per_epoch=3)
    with pytest.raises(ValueError, match="peak_lr"):
        build_schedule("default", peak_lr=0.0)
    with pytest.raises(ValueError, match="shape must be one of"):
        Stage("x", 10, "all", 1e-3, 0.0, "cosine")
    with pytest.raises(ValueError, match="trains must be one of"):
        Stage("x", 10, "encoder", 1e-3, 0.0, "poly")
    with pytest.raises(ValueError, match="iterations must be an integer"):
        Stage("x", 0, "all", 1e-3, 0.0, "poly")
    with pytest.raises(ValueError, match="use shape='linear'"):
        Stage("x", 10, "all", 1e-4, 1e-3, "poly")
    with pytest.raises(ValueError, match="covers iterations 0..15"):
        build_schedule("default", epochs=8, iterations_per_epoch=2).lr_at(16)


# ----------------------------------------------------------------------------------------------- freezing


def sgd(net):
    return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.99, nesterov=True, weight_decay=3e-5)


def step(net, optimizer, size=16):
    optimizer.zero_grad(set_to_none=True)
    net(torch.randn(1, 1, size, size, size)).square().mean().backward()
    optimizer.step()


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def unchanged(module, before):
    return all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def changed_all(module, before):
    return all(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def decoder_own(net):
    return torch.nn.ModuleList([net.decoder.stages, net.decoder.transpconvs, net.decoder.seg_layers[-1:]])


def test_decoder_stage_leaves_the_encoder_bit_for_bit_unchanged():
    torch.manual_seed(0)
    net = resenc_unet("tiny")
    optimizer = sgd(net)
    set_trainable(net, "decoder")
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert not any(p.requires_grad for p in net.decoder.encoder.parameters())  # the same, shared module
    assert all(p.requires_grad for p in net.decoder.seg_layers.parameters())
    enc, dec = snapshot(net.encoder), snapshot(decoder_own(net))
    step(net, optimizer)
    assert unchanged(net.encoder, enc)
    assert changed_all(decoder_own(net), dec)

    set_trainable(net, "all")
    step(net, optimizer)
    assert not unchanged(net.encoder, enc)

    # back to decoder-only with momentum buffers and weight decay on the encoder: still untouched
    set_trainable(net, "decoder")
    enc = snapshot(net.encoder)
    step(net, optimizer)
    assert unchanged(net.encoder, enc)


def test_stem_first_conv_stays_trainable_when_requested():
    net = resenc_unet("tiny", in_channels=3)
    set_trainable(net, "decoder", stem_first_conv_trainable=True)
    stem_conv = net.encoder.stem.convs[0].conv
    assert stem_conv.weight.requires_grad and stem_conv.bias.requires_grad
    assert not any(p.requires_grad for p in net.encoder.stem.convs[0].norm.parameters())
    assert not any(p.requires_grad for p in net.encoder.stages.parameters())
    set_trainable(net, "decoder")
    assert not stem_conv.weight.requires_grad
    with pytest.raises(ValueError, match="trains must be"):
        set_trainable(net, "encoder")
    with pytest.raises(ValueError, match="no 'encoder' module"):
        set_trainable(torch.nn.Linear(2, 2), "decoder")


def test_set_trainable_unwraps_distributed_data_parallel(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = resenc_unet("tiny")
        ddp = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
        optimizer = sgd(ddp)
        set_trainable(ddp, "decoder")
        enc = snapshot(net.encoder)
        step(ddp, optimizer)
        step(ddp, optimizer)  # DDP would fail here without find_unused_parameters
        assert unchanged(net.encoder, enc)
        set_trainable(ddp, "all")
        step(ddp, optimizer)
        assert not unchanged(net.encoder, enc)
        strict = torch.nn.parallel.DistributedDataParallel(resenc_unet("tiny"))
        with pytest.raises(ValueError, match="find_unused_parameters=True"):
            ScheduleHandler(build_schedule("sawtooth"), strict, sgd(strict))
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ Ignite handler


def test_handler_drives_lr_freezing_and_fresh_optimizer_in_an_engine(caplog):
    torch.manual_seed(0)
    net = resenc_unet("tiny")
    optimizer = sgd(net)
    schedule = build_schedule("sawtooth", epochs=8, iterations_per_epoch=2)
    assert lengths(schedule) == [1, 1, 1, 13]
    seen = []

    def process(engine, batch):
        seen.append(
            {
                "lr": optimizer.param_groups[0]["lr"],
                "encoder_trains": net.encoder.stem.convs[0].conv.weight.requires_grad,
                "momentum_buffers": len(optimizer.state),
                "encoder_before": snapshot(net.encoder),
            }
        )
        step(net, optimizer, size=32)

    engine = Engine(process)
    ScheduleHandler(schedule, net, optimizer).attach(engine)
    with caplog.at_level(logging.INFO, logger="custom_nets.engine.schedule_handler"):
        engine.run([0, 1], max_epochs=2)  # 4 of the 16 iterations: one per stage
    assert [s["lr"] for s in seen] == [schedule.lr_at(i) for i in range(4)]
    assert [s["encoder_trains"] for s in seen] == [False, False, True, True]
    # stage 3 ("warmup_all", fresh optimiser) starts with no optimiser state; the others keep it
    assert [s["momentum_buffers"] > 0 for s in seen] == [False, True, False, True]
    same = [torch.equal(a, b) for a, b in zip(seen[0]["encoder_before"], seen[2]["encoder_before"])]
    assert all(same)  # the two decoder-only steps left the encoder alone
    assert not unchanged(net.encoder, seen[2]["encoder_before"])
    assert "stage 3/4 'warmup_all'" in caplog.text and "stops after 4 of the 16 iterations" in caplog.text


def hand_built():
    return Schedule(
        "hand",
        (
            Stage("a", 4, "decoder", 1e-4, 1e-3, "linear"),
            Stage("b", 4, "all", 2e-4, 1e-3, "linear", fresh_optimizer=True),
            Stage("c", 4, "all", 1e-3, 0.0, "poly"),
        ),
    )


@pytest.mark.parametrize(
    "resume_at, encoder_trains, keeps_state",
    [(2, False, True), (4, True, False), (5, True, True), (9, True, True)],
)
def test_resume_derives_stage_state_from_the_iteration(resume_at, encoder_trains, keeps_state):
    net = resenc_unet("tiny")
    optimizer = sgd(net)
    schedule = hand_built()
    # an optimiser state as loaded from a checkpoint
    optimizer.state[net.encoder.stem.convs[0].conv.weight]["momentum_buffer"] = torch.ones(1)
    set_trainable(net, "all" if not encoder_trains else "decoder")  # the opposite of what the stage needs
    seen = {}

    def process(engine, batch):
        seen.setdefault("lr", optimizer.param_groups[0]["lr"])
        seen.setdefault("state", len(optimizer.state))

    engine = Engine(process)
    ScheduleHandler(schedule, net, optimizer).attach(engine)

    @engine.on(Events.STARTED)
    def record_started(engine):
        seen["started_trains"] = net.encoder.stages[0].blocks[0].conv1.conv.weight.requires_grad
        seen["started_lr"] = optimizer.param_groups[0]["lr"]

    engine.load_state_dict({"iteration": resume_at, "epoch_length": 2, "max_epochs": 6})
    engine.run([0, 1])
    assert engine.state.iteration == 12
    assert seen["started_trains"] is encoder_trains
    assert seen["started_lr"] == pytest.approx(schedule.lr_at(resume_at))
    assert seen["lr"] == pytest.approx(schedule.lr_at(resume_at))
    assert (seen["state"] == 1) is keeps_state


def test_handler_refuses_a_run_longer_than_the_schedule():
    net = resenc_unet("tiny")
    optimizer = sgd(net)
    engine = Engine(lambda engine, batch: None)
    ScheduleHandler(build_schedule("default", epochs=2, iterations_per_epoch=2), net, optimizer).attach(engine)
    with pytest.raises(ValueError, match="covers 4"):
        engine.run([0, 1], max_epochs=3)
