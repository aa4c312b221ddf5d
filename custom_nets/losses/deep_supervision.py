"""nnU-Net's deep-supervision weights, for MONAI's ``DeepSupervisionLoss(loss, weights=...)``.

With deep supervision the U-Net returns one output per decoder stage, finest first (full resolution, 1/2,
1/4, ...). nnU-Net (Isensee et al., Nature Methods 2021, https://www.nature.com/articles/s41592-020-01008-z)
weighs output ``i`` by ``1 / 2**i``, gives the coarsest output no weight, and normalises the weights to sum 1,
so the combined loss has the scale of a single Dice + CE loss and the learning rate means what it says.
MONAI's ``weight_mode="exp"`` keeps the coarsest output and does not normalise: with five outputs its weights
sum to 1.94, which nearly doubles every SGD step.
"""

from __future__ import annotations

__all__ = ["deep_supervision_weights"]


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """Weights of the deep-supervision outputs, finest first: ``1 / 2**i``, the coarsest 0, sum 1.

    Example: 5 outputs (ResEnc-L, 6 stages) give [8/15, 4/15, 2/15, 1/15, 0] = [0.533, 0.267, 0.133, 0.067, 0].
    One output (no deep supervision) gives [1.0]: a single output is never dropped.

    Args:
        num_outputs: outputs the network returns, i.e. its decoder stages (stages - 1); >= 1.

    Raises:
        ValueError: ``num_outputs`` is not a positive integer.
    """
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
        raise ValueError(
            f"num_outputs must be the number of deep-supervision outputs (an integer >= 1, e.g. "
            f"len(network.decoder.seg_layers)), got {num_outputs!r}"
        )
    if num_outputs == 1:
        return [1.0]
    weights = [1.0 / 2**i for i in range(num_outputs)]
    weights[-1] = 0.0  # the coarsest output is computed but not trained on
    total = sum(weights)
    return [w / total for w in weights]
