"""Global pooling, projection MLPs and the networks of the contrastive / multi-task baselines.

Every network here wraps the project's ``ResEncUNet`` in the attribute ``backbone`` (so the dense ResEnc state
dict is exported unchanged) and reads channel counts from ``backbone.encoder.feature_channels``; nothing is
hard-coded to ResEnc-L. ``decoder_pretrained`` tells the fine-tuning bundle whether the U-Net decoder was
trained (and may be transferred with the encoder).

- ``ContrastiveEncoder``: SimCLR (Chen et al., ICML 2020, https://arxiv.org/abs/2002.05709).
- ``VoCoNet``: VoCo (Wu et al., CVPR 2024, https://arxiv.org/abs/2402.17300).
- ``SwinUNETRStyleNet``: the multi-task pre-training of Tang et al. (CVPR 2022, https://arxiv.org/abs/2111.14791)
  on the ResEnc U-Net.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from custom_nets.nets.resenc import ResEncUNet

__all__ = ["GlobalPool", "ProjectionHead", "ContrastiveEncoder", "VoCoNet", "SwinUNETRStyleNet", "freeze_unused_decoder"]


def freeze_unused_decoder(backbone: ResEncUNet, decoder_used: bool) -> None:
    """Stop gradients to U-Net parts a pre-training method never calls.

    Unused parameters get no gradient, which DDP would wait for. Frozen parameters keep their initial values and
    are still exported, so the dense state dict stays strict-loadable. The decoder's ``encoder`` attribute shares
    the encoder's tensors, so only the decoder's own modules are touched.

    Args:
        backbone: the wrapped ``ResEncUNet``.
        decoder_used: True when the method decodes at full resolution (only the coarser deep-supervision heads
            are then unused); False when it uses the encoder alone (the whole decoder is unused).
    """
    decoder = backbone.decoder
    if decoder_used:
        if not decoder.deep_supervision:
            for head in list(decoder.seg_layers)[:-1]:
                head.requires_grad_(False)
        return
    for part in (decoder.stages, decoder.transpconvs, decoder.seg_layers):
        part.requires_grad_(False)


class GlobalPool(nn.Module):
    """Global average pooling of encoder stages, concatenated along channels.

    OpenMind (Wald et al., 2024, appendix Fig. 7) pools every ResEnc stage output with adaptive average pooling
    and concatenates them before the projection of VoCo and SimCLR; ``stages=None`` does exactly that. A subset
    (e.g. ``(-1,)``, the bottleneck only) is also possible.

    Args:
        feature_channels: channels of every encoder stage (``encoder.feature_channels``).
        stages: indices of the pooled stages (negative counts from the bottleneck). Defaults to None (all).
    """

    def __init__(self, feature_channels: Sequence[int], stages: Sequence[int] | None = None) -> None:
        super().__init__()
        n = len(feature_channels)
        indices = list(range(n)) if stages is None else [int(s) for s in stages]
        bad = [s for s in indices if not -n <= s < n]
        if not indices or bad:
            raise ValueError(f"stages must be non-empty indices into the {n} encoder stages, got {stages}.")
        self.stages = tuple(s % n for s in indices)
        self.out_features = sum(feature_channels[s] for s in self.stages)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """[(N, C_i, *spatial_i)] finest first -> (N, sum of the pooled C_i)."""
        return torch.cat([features[s].flatten(2).mean(dim=2) for s in self.stages], dim=1)


class ProjectionHead(nn.Module):
    """MLP that maps pooled features to the space where a contrastive loss is computed.

    ``num_layers`` linear layers; every layer but the last is followed by an optional norm and a ReLU (SimCLR's
    "MLP with one hidden layer" is ``num_layers=2``).

    Args:
        in_features: input width.
        hidden_features: width of the hidden layers.
        out_features: embedding width.
        num_layers: linear layers, >= 1. Defaults to 2.
        norm: None, "batch" (BatchNorm1d) or "layer" (LayerNorm without affine, i.e. each embedding normalised
            on its own, as the VoCo head of OpenMind does with InstanceNorm1d). Defaults to None.
    """

    def __init__(
        self, in_features: int, hidden_features: int, out_features: int, num_layers: int = 2, norm: str | None = None
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
        if norm not in (None, "batch", "layer"):
            raise ValueError(f"norm must be None, 'batch' or 'layer', got {norm!r}.")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_features))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(hidden_features))
            elif norm == "layer":
                layers.append(nn.LayerNorm(hidden_features, elementwise_affine=False))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_features
        layers.append(nn.Linear(width, out_features))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_features) -> (N, out_features)."""
        return self.mlp(x)


