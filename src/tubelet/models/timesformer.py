"""TimeSformer: a ViT over video frames with divided space-time attention.

Bertasius, Wang and Torresani, "Is Space-Time Attention All You Need for Video Understanding?"
(ICML 2021). Each frame is cut into `patch_size` patches (a Conv2d per frame), a class token is
prepended, learned space (per patch position) and time (per frame) embeddings are added, and each
block attends with one of three factorisations (`attention=`):

- "divided" (default): temporal attention across the T frames at each patch position, a linear
  `temporal_fc`, then spatial attention among each frame's patches; the class token joins every
  frame's spatial attention and its T outputs are averaged (per query T + N keys instead of T*N);
- "joint": every token attends to all 1 + T*N tokens;
- "space_only": each frame is its own image with its own class token (no time embedding); the
  clip's prediction is the mean of the per-frame predictions.

Every attention is `tubelet.nn.attention.Attention` (SDPA). Module and parameter shapes follow
Hugging Face's `TimesformerForVideoClassification`, so its folders load with
`checkpoint_format="transformers"` (key map in `tubelet.convert.transformers`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import Tensor, nn

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import register_model, variant
from tubelet.nn.attention import Attention, temporal_attention
from tubelet.nn.embed import FramePatchEmbed
from tubelet.nn.mlp import Mlp

AttentionType = Literal["divided", "joint", "space_only"]
ATTENTION_TYPES: tuple[str, ...] = ("divided", "joint", "space_only")


def resize_position_embedding(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """(1, 1 + G*G, D) class + square-grid embedding -> (1, 1 + h*w, D) for a (h, w) patch grid.

    Nearest-neighbour resampling of the grid, as Hugging Face's TimeSformer resizes it for inputs
    of another size; the class token's embedding is kept.
    """
    side = round((pos.shape[1] - 1) ** 0.5)
    if grid == (side, side):
        return pos
    cls_pos, grid_pos = pos[:, :1], pos[:, 1:]
    grid_pos = rearrange(grid_pos, "1 (h w) d -> 1 d h w", h=side)  # (1, D, G, G)
    grid_pos = F.interpolate(grid_pos, size=grid, mode="nearest")  # (1, D, h, w)
    return torch.cat([cls_pos, rearrange(grid_pos, "1 d h w -> 1 (h w) d")], dim=1)


def resize_time_embedding(time: Tensor, frames: int) -> Tensor:
    """(1, T0, D) per-frame embedding -> (1, frames, D), nearest neighbour (Hugging Face's way)."""
    if time.shape[1] == frames:
        return time
    resized = F.interpolate(rearrange(time, "1 t d -> 1 d t"), size=frames, mode="nearest")
    return rearrange(resized, "1 d t -> 1 t d")


class TimesformerBlock(nn.Module):
    """One pre-norm transformer block with the chosen space-time factorisation.

    `forward(x, frames)` takes, for "divided" and "joint", the clip's tokens (B, 1 + T*N, D): the
    class token, then the patch tokens frame by frame; for "space_only", per-frame tokens
    (B*T, 1 + N, D), each frame with its own class token.
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        mlp_dim: int,
        *,
        attention: AttentionType,
        qkv_bias: bool,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.attention = attention
        if attention == "divided":
            self.temporal_norm1 = nn.LayerNorm(width, eps=norm_eps)
            self.temporal_attn = Attention(width, num_heads, qkv_bias=qkv_bias)
            self.temporal_fc = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width, eps=norm_eps)
        self.attn = Attention(width, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(width, eps=norm_eps)
        self.mlp = Mlp(width, mlp_dim)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        if self.attention == "divided":
            return self._mlp(self._divided(x, frames))
        # Joint over the clip's tokens, or space-only over each frame's: the same call.
        return self._mlp(x + self.attn(self.norm1(x)))

    def _mlp(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm2(x))

    def _divided(self, x: Tensor, frames: int) -> Tensor:
        """Temporal then spatial attention with their residuals; (B, 1 + T*N, D) in and out."""
        cls, patches = x[:, :1], x[:, 1:]  # (B, 1, D), (B, T*N, D)
        patches = rearrange(patches, "b (t n) d -> b t n d", t=frames)
        temporal = temporal_attention(self.temporal_attn, self.temporal_norm1(patches))
        patches = patches + self.temporal_fc(temporal)  # (B, T, N, D)
        # Spatial: each frame's patches with a copy of the class token, (B*T, 1 + N, D).
        tokens = torch.cat(
            [
                repeat(cls, "b 1 d -> (b t) 1 d", t=frames),
                rearrange(patches, "b t n d -> (b t) n d"),
            ],
            dim=1,
        )
        spatial = self.attn(self.norm1(tokens))  # (B*T, 1 + N, D)
        # The class token's update is its mean over the frames (as the original and HF do it).
        cls = cls + reduce(spatial[:, :1], "(b t) 1 d -> b 1 d", "mean", t=frames)
        patches = patches + rearrange(spatial[:, 1:], "(b t) n d -> b t n d", t=frames)
        return torch.cat([cls, rearrange(patches, "b t n d -> b (t n) d")], dim=1)


class TimeSformer(VideoClassifier):
    """TimeSformer classifier: patch embedding, class token, space/time embeddings, blocks, norm.

    Input (B, C, T, H, W). `forward_features` returns the final normalised tokens channel-first:
    (B, D, 1 + T*h*w), the class token then the patch tokens frame by frame, or for "space_only"
    (B, D, T, 1 + h*w), one class token per frame. The head classifies the class token (the mean
    of the per-frame class tokens for "space_only", which equals averaging per-frame logits).

    Inputs of another size or frame count than `image_size` / `num_frames` work: the space and time
    embeddings are resampled (nearest), as Hugging Face does; a remainder of H or W smaller than
    a patch is dropped by the patch convolution, as in the peer.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        width: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        image_size: int,
        patch_size: int,
        num_frames: int,
        attention: AttentionType,
        qkv_bias: bool,
        norm_eps: float,
        in_channels: int,
        dropout: float,
    ) -> None:
        if attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}, got {attention!r}")
        for label, value in (
            ("depth", depth),
            ("patch_size", patch_size),
            ("num_frames", num_frames),
        ):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        if image_size < patch_size:
            raise ValueError(f"image_size {image_size} is smaller than patch_size {patch_size}")
        super().__init__(num_features=width, num_classes=num_classes, dropout=dropout)
        self.attention = attention
        self.in_channels = in_channels
        self.patch_embed = FramePatchEmbed(in_channels, width, patch_size)
        side = image_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + side * side, width))
        if attention != "space_only":
            self.time_embed = nn.Parameter(torch.zeros(1, num_frames, width))
        self.blocks = nn.ModuleList(
            TimesformerBlock(
                width,
                num_heads,
                mlp_dim,
                attention=attention,
                qkv_bias=qkv_bias,
                norm_eps=norm_eps,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        """Truncated normal (std 0.02) for projections and the class / space embeddings, zero
        biases and time embedding (HF's and the original's init); `temporal_fc` is zero after the
        first block, so those blocks start as spatial-only (original TimeSformer `vit.py`)."""
        for module in (self.patch_embed, self.blocks):
            for m in module.modules():
                if isinstance(m, nn.Linear | nn.Conv2d):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.attention == "divided":
            for block in list(self.blocks)[1:]:
                nn.init.zeros_(block.temporal_fc.weight)
                nn.init.zeros_(block.temporal_fc.bias)

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> the first block's input: (B, 1 + T*N, D), or (B*T, 1 + N, D) for
        "space_only"."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"TimeSformer takes clips (B, {self.in_channels}, T, H, W), got shape "
                f"{tuple(x.shape)}"
            )
        patch = self.patch_embed.patch_size
        if min(x.shape[3:]) < patch:
            raise ValueError(
                f"frames of {tuple(x.shape[3:])} px are smaller than one {patch} patch"
            )
        batch, frames = x.shape[0], x.shape[2]
        patches, grid = self.patch_embed(x)  # (B, T, N, D)
        pos = resize_position_embedding(self.pos_embed, grid)  # (1, 1 + N, D)
        cls = self.cls_token + pos[:, :1]  # (1, 1, D)
        # Embeddings first: an elementwise op lays its output out as its first operand, so the
        # (B, T, N, D) view of the conv output is written out contiguous, in the same pass.
        patches = pos[:, None, 1:] + patches
        if self.attention == "space_only":
            cls = cls.expand(batch * frames, -1, -1)
            return torch.cat([cls, rearrange(patches, "b t n d -> (b t) n d")], dim=1)
        time = resize_time_embedding(self.time_embed, frames)  # (1, T, D)
        patches = time[:, :, None] + patches
        return torch.cat(
            [cls.expand(batch, -1, -1), rearrange(patches, "b t n d -> b (t n) d")], dim=1
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> normalised tokens (B, D, 1 + T*N), or (B, D, T, 1 + N) space-only."""
        batch, frames = x.shape[0], x.shape[2]
        tokens = self.embed(x)
        for block in self.blocks:
            tokens = self.maybe_checkpoint(block, tokens, frames)
        tokens = self.norm(tokens)
        if self.attention == "space_only":
            return rearrange(tokens, "(b t) n d -> b d t n", b=batch)
        return rearrange(tokens, "b l d -> b d l")

    def pool_features(self, feats: Tensor) -> Tensor:
        """The class token (B, D): index 0 of the last dim, averaged over frames for space-only."""
        expected = 4 if self.attention == "space_only" else 3
        if feats.ndim != expected:
            raise ValueError(
                f"{self.attention} TimeSformer features have {expected} dims, got shape "
                f"{tuple(feats.shape)}; pass the output of forward_features"
            )
        # Selected with D last, the layout the tokens are stored in, so that backward's gradient
        # (zeros but the class token) is laid out as the tokens, not transposed.
        cls = feats.movedim(1, -1)[..., 0, :]  # (B, D) or (B, T, D)
        return cls.mean(dim=1) if cls.ndim == 3 else cls


def _build(
    *,
    num_classes: int = 400,
    width: int = 768,
    depth: int = 12,
    num_heads: int | None = None,
    mlp_dim: int | None = None,
    image_size: int = 224,
    patch_size: int = 16,
    num_frames: int = 8,
    attention: AttentionType = "divided",
    qkv_bias: bool = True,
    norm_eps: float = 1e-6,
    in_channels: int = 3,
    dropout: float = 0.0,
) -> TimeSformer:
    """A TimeSformer with Base's defaults; `num_heads` defaults to width // 64 (ViT's 64-wide heads,
    at least one), `mlp_dim` to 4 * width."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    return TimeSformer(
        num_classes=num_classes,
        width=width,
        depth=depth,
        num_heads=num_heads if num_heads is not None else max(1, width // 64),
        mlp_dim=mlp_dim if mlp_dim is not None else 4 * width,
        image_size=image_size,
        patch_size=patch_size,
        num_frames=num_frames,
        attention=attention,
        qkv_bias=qkv_bias,
        norm_eps=norm_eps,
        in_channels=in_channels,
        dropout=dropout,
    )


# Old runs saved the LayerNorm eps as `layer_norm_eps` (Hugging Face's name).
_RENAMED = {"layer_norm_eps": "norm_eps"}


@register_model(renamed_args=_RENAMED)
@variant(_build)
def timesformer_base() -> TimeSformer:
    """TimeSformer-Base: ViT-B/16 (768 wide, 12 blocks, 12 heads), 8 frames of 224 px, divided
    attention (Hugging Face `TimesformerConfig()` defaults, `facebook/timesformer-base-*`)."""


@register_model(renamed_args=_RENAMED)
@variant(_build, width=384)
def timesformer_small() -> TimeSformer:
    """TimeSformer-Small: ViT-S/16 widths (384 wide, 12 blocks, 6 heads, as DeiT-S), 8 frames of
    224 px, divided attention. No published checkpoint; a quarter of Base's compute, for training
    from scratch and for CPU runs."""
