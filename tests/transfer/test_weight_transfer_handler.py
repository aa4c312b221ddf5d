"""WeightTransfer: pre-trained weights copied at the trainer's STARTED, never over a resumed run's own weights."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events
from transfer_cases import ENCODER_PREFIXES, N_ENCODER, assert_equal, assert_fresh, randomise, save, tiny

from custom_nets.engine import ResumableCheckpoint
from custom_nets.engine.weight_transfer import WeightTransfer


def _snapshot(network):
    return {k: v.clone() for k, v in network.state_dict().items()}


def _engine(network, handlers, max_epochs=2, epoch_length=2):
    """An engine that takes one SGD step per iteration on ``network`` (so a checkpoint holds trained weights)."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)

    def step(engine, batch):
        optimizer.zero_grad()
        network(torch.randn(1, 1, 16, 16, 16))[0].mean().backward()
        optimizer.step()

    engine = Engine(step)
    for handler in handlers(network, optimizer):
        handler.attach(engine)
    return engine, optimizer


def test_weights_are_copied_when_training_starts_not_when_the_config_is_read(tmp_path, caplog):
    pretrained = randomise(tiny())
    path = save(pretrained.state_dict(), tmp_path, "model.pt")
    network = tiny(seed=3)
    fresh = _snapshot(network)
    transfer = WeightTransfer(network, path)
    assert transfer.replicates_stem is False and len(transfer.report.loaded) == N_ENCODER  # read and checked...
    assert_fresh(network, fresh, ("",))  # ...but nothing copied yet
    engine = Engine(lambda engine, batch: None)
    transfer.attach(engine)
    seen = {}

    @engine.on(Events.STARTED)
    def after_transfer(engine):
        seen["stem"] = network.encoder.stem.convs[0].conv.weight.detach().clone()

    with caplog.at_level(logging.INFO, logger="custom_nets.transfer"):
        engine.run([0], max_epochs=1)
        assert transfer.load() is transfer.report  # a second load copies nothing and logs nothing
    stem = "encoder.stem.convs.0.conv.weight"
    torch.testing.assert_close(seen["stem"], pretrained.state_dict()[stem], rtol=0, atol=0)
    assert_equal(network, pretrained.state_dict(), ENCODER_PREFIXES)
    assert_fresh(network, fresh, ("decoder.stages.", "decoder.transpconvs.", "decoder.seg_layers."))
    assert caplog.text.count("Loaded 61 tensors (encoder)") == 1


@pytest.mark.parametrize("transfer_first", [True, False], ids=["transfer_first", "resume_first"])
def test_a_resumed_run_continues_from_its_own_checkpoint(tmp_path, caplog, transfer_first):
    pretrained = randomise(tiny())
    path = save(pretrained.state_dict(), tmp_path, "model.pt")
    # the first run: 2 of its 4 steps from the pre-trained weights, then it stops (a crash after the checkpoint)
    def first_handlers(net, opt):
        return [WeightTransfer(net, path), ResumableCheckpoint(tmp_path / "ckpt", {"network": net, "optimizer": opt}, 2)]

    engine, _ = _engine(tiny(seed=3), first_handlers)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
    engine.run([0, 1], max_epochs=2)
    saved = torch.load(tmp_path / "ckpt" / "checkpoint_iter000000002.pt", weights_only=True)
    key = "encoder.stages.1.blocks.0.conv1.conv.weight"
    assert not torch.equal(saved["network"][key], pretrained.state_dict()[key])  # the run trained the encoder

    # the same command again: the network at the start of the resumed run is the checkpoint's, bit for bit
    second = tiny(seed=4)

    def handlers(net, opt):
        transfer = WeightTransfer(net, path)
        resume = ResumableCheckpoint(tmp_path / "ckpt", {"network": net, "optimizer": opt}, interval=2)
        return [transfer, resume] if transfer_first else [resume, transfer]

    engine, _ = _engine(second, handlers)
    seen = {}

    @engine.on(Events.STARTED)
    def after_start(engine):
        seen["iteration"], seen["state"] = engine.state.iteration, _snapshot(second)

    with caplog.at_level(logging.INFO, logger="custom_nets"):
        engine.run([0, 1], max_epochs=2)
    assert seen["iteration"] == 2
    for name, value in saved["network"].items():
        torch.testing.assert_close(seen["state"][name], value, rtol=0, atol=0, msg=name)
    skipped = "not loading the pre-trained weights of" in caplog.text
    assert skipped is (not transfer_first)  # resumed before the transfer: it copies nothing at all


def test_without_a_checkpoint_it_does_nothing():
    network = tiny()
    fresh = _snapshot(network)
    transfer = WeightTransfer(network, None)
    engine = Engine(lambda engine, batch: None)
    transfer.attach(engine)
    engine.run([0], max_epochs=1)
    assert transfer.replicates_stem is False and transfer.report is None and transfer.load() is None
    assert_fresh(network, fresh, ("",))


def test_replicated_stem_is_known_before_the_copy(tmp_path):
    path = save(randomise(tiny()).state_dict(), tmp_path, "model.pt")  # 1 input channel
    network = tiny(seed=3, in_channels=2)
    fresh = _snapshot(network)
    assert WeightTransfer(network, path).replicates_stem is True
    assert_fresh(network, fresh, ("",))


def test_a_checkpoint_that_does_not_fit_stops_before_the_run(tmp_path):
    from custom_nets.nets import resenc_unet

    path = save(randomise(tiny()).state_dict(), tmp_path, "model.pt")
    network = resenc_unet("demo")
    fresh = _snapshot(network)
    with pytest.raises(ValueError, match=r"The checkpoint is preset 'tiny'.*the network is preset 'demo'"):
        WeightTransfer(network, path)
    assert_fresh(network, fresh, ("",))
