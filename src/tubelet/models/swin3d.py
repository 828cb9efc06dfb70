"""Video Swin Transformer (Liu et al., 2022, https://arxiv.org/abs/2106.13230): `swin3d_t/s/b`.

A clip (B, C, T, H, W) is cut into 2x4x4 patches (a strided Conv3d), then four stages of
transformer blocks attend within 3D windows (8x7x7 tokens by default); every other block shifts the
windows by half a window (cyclic roll + mask, `tubelet.nn.windows`), and a patch merging layer
between stages halves H and W and doubles the channels. Attention adds a learned relative position
bias, one value per head and 3D offset, from a table of (2Wt-1)(2Wh-1)(2Ww-1) rows. Every attention
is `tubelet.nn.attention.Attention`'s projections around the bias and shift mask: one SDPA call
when the bias needs no gradient, `biased_attention` (plain matmuls, which bf16 autocast reaches)
while training.

Module and parameter names equal torchvision's `SwinTransformer3d` except the classifier (`fc`
here, `head` there), so its checkpoints import with `checkpoint_format="torchvision"`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import register_model, variant
from tubelet.nn import NormFactory
from tubelet.nn.attention import Attention, biased_attention
from tubelet.nn.embed import PatchEmbed3d
from tubelet.nn.windows import (
    clip_window,
    pad_to_windows,
    relative_position_index,
    shifted_window_mask,
    window_bias,
    window_partition,
    window_reverse,
)

# torchvision's and the paper's channels per attention head (96 / 3, 128 / 4).
HEAD_DIM = 32
_LayerNorm = partial(nn.LayerNorm, eps=1e-5)


class WindowAttention3d(Attention):
    """Multi-head self-attention within (shifted) 3D windows, with relative position bias.

    (B, T, H, W, C) -> (B, T, H, W, C). The grid is padded to window multiples, rolled by
    -`shift_size` (when shifting), split into windows, and each window's tokens attend to each other
    with the relative position bias (+ shift mask) added to the scores; then everything is undone.
    Windows larger than the input are clipped to it (`clip_window`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, attn_drop=attn_drop, proj_drop=proj_drop)
        self.window_size = tuple(window_size)
        self.shift_size = tuple(shift_size)
        wt, wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )  # (rows, heads)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Persistent, as in torchvision, so the state dicts are the same key for key.
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        b, t, h, w, _ = x.shape
        window, shift = clip_window((t, h, w), self.window_size, self.shift_size)
        x = pad_to_windows(x, window)  # (B, T', H', W', C)
        padded = x.shape[1:4]
        shifted = any(shift)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        windows = window_partition(x, window)  # (B * nW, N, C)
        bias = window_bias(
            self.relative_position_bias_table, self.relative_position_index, window
        )  # (1, heads, N, N)
        if shifted:
            shift_mask = shifted_window_mask(
                padded, window, shift, device=x.device, dtype=bias.dtype
            )  # (nW, N, N)
            bias = bias + shift_mask[:, None]  # (nW, heads, N, N)
        q, k, v = self.heads(windows)  # (B * nW, heads, N, d)
        dropout = self.attn_drop if self.training else 0.0
        if torch.is_grad_enabled() and bias.requires_grad:
            # The bias is trained: plain matmuls, which follow autocast (SDPA would run them in
            # float32, see `biased_attention`). Windows are batch-major, so viewing the batch as
            # (B, nW) broadcasts the per-window bias without repeating it B times.
            out = biased_attention(
                *(z.unflatten(0, (b, -1)) for z in (q, k, v)), bias, dropout
            ).flatten(0, 1)  # (B * nW, heads, N, d)
        else:
            # SDPA needs the batch dim of its 4D inputs in the mask: repeat over the batch.
            mask = bias.repeat(b, 1, 1, 1) if shifted else bias
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask.to(q.dtype), dropout_p=dropout
            )
        out = self.merge(out)  # (B * nW, N, C)
        x = window_reverse(out, window, padded)  # (B, T', H', W', C)
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        return x[:, :t, :h, :w]


