"""nnU-Net's weight initialisation of a freshly built ResEnc U-Net.

nnU-Net initialises every network it trains from scratch with He (Kaiming) normal weights for leaky ReLUs of
negative slope 1e-2 (He et al., "Delving Deep into Rectifiers", ICCV 2015, https://arxiv.org/abs/1502.01852)
and zero biases, on every convolution and transposed convolution. Its residual encoders additionally start
every residual block as the identity: the affine weight and bias of the block's last normalisation (the one
before the addition of the skip) are zero (Goyal et al., https://arxiv.org/abs/1706.02677). PyTorch's default
(Kaiming uniform with a = sqrt(5), i.e. std 1 / sqrt(3 fan_in), and non-zero biases) is what a network gets
without this.

Pre-trained weights are loaded after this, so a fine-tuned network keeps He init only where nothing was
transferred (the decoder with ``transfer_scope: encoder``, and the segmentation heads).
"""

from __future__ import annotations

from torch import nn

__all__ = ["HE_NEGATIVE_SLOPE", "he_init"]

HE_NEGATIVE_SLOPE = 1e-2  # nnU-Net's leaky-ReLU slope, used as Kaiming's ``a``

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def he_init(
    network: nn.Module, negative_slope: float = HE_NEGATIVE_SLOPE, zero_residual_norms: bool = True
) -> nn.Module:
    """Initialise ``network`` in place the way nnU-Net does, and return it (for use in a config).

    - every convolution and transposed convolution: ``kaiming_normal_(weight, a=negative_slope)`` (fan-in mode,
      so the weight std is ``sqrt(2 / (1 + a**2)) / sqrt(fan_in)``, with PyTorch's fan-in: ``weight.size(1)`` times
      the kernel volume, i.e. input channels for a convolution and output channels for a transposed one); bias 0.
    - with ``zero_residual_norms``: in every residual block (a module with ``conv2.norm``, as in
      ``custom_nets.nets.blocks.BasicBlockD`` and nnU-Net's own), that norm's weight and bias are 0.

    Norm layers elsewhere keep weight 1 and bias 0.

    Args:
        network: any module; typically a ``ResEncUNet`` right after it was built.
        negative_slope: Kaiming's ``a``. Defaults to nnU-Net's 1e-2.
        zero_residual_norms: start residual blocks as identities. Defaults to True (nnU-Net's ResEnc).

    Raises:
        ValueError: ``negative_slope`` is negative.
    """
    if negative_slope < 0:
        raise ValueError(f"negative_slope must be >= 0 (nnU-Net uses 1e-2), got {negative_slope}")

    def he(module: nn.Module) -> None:
        if isinstance(module, _CONVS):
            nn.init.kaiming_normal_(module.weight, a=negative_slope)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def identity_block(module: nn.Module) -> None:
        norm = getattr(getattr(module, "conv2", None), "norm", None)
        if hasattr(module, "skip") and getattr(norm, "weight", None) is not None:
            nn.init.zeros_(norm.weight)
            if norm.bias is not None:
                nn.init.zeros_(norm.bias)

    network.apply(he)  # children first, as nnU-Net's ``network.apply(network.initialize)``: the same draws
    if zero_residual_norms:
        network.apply(identity_block)
    return network
