"""Pictures of reconstructions, and of the outputs of other pretext tasks, on three orthogonal slices."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["PANELS", "slice_grid", "panel_grid", "intensity_window", "preview_grid", "pretext_grid", "save_png"]

PANELS = ("input", "masked input", "reconstruction", "target (masked voxels)")


def _to_uint8(slices: list[np.ndarray], low: float, high: float) -> list[np.ndarray]:
    scale = 255.0 / max(high - low, 1e-6)
    return [np.clip((s - low) * scale, 0, 255).astype(np.uint8) for s in slices]


def _volume(t: torch.Tensor) -> np.ndarray:
    """First channel of a (C, D, H, W) tensor, or a (D, H, W) tensor, as a float numpy array."""
    t = t.detach().float().cpu()
    return (t[0] if t.ndim == 4 else t).numpy()


def slice_grid(panels: Sequence[np.ndarray], gap: int = 2, min_size: int = 128) -> np.ndarray:
    """Lay out display-ready uint8 volumes: one column per panel, rows are the central axial, coronal and sagittal
    slices; small slices are enlarged by an integer factor (nearest neighbour) to about ``min_size`` pixels and
    panels are separated by ``gap`` black pixels.

    Args:
        panels: (D, H, W) grey or (D, H, W, 3) RGB uint8 volumes, all of one shape.

    Returns:
        (rows, cols) or (rows, cols, 3) uint8 picture.
    """
    shape = panels[0].shape
    if any(p.shape != shape for p in panels):
        raise ValueError(f"all panels must have the same shape, got {[p.shape for p in panels]}.")
    channels = shape[3:]  # () grey, (3,) RGB
    rows = []
    for axis in range(3):
        slices = [np.rot90(np.take(p, shape[axis] // 2, axis=axis)) for p in panels]
        zoom = max(1, -(-min_size // max(slices[0].shape[:2])))
        slices = [np.kron(s, np.ones((zoom, zoom) + (1,) * len(channels), np.uint8)) for s in slices]
        spacer = np.zeros((slices[0].shape[0], gap) + channels, np.uint8)
        rows.append(np.concatenate([x for s in slices for x in (s, spacer)][:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, gap), (0, width - r.shape[1])) + ((0, 0),) * len(channels)) for r in rows]
    picture = np.concatenate(rows, axis=0)
    return picture[: picture.shape[0] - gap]


def panel_grid(
    panels: Sequence[np.ndarray], windows: Sequence[tuple[float, float]], gap: int = 2, min_size: int = 128
) -> np.ndarray:
    """A (rows, cols) uint8 picture: one column per (D, H, W) panel, rows are the central axial, coronal and
    sagittal slices; panel i is shown in the intensity window ``windows[i]`` (low, high)."""
    windowed = [_to_uint8([p], *w)[0] for p, w in zip(panels, windows)]
    return slice_grid(windowed, gap=gap, min_size=min_size)


def intensity_window(volume: np.ndarray) -> tuple[float, float]:
    """1st-99th percentile of a volume: the shared window of an image and its reconstruction."""
    low, high = np.percentile(volume, [1, 99])
    return float(low), float(high)


def preview_grid(
    image: torch.Tensor, mask: torch.Tensor, reconstruction: torch.Tensor, gap: int = 2, min_size: int = 128
) -> np.ndarray:
    """A (rows, cols) uint8 picture of one masked-image-modelling sample.

    Rows are the central axial, coronal and sagittal slices; columns are ``PANELS``: the input patch, the masked
    input the network sees (masked voxels black), the raw reconstruction, and the loss target (the input where
    masked, black where visible). All panels share one intensity window (1st-99th percentile of the input), so
    brightness is comparable across them.

    Args:
        image: (C, D, H, W) or (D, H, W) patch; the first channel is shown.
        mask: same spatial size, 1 = visible.
        reconstruction: same spatial size.
        gap: black pixels between panels.
        min_size: small patches are enlarged by an integer factor (nearest neighbour) to about this many pixels.
    """
    img, msk, rec = _volume(image), _volume(mask), _volume(reconstruction)
    if not img.shape == msk.shape == rec.shape:
        raise ValueError(f"image {img.shape}, mask {msk.shape} and reconstruction {rec.shape} must match.")
    panels = (img, img * msk, rec, img * (1.0 - msk))
    window = intensity_window(img)
    return panel_grid(panels, [window] * len(panels), gap=gap, min_size=min_size)


def pretext_grid(
    network_input: torch.Tensor, output=None, target=None, gap: int = 2, min_size: int = 128
) -> tuple[np.ndarray, list[str]]:
    """A picture of one pretext-task sample: network input | network output | target (where they are volumes).

    Intensity outputs (as many channels as the input) share the input's window; class outputs (more channels,
    e.g. Volume Fusion's 5 fusion classes) are shown as their argmax, and an integer target in the same class
    window (in its own range when there is no class output).
    Outputs or targets that are not volumes of the input's size (embeddings, rotation logits) are left out.

    Args:
        network_input: (C, D, H, W) input of one sample.
        output: the network's output for that sample, (K, D, H, W), or None.
        target: the loss target for that sample, (C, D, H, W) or (D, H, W), or None.

    Returns:
        (picture, column names).
    """
    img = _volume(network_input)
    window = intensity_window(img)
    panels, windows, names = [img], [window], ["network input"]
    class_window = None
    if isinstance(output, torch.Tensor) and output.ndim == 4 and tuple(output.shape[1:]) == img.shape:
        if output.shape[0] == network_input.shape[0]:
            panels.append(_volume(output))
            windows.append(window)
            names.append("output")
        else:
            class_window = (0.0, float(output.shape[0] - 1))
            panels.append(output.detach().float().argmax(0).cpu().numpy().astype(np.float32))
            windows.append(class_window)
            names.append("output (argmax)")
    if isinstance(target, torch.Tensor) and target.ndim in (3, 4) and tuple(target.shape[-3:]) == img.shape:
        tgt = _volume(target)
        integer = not torch.is_floating_point(target) or bool(torch.all(target == target.round()))
        own = (float(tgt.min()), float(max(tgt.max(), tgt.min() + 1)))
        windows.append((class_window or own) if integer else window)
        panels.append(tgt)
        names.append("target")
    return panel_grid(panels, windows, gap=gap, min_size=min_size), names


def save_png(picture: np.ndarray, path) -> None:
    """Write a uint8 grey picture as PNG (Pillow)."""
    from PIL import Image

    Image.fromarray(picture).save(path)
