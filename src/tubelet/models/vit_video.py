"""Video ViT as in VideoMAE: tubelet embedding, fixed sinusoidal positions, pre-norm blocks,
mean-pooled head.

A clip (B, 3, T, H, W) is cut into tubes of `tubelet_size` frames x `patch_size`^2 pixels by one
strided Conv3d (N = T/2 * H/16 * W/16 tokens for the published 2x16x16), a fixed sine-cosine table
over the flattened (t, h, w) token index is added (VideoMAE's, not learned), and pre-norm
transformer blocks (`tubelet.nn.block.Block`) attend jointly over all tokens. The classifier
averages the tokens, applies `fc_norm` and the linear `fc` (Hugging Face
`VideoMAEForVideoClassification` with `use_mean_pooling=True`).

`VideoViTEncoder` also runs on the visible tokens only, given a boolean mask (B, N) with True =
masked: the encoder of VideoMAE pre-training (`tubelet.models.videomae`), which at 90% masking sees
a tenth of the tokens.

Variants (channels = `num_heads * head_dim`, `head_dim` = channels per head, 64 in the published
models, so `head_dim=16` shrinks a model four-fold for CPU runs; depth 12 and MLP ratio 4 in all):

| name | heads | channels | params (K=400) |
|---|---:|---:|---:|
| `vit_b_16_video` | 12 | 768 | 86.5M (VideoMAE ViT-B) |
| `vit_s_16_video` | 6 | 384 | 22M (VideoMAE ViT-S) |
| `vit_t_16_video` | 3 | 192 | 5.7M (ViT-Ti widths) |

Import: `checkpoint_format="transformers"` from a `VideoMAEForVideoClassification` folder; its
config.json sets every argument.
"""

from __future__ import annotations

from functools import partial

import torch
from einops import rearrange
from torch import Tensor, nn

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import register_model, variant
from tubelet.nn.block import Block
from tubelet.nn.checkpoint import checkpoint_level, checkpoint_module
from tubelet.nn.embed import PatchEmbed3d
from tubelet.nn.masking import keep_visible, tube_grid
from tubelet.nn.positions import sinusoid_positions


def vit_block(
    dim: int,
    num_heads: int,
    *,
    mlp_ratio: float,
    qkv_bias: bool,
    norm_eps: float,
    drop_path: float = 0.0,
) -> Block:
    """VideoMAE's block (encoder and decoder): the shared pre-norm `Block` on (B, L, D), with
    LayerNorms of eps `norm_eps` and an MLP round(dim * mlp_ratio) wide."""
    return Block(
        dim, num_heads, mlp_dim=round(dim * mlp_ratio),
        norm_layer=partial(nn.LayerNorm, eps=norm_eps), qkv_bias=qkv_bias, drop_path=drop_path,
    )  # fmt: skip


