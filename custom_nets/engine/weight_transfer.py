"""Pre-trained weights copied into the network when fine-tuning starts, as a handler of the trainer.

MONAI's bundles fine-tune through a ``CheckpointLoader`` handler; ``WeightTransfer`` does the same for the
pre-trained ResEnc checkpoints of ``custom_nets.transfer`` (every format it reads, the stem replicated over
several input channels, a ``LoadReport`` logged at INFO).

When it works, in the fine-tuning bundle (``train#handlers``, listed first):

1. when the config builds it, it reads the checkpoint and matches it to the network without copying anything,
   so that ``replicates_stem`` is known to ``ScheduleHandler``. A checkpoint that does not fit stops the run
   here, with an error in config key ``weight_transfer``.
2. ``Events.STARTED``: the weights are copied into the network before ``ResumableCheckpoint`` loads a resumed
   run's network and optimiser, and before ``ScheduleHandler`` freezes anything for a decoder-only stage.
   A resumed run therefore continues from its own checkpoint, never from the pre-trained weights. If a handler
   listed earlier has already resumed the trainer (iteration > 0), nothing is copied at all.
"""

from __future__ import annotations

import logging
import os

from ignite.engine import Engine, Events
from torch import nn

from custom_nets.transfer import LoadReport, TransferPlan, plan_transfer

__all__ = ["WeightTransfer"]

logger = logging.getLogger(__name__)


class WeightTransfer:
    """Load pre-trained stem + encoder (+ decoder) weights into ``network`` at the trainer's ``STARTED`` event.

    Args:
        network: the network being fine-tuned (a ``ResEncUNet``), possibly wrapped by DDP or torch.compile.
        checkpoint: any file ``custom_nets.transfer.read_checkpoint`` reads; None trains from scratch (the
            handler then does nothing).
        scope: "encoder" (the reference) or "encoder+decoder"; the segmentation head is always new.
            Defaults to "encoder".
        strict_encoder: raise when a stem/encoder tensor does not load (see ``load_pretrained``). Defaults to True.

    Raises:
        ValueError: the checkpoint cannot be read or does not fit the network (``plan_transfer``'s messages).
    """

    def __init__(
        self,
        network: nn.Module,
        checkpoint: str | os.PathLike | None,
        scope: str = "encoder",
        strict_encoder: bool = True,
    ) -> None:
        self.network = network
        self.checkpoint = checkpoint
        self.scope = scope
        self.strict_encoder = bool(strict_encoder)
        self._plan: TransferPlan | None = None
        if checkpoint is not None:
            self._plan = plan_transfer(network, checkpoint, scope=scope, strict_encoder=self.strict_encoder)

    @property
    def replicates_stem(self) -> bool:
        """True when the stem conv is replicated over more input channels than in pre-training; then it keeps
        training in decoder-only stages (``ScheduleHandler(stem_first_conv_trainable=...)``)."""
        return self._plan is not None and self._plan.report.replicated_stem

    @property
    def report(self) -> LoadReport | None:
        """What was (or will be) loaded, skipped and left untouched; None without a checkpoint."""
        return None if self._plan is None else self._plan.report

    def load(self) -> LoadReport | None:
        """Copy the weights now (once; later calls return the same report) and log the report at INFO."""
        return None if self._plan is None else self._plan.apply()

    def attach(self, engine: Engine) -> None:
        """Register ``started`` on ``engine``'s ``STARTED`` event (attach before ``ResumableCheckpoint``)."""
        engine.add_event_handler(Events.STARTED, self.started)

    def started(self, engine: Engine) -> None:
        """Copy the pre-trained weights, unless the trainer already resumed from its own checkpoint."""
        if self._plan is None:
            return
        if engine.state.iteration > 0:
            logger.info(
                "not loading the pre-trained weights of %s: the run resumed at iteration %d with its own weights",
                self.checkpoint, engine.state.iteration,
            )
            self._plan.discard()
            return
        self.load()
