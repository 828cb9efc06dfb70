"""VideoPrism: a factorised video encoder (spatial layers, then temporal layers), and its
video-text model for zero-shot classification and retrieval.

Zhao et al., "VideoPrism: A Foundational Visual Encoder for Video Understanding" (Google, ICML
2024). Each frame is cut into 18x18 patches (a (1, 18, 18) tubelet), a learned spatial table is
added, and `spatial_depth` blocks attend within each frame; then a learned temporal table is added
and `temporal_depth` blocks attend across the frames at each patch position (ViViT's factorised
encoder, "model 2"). Blocks are pre-norm with two VideoPrism details: LayerNorms scale by
(1 + weight) (`OffsetLayerNorm`), and attention scores are soft-capped at 50
(`cap * tanh(s / cap)`, `tubelet.nn.attention.softcapped_attention`).

The video-text model (LVT) adds `aux_depth` blocks over all tokens and a multi-head attention
pooling head (one learned query; its scores use a learned per-channel scale, `PrismPooler`),
giving one L2-normalised video vector; its text tower (`PrismTextEncoder`) embeds tokens
(x sqrt(D), plus a fixed sinusoid table), appends a class token, runs causal blocks with ReLU MLPs
and returns the class token's L2-normalised output. Cosine similarity ranks texts for a video.

| name | width | heads | MLP | spatial + temporal blocks | frames x px |
|---|---:|---:|---:|---|---|
| `videoprism_b` / `videoprism_lvt_b` | 768 | 12 | 3072 | 12 + 4 | 16 x 288 |
| `videoprism_l` / `videoprism_lvt_l` | 1024 | 16 | 4096 | 24 + 4 | 8 x 288 |

The LVT models have 2 auxiliary blocks and a 12-block text tower of the same width (vocabulary
64000, 64 tokens). Input is RGB in [0, 1] (no mean/std). Another frame count or size resamples the
position tables bilinearly (with antialiasing), as Hugging Face does with
`interpolate_pos_encoding=True` (without it, it refuses other sizes).

Import: `checkpoint_format="transformers"` from `VideoPrismVisionModel` (backbone: the head is new),
`VideoPrismForVideoClassification` (backbone, pooling head and classifier) or `VideoPrismClipModel`
(video-text; its `fc` for probing is new) folders; config.json sets the architecture.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import register_model, variant
from tubelet.nn.attention import CrossAttention
from tubelet.nn.block import Block
from tubelet.nn.checkpoint import checkpoint_level, checkpoint_module

HEADS = ("attentive", "linear")
# 1 / softplus(0) = 1 / ln 2: with per_dim_scale at 0 the pooler's scores have the usual 1/sqrt(d).
_R_SOFTPLUS_0 = 1.442695041


class OffsetLayerNorm(nn.Module):
    """LayerNorm scaled by (1 + weight) (Praxis' convention): a zero weight is the identity scale.
    `weight` and `bias` keep the stored values, so checkpoints map as they are."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight + 1.0, self.bias, self.eps)


def prism_block(
    dim: int,
    num_heads: int,
    *,
    mlp_dim: int,
    softcap: float | None,
    norm_eps: float,
    qkv_bias: bool = True,
    act_layer: type[nn.Module] = nn.GELU,
) -> Block:
    """VideoPrism's block: the shared pre-norm `Block` with `OffsetLayerNorm`s and soft-capped
    attention; its MLP is exact GELU (video) or ReLU (text). `forward(x, mask)`: (B, L, D) ->
    (B, L, D), `mask` as in `Attention` (the text tower's causal and padding mask)."""
    return Block(
        dim, num_heads, mlp_dim=mlp_dim, norm_layer=partial(OffsetLayerNorm, eps=norm_eps),
        act_layer=act_layer, qkv_bias=qkv_bias, softcap=softcap,
    )  # fmt: skip


def _resample(table: Tensor, size: tuple[int, int]) -> Tensor:
    """(1, D, h0, w0) position table -> (1, D, h, w), bilinear with antialiasing (Hugging Face's
    `interpolate_pos_encoding`); the table itself when the size is its own."""
    if tuple(table.shape[2:]) == size:
        return table
    return F.interpolate(table, size=size, mode="bilinear", antialias=True)


class FactorisedEncoder(nn.Module):
    """(B, C, T, H, W) -> tokens (B, T, N, D): per-frame patches + spatial table -> spatial blocks
    (within each frame) -> `spatial_norm` -> + temporal table -> temporal blocks (across frames at
    each patch) -> `temporal_norm`. The tables hold `grid` (rows, columns) and `num_frames`
    entries and are resampled for other inputs. H and W must be multiples of `patch_size`."""

    def __init__(
        self,
        *,
        width: int,
        num_heads: int,
        mlp_dim: int,
        spatial_depth: int,
        temporal_depth: int,
        patch_size: int,
        image_size: int,
        num_frames: int,
        in_chans: int,
        qkv_bias: bool,
        norm_eps: float,
        softcap: float | None,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.patch_embed = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size)
        self.spatial_pos = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], width))
        self.temporal_pos = nn.Parameter(torch.zeros(1, num_frames, width))

        def blocks(depth: int) -> nn.ModuleList:
            return nn.ModuleList(
                prism_block(
                    width,
                    num_heads,
                    mlp_dim=mlp_dim,
                    softcap=softcap,
                    norm_eps=norm_eps,
                    qkv_bias=qkv_bias,
                )  # fmt: skip
                for _ in range(depth)
            )

        self.spatial_blocks = blocks(spatial_depth)
        self.spatial_norm = OffsetLayerNorm(width, norm_eps)
        self.temporal_blocks = blocks(temporal_depth)
        self.temporal_norm = OffsetLayerNorm(width, norm_eps)
        self.grad_checkpointing: bool | str = False

    def run(self, block: nn.Module, x: Tensor) -> Tensor:
        """`block(x)`, checkpointed when checkpointing is on and a training graph is recorded."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint_module(block, x, level=checkpoint_level(self.grad_checkpointing))
        return block(x)

    def forward(self, x: Tensor) -> Tensor:
        b, _, t, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(
                f"clip of {h}x{w} pixels does not tile into {p}x{p} patches; resize or crop it "
                f"to a multiple of {p}"
            )
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        tokens = rearrange(self.patch_embed(frames), "bt d h w -> bt (h w) d")  # (B*T, N, D)
        table = rearrange(self.spatial_pos, "1 (h w) d -> 1 d h w", h=self.grid[0])
        table = _resample(table, (h // p, w // p))
        tokens = tokens + rearrange(table, "1 d h w -> 1 (h w) d")
        for block in self.spatial_blocks:
            tokens = self.run(block, tokens)
        tokens = self.spatial_norm(tokens)
        tokens = rearrange(tokens, "(b t) n d -> (b n) t d", b=b)  # (B*N, T, D)
        table = _resample(self.temporal_pos[None], (t, self.temporal_pos.shape[-1]))[0]  # (1, T, D)
        tokens = tokens + table
        for block in self.temporal_blocks:
            tokens = self.run(block, tokens)
        tokens = self.temporal_norm(tokens)
        return rearrange(tokens, "(b n) t d -> b t n d", b=b)  # (B, T, N, D)


class PrismPooler(nn.Module):
    """Tokens (B, L, D) -> (B, D): one learned `query` attends to the tokens through projections
    `inner_dim` wide (VideoPrism's MLP width), with scores (q * softplus(per_dim_scale) / (ln 2 *
    sqrt(d))) . k, then `proj` back to D and `norm` (an `OffsetLayerNorm`)."""

    def __init__(self, dim: int, num_heads: int, *, inner_dim: int, norm_eps: float) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.attn = CrossAttention(dim, num_heads, inner_dim=inner_dim)
        self.per_dim_scale = nn.Parameter(torch.zeros(inner_dim // num_heads))
        self.norm = OffsetLayerNorm(dim, norm_eps)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        gain = F.softplus(self.per_dim_scale) * (_R_SOFTPLUS_0 / self.attn.head_dim**0.5)
        queries = self.query.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        return self.norm(self.attn(queries, tokens, scale=1.0, query_gain=gain)[:, 0])  # (B, D)


def l2_normalise(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(|x|^2 + eps) over the last dim (VideoPrism's, with eps inside the root)."""
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + eps)


