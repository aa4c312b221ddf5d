"""Train-step functions plugged into ``monai.engines.SupervisedTrainer(iteration_update=...)``.

MONAI's default step computes ``loss(pred, label)``; self-supervised steps need something drawn per step (a
mask, augmented views) that reaches both the network and the loss, so the step is replaced, not the trainer.
Both steps fire the same ``IterationEvents`` in the same order as MONAI's, so every MONAI/Ignite handler works
unchanged.

- ``MaskedImageModelingIteration``: S3D and dense MAE, ``network(image, mask)`` and a masked loss.
- ``PretextIteration``: every other pretext task (baselines): a pretext transform turns the batch into views
  on the device, ``network(views["input"])``, ``loss(outputs, views)``.
"""

from __future__ import annotations

import contextlib

import torch
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from custom_nets.distributed import rank_and_world
from custom_nets.masking import BlockMaskGenerator

__all__ = ["MaskedImageModelingIteration", "PretextIteration", "step_seed"]

MASK = "mask"
ANONYMIZATION_MASK = "anonymization_mask"


def _plain(data) -> torch.Tensor:
    """A torch.Tensor without MONAI metadata (``MetaTensor.as_tensor``), sharing memory."""
    return data.as_tensor() if isinstance(data, MetaTensor) else torch.as_tensor(data)


def step_seed(seed: int, iteration: int, rank: int = 0, world_size: int = 1) -> int:
    """A distinct, reproducible seed per (run seed, global iteration, rank); resumed runs draw the same masks."""
    return (int(seed) * 1_000_003 + int(iteration) * max(int(world_size), 1) + int(rank)) % (2**63 - 1)


def _autocast(amp: bool, device: torch.device):
    """bf16 autocast on a GPU when ``amp``; nothing on a CPU (bf16 convolutions are slow there)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _backward_and_step(engine, loss: torch.Tensor, grad_clip_norm: float | None) -> None:
    """Backward, optional global-norm clipping, optimiser step (with MONAI's BACKWARD_COMPLETED in between)."""
    loss.backward()
    engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
    if grad_clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), grad_clip_norm)
    engine.optimizer.step()


def _detached(value):
    """``value`` with every tensor detached (tensors, and dicts / lists / tuples of tensors)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    return value


class _TrainStep:
    """What every train step shares: where the patches are, clipping, bf16 autocast, the seed, memory format."""

    def __init__(
        self, image_key: str, grad_clip_norm: float | None, amp: bool, seed: int, channels_last: bool
    ) -> None:
        self.image_key = image_key
        self.grad_clip_norm = grad_clip_norm
        self.amp = amp
        self.seed = seed
        self.channels_last = channels_last

    def _autocast(self, device: torch.device):
        return _autocast(self.amp, device)

    def _patches(self, engine, batchdata: dict) -> torch.Tensor:
        """The batch's patches as a plain tensor on the engine's device (MONAI's MetaTensor would make
        torch.compile break the graph at every operation)."""
        if batchdata is None or self.image_key not in batchdata:
            raise ValueError(f"the batch must be a dict with the key '{self.image_key}', got {type(batchdata).__name__}.")
        return _plain(batchdata[self.image_key]).to(torch.device(engine.state.device), non_blocking=engine.non_blocking)

    def _memory_format(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.channels_last and tensor.ndim == 5:
            return tensor.contiguous(memory_format=torch.channels_last_3d)
        return tensor


class MaskedImageModelingIteration(_TrainStep):
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
        super().__init__(image_key, grad_clip_norm, amp, seed, channels_last)
        self.mask_generator = mask_generator

    def __call__(self, engine, batchdata: dict) -> dict:
        image = self._patches(engine, batchdata)
        device = image.device
        anonymization = batchdata.get(ANONYMIZATION_MASK)
        if anonymization is not None:
            anonymization = _plain(anonymization).to(device, non_blocking=engine.non_blocking)
        rank, world = rank_and_world()
        mask = self.mask_generator(
            image.shape[0], image.shape[2:], device, seed=step_seed(self.seed, engine.state.iteration, rank, world)
        )
        image = self._memory_format(image)
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
        _backward_and_step(engine, loss, self.grad_clip_norm)
        engine.state.output[Keys.PRED] = pred.detach()
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class PretextIteration(_TrainStep):
    """One train step of a pretext task: views on the device, forward, loss, backward, clip, optimiser step.

    Per iteration::

        image = batch["image"]                                   # (B, C, *spatial) patches from the loader
        generator = torch.Generator(device).manual_seed(step_seed(seed, iteration, rank, world_size))
        views = pretext(image, generator)                        # dict[str, Tensor] with at least "input"
        outputs = network(views["input"])                        # Tensor or dict[str, Tensor]
        loss = loss_function(outputs, views)                     # scalar

    The pretext transform runs on the training device inside the step, so per-voxel work (intensity curves,
    pixel shuffles, fusing volumes, cutting crops) is done by the GPU and no method is slower than S3D because
    of its data pipeline. Its randomness comes only from ``generator``, seeded by (seed, global iteration,
    rank): a resumed run draws the same views as an uninterrupted one.

    ``engine.state.output`` holds ``image`` (the loader's patches), ``input`` (the network input), ``pred`` (the
    network output, detached after backward), the pretext's other views (targets) and ``loss``, so handlers
    (TensorBoard, previews) can read them.

    Args:
        pretext: callable ``(image, generator) -> dict[str, Tensor]`` (``custom_nets.pretext``).
        image_key: batch key of the (B, C, *spatial) patches. Defaults to "image".
        grad_clip_norm: clip the global gradient norm to this value (12 as for S3D); None disables.
        amp: bf16 autocast on a GPU (ignored on CPU). Defaults to True.
        seed: base seed of the views; combined with the global iteration and the DDP rank. Defaults to 0.
        channels_last: hand the network input in ``torch.channels_last_3d`` memory format. Defaults to False.
    """

    def __init__(
        self,
        pretext,
        image_key: str = Keys.IMAGE,
        grad_clip_norm: float | None = 12.0,
        amp: bool = True,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        if not callable(pretext):
            raise ValueError(f"pretext must be a callable (image, generator) -> dict, got {type(pretext).__name__}.")
        super().__init__(image_key, grad_clip_norm, amp, seed, channels_last)
        self.pretext = pretext

    def views(self, image: torch.Tensor, iteration: int) -> dict[str, torch.Tensor]:
        """The pretext views of ``image`` at global ``iteration`` (seeded as in training)."""
        rank, world = rank_and_world()
        generator = torch.Generator(device=image.device)
        generator.manual_seed(step_seed(self.seed, iteration, rank, world))
        views = self.pretext(image, generator)
        if not isinstance(views, dict) or "input" not in views:
            raise ValueError(
                f"the pretext transform {type(self.pretext).__name__} must return a dict with the key 'input', "
                f"got {type(views).__name__}{' with keys ' + str(sorted(views)) if isinstance(views, dict) else ''}."
            )
        return views

    def __call__(self, engine, batchdata: dict) -> dict:
        image = self._patches(engine, batchdata)
        with torch.no_grad():
            views = self.views(image, engine.state.iteration)
        network_input = self._memory_format(views["input"])
        engine.state.output = {Keys.IMAGE: image, **views}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with self._autocast(image.device):
            outputs = engine.inferer(network_input, engine.network)
            engine.state.output[Keys.PRED] = outputs
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            loss = engine.loss_function(outputs, views)
            engine.state.output[Keys.LOSS] = loss
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
        _backward_and_step(engine, loss, self.grad_clip_norm)
        engine.state.output[Keys.PRED] = _detached(outputs)
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
