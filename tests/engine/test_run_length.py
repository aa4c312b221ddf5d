"""Any max_steps: StopAtMaxSteps ends the last (shorter) epoch at max_steps, also for resumed and finished runs."""

from __future__ import annotations

import pytest
from ignite.engine import Engine, Events

from custom_nets.config import epochs_for
from custom_nets.engine import StopAtMaxSteps


def _engine(max_steps: int, epoch_length: int):
    """A no-op Ignite engine with the handler and a log of (event, iteration) pairs."""
    log = []
    engine = Engine(lambda e, batch: None)
    StopAtMaxSteps(max_steps).attach(engine)
    for event in (Events.ITERATION_COMPLETED, Events.EPOCH_COMPLETED, Events.COMPLETED):
        engine.add_event_handler(event, lambda e, name=event.name: log.append((name, e.state.iteration)))
    return engine, log, {"max_epochs": epochs_for(max_steps, epoch_length), "epoch_length": epoch_length}


def _events(log, name):
    return [i for n, i in log if n == name]


@pytest.mark.parametrize("max_steps, epoch_length", [(5, 2), (7, 3), (4, 40), (4, 2), (1, 250)])
def test_the_run_ends_at_max_steps_with_every_epoch_and_the_run_completed(max_steps, epoch_length):
    engine, log, length = _engine(max_steps, epoch_length)
    engine.run([0] * epoch_length, **length)
    assert _events(log, "ITERATION_COMPLETED") == list(range(1, max_steps + 1))
    # full epochs end at multiples of epoch_length, the last (possibly shorter) one at max_steps
    expected_epochs = list(range(epoch_length, max_steps, epoch_length)) + [max_steps]
    assert _events(log, "EPOCH_COMPLETED") == expected_epochs
    assert _events(log, "COMPLETED") == [max_steps]
    assert engine.state.iteration == max_steps and engine.state.epoch == -(-max_steps // epoch_length)


def test_a_run_resumed_inside_the_short_last_epoch_stops_at_max_steps():
    engine, log, length = _engine(5, 2)
    engine.load_state_dict({"iteration": 2, **length})  # what ResumableCheckpoint restores at STARTED
    engine.run([0] * 2)
    assert _events(log, "ITERATION_COMPLETED") == [3, 4, 5] and _events(log, "COMPLETED") == [5]


def test_a_finished_run_started_again_does_no_step_and_completes():
    engine, log, length = _engine(5, 2)
    engine.load_state_dict({"iteration": 5, **length})
    engine.run([0] * 2)
    assert _events(log, "ITERATION_COMPLETED") == [] and _events(log, "COMPLETED") == [5]


def test_a_run_resumed_beyond_max_steps_says_how_to_continue():
    engine, _, _ = _engine(5, 2)
    engine.load_state_dict({"iteration": 6, "max_epochs": 4, "epoch_length": 2})  # started with max_steps 8
    with pytest.raises(ValueError, match="resumed at iteration 6, beyond max_steps=5: set --max_steps 6 or more"):
        engine.run([0] * 2)


def test_max_steps_below_one_is_refused():
    with pytest.raises(ValueError, match="max_steps must be >= 1, got 0"):
        StopAtMaxSteps(0)
