"""The train step of every pre-training method, plugged into ``monai.engines.SupervisedTrainer(iteration_update=...)``.

MONAI's default step computes ``loss(pred, label)``; self-supervised steps need something drawn per step (a
mask, augmented views) that reaches both the network and the loss, so the step is replaced, not the trainer.
``PretextIteration`` fires the same ``IterationEvents`` in the same order as MONAI's, so every MONAI/Ignite
handler works unchanged. S3D, the dense MAE and every baseline run through it; what makes a method is its
pretext transform (``custom_nets.pretext``), its network and its loss.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from custom_nets.distributed import rank_and_world

__all__ = ["PretextIteration", "network_inputs", "step_seed"]

INPUT = "input"
# Batch entries that reach the loss as views when the loader provides them: S3D's anonymisation masks (OpenMind).
BATCH_VIEWS = ("anonymization_mask",)


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


def network_inputs(pretext) -> tuple[str, ...]:
    """The views a pretext hands to the network, in order: its ``network_inputs`` attribute, else ``("input",)``.

    S3D's block masking declares ``("input", "mask")`` (``network(image, mask)``); every other pretext of this
    project feeds the network one tensor. A new method whose network takes more inputs declares them the same way.
    """
    names = tuple(getattr(pretext, "network_inputs", (INPUT,)))
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{type(pretext).__name__}.network_inputs must name the views the network takes, e.g. ('input', 'mask'), "
            f"got {names!r}."
        )
    return names


class PretextIteration(_TrainStep):
    """One train step of any pre-training method: views on the device, forward, loss, backward, clip, step.

    Per iteration::

        image = batch["image"]                                   # (B, C, *spatial) patches from the loader
        generator = torch.Generator(device).manual_seed(step_seed(seed, iteration, rank, world_size))
        views = pretext(image, generator)                        # dict[str, Tensor] with at least "input"
        views.update(anonymization_mask=batch[...])              # when the loader provides it (``batch_views``)
        outputs = network(*[views[k] for k in pretext.network_inputs])   # default ("input",); S3D: input, mask
        loss = loss_function(outputs, views)                     # scalar

    The pretext transform runs on the training device inside the step, so per-voxel work (block masks, intensity
    curves, pixel shuffles, fusing volumes, cutting crops) is done by the GPU and no method is slower than S3D
    because of its data pipeline. Its randomness comes only from ``generator``, seeded by (seed, global iteration,
    rank): a resumed run draws the same masks and views as an uninterrupted one.

    ``engine.state.output`` holds ``image`` (the loader's patches), every view (``input``, ``mask``, targets),
    ``pred`` (the network output, detached after backward) and ``loss``, so handlers (TensorBoard, previews) can
    read them.

    Args:
        pretext: callable ``(image, generator) -> dict[str, Tensor]`` (``custom_nets.pretext``), optionally with a
            ``network_inputs`` attribute (see ``network_inputs``).
        image_key: batch key of the (B, C, *spatial) patches. Defaults to "image".
        grad_clip_norm: clip the global gradient norm to this value (12 as for S3D); None disables.
        amp: bf16 autocast on a GPU (ignored on CPU). Defaults to True.
        seed: base seed of the views; combined with the global iteration and the DDP rank. Defaults to 0.
        channels_last: hand the first network input in ``torch.channels_last_3d`` memory format. Defaults to False.
        batch_views: batch keys copied into the views when present (moved to the device). Defaults to
            ``("anonymization_mask",)``.
    """

    def __init__(
        self,
        pretext,
        image_key: str = Keys.IMAGE,
        grad_clip_norm: float | None = 12.0,
        amp: bool = True,
        seed: int = 0,
        channels_last: bool = False,
        batch_views: Sequence[str] = BATCH_VIEWS,
    ) -> None:
        if not callable(pretext):
            raise ValueError(f"pretext must be a callable (image, generator) -> dict, got {type(pretext).__name__}.")
        super().__init__(image_key, grad_clip_norm, amp, seed, channels_last)
        self.pretext = pretext
        self.network_inputs = network_inputs(pretext)
        self.batch_views = tuple(batch_views)

    def views(self, image: torch.Tensor, iteration: int) -> dict[str, torch.Tensor]:
        """The pretext views of ``image`` at global ``iteration`` (seeded as in training)."""
        rank, world = rank_and_world()
        generator = torch.Generator(device=image.device)
        generator.manual_seed(step_seed(self.seed, iteration, rank, world))
        views = self.pretext(image, generator)
        missing = [k for k in self.network_inputs if not isinstance(views, dict) or k not in views]
        if missing:
            raise ValueError(
                f"the pretext transform {type(self.pretext).__name__} must return a dict with the key(s) "
                f"{', '.join(repr(k) for k in missing)} (network_inputs {list(self.network_inputs)}), got "
                f"{type(views).__name__}{' with keys ' + str(sorted(views)) if isinstance(views, dict) else ''}."
            )
        return views

    def __call__(self, engine, batchdata: dict) -> dict:
        image = self._patches(engine, batchdata)
        with torch.no_grad():
            views = self.views(image, engine.state.iteration)
        for key in self.batch_views:
            if batchdata.get(key) is not None and key not in views:
                views[key] = _plain(batchdata[key]).to(image.device, non_blocking=engine.non_blocking)
        first, *others = (views[k] for k in self.network_inputs)
        first = self._memory_format(first)
        engine.state.output = {Keys.IMAGE: image, **views}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with self._autocast(image.device):
            outputs = engine.inferer(first, engine.network, *others)
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