class ContrastiveEncoder(nn.Module):
    """Encoder + global pooling + projection MLP: one embedding per input crop (SimCLR).

    SimCLR learns by making the embeddings of two augmented views of the same image agree and those of other
    images disagree (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML
    2020, https://arxiv.org/abs/2002.05709). Only ``backbone.encoder`` runs; the U-Net decoder is unused and frozen
    (``decoder_pretrained = False``), the projection head is discarded after pre-training.

    Args:
        backbone: the ``ResEncUNet`` whose encoder is trained.
        projection_dim: embedding width. Defaults to 128 (SimCLR).
        hidden_dim: hidden width of the MLP. Defaults to None (the pooled width, as in SimCLR).
        num_layers: linear layers of the MLP. Defaults to 2.
        norm: norm inside the MLP (see ``ProjectionHead``). Defaults to None.
        pooled_stages: encoder stages pooled and concatenated. Defaults to None (all stages, as OpenMind).
    """

    decoder_pretrained: bool = False

    def __init__(
        self,
        backbone: ResEncUNet,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        num_layers: int = 2,
        norm: str | None = None,
        pooled_stages: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = GlobalPool(backbone.encoder.feature_channels, pooled_stages)
        width = self.pool.out_features
        self.projection = ProjectionHead(width, hidden_dim or width, projection_dim, num_layers, norm)
        freeze_unused_decoder(backbone, decoder_used=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *crop) crops -> (N, projection_dim) embeddings (not normalised; the loss normalises)."""
        self.backbone.check_input(x)
        return self.projection(self.pool(self.backbone.encoder(x)))


class VoCoNet(ContrastiveEncoder):
    """Encoder + pooling + projection to one embedding per crop, with VoCo's head (3 layers, 2048 wide, normed).

    VoCo learns contextual position by predicting, from embedding similarities, how much a random crop overlaps
    each base crop of a grid (Wu et al., "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for
    3D Medical Image Analysis", CVPR 2024, https://arxiv.org/abs/2402.17300). The head widths follow OpenMind's
    ResEnc-L VoCo (all stages pooled and concatenated, MLP 2048-2048-2048 with a per-embedding norm). The
    decoder is unused (``decoder_pretrained = False``).

    Args:
        backbone: the ``ResEncUNet`` whose encoder is trained.
        projection_dim: embedding width. Defaults to 2048.
        hidden_dim: hidden width. Defaults to 2048.
        num_layers: linear layers. Defaults to 3.
        norm: norm inside the MLP. Defaults to "layer".
        pooled_stages: encoder stages pooled. Defaults to None (all).
    """

    decoder_pretrained: bool = False

    def __init__(
        self,
        backbone: ResEncUNet,
        projection_dim: int = 2048,
        hidden_dim: int | None = 2048,
        num_layers: int = 3,
        norm: str | None = "layer",
        pooled_stages: Sequence[int] | None = None,
    ) -> None:
        super().__init__(backbone, projection_dim, hidden_dim, num_layers, norm, pooled_stages)


class SwinUNETRStyleNet(nn.Module):
    """ResEnc U-Net with the three heads of SwinUNETR pre-training: in-painting, rotation, contrastive.

    Tang et al. pre-train with in-painting of cut-out regions, classification of a 90-degree rotation and a
    contrastive loss between two augmented views, weighted 1:1:1 ("Self-Supervised Pre-Training of Swin
    Transformers for 3D Medical Image Analysis", CVPR 2022, https://arxiv.org/abs/2111.14791).

    Here the reconstruction runs through the full ResEnc U-Net (decoder with skip connections), so the decoder is
    trained and ``decoder_pretrained = True``. OpenMind's port drops the skips and discards the decoder; with the
    skips the decoder is a normal U-Net decoder that the fine-tuning bundle can transfer (the encoder-only transfer
    stays available). Rotation and contrastive heads act on the globally pooled bottleneck, the natural CNN
    reading of the original heads (which read one bottleneck token).

    Args:
        backbone: ``ResEncUNet`` with ``num_classes`` equal to its ``in_channels`` (it reconstructs the image).
        num_rotations: rotation classes. Defaults to 4 (0, 90, 180, 270 degrees).
        projection_dim: contrastive embedding width. Defaults to 512 (the original head).

    Returns (forward): dict with "reconstruction" (N, C, *spatial), "rotation" (N, num_rotations) logits and
    "embedding" (N, projection_dim).
    """

    decoder_pretrained: bool = True

    def __init__(self, backbone: ResEncUNet, num_rotations: int = 4, projection_dim: int = 512) -> None:
        super().__init__()
        in_channels, out_channels = backbone.encoder.in_channels, backbone.decoder.seg_layers[-1].out_channels
        if out_channels != in_channels:
            raise ValueError(
                f"the backbone reconstructs the image, so num_classes must equal in_channels ({in_channels}),"
                f" got {out_channels}; build it with resenc_unet(preset, in_channels={in_channels},"
                f" num_classes={in_channels})."
            )
        if backbone.decoder.deep_supervision:
            raise ValueError("build the backbone with deep_supervision=False for pre-training.")
        self.backbone = backbone
        self.pool = GlobalPool(backbone.encoder.feature_channels, (-1,))
        width = self.pool.out_features
        self.rotation_head = nn.Linear(width, num_rotations)
        self.projection = nn.Linear(width, projection_dim)
        freeze_unused_decoder(backbone, decoder_used=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, C, *spatial) -> {"reconstruction", "rotation", "embedding"}; see the class docstring."""
        self.backbone.check_input(x)
        skips = self.backbone.encoder(x)
        pooled = self.pool(skips)
        return {
            "reconstruction": self.backbone.decoder(skips),
            "rotation": self.rotation_head(pooled),
            "embedding": self.projection(pooled),
        }
