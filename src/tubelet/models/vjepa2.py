"""V-JEPA 2's video ViT: 2x16x16 tubelets, 3D rotary positions, and its attentive probe.

Assran et al., "V-JEPA 2: Self-Supervised Video Models Enable Understanding, Prediction and
Planning" (Meta, 2025). The encoder is a plain pre-norm ViT over tubelet tokens with no added
position table: every attention layer turns its queries and keys by each token's (frame, row,
column) on the input's own grid (`tubelet.nn.rope`), so any frame count and size run without
resampling anything. The frozen encoder is evaluated with an attentive probe (section 4): a few
self-attention blocks over the tokens, then one learned query cross-attends to them, and a linear
layer classifies the result; its layout is Hugging Face `VJEPA2ForVideoClassification`'s pooler.

| name | width | depth | heads | MLP | params (encoder) |
|---|---:|---:|---:|---:|---:|
| `vjepa2_vitl` | 1024 | 24 | 16 | 4096 | 304M (ViT-L) |
| `vjepa2_vith` | 1280 | 32 | 16 | 5120 | 632M (ViT-H) |
| `vjepa2_vitg` | 1408 | 40 | 22 | 6144 | 1012M (ViT-g) |

`head="attentive"` (the paper's probe) or `head="linear"` (mean of the tokens, then `fc`).
Import: `checkpoint_format="transformers"` from a `VJEPA2Model` folder (encoder; the probe head is
new, and the predictor, used only in pre-training, is left out) or a
`VJEPA2ForVideoClassification` folder (encoder, pooler and classifier); config.json sets the
architecture. Positions follow the published code (`RoPEAttention` in facebookresearch/vjepa2),
which takes rows and columns from the input's grid; Hugging Face takes them from the config's
`crop_size`, so the two agree whenever the input has that size (any frame count).
"""

from __future__ import annotations

from functools import partial

import torch
from einops import rearrange
from torch import Tensor, nn

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import register_model, variant
from tubelet.models.vit_video import init_vit_weights
from tubelet.nn.attention import CrossAttention
from tubelet.nn.block import Block
from tubelet.nn.embed import PatchEmbed3d
from tubelet.nn.masking import tube_grid
from tubelet.nn.mlp import Mlp
from tubelet.nn.rope import vjepa_rope_3d

HEADS = ("attentive", "linear")


class CrossBlock(nn.Module):
    """queries (B, Q, D) attend to normalised tokens (B, L, D) (no output projection, and the
    queries themselves are not normalised), then a pre-norm MLP: -> (B, Q, D)."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, norm_eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = CrossAttention(dim, num_heads, out_proj=False)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, queries: Tensor, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        x = queries + self.attn(queries, self.norm1(tokens), mask=mask)
        return x + self.mlp(self.norm2(x))


class AttentivePooler(nn.Module):
    """Tokens (B, L, D) -> one vector (B, D): `depth` self-attention blocks over the tokens, then
    a learned query cross-attends to them (V-JEPA 2's attentive probe; Hugging Face
    `VJEPA2AttentivePooler`, whose weights map onto these key for key). `forward(tokens, mask)`:
    `mask` (B, L) bool, True = a real token; padding is never attended to."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        depth: int = 3,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.query_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_dim=int(dim * mlp_ratio), norm_layer=norm)
            for _ in range(depth)
        )
        self.cross_block = CrossBlock(dim, num_heads, mlp_ratio=mlp_ratio, norm_eps=norm_eps)
        init_vit_weights(self)
        nn.init.trunc_normal_(self.query_tokens, std=0.02)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        keys = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
        for block in self.blocks:
            tokens = block(tokens, keys)
        queries = self.query_tokens.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        return self.cross_block(queries, tokens, mask)[:, 0]  # (B, D)


