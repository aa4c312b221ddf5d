"""S3D: sparse masked-autoencoder pre-training of a Residual-Encoder U-Net.

Wald, Ulrich et al., "Revisiting MAE pre-training for 3D medical image segmentation", CVPR 2025,
https://arxiv.org/abs/2410.23132 (SparK adapted to 3D CNNs: Tian et al., ICLR 2023).

``S3D.forward(image, mask)``:
    1. the input is masked explicitly (masked voxels are zero, so the stem never sees masked content);
    2. the encoder runs sparse: the mask is re-applied after every conv/pooling and instance norms use visible
       voxels only (``sparse.py``); stages coarser than the mask blocks run dense;
    3. densification of every stage below full resolution ("at every resolution except the highest"):
       normalisation without affine (over visible voxels at masked stages, over the whole feature at stages
       coarser than the mask blocks, where nothing is masked), masked positions filled with a learnable mask
       token (masked stages only), then a 3^3 conv; at full resolution only the token is filled;
    4. the dense nnU-Net decoder with all skips produces the reconstruction.

Masks and every product with them are in the activation dtype (bf16 under autocast): the stage masks are cast
once per forward, so no float32 copy of an activation is made or kept for backward.

Because of 1. and 2., the output does not depend on the content of masked input voxels at all. After
pre-training, ``dense_state_dict(model)`` gives plain ResEnc weights (tokens and densify convs dropped).
"""

from __future__ import annotations

from typing import Mapping

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from custom_nets.nets.resenc import ResEncUNet
from custom_nets.nets.sparse import InstanceNorm, activation_dtype, set_fused_norm, stage_masks

__all__ = ["S3D", "dense_state_dict"]

BACKBONE_PREFIX = "backbone."


