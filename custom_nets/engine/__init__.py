"""Training engine pieces plugged into MONAI's ``SupervisedTrainer``: train steps, checkpoints, handlers, and the
process set-up of a run (seeds, cuDNN, data-loading workers)."""

from custom_nets.engine.checkpoints import (
    QuietFreshStart,
    ResumableCheckpoint,
    atomic_torch_save,
    latest_checkpoint,
    unwrap,
)
from custom_nets.distributed import is_main_process, rank_and_world
from custom_nets.engine.freezing import set_trainable
from custom_nets.engine.schedule_handler import ScheduleHandler
from custom_nets.engine.schedules import SCHEDULES, Schedule, Stage, build_schedule, default_peak_lr, default_schedule
from custom_nets.engine.handlers import (
    ExportWeights,
    GradientClipping,
    PretextPreview,
    ProgressBar,
    RunSummary,
    StopAtMaxSteps,
    TensorBoardScalars,
    WriteJSON,
)
from custom_nets.engine.iterations import PretextIteration, network_inputs, step_seed
from custom_nets.engine.data_stream import SeedDataStream, data_stream_seeds
from custom_nets.engine.runtime import default_num_workers, seed_run
from custom_nets.engine.throughput import THROUGHPUT_KEYS, Throughput

__all__ = [
    "QuietFreshStart",
    "ResumableCheckpoint",
    "atomic_torch_save",
    "latest_checkpoint",
    "unwrap",
    "is_main_process",
    "rank_and_world",
    "ExportWeights",
    "GradientClipping",
    "ProgressBar",
    "RunSummary",
    "StopAtMaxSteps",
    "TensorBoardScalars",
    "WriteJSON",
    "PretextIteration",
    "PretextPreview",
    "SCHEDULES",
    "Schedule",
    "ScheduleHandler",
    "Stage",
    "build_schedule",
    "default_peak_lr",
    "default_schedule",
    "set_trainable",
    "network_inputs",
    "step_seed",
    "SeedDataStream",
    "data_stream_seeds",
    "default_num_workers",
    "seed_run",
    "THROUGHPUT_KEYS",
    "Throughput",
]