class VJEPA2(VideoClassifier):
    """V-JEPA 2 encoder with a classifier: `forward_features` gives the normalised tokens as
    (B, D, t, h, w); `forward_head` pools them (attentive pooler or mean, by `head`) and applies
    `fc`.

    `width` = channels, `num_heads` heads of width / num_heads channels; `mlp_ratio` sets the MLP
    width; `drop_path` is the stochastic depth of the last block (linear from 0);
    `num_pooler_layers` self-attention blocks precede the pooler's cross-attention. A clip of fewer
    than `tubelet_size` frames (an image) is repeated to fill one tube, as Hugging Face does.
    Otherwise T must be divisible by `tubelet_size`, H and W by `patch_size`.
    """

    head_modules = ("pooler", "fc")

    def __init__(
        self,
        *,
        width: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        num_classes: int = 400,
        mlp_ratio: float = 4.0,
        tubelet_size: int = 2,
        patch_size: int = 16,
        in_channels: int = 3,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        head: str = "attentive",
        num_pooler_layers: int = 3,
    ) -> None:
        if min(width, depth, num_heads) < 1:
            raise ValueError(
                f"width, depth and num_heads must be >= 1, got {width}, {depth}, {num_heads}"
            )
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
        super().__init__(num_features=width, num_classes=num_classes, dropout=dropout)
        self.tubelet_size = tubelet_size
        self.patch_size = patch_size
        self.head_dim = width // num_heads
        self.patch_embed = PatchEmbed3d((tubelet_size, patch_size, patch_size), in_channels, width)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # grows with depth
        self.blocks = nn.ModuleList(
            Block(
                width,
                num_heads,
                mlp_dim=int(width * mlp_ratio),  # V-JEPA 2's: 1408 * 48/11 = 6144
                norm_layer=partial(nn.LayerNorm, eps=norm_eps),
                qkv_bias=qkv_bias,
                drop_path=rate,
            )  # fmt: skip
            for rate in rates
        )
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        init_vit_weights(self.blocks)  # before the head: a seed gives one backbone for any head
        self.head = head
        self.pooler = (
            # The pooler's MLPs are 4x wide whatever the encoder's ratio (Hugging Face's layout).
            AttentivePooler(width, num_heads, depth=num_pooler_layers, norm_eps=norm_eps)
            if head == "attentive"
            else None
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> normalised tokens laid out as (B, D, t, h, w)."""
        if x.shape[2] < self.tubelet_size:
            x = x.repeat(1, 1, self.tubelet_size, 1, 1)  # an image becomes one tube
        t, h, w = tube_grid(x.shape, self.tubelet_size, self.patch_size)
        tokens = rearrange(self.patch_embed(x), "b t h w d -> b (t h w) d")  # (B, N, D)
        rope = vjepa_rope_3d((t, h, w), self.head_dim, device=x.device)  # (cos, sin), (N, d) each
        for block in self.blocks:
            tokens = self.maybe_checkpoint(block, tokens, None, rope)
        tokens = self.norm(tokens)
        return rearrange(tokens, "b (t h w) d -> b d t h w", t=t, h=h, w=w)

    def layer_of(self, name: str) -> int:
        """The depth of parameter `name` for layer-wise learning rates: 0 for the tubelet
        embedding, i + 1 for block i, len(blocks) + 1 for the final norm and the head."""
        if name.startswith("patch_embed."):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return len(self.blocks) + 1


_RENAMED = {"in_chans": "in_channels"}  # its first runs saved the input channels as `in_chans`


@register_model(renamed_args=_RENAMED)
@variant(VJEPA2)
def vjepa2_vitl() -> VJEPA2:
    """V-JEPA 2 ViT-L/16 (1024 channels, 24 blocks, 16 heads)."""


@register_model(renamed_args=_RENAMED)
@variant(VJEPA2, width=1280, depth=32, num_heads=16)
def vjepa2_vith() -> VJEPA2:
    """V-JEPA 2 ViT-H/16 (1280 channels, 32 blocks, 16 heads)."""


@register_model(renamed_args=_RENAMED)
@variant(VJEPA2, width=1408, depth=40, num_heads=22, mlp_ratio=48 / 11)
def vjepa2_vitg() -> VJEPA2:
    """V-JEPA 2 ViT-g/16 (1408 channels, 40 blocks, 22 heads, MLP 48/11 = 6144 wide)."""
