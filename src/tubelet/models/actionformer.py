"""Temporal action detectors over feature sequences: ActionFormer and a sliding-window baseline.

ActionFormer (Zhang et al., ECCV 2022, arXiv:2202.07925) is anchor-free: every time step of every
pyramid level classifies itself (one sigmoid per class) and regresses its distances to the start
and end of the action it lies in. Here:

- a projection of 2 masked 1-D convolutions, then `stem_layers` transformer blocks at full
  resolution and `levels - 1` more, each after a stride-2 max-pool, give the feature pyramid
  (level l has stride 2**l in feature steps);
- every block's self-attention is local: a token attends to the `window` tokens around it
  (`tubelet.nn.attention.Attention` with a banded boolean mask, padding masked out);
- heads shared by all levels: classification (3 convolutions, the last with the focal-loss prior
  bias) and regression (3 convolutions, a learnt scale per level, ReLU) of the distances in units
  of the level's stride.

Forward contract: `forward(features (B, D, L), mask (B, L) bool) -> DetectorOutput`, with `L` a
multiple of `2 ** (levels - 1)` (`length_multiple`). Training targets, losses and decoding live in
`tubelet.tasks.detection`.

`window_classifier` is the baseline: an MLP on each feature step (with `context` steps either
side) giving K + 1 logits (background last); `forward` returns `WindowOutput`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.models.registry import register_model, variant
from tubelet.nn.attention import Attention
from tubelet.nn.checkpoint import checkpoint_level, checkpoint_module
from tubelet.nn.mlp import Mlp

# The registered models that `tubelet train --task detection` trains.
DETECTION_MODELS = ("actionformer", "actionformer_tiny", "window_classifier")


@dataclass
class DetectorOutput:
    """Per pyramid level l (stride 2**l): `cls_logits[l]` (B, L_l, K), `offsets[l]` (B, L_l, 2)
    distances to start and end in units of the stride (>= 0), `masks[l]` (B, L_l) bool."""

    cls_logits: list[torch.Tensor]
    offsets: list[torch.Tensor]
    masks: list[torch.Tensor]
    strides: list[int]


@dataclass
class WindowOutput:
    """`logits` (B, L, K + 1) per feature step (background last) and `mask` (B, L) bool."""

    logits: torch.Tensor
    mask: torch.Tensor


def local_attention_mask(mask: torch.Tensor, window: int) -> torch.Tensor:
    """Boolean (B, 1, L, L): query i may attend key j when |i - j| <= window // 2 and j is real.

    Each token may always attend itself, so padded queries never have an empty row (SDPA would
    give NaN).
    """
    length = mask.shape[1]
    pos = torch.arange(length, device=mask.device)
    band = (pos[:, None] - pos[None, :]).abs() <= window // 2  # (L, L)
    eye = torch.eye(length, dtype=torch.bool, device=mask.device)
    return ((band[None] & mask[:, None, :]) | eye[None])[:, None]  # (B, 1, L, L)


class MaskedConv1d(nn.Module):
    """Conv1d (same length) whose output is zeroed at padded steps."""

    def __init__(
        self, in_dim: int, out_dim: int, kernel_size: int = 3, *, bias: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * mask[:, None].to(x.dtype)  # (B, C, L)


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of (B, C, L)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class LocalTransformerBlock(nn.Module):
    """Pre-norm transformer block on (B, L, C) with local-window self-attention and an MLP."""

    def __init__(self, dim: int, num_heads: int, window: int, *, mlp_ratio: float = 4.0,
                 drop: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)  # dropout twice, as ActionFormer's

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[..., None].to(x.dtype)  # (B, L, 1)
        x = x + self.attn(self.norm1(x), local_attention_mask(mask, self.window)) * keep
        return x + self.mlp(self.norm2(x)) * keep


class Scale(nn.Module):
    """A learnt scalar multiplier (one per pyramid level on the regression output)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Head(nn.Module):
    """`depth - 1` masked conv + norm + ReLU layers, then a masked conv to `out_dim` (B, out, L)."""

    def __init__(self, dim: int, out_dim: int, depth: int = 3, prior_bias: float = 0.0) -> None:
        super().__init__()
        self.convs = nn.ModuleList(MaskedConv1d(dim, dim, bias=False) for _ in range(depth - 1))
        self.norms = nn.ModuleList(ChannelNorm(dim) for _ in range(depth - 1))
        self.out = MaskedConv1d(dim, out_dim)
        nn.init.constant_(self.out.conv.bias, prior_bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x, mask)))
        return self.out(x, mask)


