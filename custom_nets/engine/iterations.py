"""Train-step functions plugged into ``monai.engines.SupervisedTrainer(iteration_update=...)``.

MONAI's default step computes ``loss(pred, label)``; masked image modelling needs a mask drawn per step that
reaches both the network and the loss, so the step is replaced, not the trainer. It fires the same
``IterationEvents`` in the same order as MONAI's, so every MONAI/Ignite handler works unchanged.
"""

from __future__ import annotations

import contextlib

import torch
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from custom_nets.distributed import rank_and_world
from custom_nets.masking import BlockMaskGenerator

__all__ = ["MaskedImageModelingIteration", "step_seed"]

MASK = "mask"
ANONYMIZATION_MASK = "anonymization_mask"


def _plain(data) -> torch.Tensor:
    """A torch.Tensor without MONAI metadata (``MetaTensor.as_tensor``), sharing memory."""
    return data.as_tensor() if isinstance(data, MetaTensor) else torch.as_tensor(data)


def step_seed(seed: int, iteration: int, rank: int = 0, world_size: int = 1) -> int:
    """A distinct, reproducible seed per (run seed, global iteration, rank); resumed runs draw the same masks."""
    return (int(seed) * 1_000_003 + int(iteration) * max(int(world_size), 1) + int(rank)) % (2**63 - 1)


class MaskedImageModelingIteration:
    """One S3D / MAE train step: draw a mask, reconstruct, masked loss, backward, clip, optimiser step.

    The network is called through ``engine.inferer`` as ``network(image, mask)``; the loss as
    ``loss_function(pred, image, mask, anonymization_mask)``. ``engine.state.output`` holds ``image``, ``mask``,
    ``pred`` (detached after backward) and ``loss`` for handlers (TensorBoard, previews).

    Args:
        mask_generator: draws (B, 1, *spatial) masks, 1 = visible.
        image_key: batch key of the (B, C, *spatial) patches. Defaults to "image".
        grad_clip_norm: clip the global gradient norm to this value (the paper uses 12); None disables.
        amp: run forward and loss under bf16 autocast when the device is a GPU (ignored on CPU).
        seed: base seed for the masks; combined with the global iteration and the DDP rank.
        channels_last: hand the patches to the network in ``torch.channels_last_3d`` memory format (use with a
            network converted to that format). Defaults to False.
    """

    def __init__(
        self,
        mask_generator: BlockMaskGenerator,
        image_key: str = Keys.IMAGE,
        grad_clip_norm: float | None = 12.0,
        amp: bool = True,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        self.mask_generator = mask_generator
        self.image_key = image_key
        self.grad_clip_norm = grad_clip_norm
        self.amp = amp
        self.seed = seed
        self.channels_last = channels_last

    def _autocast(self, device: torch.device):
        if self.amp and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, engine, batchdata: dict) -> dict:
        if batchdata is None or self.image_key not in batchdata:
            raise ValueError(f"the batch must be a dict with the key '{self.image_key}', got {type(batchdata).__name__}.")
        device = torch.device(engine.state.device)
        # plain tensors: MONAI's MetaTensor would make torch.compile break the graph at every operation
        image = _plain(batchdata[self.image_key]).to(device, non_blocking=engine.non_blocking)
        anonymization = batchdata.get(ANONYMIZATION_MASK)
        if anonymization is not None:
            anonymization = _plain(anonymization).to(device, non_blocking=engine.non_blocking)
        rank, world = rank_and_world()
        mask = self.mask_generator(
            image.shape[0], image.shape[2:], device, seed=step_seed(self.seed, engine.state.iteration, rank, world)
        )
        if self.channels_last and image.ndim == 5:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        engine.state.output = {Keys.IMAGE: image, MASK: mask}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with self._autocast(device):
            pred = engine.inferer(image, engine.network, mask)
            engine.state.output[Keys.PRED] = pred
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            loss = engine.loss_function(pred, image, mask, anonymization)
            engine.state.output[Keys.LOSS] = loss
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if self.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.grad_clip_norm)
        engine.optimizer.step()
        engine.state.output[Keys.PRED] = pred.detach()
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
