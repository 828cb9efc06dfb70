"""One multi-head self-attention layer for every video transformer, on PyTorch's fused kernel.

`Attention` runs `torch.nn.functional.scaled_dot_product_attention`, so a GPU picks flash or
memory-efficient attention by itself. The video factorisations are only different groupings of the
same tokens, laid out as (B, T, N, D) (T frames of N patches each):

- `joint_attention`: every token attends to all T*N tokens;
- `temporal_attention`: each patch position attends across the T frames;
- `spatial_attention`: each frame's N patches attend to each other.

`CrossAttention` lets a few query tokens attend to many (attentive pooling).
`attention_cost` counts what each grouping (and windowed attention) costs for given T, N and width.

`biased_attention` writes the same attention out as two matmuls and a softmax, for an additive bias
that is itself trained (Video Swin's relative position bias): SDPA's fused kernels take no mask that
needs a gradient, and its math fallback computes bfloat16 inputs in float32 (so under bf16 autocast
its matmuls ran as float32 GEMMs), while plain matmuls follow autocast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from tubelet.nn.factories import NormFactory
from tubelet.nn.rope import apply_rope


class Attention(nn.Module):
    """Multi-head self-attention: one `qkv` projection, scaled dot product, one output `proj`.

    `forward(x, mask=None, rope=None)` takes tokens (B, L, D), an optional mask broadcastable to
    (B, heads, L, L): boolean (True = may attend) or additive float (such as a relative position
    bias, or -inf / -100 between tokens of different shifted windows), and optional rotary tables
    `(cos, sin)` that `tubelet.nn.rope.apply_rope` applies to queries and keys (V-JEPA 2).

    `softcap` bounds the scores as `softcap * tanh(s / softcap)` before the softmax (VideoPrism,
    as Gemma 2); the fused kernel has no such step, so those layers compute the scores explicitly.

    `qk_norm`, a norm factory such as `partial(nn.RMSNorm, eps=1e-6)`, normalises queries and keys
    over all heads' channels (width D) before the heads are split and turned, as Wan 2.1 does to
    keep attention logits bounded (Dehghani et al. 2023, "Scaling Vision Transformers to 22B",
    sec. 3.1, normalise per head; Wan across heads).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        softcap: float | None = None,
        qk_norm: NormFactory | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = qk_norm(dim) if qk_norm is not None else None
        self.k_norm = qk_norm(dim) if qk_norm is not None else None
        self.attn_drop = attn_drop
        self.softcap = softcap
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        q, k, v = self.heads(x)  # (B, heads, L, d) each
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(q.dtype)
        dropout = self.attn_drop if self.training else 0.0
        if self.softcap is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            out = softcapped_attention(q, k, v, self.softcap, mask=mask, dropout_p=dropout)
        return self.merge(out)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (B, L, D) -> q, k, v, each (B, heads, L, D / heads) (q and k normalised when
        `qk_norm` was given)."""
        if self.q_norm is None or self.k_norm is None:
            # unbind along the q/k/v dim of (B, L, 3, heads, d): backward stacks the three
            # gradients straight into the layout of `qkv`'s output (one copy, none to transpose).
            qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))
            q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
            return q, k, v
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, L, D) each
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (rearrange(t, "b l (h d) -> b h l d", h=self.num_heads) for t in (q, k, v))
        return q, k, v

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """Attention output (B, heads, L, d) -> the projected tokens (B, L, D)."""
        return self.proj_drop(self.proj(rearrange(out, "b h l d -> b l (h d)")))


def biased_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v with plain matmuls: q, k, v (..., L, d), `bias`
    broadcastable to (..., L, L); the scores keep the bias's precision (float32 under autocast,
    as torchvision's Swin), the matmuls run in autocast's dtype.
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (..., L, L)
    attn = (scores + bias).softmax(dim=-1)
    if dropout_p:
        attn = F.dropout(attn, p=dropout_p)
    return attn.to(v.dtype) @ v  # (..., L, d)


def softcapped_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    softcap: float,
    *,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(cap * tanh(q k^T * scale / cap) [+ mask]) v on (B, heads, L, d); `mask` as in SDPA."""
    scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5 if scale is None else scale)
    scores = softcap * torch.tanh(scores / softcap)  # (B, heads, Lq, Lk)
    if mask is not None:
        scores = (
            scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        )
    weights = F.dropout(scores.softmax(dim=-1), p=dropout_p)
    return weights @ v  # (B, heads, Lq, d)