class ActionFormer(nn.Module):
    """Anchor-free multi-scale transformer detector (module docstring); see `DetectorOutput`."""

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        width: int = 128,
        num_heads: int = 4,
        window: int = 9,
        stem_layers: int = 2,
        levels: int = 6,
        head_depth: int = 3,
        drop: float = 0.0,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if levels < 1 or stem_layers < 0:
            raise ValueError(f"need levels >= 1 and stem_layers >= 0, got {levels}, {stem_layers}")
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.levels = levels
        self.length_multiple = 2 ** (levels - 1)
        self.embed = nn.ModuleList([MaskedConv1d(input_dim, width), MaskedConv1d(width, width)])
        self.embed_norms = nn.ModuleList([ChannelNorm(width), ChannelNorm(width)])
        self.stem = nn.ModuleList(
            LocalTransformerBlock(width, num_heads, window, drop=drop) for _ in range(stem_layers)
        )
        self.branch = nn.ModuleList(
            LocalTransformerBlock(width, num_heads, window, drop=drop) for _ in range(levels - 1)
        )
        self.level_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(levels))
        # Focal-loss prior: every class starts at probability `prior_prob` (RetinaNet, Sec. 4.1).
        prior_bias = -math.log((1 - prior_prob) / prior_prob)
        self.cls_head = Head(width, num_classes, head_depth, prior_bias)
        self.reg_head = Head(width, 2, head_depth)
        self.scales = nn.ModuleList(Scale() for _ in range(levels))
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Recompute the transformer blocks in the backward pass (same output, less memory);
        "selective" keeps the attention outputs (`tubelet.nn.checkpoint`)."""
        self.grad_checkpointing = checkpoint_level(enable) or False

    def _block(self, block: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training:
            return checkpoint_module(block, x, mask, level=self.grad_checkpointing)
        return block(x, mask)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> DetectorOutput:
        """`features` (B, D, L), `mask` (B, L) bool with L a multiple of `length_multiple`."""
        b, d, length = features.shape
        if d != self.input_dim:
            raise ValueError(f"features have {d} channels; this detector takes {self.input_dim}")
        if length % self.length_multiple:
            raise ValueError(
                f"sequence length {length} must be a multiple of {self.length_multiple} "
                f"(2 ** (levels - 1)); pad it (collate_detection(multiple=...))"
            )
        x = features * mask[:, None].to(features.dtype)  # padding content never reaches real steps
        for conv, norm in zip(self.embed, self.embed_norms, strict=True):
            x = F.relu(norm(conv(x, mask)))  # (B, C, L)
        x = x.transpose(1, 2)  # (B, L, C)
        for block in self.stem:
            x = self._block(block, x, mask)
        pyramid, masks = [x], [mask]
        for block in self.branch:
            # Stride-2 max-pool (kernel 3) of the previous level, then a block at the new scale.
            x = F.max_pool1d(x.transpose(1, 2), 3, stride=2, padding=1).transpose(1, 2)
            mask = mask[:, ::2]
            x = self._block(block, x * mask[..., None].to(x.dtype), mask)
            pyramid.append(x)
            masks.append(mask)
        cls_logits, offsets = [], []
        for level, (x, m) in enumerate(zip(pyramid, masks, strict=True)):
            x = self.level_norms[level](x).transpose(1, 2)  # (B, C, L_l)
            cls_logits.append(self.cls_head(x, m).transpose(1, 2))  # (B, L_l, K)
            reg = F.relu(self.scales[level](self.reg_head(x, m)))  # (B, 2, L_l)
            offsets.append(reg.transpose(1, 2))  # (B, L_l, 2)
        return DetectorOutput(cls_logits, offsets, masks, [2**i for i in range(self.levels)])


class WindowClassifier(nn.Module):
    """Baseline: classify each feature step (seeing `context` steps either side) into K classes or
    background; `forward(features (B, D, L), mask (B, L)) -> WindowOutput`."""

    def __init__(self, *, input_dim: int, num_classes: int, hidden: int = 256, context: int = 2,
                 drop: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.length_multiple = 1
        self.context = context
        width = 2 * context + 1
        # A convolution over the window is an MLP on the concatenated window's features.
        self.mlp = nn.Sequential(
            nn.Conv1d(input_dim, hidden, width, padding=context), nn.ReLU(), nn.Dropout(drop),
            nn.Conv1d(hidden, num_classes + 1, 1),
        )  # fmt: skip

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Nothing to trade: the baseline is two layers (kept for the common model contract)."""
        checkpoint_level(enable)  # still refuses an unknown level

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> WindowOutput:
        if features.shape[1] != self.input_dim:
            raise ValueError(
                f"features have {features.shape[1]} channels; this model takes {self.input_dim}"
            )
        x = features * mask[:, None].to(features.dtype)
        return WindowOutput(self.mlp(x).transpose(1, 2), mask)  # (B, L, K + 1)


@register_model(kind="detection", renamed_args={"dim": "width"})
@variant(ActionFormer, num_classes=20, input_dim=2048)
def actionformer() -> ActionFormer:
    """ActionFormer (THUMOS14 settings: 6 levels, window 19 in the paper; 9 here by default)."""


@register_model(kind="detection", renamed_args={"dim": "width"})
@variant(
    ActionFormer, num_classes=20, input_dim=2048, width=64, num_heads=4, window=9,
    stem_layers=1, levels=5,
)  # fmt: skip
def actionformer_tiny() -> ActionFormer:
    """A small ActionFormer for CPU runs: width 64, 1 stem layer, 5 levels."""


@register_model(kind="detection")
@variant(WindowClassifier, num_classes=20, input_dim=2048)
def window_classifier() -> WindowClassifier:
    """The sliding-window classification baseline (see `WindowClassifier`)."""