class SwinBlock3d(nn.Module):
    """Pre-norm transformer block on (B, T, H, W, C): window attention, then an MLP, each added back
    through stochastic depth (the whole residual branch dropped per sample while training)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        mlp_ratio: float,
        dropout: float,
        attention_dropout: float,
        stochastic_depth_prob: float,
        norm_layer: NormFactory,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention3d(
            dim,
            num_heads,
            window_size=window_size,
            shift_size=shift_size,
            attn_drop=attention_dropout,
            proj_drop=dropout,
        )
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        # Indices 0 and 3 hold the weights, as in torchvision's `MLP`.
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.stochastic_depth(self.attn(self.norm1(x)))
        return x + self.stochastic_depth(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """(B, T, H, W, C) -> (B, T, ceil(H/2), ceil(W/2), 2C): each 2x2 group of tokens concatenated
    (zero-padded to even H and W), normalised and projected; time is kept."""

    def __init__(self, dim: int, norm_layer: NormFactory) -> None:
        super().__init__()
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:4]
        x = nn.functional.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # Channel order (dw, dh, c): torchvision's concatenation of x[0::2, 0::2], x[1::2, 0::2],
        # x[0::2, 1::2], x[1::2, 1::2].
        x = rearrange(x, "b t (h dh) (w dw) c -> b t h w (dw dh c)", dh=2, dw=2)
        return self.reduction(self.norm(x))


class SwinTransformer3d(VideoClassifier):
    """Video Swin: patch embedding, stages of (shifted) window blocks with patch merging between
    them, a final norm and the pooled linear head.

    Input (B, in_channels, T, H, W) of any size; `forward_features` gives (B, D, T', H', W') with
    D = `num_features` = width * 2 ** (stages - 1), T' = ceil(T / pt), H' = ceil(H / (ph * 2 **
    (stages - 1))) and so on.

    `width` is the embedding dim (torchvision's `embed_dim`); stage s has `depths[s]` blocks of
    width * 2**s channels and `num_heads[s]` heads (the builders default to one head per 32
    channels, torchvision's ratio). `window_size` is (Wt, Wh, Ww) in tokens, `patch_size` the
    (T, H, W) extent of one token. `dropout` acts before the classifier, as in every tubelet
    classifier; `block_dropout` is torchvision's `dropout` (after the patch embedding, attention
    projection and MLP layers) and `attention_dropout` its dropout on attention weights.
    `stochastic_depth_prob` is the drop rate of the last block, rising linearly from 0.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        width: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: Sequence[int],
        patch_size: Sequence[int],
        in_channels: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        block_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        stochastic_depth_prob: float = 0.1,
        norm_layer: NormFactory = _LayerNorm,
    ) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not depths or len(depths) != len(num_heads) or min(depths) < 1:
            raise ValueError(
                f"depths {tuple(depths)} and num_heads {tuple(num_heads)} need one entry >= 1 per "
                "stage, the same number of each"
            )
        for name, values in (("window_size", window_size), ("patch_size", patch_size)):
            if len(values) != 3 or min(values) < 1:
                raise ValueError(f"{name} must be three ints >= 1 (T, H, W), got {tuple(values)}")
        super().__init__(
            num_features=width * 2 ** (len(depths) - 1), num_classes=num_classes, dropout=dropout
        )
        self.patch_embed = PatchEmbed3d(
            patch_size, in_channels, width, norm_layer=norm_layer, pad=True
        )
        self.pos_drop = nn.Dropout(block_dropout)
        total = sum(depths)
        shift_size = tuple(w // 2 for w in window_size)
        layers: list[nn.Module] = []
        index = 0
        for stage, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            dim = width * 2**stage
            blocks = []
            for i in range(depth):
                blocks.append(
                    SwinBlock3d(
                        dim,
                        heads,
                        window_size=window_size,
                        shift_size=(0, 0, 0) if i % 2 == 0 else shift_size,
                        mlp_ratio=mlp_ratio,
                        dropout=block_dropout,
                        attention_dropout=attention_dropout,
                        # Linear in the block's depth, 0 for the first (torchvision, the paper).
                        stochastic_depth_prob=stochastic_depth_prob * index / max(1, total - 1),
                        norm_layer=norm_layer,
                    )
                )
                index += 1
            layers.append(nn.Sequential(*blocks))
            if stage < len(depths) - 1:
                layers.append(PatchMerging(dim, norm_layer))
        self.features = nn.Sequential(*layers)
        self.norm = norm_layer(self.num_features)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                self.init_head(m)

    def init_head(self, fc: nn.Linear) -> None:
        """Linear layers (the classifier included): truncated normal std 0.02, zero bias."""
        nn.init.trunc_normal_(fc.weight, std=0.02)
        if fc.bias is not None:
            nn.init.zeros_(fc.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> normalised tokens as (B, D, T', H', W')."""
        if x.ndim != 5:
            raise ValueError(f"expected a clip (B, C, T, H, W), got shape {tuple(x.shape)}")
        x = self.pos_drop(self.patch_embed(x))  # (B, T', H', W', width)
        for layer in self.features:
            if isinstance(layer, nn.Sequential):
                for block in layer:
                    x = self.maybe_checkpoint(block, x)
            else:
                x = layer(x)  # patch merging: (B, T', H'/2, W'/2, 2C)
        return self.norm(x).permute(0, 4, 1, 2, 3)  # (B, D, T', H', W')


def _heads(width: int, stages: int, num_heads: Sequence[int] | None) -> tuple[int, ...]:
    """The given heads per stage, or one head per `HEAD_DIM` channels (at least one)."""
    if num_heads is not None:
        return tuple(int(h) for h in num_heads)
    return tuple(max(1, width * 2**s // HEAD_DIM) for s in range(stages))


def _build(
    *,
    num_classes: int = 400,
    width: int = 96,
    depths: Sequence[int] = (2, 2, 6, 2),
    num_heads: Sequence[int] | None = None,
    window_size: Sequence[int] = (8, 7, 7),
    patch_size: Sequence[int] = (2, 4, 4),
    dropout: float = 0.0,
    block_dropout: float = 0.0,
    attention_dropout: float = 0.0,
    stochastic_depth_prob: float = 0.1,
) -> SwinTransformer3d:
    """A SwinTransformer3d with torchvision's defaults; sequences become tuples (a saved spec holds
    JSON lists). The variants below change only width and depths; every argument can be passed."""
    return SwinTransformer3d(
        num_classes=num_classes,
        width=width,
        depths=tuple(depths),
        num_heads=_heads(width, len(depths), num_heads),
        window_size=tuple(window_size),
        patch_size=tuple(patch_size),
        dropout=dropout,
        block_dropout=block_dropout,
        attention_dropout=attention_dropout,
        stochastic_depth_prob=stochastic_depth_prob,
    )


@register_model
@variant(_build, width=96, depths=(2, 2, 6, 2))
def swin3d_t() -> SwinTransformer3d:
    """Swin3D-T (28M parameters at the defaults): torchvision `swin3d_t`, width 96, depths 2-2-6-2."""


@register_model
@variant(_build, width=96, depths=(2, 2, 18, 2))
def swin3d_s() -> SwinTransformer3d:
    """Swin3D-S (50M parameters at the defaults): torchvision `swin3d_s`, width 96, depths 2-2-18-2."""


@register_model
@variant(_build, width=128, depths=(2, 2, 18, 2))
def swin3d_b() -> SwinTransformer3d:
    """Swin3D-B (88M parameters at the defaults): torchvision `swin3d_b`, width 128, depths 2-2-18-2."""