class CrossAttention(nn.Module):
    """Multi-head attention of `queries` (B, Q, D) over `tokens` (B, L, D): projections `q`, `k`,
    `v` to `inner_dim` (default D) and `proj` back to D (an identity when `out_proj=False`, as in
    V-JEPA 2's pooler).

    `forward(queries, tokens, scale=None, query_gain=None, mask=None)`: scores are
    (q * query_gain) . k * scale (`scale` defaults to head_dim^-0.5; `query_gain` (head_dim,) is a
    learned per-channel factor, VideoPrism's `per_dim_scale`); `mask` (B, L) boolean leaves out
    the tokens marked False (a text's padding). `tokens_dim` is the tokens' width when it is not
    D (text embeddings); `qk_norm` as in `Attention` (Wan's cross-attention to the text).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        inner_dim: int | None = None,
        tokens_dim: int | None = None,
        qkv_bias: bool = True,
        out_proj: bool = True,
        qk_norm: NormFactory | None = None,
    ) -> None:
        super().__init__()
        inner = inner_dim or dim
        if inner % num_heads:
            raise ValueError(f"inner dim {inner} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = inner // num_heads
        self.q = nn.Linear(dim, inner, bias=qkv_bias)
        self.k = nn.Linear(tokens_dim or dim, inner, bias=qkv_bias)
        self.v = nn.Linear(tokens_dim or dim, inner, bias=qkv_bias)
        self.q_norm = qk_norm(inner) if qk_norm is not None else None
        self.k_norm = qk_norm(inner) if qk_norm is not None else None
        self.proj = nn.Linear(inner, dim) if out_proj else nn.Identity()

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        scale: float | None = None,
        query_gain: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        heads = self.num_heads
        q, k = self.q(queries), self.k(tokens)  # (B, Q, inner), (B, L, inner)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = rearrange(q, "b q (h d) -> b h q d", h=heads)  # (B, heads, Q, d)
        if query_gain is not None:
            q = q * query_gain
        k = rearrange(k, "b l (h d) -> b h l d", h=heads)  # (B, heads, L, d)
        v = rearrange(self.v(tokens), "b l (h d) -> b h l d", h=heads)
        attn_mask = mask[:, None, None, :] if mask is not None else None  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
        return self.proj(rearrange(out, "b h q d -> b q (h d)"))


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


class AttentionCost(NamedTuple):
    """The attention work of one factorisation, counted in multiply-adds (MACs).

    `tokens_attended`: keys each query token attends to (summed over the steps of a factorised
    attention); `qk_macs_per_token` / `av_macs_per_token`: MACs of one query's row of Q K^T and of
    its softmax(.) V, summed over heads (`tokens_attended * dim` each); the `_per_clip` fields are
    those times the T*N query tokens of one clip. All counts are for one block (multiply by the
    depth for a network). Projections (qkv, output) and the MLP are left out: they cost the same
    per token whatever the factorisation.
    """

    tokens_attended: int
    qk_macs_per_token: int
    av_macs_per_token: int
    qk_macs_per_clip: int
    av_macs_per_clip: int


def attention_cost(
    frames: int, patches: int, dim: int, window: int | Sequence[int] | None = None
) -> dict[str, AttentionCost]:
    """Attention cost of each factorisation for a clip of `frames` x `patches` tokens of width `dim`.

    Keys: "joint" (every token attends to all T*N), "divided" (temporal over T, then spatial over N:
    T + N), "space_only" (N) and, when `window` is given, "windowed" (the tokens of one window:
    an int, or a window shape such as (2, 7, 7) whose product is taken; clipped to T*N as Video
    Swin clips windows to small inputs; the windows are assumed to tile the clip). A class token,
    as TimeSformer adds, is left out, as in the paper's count (Bertasius et al. 2021, Sec. 3):
    for T=8, N=196, joint attention attends to 1568 tokens per query and divided to 8 + 196 = 204,
    7.7x fewer.
    """
    for label, value in (("frames", frames), ("patches", patches), ("dim", dim)):
        if value < 1:
            raise ValueError(f"{label} must be >= 1, got {value}")
    tokens = frames * patches
    attended = {"joint": tokens, "divided": frames + patches, "space_only": patches}
    if window is not None:
        sizes = (window,) if isinstance(window, int) else tuple(window)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"window sizes must be >= 1, got {window!r}")
        attended["windowed"] = min(math.prod(sizes), tokens)
    return {
        name: AttentionCost(
            tokens_attended=keys,
            qk_macs_per_token=keys * dim,
            av_macs_per_token=keys * dim,
            qk_macs_per_clip=tokens * keys * dim,
            av_macs_per_clip=tokens * keys * dim,
        )
        for name, keys in attended.items()
    }
