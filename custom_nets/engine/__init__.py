"""Training engine pieces plugged into MONAI's ``SupervisedTrainer``: train steps, checkpoints, handlers."""

from custom_nets.engine.checkpoints import ResumableCheckpoint, atomic_torch_save, latest_checkpoint, unwrap
from custom_nets.engine.dist import is_main_process, rank_and_world
from custom_nets.engine.handlers import ExportWeights, ProgressBar, ReconstructionPreview, RunSummary, TensorBoardScalars
from custom_nets.engine.iterations import MaskedImageModelingIteration, step_seed

__all__ = [
    "ResumableCheckpoint",
    "atomic_torch_save",
    "latest_checkpoint",
    "unwrap",
    "is_main_process",
    "rank_and_world",
    "ExportWeights",
    "ProgressBar",
    "ReconstructionPreview",
    "RunSummary",
    "TensorBoardScalars",
    "MaskedImageModelingIteration",
    "step_seed",
]
