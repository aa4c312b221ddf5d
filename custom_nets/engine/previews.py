"""Pictures of reconstructions: input, masked input, reconstruction and target on three orthogonal slices."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["PANELS", "preview_grid", "save_png"]

PANELS = ("input", "masked input", "reconstruction", "target (masked voxels)")


def _to_uint8(slices: list[np.ndarray], low: float, high: float) -> list[np.ndarray]:
    scale = 255.0 / max(high - low, 1e-6)
    return [np.clip((s - low) * scale, 0, 255).astype(np.uint8) for s in slices]


def preview_grid(
    image: torch.Tensor, mask: torch.Tensor, reconstruction: torch.Tensor, gap: int = 2, min_size: int = 128
) -> np.ndarray:
    """A (rows, cols) uint8 picture of one sample.

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

    def volume(t: torch.Tensor) -> np.ndarray:
        t = t.detach().float().cpu()
        return (t[0] if t.ndim == 4 else t).numpy()

    img, msk, rec = volume(image), volume(mask), volume(reconstruction)
    if not img.shape == msk.shape == rec.shape:
        raise ValueError(f"image {img.shape}, mask {msk.shape} and reconstruction {rec.shape} must match.")
    panels = (img, img * msk, rec, img * (1.0 - msk))
    low, high = np.percentile(img, [1, 99])
    centre = [s // 2 for s in img.shape]
    rows = []
    for axis in range(3):
        slices = [np.take(p, centre[axis], axis=axis) for p in panels]
        slices = [np.rot90(s) for s in _to_uint8(slices, low, high)]
        zoom = max(1, -(-min_size // max(slices[0].shape)))
        slices = [np.kron(s, np.ones((zoom, zoom), np.uint8)) for s in slices]
        height = slices[0].shape[0]
        spacer = np.zeros((height, gap), np.uint8)
        row = np.concatenate([x for s in slices for x in (s, spacer)][:-1], axis=1)
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, gap), (0, width - r.shape[1]))) for r in rows]
    picture = np.concatenate(rows, axis=0)
    return picture[: picture.shape[0] - gap]


def save_png(picture: np.ndarray, path) -> None:
    """Write a uint8 grey picture as PNG (Pillow)."""
    from PIL import Image

    Image.fromarray(picture).save(path)