class S3D(nn.Module):
    """Sparse masked autoencoder around a ResEnc U-Net; see the module docstring.

    Args:
        backbone: the ResEnc U-Net to pre-train (``num_classes`` = reconstructed channels, normally 1).
        block_size: mask block edge in voxels; stages downsampled by more than this are dense. Defaults to 16.
        sparse: re-mask after every encoder conv and use visible-only norms (ablation switch). Defaults to True.
        mask_token: fill masked positions of every masked stage with a learnable token. Defaults to True.
        densify: norm (no affine) + 3^3 conv per stage below full resolution. Defaults to True.
        densify_coarse_stages: with ``densify``, also densify the stages that get no mask (coarser than the
            mask blocks, ``r > block_size``, e.g. the bottleneck with 16^3 blocks, or not aligned with them),
            normalising over the whole (all-visible) feature, as the paper ("at every resolution except the
            highest") and nnssl do. False keeps these stages untouched (densification of masked stages only).
            Defaults to True.
        fused_norm: every visible-only instance norm (backbone and densification) uses the memory-lean
            ``masked_instance_norm_fused``; same function, less kept for backward. Sets the flag on every
            ``InstanceNorm`` of the backbone too (see ``sparse.set_fused_norm``). Defaults to True.
    """

    def __init__(
        self,
        backbone: ResEncUNet,
        block_size: int = 16,
        sparse: bool = True,
        mask_token: bool = True,
        densify: bool = True,
        densify_coarse_stages: bool = True,
        fused_norm: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, ResEncUNet):
            raise ValueError(f"S3D needs a custom_nets ResEncUNet backbone, got {type(backbone).__name__}.")
        self.backbone = backbone
        self.block_size = int(block_size)
        self.sparse, self.use_mask_token, self.use_densify = bool(sparse), bool(mask_token), bool(densify)
        self.densify_coarse_stages = bool(densify_coarse_stages)
        encoder = backbone.encoder
        self.masked_stages = [
            i for i, r in enumerate(encoder.reductions) if r <= self.block_size and self.block_size % r == 0
        ]
        conv_type = Conv[Conv.CONV, encoder.spatial_dims]
        token_shape = (1, -1) + (1,) * encoder.spatial_dims
        self.mask_tokens = nn.ParameterDict()
        self.densify_convs = nn.ModuleDict()
        # Affine-free norms hold no tensors: the state dict (and every checkpoint) is the same as without them.
        self.densify_norms = nn.ModuleDict()
        for i, (channels, r) in enumerate(zip(encoder.feature_channels, encoder.reductions)):
            masked = i in self.masked_stages
            if self.use_mask_token and masked:
                token = nn.Parameter(torch.zeros(channels).view(token_shape))
                nn.init.trunc_normal_(token, std=0.02, a=-0.02 * 2, b=0.02 * 2)
                self.mask_tokens[str(i)] = token
            if self.use_densify and r > 1 and (masked or self.densify_coarse_stages):
                self.densify_convs[str(i)] = conv_type(channels, channels, 3, 1, 1, bias=True)
                self.densify_norms[str(i)] = InstanceNorm(channels, affine=False)
        # Heads of coarser decoder stages only serve deep supervision; freezing them keeps DDP from waiting for
        # gradients that never come. Their (initial) values still travel in the exported dense weights.
        if not backbone.decoder.deep_supervision:
            for head in list(backbone.decoder.seg_layers)[:-1]:
                head.requires_grad_(False)
        set_fused_norm(self, fused_norm)

    def stage_masks(self, mask: torch.Tensor, dtype: torch.dtype | None = None) -> list[torch.Tensor | None]:
        """Per-stage masks (None for dense stages), cast once to ``dtype``; see ``sparse.stage_masks``."""
        return stage_masks(mask, self.backbone.encoder.reductions, self.block_size, dtype)

    def densify_stage(self, index: int, feature: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Turn a stage output into a dense decoder input. (B, C, *s), (B, 1, *s) or None -> (B, C, *s).

        ``mask`` is the stage mask in ``feature``'s dtype, or None at a stage coarser than the mask blocks
        (normalised over the whole feature, no token).
        """
        key = str(index)
        conv = self.densify_convs[key] if key in self.densify_convs else None
        if conv is not None:
            feature = self.densify_norms[key](feature, mask)
        if mask is not None and key in self.mask_tokens:
            # the condition is kept for backward as bool (1 byte per voxel), the token broadcasts
            feature = torch.where(mask > 0, feature, self.mask_tokens[key].to(feature.dtype))
        return feature if conv is None else conv(feature)

    def forward_encoder(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[list[torch.Tensor], list]:
        """Masked input -> (stage features finest first, per-stage masks in the activation dtype)."""
        # One cast per forward: a cast per use would make (and keep for backward) a new full-size copy each time.
        masks = self.stage_masks(mask, activation_dtype(image))
        features = self.backbone.encoder(image * mask.to(image.dtype), masks if self.sparse else None)
        return features, masks

    def forward_decoder(self, features: list[torch.Tensor], masks: list) -> torch.Tensor:
        """Densify every stage and decode to the reconstruction (B, out, *spatial)."""
        dense = [self.densify_stage(i, f, m) for i, (f, m) in enumerate(zip(features, masks))]
        return self.backbone.decoder(dense)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args:
            image: (B, C, *spatial) z-scored patch.
            mask: (B, 1, *spatial), 1 = visible, 0 = masked (see ``masking.BlockMaskGenerator``).

        Returns:
            (B, num_classes, *spatial) reconstruction (a list with deep supervision).
        """
        self.backbone.check_input(image)
        if mask.ndim != image.ndim or mask.shape[0] != image.shape[0] or mask.shape[1] != 1 or mask.shape[2:] != image.shape[2:]:
            raise ValueError(
                f"mask must have shape (B, 1, *spatial) = {(image.shape[0], 1, *image.shape[2:])}, got {tuple(mask.shape)}."
            )
        return self.forward_decoder(*self.forward_encoder(image, mask))


def dense_state_dict(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Dense ResEnc weights of an S3D model or S3D state dict (DDP's "module." prefix allowed).

    Mask tokens and densification convs are pre-training scaffolding and are dropped; the result loads
    strictly into ``ResEncUNet`` and into nnU-Net's ``ResidualEncoderUNet`` of the same configuration.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else dict(model_or_state)
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(BACKBONE_PREFIX):
            out[key[len(BACKBONE_PREFIX):]] = value
    if not out:
        raise ValueError(
            "no 'backbone.*' tensors found: this is not an S3D state dict (keys start with "
            f"{sorted({k.split('.')[0] for k in state})[:5]}). Pass an S3D model or its state_dict."
        )
    return out
