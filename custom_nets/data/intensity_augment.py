"""nnU-Net's intensity augmentation with MONAI transforms: each image channel augmented on its own.

nnU-Net (Isensee et al., Nature Methods 2021) augments a multi-modal patch channel by channel: a transform is
applied to a sample with probability ``p``, and then to each of its channels with probability ``p_per_channel``,
with its own random parameters per channel (a T1 and a FLAIR channel get different gammas). MONAI's random
intensity transforms draw one set of parameters for the whole (C, *spatial) array. Two small pieces close the gap:

- :class:`RandChannelwised` runs any MONAI random intensity transform per channel, with nnU-Net's two
  probabilities;
- :class:`RandGamma` is MONAI's ``RandAdjustContrast`` (gamma; optional inversion; mean and std retained) with
  gamma drawn the way nnU-Net draws it: below or above 1 with equal odds, then uniformly on that side
  (``[0.7, 1)`` or ``[1, 1.5]``), rather than uniformly over ``[0.7, 1.5]``.

The fine-tuning bundle's ``train#preprocessing`` lists the full recipe with its probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandAdjustContrast, RandomizableTransform
from monai.utils import MAX_SEED

__all__ = ["RandChannelwised", "RandGamma", "sample_around_one"]


def sample_around_one(rng, low: float, high: float) -> float:
    """nnU-Net's draw of a contrast-like factor in [low, high]: with odds 1/2 (and ``low < 1``) uniform in
    ``[low, 1)``, otherwise uniform in ``[max(low, 1), high]``.

    Args:
        rng: a ``numpy.random.RandomState`` (a MONAI transform's ``R``).
        low, high: the range, ``low <= high``.
    """
    if rng.uniform() < 0.5 and low < 1.0:
        return float(rng.uniform(low, 1.0))
    return float(rng.uniform(max(low, 1.0), high))


class RandGamma(RandAdjustContrast):
    """MONAI's ``RandAdjustContrast`` with nnU-Net's draw of gamma (:func:`sample_around_one`).

    ``x -> ((x - min) / (max - min)) ** gamma * (max - min) + min``; with ``invert_image`` the image is negated
    before and after (nnU-Net's "inverted gamma"), with ``retain_stats`` its mean and std are restored.

    Args:
        prob: probability per call. Defaults to 0.1.
        gamma: (low, high) range of gamma. Defaults to nnU-Net's (0.7, 1.5).
        invert_image: negate before and after. Defaults to False.
        retain_stats: restore mean and standard deviation. Defaults to True.
    """

    def __init__(
        self, prob: float = 0.1, gamma=(0.7, 1.5), invert_image: bool = False, retain_stats: bool = True
    ) -> None:
        super().__init__(prob=prob, gamma=gamma, invert_image=invert_image, retain_stats=retain_stats)

    def randomize(self, data=None) -> None:
        RandomizableTransform.randomize(self, None)
        if self._do_transform:
            self.gamma_value = sample_around_one(self.R, *self.gamma)


class RandChannelwised(RandomizableTransform, MapTransform):
    """Apply a MONAI random intensity transform to each channel separately, with nnU-Net's probabilities.

    With probability ``prob`` per sample; then each channel with probability ``p_per_channel``, each with its own
    draw of ``transform``'s parameters (``transform`` is called on the (1, *spatial) channel and draws anew on
    every call, so its own ``prob`` must be 1).

    Args:
        keys: the image keys (not label maps).
        transform: a MONAI random array transform, e.g. ``RandGaussianSmooth(prob=1.0, ...)``.
        prob: probability per sample. Defaults to 1.
        p_per_channel: probability per channel of an augmented sample. Defaults to 1.
        allow_missing_keys: skip absent keys. Defaults to False.

    Raises:
        ValueError: a probability outside [0, 1], or ``transform.prob`` not 1.
    """

    def __init__(
        self,
        keys: KeysCollection,
        transform: RandomizableTransform,
        prob: float = 1.0,
        p_per_channel: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0.0 <= p_per_channel <= 1.0:
            raise ValueError(f"p_per_channel must be a probability in [0, 1], got {p_per_channel}")
        if getattr(transform, "prob", 1.0) != 1.0:
            raise ValueError(
                f"{type(transform).__name__} has prob={transform.prob}: set prob: 1.0 on it and put the "
                "probability on RandChannelwised (prob per sample, p_per_channel per channel)"
            )
        self.transform = transform
        self.p_per_channel = float(p_per_channel)
        self._channels: list[bool] = []

    def set_random_state(self, seed: int | None = None, state=None) -> RandChannelwised:
        super().set_random_state(seed, state)
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=int(self.R.randint(MAX_SEED)))
        return self

    def randomize(self, num_channels: int) -> None:
        super().randomize(None)
        self._channels = [bool(u < self.p_per_channel) for u in self.R.uniform(size=num_channels)]

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        key = self.first_key(d)
        if key == []:
            return d
        self.randomize(int(d[key].shape[0]))
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = d[key]
            channels = [
                self.transform(image[c : c + 1]) if apply else image[c : c + 1]
                for c, apply in enumerate(self._channels[: image.shape[0]])
            ]
            d[key] = torch.cat([torch.as_tensor(c) for c in channels], dim=0)
        return d
