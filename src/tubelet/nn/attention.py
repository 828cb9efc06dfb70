"""One multi-head self-attention layer for every video transformer, on PyTorch's fused kernel.

`Attention` runs `torch.nn.functional.scaled_dot_product_attention`, so a GPU picks flash or
memory-efficient attention by itself. The video factorisations are only different groupings of the
same tokens, laid out as (B, T, N, D) (T frames of N patches each):

- `joint_attention`: every token attends to all T*N tokens;
- `temporal_attention`: each patch position attends across the T frames;
- `spatial_attention`: each frame's N patches attend to each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention: one `qkv` projection, scaled dot product, one output `proj`.

    `forward(x, mask=None)` takes tokens (B, L, D) and an optional mask broadcastable to
    (B, heads, L, L): boolean (True = may attend) or additive float (such as a relative position
    bias, or -inf / -100 between tokens of different shifted windows).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b l (s h d) -> s b h l d", s=3, h=self.num_heads)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(rearrange(out, "b h l d -> b l (h d)")))


def joint_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Space-time attention over all T*N tokens of each clip; `x` is (B, T, N, D)."""
    t = x.shape[1]
    out = attn(rearrange(x, "b t n d -> b (t n) d"))
    return rearrange(out, "b (t n) d -> b t n d", t=t)


def temporal_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Attention across frames at each patch position; `x` is (B, T, N, D)."""
    b = x.shape[0]
    out = attn(rearrange(x, "b t n d -> (b n) t d"))
    return rearrange(out, "(b n) t d -> b t n d", b=b)


def spatial_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Attention among the patches of each frame; `x` is (B, T, N, D)."""
    b = x.shape[0]
    out = attn(rearrange(x, "b t n d -> (b t) n d"))
    return rearrange(out, "(b t) n d -> b t n d", b=b)
