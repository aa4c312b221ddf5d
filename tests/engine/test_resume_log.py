"""A fresh run logs a start, not a resume; a real resume says where it continues from."""

import logging

import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer

from custom_nets.engine import ResumableCheckpoint


def _trainer(save_dir, max_epochs):
    torch.manual_seed(0)
    network = torch.nn.Linear(2, 1)
    data = [{"image": torch.ones(1, 2), "label": torch.zeros(1, 1)}] * 2
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=max_epochs, train_data_loader=data, network=network,
        optimizer=optimizer, loss_function=torch.nn.MSELoss(), decollate=False,
    )
    ResumableCheckpoint(save_dir, {"network": network, "optimizer": optimizer}, interval=2).attach(trainer)
    return trainer, network


def test_fresh_run_logs_no_resume_and_a_real_resume_names_the_checkpoint(tmp_path, caplog):
    trainer, _ = _trainer(tmp_path, max_epochs=1)
    with caplog.at_level(logging.INFO):
        trainer.run()
    fresh = [r.getMessage() for r in caplog.records]
    assert trainer.state.iteration == 2
    assert not [m for m in fresh if "resuming" in m]  # MONAI engines alone log "Engine run resuming from iteration 0"
    assert f"no checkpoint in {tmp_path}: starting from iteration 0" in fresh

    caplog.clear()
    trainer, _ = _trainer(tmp_path, max_epochs=2)
    with caplog.at_level(logging.INFO):
        trainer.run()
    assert trainer.state.iteration == 4
    resumes = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    assert resumes == [f"resuming from {tmp_path / 'checkpoint_iter000000002.pt'} at iteration 2 (epoch 1 of 2)"]


def test_evaluators_of_the_same_run_log_no_resume_either(tmp_path, caplog):
    trainer, network = _trainer(tmp_path, max_epochs=1)  # attaching the checkpoint covers every MONAI engine class
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=[{"image": torch.ones(1, 2), "label": torch.zeros(1, 1)}],
        network=network, decollate=False,
    )
    with caplog.at_level(logging.INFO):
        evaluator.run(global_epoch=1)
        evaluator.run(global_epoch=2)
    assert evaluator.state.iteration == 1
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "resuming" in m]
    assert sum(m.startswith("Engine run ") and "Time taken" in m for m in messages) == 2  # "finished"/"complete"


def test_inference_evaluators_log_no_resume_with_quiet_fresh_start(caplog):
    """The inference and evaluation bundles resume nothing: QuietFreshStart drops Ignite's resume line there."""
    from custom_nets.engine import QuietFreshStart
    from custom_nets.engine.checkpoints import _RESUME_FILTER

    for name in list(logging.root.manager.loggerDict):  # earlier tests may have installed the filter already
        if name.startswith("ignite."):
            logging.getLogger(name).removeFilter(_RESUME_FILTER)

    def run(handlers):
        evaluator = SupervisedEvaluator(
            device=torch.device("cpu"), val_data_loader=[{"image": torch.ones(1, 2), "label": torch.zeros(1, 1)}],
            network=torch.nn.Linear(2, 1), decollate=False, val_handlers=handlers,
        )
        caplog.clear()
        with caplog.at_level(logging.INFO):
            evaluator.run()
        return [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]

    assert run([]) == ["Engine run resuming from iteration 0, epoch 0 until 1 epochs"]  # MONAI alone
    assert run([QuietFreshStart()]) == []