def init_vit_weights(module: nn.Module) -> None:
    """VideoMAE's initialisation: Linear weights truncated-normal(0.02), zero biases, LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VideoViTEncoder(nn.Module):
    """Tubelet embedding + fixed positions -> [visible tokens only] -> blocks -> optional `norm`.

    `forward(x, mask=None)`: clip (B, C, T, H, W) -> tokens (B, L, D) in (t, h, w) order; with a
    bool `mask` (B, N), True = masked, only the N - masked visible tokens enter the blocks (each
    keeps the position of its tube), so L = N - masked. `final_norm` adds the LayerNorm that
    VideoMAE's pre-training encoder ends with (`use_mean_pooling=False`).
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        tubelet_size: int,
        patch_size: int,
        in_channels: int,
        qkv_bias: bool,
        drop_path: float,
        norm_eps: float,
        final_norm: bool,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.tubelet_size = tubelet_size
        self.patch_size = patch_size
        # The tubelet embedding: one Conv3d with kernel = stride = the tube (VideoMAE's).
        self.patch_embed = PatchEmbed3d((tubelet_size, patch_size, patch_size), in_channels, dim)
        # Stochastic depth grows linearly with depth (plain floats: the model may be built on the
        # meta device, where a tensor has no values to read).
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            vit_block(
                dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                norm_eps=norm_eps,
                drop_path=rate,
            )  # fmt: skip
            for rate in rates
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if final_norm else nn.Identity()
        self.grad_checkpointing: bool | str = False  # or "full" / "selective" (checkpoint_level)

    def grid(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """The (t, h, w) token grid of a clip of shape (B, C, T, H, W)."""
        return tube_grid(shape, self.tubelet_size, self.patch_size)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        self.grid(x.shape)  # a clear error for a clip that does not tile into tubes
        # (B, N, D), a transposed view of the conv's output (no copy).
        tokens = rearrange(self.patch_embed(x), "b t h w d -> b (t h w) d")
        # Positions first: an elementwise op lays its output out as its first operand, so the sum
        # is (B, N, D)-contiguous in one pass (tokens first would carry the transpose on).
        tokens = sinusoid_positions(tokens.shape[1], self.dim).to(tokens) + tokens
        if mask is not None:
            tokens = keep_visible(tokens, mask)  # (B, L, D), L = N - masked
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                level = checkpoint_level(self.grad_checkpointing)  # True (VideoMAE) is "full"
                tokens = checkpoint_module(block, tokens, level=level)
            else:
                tokens = block(tokens)
        return self.norm(tokens)


class VideoViT(VideoClassifier):
    """Video ViT classifier: `encoder` (no final norm), mean over tokens, `fc_norm`, `fc`.

    `forward_features` gives the tokens as (B, D, t, h, w); `forward_head(pre_logits=True)` gives
    their mean (as every tubelet classifier), and the logits are `fc(fc_norm(mean))`.

    Attention uses one `qkv` projection with a bias on q, k and v. VideoMAE has biases on q and v
    only; its checkpoints import with a zero key bias, which changes nothing: a key bias adds
    q . b_k to every score of a query's row, and softmax is unchanged by a constant per row (so the
    key bias also gets exactly zero gradient).

    Channels = `num_heads * head_dim`; `mlp_ratio` sets the MLP width; `drop_path` is the stochastic
    depth of the last block (linear from 0 over the blocks); `norm_eps` is the blocks' LayerNorm
    eps and `head_norm_eps` that of `fc_norm` (VideoMAE uses 1e-6; Hugging Face 1e-12 and 1e-5).
    Clips must tile into tubes: T divisible by `tubelet_size`, H and W by `patch_size`.
    """

    head_modules = ("fc_norm", "fc")

    def __init__(
        self,
        *,
        head_dim: int,
        depth: int,
        num_heads: int,
        num_classes: int,
        mlp_ratio: float = 4.0,
        tubelet_size: int = 2,
        patch_size: int = 16,
        in_channels: int = 3,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        head_norm_eps: float = 1e-6,
    ) -> None:
        if head_dim < 1 or depth < 1 or num_heads < 1:
            raise ValueError(
                f"head_dim, depth and num_heads must be >= 1, got {head_dim}, {depth}, {num_heads}"
            )
        dim = head_dim * num_heads
        super().__init__(num_features=dim, num_classes=num_classes, dropout=dropout)
        self.encoder = VideoViTEncoder(
            dim=dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            tubelet_size=tubelet_size, patch_size=patch_size, in_channels=in_channels,
            qkv_bias=qkv_bias, drop_path=drop_path, norm_eps=norm_eps, final_norm=False,
        )  # fmt: skip
        self.fc_norm = nn.LayerNorm(dim, eps=head_norm_eps)
        init_vit_weights(self.encoder)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> tokens laid out as (B, D, t, h, w)."""
        t, h, w = self.encoder.grid(x.shape)
        tokens = self.encoder(x)  # (B, N, D)
        return rearrange(tokens, "b (t h w) d -> b d t h w", t=t, h=h, w=w)

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Tokens (B, D, t, h, w) -> logits, or their mean (B, D) if `pre_logits`."""
        pooled = self.pool_features(feats)  # (B, D)
        if pre_logits:
            return pooled
        return self.fc(self.head_drop(self.fc_norm(pooled)))

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Checkpoint every encoder block while training (less memory, one more forward);
        "selective" keeps each block's attention output and recomputes the rest."""
        super().set_grad_checkpointing(enable)
        self.encoder.grad_checkpointing = self.grad_checkpointing


# Old runs saved the per-head size as `width` and the input channels as `in_chans`.
_RENAMED = {"width": "head_dim", "in_chans": "in_channels"}


@register_model(renamed_args=_RENAMED)
@variant(VideoViT, head_dim=64, depth=12, num_heads=12, num_classes=400)
def vit_b_16_video() -> VideoViT:
    """ViT-B/16 on 2x16x16 tubelets (VideoMAE's ViT-B: 768 channels, 12 heads, 12 blocks)."""


@register_model(renamed_args=_RENAMED)
@variant(VideoViT, head_dim=64, depth=12, num_heads=6, num_classes=400)
def vit_s_16_video() -> VideoViT:
    """ViT-S/16 on 2x16x16 tubelets (VideoMAE's ViT-S: 384 channels, 6 heads, 12 blocks)."""


@register_model(renamed_args=_RENAMED)
@variant(VideoViT, head_dim=64, depth=12, num_heads=3, num_classes=400)
def vit_t_16_video() -> VideoViT:
    """ViT-Ti/16 on 2x16x16 tubelets (192 channels, 3 heads, 12 blocks)."""