def text_positions(length: int, dim: int) -> Tensor:
    """(length, dim) fixed table: [sin(p w_i) for i < dim/2, cos(p w_i) for i < dim/2] with
    w_i = 10000^(-2i/dim), VideoPrism's text positions (halves, not interleaved)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64) / dim))
    angles = torch.arange(length, dtype=torch.int64).float()[:, None] * inv_freq  # (L, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class PrismTextEncoder(nn.Module):
    """Token ids (B, L) and a padding mask (B, L) (True or 1 = a real token) -> L2-normalised
    text embeddings (B, D): tokens x sqrt(D) + `text_positions`, a class token (x sqrt(D))
    appended, causal blocks that never attend to padding, `norm`, the class token's output.

    Without a mask every token is real. (Hugging Face's model without an attention_mask runs
    its text blocks without the causal mask; with one, as its processor always gives, it is
    causal as here and in the published model.)
    """

    def __init__(
        self,
        *,
        width: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        vocab_size: int,
        max_len: int,
        softcap: float | None,
        norm_eps: float,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.token_embed = nn.Embedding(vocab_size, width)
        self.cls_emb = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("positions", text_positions(max_len, width), persistent=False)
        self.blocks = nn.ModuleList(
            prism_block(
                width,
                num_heads,
                mlp_dim=mlp_dim,
                softcap=softcap,
                norm_eps=norm_eps,
                qkv_bias=qkv_bias,
                act_layer=nn.ReLU,
            )  # fmt: skip
            for _ in range(depth)
        )
        self.norm = OffsetLayerNorm(width, norm_eps)
        nn.init.normal_(self.token_embed.weight, std=width**-0.5)
        nn.init.normal_(self.cls_emb, std=width**-0.5)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        b, length = ids.shape
        if length > self.max_len:
            raise ValueError(
                f"{length} text tokens; the text tower takes at most {self.max_len}: truncate them"
            )
        scale = self.token_embed.embedding_dim**0.5
        x = self.token_embed(ids) * scale + self.positions[:length].to(self.cls_emb.dtype)
        x = torch.cat([x, (self.cls_emb * scale).expand(b, -1, -1)], dim=1)  # (B, L+1, D)
        real = torch.ones(b, length, dtype=torch.bool, device=ids.device)
        if mask is not None:
            real = mask.to(torch.bool)
        real = torch.cat([real, real.new_ones(b, 1)], dim=1)  # the class token is real
        causal = torch.ones(length + 1, length + 1, dtype=torch.bool, device=ids.device).tril()
        allowed = causal & real[:, None, None, :]  # (B, 1, L+1, L+1)
        # A large negative score instead of -inf: a padding row that may attend to nothing
        # stays finite (its output never reaches the class token).
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(~allowed, torch.finfo(x.dtype).min)
        for block in self.blocks:
            x = block(x, bias)
        return l2_normalise(self.norm(x)[:, -1])  # (B, D)


class VideoPrism(VideoClassifier):
    """VideoPrism video encoder with a classifier: `forward_features` gives the tokens as
    (B, D, T, h, w); `forward_head` pools them with `PrismPooler` (head="attentive", Hugging
    Face `VideoPrismForVideoClassification`'s head) or their mean (head="linear") and applies `fc`.

    `width` = channels; `mlp_dim` = the MLP's (and the pooler's projections') width; the position
    tables are made for `num_frames` frames of `image_size` pixels; `softcap` caps attention
    scores (None: plain attention).
    """

    head_modules = ("pooler", "fc")

    def __init__(
        self,
        *,
        width: int = 768,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        spatial_depth: int = 12,
        temporal_depth: int = 4,
        num_classes: int = 400,
        patch_size: int = 18,
        image_size: int = 288,
        num_frames: int = 16,
        in_chans: int = 3,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        softcap: float | None = 50.0,
        dropout: float = 0.0,
        head: str = "attentive",
    ) -> None:
        if min(width, num_heads, mlp_dim, spatial_depth) < 1 or temporal_depth < 0:
            raise ValueError("width, num_heads, mlp_dim and depths must be >= 1")
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
        super().__init__(num_features=width, num_classes=num_classes, dropout=dropout)
        self.encoder = FactorisedEncoder(
            width=width, num_heads=num_heads, mlp_dim=mlp_dim, spatial_depth=spatial_depth,
            temporal_depth=temporal_depth, patch_size=patch_size, image_size=image_size,
            num_frames=num_frames, in_chans=in_chans, qkv_bias=qkv_bias, norm_eps=norm_eps,
            softcap=softcap,
        )  # fmt: skip
        self.head = head
        self.pooler = (
            PrismPooler(width, num_heads, inner_dim=mlp_dim, norm_eps=norm_eps)
            if head == "attentive"
            else None
        )
        init_prism_weights(self)

    def tokens(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> the encoder's tokens (B, T, N, D)."""
        return self.encoder(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> tokens laid out as (B, D, T, h, w)."""
        h = x.shape[3] // self.encoder.patch_size
        return rearrange(self.tokens(x), "b t (h w) d -> b d t h w", h=h)

    def layer_of(self, name: str) -> int:
        """The depth of parameter `name` for layer-wise learning rates: 0 for the patch embedding
        and spatial table, then the spatial blocks, the temporal table and blocks, the auxiliary
        blocks of a video-text model, and last everything else (norms, heads, text tower)."""
        spatial = len(self.encoder.spatial_blocks)
        temporal = len(self.encoder.temporal_blocks)
        parts = name.split(".")
        if name.startswith(("encoder.patch_embed.", "encoder.spatial_pos")):
            return 0
        if name.startswith("encoder.spatial_blocks."):
            return int(parts[2]) + 1
        if name.startswith(("encoder.spatial_norm.", "encoder.temporal_pos")):
            return spatial + 1
        if name.startswith("encoder.temporal_blocks."):
            return spatial + int(parts[2]) + 1
        if name.startswith("aux_blocks."):
            return spatial + temporal + int(parts[1]) + 1
        return spatial + temporal + len(getattr(self, "aux_blocks", ())) + 1

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Checkpoint every spatial and temporal block while training (outputs unchanged)."""
        super().set_grad_checkpointing(enable)
        self.encoder.grad_checkpointing = self.grad_checkpointing


class VideoPrismLVT(VideoPrism):
    """VideoPrism video-text model: the video encoder, `aux_blocks` over all its tokens and the
    attention-pooling head give one video vector; `text` embeds token ids.

    `encode_video(x)` and `encode_text(ids, mask)` give L2-normalised (B, D) embeddings and
    `similarity(x, ids, mask)` their cosine similarities (B_video, B_text). The classifier
    contract holds as well (`fc` on the pooled, un-normalised video vector), for probes.
    """

    def __init__(
        self,
        *,
        aux_depth: int = 2,
        text_depth: int = 12,
        vocab_size: int = 64000,
        max_text_len: int = 64,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("head", "attentive") != "attentive":
            raise ValueError(
                "the video-text model pools with its attention head (head='attentive')"
            )
        super().__init__(**kwargs)
        width = self.num_features
        num_heads = self.pooler.attn.num_heads
        mlp_dim = self.pooler.attn.q.out_features
        eps = self.pooler.norm.eps
        softcap = self.encoder.spatial_blocks[0].attn.softcap
        self.aux_blocks = nn.ModuleList(
            prism_block(width, num_heads, mlp_dim=mlp_dim, softcap=softcap, norm_eps=eps)
            for _ in range(aux_depth)
        )
        self.text = PrismTextEncoder(
            width=width, depth=text_depth, num_heads=num_heads, mlp_dim=mlp_dim,
            vocab_size=vocab_size, max_len=max_text_len, softcap=softcap, norm_eps=eps,
        )  # fmt: skip
        init_prism_weights(self.aux_blocks)
        init_prism_weights(self.text.blocks)

    def tokens(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> the tokens after the auxiliary blocks (B, T, N, D)."""
        tokens = self.encoder(x)
        b, t = tokens.shape[:2]
        flat = rearrange(tokens, "b t n d -> b (t n) d")
        for block in self.aux_blocks:
            flat = self.encoder.run(block, flat)
        return rearrange(flat, "b (t n) d -> b t n d", t=t)

    def encode_video(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> L2-normalised video embeddings (B, D)."""
        return l2_normalise(self.forward_head(self.forward_features(x), pre_logits=True))

    def encode_text(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Token ids (B, L) with padding mask (B, L) -> L2-normalised text embeddings (B, D)."""
        return self.text(ids, mask)

    def similarity(self, x: Tensor, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Cosine similarity of every clip with every text: (B_video, B_text)."""
        return self.encode_video(x) @ self.encode_text(ids, mask).T


def init_prism_weights(module: nn.Module) -> None:
    """Linear and convolution weights truncated-normal(0.02) with zero biases; position tables
    normal(0.02); `OffsetLayerNorm`s at scale 1 (weight 0) and zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, OffsetLayerNorm):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, FactorisedEncoder):
            nn.init.trunc_normal_(m.spatial_pos, std=0.02)
            nn.init.trunc_normal_(m.temporal_pos, std=0.02)


def _build_lvt(
    *,
    aux_depth: int = 2,
    text_depth: int = 12,
    vocab_size: int = 64000,
    max_text_len: int = 64,
    width: int = 768,
    num_heads: int = 12,
    mlp_dim: int = 3072,
    spatial_depth: int = 12,
    temporal_depth: int = 4,
    num_classes: int = 400,
    patch_size: int = 18,
    image_size: int = 288,
    num_frames: int = 16,
    in_chans: int = 3,
    qkv_bias: bool = True,
    norm_eps: float = 1e-6,
    softcap: float | None = 50.0,
    dropout: float = 0.0,
    head: str = "attentive",
) -> VideoPrismLVT:
    """A `VideoPrismLVT`: its own text-tower arguments, then `VideoPrism`'s (`head` can only be
    "attentive": the video-text model pools with its attention head)."""
    return VideoPrismLVT(
        aux_depth=aux_depth, text_depth=text_depth, vocab_size=vocab_size,
        max_text_len=max_text_len, width=width, num_heads=num_heads, mlp_dim=mlp_dim,
        spatial_depth=spatial_depth, temporal_depth=temporal_depth, num_classes=num_classes,
        patch_size=patch_size, image_size=image_size, num_frames=num_frames, in_chans=in_chans,
        qkv_bias=qkv_bias, norm_eps=norm_eps, softcap=softcap, dropout=dropout, head=head,
    )  # fmt: skip


_LARGE = {"width": 1024, "num_heads": 16, "mlp_dim": 4096, "spatial_depth": 24, "num_frames": 8}


@register_model
@variant(VideoPrism)
def videoprism_b() -> VideoPrism:
    """VideoPrism-B (768 channels, 12 + 4 blocks, 16 frames of 288 px)."""


@register_model
@variant(VideoPrism, **_LARGE)
def videoprism_l() -> VideoPrism:
    """VideoPrism-L (1024 channels, 24 + 4 blocks, 8 frames of 288 px)."""


@register_model
@variant(_build_lvt)
def videoprism_lvt_b() -> VideoPrismLVT:
    """VideoPrism-B video-text model (text tower of 12 blocks, 64000 tokens)."""


@register_model
@variant(_build_lvt, **_LARGE)
def videoprism_lvt_l() -> VideoPrismLVT:
    """VideoPrism-L video-text model."""
