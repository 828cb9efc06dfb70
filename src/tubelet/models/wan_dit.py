"""The Wan 2.1 diffusion transformer: a video denoiser on VAE latents, conditioned on text.

Wan Team 2025, "Wan: Open and Advanced Large-Scale Video Generative Models", sec. 3.2; the
block follows DiT (Peebles & Xie 2023) with cross-attention to the text:

| step                | tensor                         | what happens                                  |
|---------------------|--------------------------------|-----------------------------------------------|
| patchify            | (B, C, F, H, W) -> (B, L, D)   | 1x2x2 Conv3d, L = F * H/2 * W/2 tokens        |
| 3D RoPE             | (L, head_dim)                  | heads' channels rotated by (f, h, w)          |
| timestep            | (B,) -> (B, D), (B, 6, D)      | sinusoids -> MLP -> six modulations per block |
| text                | (B, S, text_dim) -> (B, S, D)  | MLP (GELU-tanh)                               |
| block x N           | (B, L, D)                      | adaLN self-attn, cross-attn, adaLN MLP        |
| head                | (B, L, D) -> (B, C, F, H, W)   | adaLN (shift, scale) -> Linear -> unpatchify  |

The self-attention normalises queries and keys with RMS norm (over all heads) and rotates them by
the 3D RoPE.

adaLN modulation (DiT sec. 3.2): each block adds its learned table (6, D) to the timestep's
(B, 6, D) and splits it into shift, scale, gate for the self-attention and for the MLP:
x += gate * f(LN(x) * (1 + scale) + shift). Normalisations and modulations run in float32, as
the reference does, so bf16 autocast keeps them exact.

`forward(x, timesteps, context=None, context_mask=None)`: latents (B, C, F, H, W) with H, W even,
timesteps (B,) in [0, 1000) (flow matching uses 1000 sigma), text embeddings (B, S, text_dim) and an
optional boolean mask (B, S) (True = a real token); no context is one all-zero token, the empty
prompt's stand-in. Returns the prediction (the flow velocity) of the input's shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tubelet.models.registry import register_model, variant
from tubelet.nn.attention import Attention, CrossAttention
from tubelet.nn.checkpoint import checkpoint_level, checkpoint_module
from tubelet.nn.mlp import Mlp
from tubelet.nn.norm import RMSNorm
from tubelet.nn.positions import sinusoid_table
from tubelet.nn.rope import wan_rope_3d


def modulate(norm: nn.Module, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """norm(x) * (1 + scale) + shift in float32, back in x's dtype (adaLN)."""
    return (norm(x.float()) * (1 + scale) + shift).to(x.dtype)


GeluTanh = partial(nn.GELU, approximate="tanh")


class WanBlock(nn.Module):
    """adaLN self-attention (RMS q/k norm, 3D RoPE) -> cross-attention to the text -> adaLN MLP.

    `forward(x, context, modulation, rope, context_mask)`: tokens (B, L, D), text (B, S, D),
    the timestep's modulation (B, 6, D), RoPE (cos, sin) (L, head_dim).
    """

    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, *, cross_attn_norm: bool, eps: float
    ) -> None:
        super().__init__()
        qk_norm = partial(RMSNorm, eps=eps)
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.self_attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(dim, eps=eps) if cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, num_heads, qk_norm=qk_norm)
        self.norm3 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.mlp = Mlp(dim, ffn_dim, act_layer=GeluTanh)
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        modulation: Tensor,
        rope: tuple[Tensor, Tensor],
        context_mask: Tensor | None = None,
    ) -> Tensor:
        shift, scale, gate, mlp_shift, mlp_scale, mlp_gate = (
            self.modulation.float() + modulation.float()
        ).chunk(6, dim=1)  # (B, 1, D) each
        h = self.self_attn(modulate(self.norm1, x, shift, scale), rope=rope)
        x = (x.float() + h * gate).to(x.dtype)
        x = x + self.cross_attn(self.norm2(x.float()).to(x.dtype), context, mask=context_mask)
        h = self.mlp(modulate(self.norm3, x, mlp_shift, mlp_scale))
        return (x.float() + h.float() * mlp_gate).to(x.dtype)


class WanDiT(nn.Module):
    """The denoiser (see the module docstring), `width` wide: `num_heads` heads of
    `width / num_heads` channels, `num_layers` blocks with MLPs of width `ffn_dim`, `patch_size`
    (t, h, w)."""

    def __init__(
        self,
        *,
        in_channels: int = 16,
        out_channels: int | None = None,
        width: int = 1536,
        num_heads: int = 12,
        ffn_dim: int = 8960,
        num_layers: int = 30,
        text_dim: int = 4096,
        freq_dim: int = 256,
        patch_size: Sequence[int] = (1, 2, 2),
        cross_attn_norm: bool = True,
        eps: float = 1e-6,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        if len(patch_size) != 3:
            raise ValueError(f"patch_size is (t, h, w), got {list(patch_size)}")
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.width = width
        self.num_heads = num_heads
        self.text_dim = text_dim
        self.freq_dim = freq_dim
        self.patch_size = tuple(patch_size)
        self.rope_theta = rope_theta
        self.grad_checkpointing: bool | str = False
        self.patch_embed = nn.Conv3d(in_channels, width, self.patch_size, stride=self.patch_size)
        # The timestep and text embedders: Linear (in -> width), SiLU or GELU-tanh, Linear.
        self.time_embed = Mlp(freq_dim, width, out_dim=width, act_layer=nn.SiLU)
        self.time_modulation = nn.Linear(width, 6 * width)
        self.text_embed = Mlp(text_dim, width, out_dim=width, act_layer=GeluTanh)
        self.blocks = nn.ModuleList(
            [
                WanBlock(width, num_heads, ffn_dim, cross_attn_norm=cross_attn_norm, eps=eps)
                for _ in range(num_layers)
            ]
        )
        self.norm_out = nn.LayerNorm(width, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(width, self.out_channels * math.prod(self.patch_size))
        self.head_modulation = nn.Parameter(torch.randn(1, 2, width) / width**0.5)

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Recompute each block's activations in backward (same output); "selective" keeps the
        attention outputs (`tubelet.nn.checkpoint`)."""
        self.grad_checkpointing = checkpoint_level(enable) or False

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        b, _, f, h, w = self._check_input(x, timesteps, context, context_mask)
        pt, ph, pw = self.patch_size
        grid = (f // pt, h // ph, w // pw)
        rope = wan_rope_3d(
            grid, self.width // self.num_heads, theta=self.rope_theta, device=x.device
        )
        tokens = rearrange(self.patch_embed(x), "b d f h w -> b (f h w) d").contiguous()
        if context is None:
            context = x.new_zeros(b, 1, self.text_dim)
        temb, modulation = self._time(timesteps, x.dtype)  # (B, D), (B, 6, D)
        ctx = self.text_embed(context)  # (B, S, D)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint_module(
                    block, tokens, ctx, modulation, rope, context_mask,
                    level=checkpoint_level(self.grad_checkpointing),
                )  # fmt: skip
            else:
                tokens = block(tokens, ctx, modulation, rope, context_mask)
        shift, scale = (self.head_modulation.float() + temb.float()[:, None]).chunk(2, dim=1)
        out = self.head(modulate(self.norm_out, tokens, shift, scale))  # (B, L, C*pt*ph*pw)
        return rearrange(
            out, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)",
            f=grid[0], h=grid[1], w=grid[2], pt=pt, ph=ph, pw=pw,
        )  # fmt: skip

    def _time(self, timesteps: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Timesteps (B,) -> the embedding (B, D) and the blocks' modulation (B, 6, D)."""
        freqs = sinusoid_table(timesteps, self.freq_dim, layout="cos_sin")  # (B, freq_dim)
        temb = self.time_embed(freqs.to(self.time_embed.fc1.weight.dtype)).to(dtype)
        return temb, self.time_modulation(F.silu(temb)).unflatten(1, (6, self.width))

    def _check_input(
        self, x: Tensor, timesteps: Tensor, context: Tensor | None, context_mask: Tensor | None
    ) -> tuple[int, int, int, int, int]:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"WanDiT takes latents (B, {self.in_channels}, F, H, W), got {tuple(x.shape)}"
            )
        b, c, f, h, w = x.shape
        if any(s % p for s, p in zip((f, h, w), self.patch_size, strict=True)):
            raise ValueError(
                f"latent size {f}x{h}x{w} must be divisible by the patch size {self.patch_size}"
            )
        if timesteps.shape != (b,):
            raise ValueError(f"timesteps must have shape ({b},), got {tuple(timesteps.shape)}")
        if context is not None and (
            context.ndim != 3 or context.shape[0] != b or context.shape[2] != self.text_dim
        ):
            raise ValueError(
                f"context must be text embeddings (B={b}, S, {self.text_dim}), got "
                f"{tuple(context.shape)}"
            )
        if context_mask is not None and (
            context is None or context_mask.shape != context.shape[:2]
        ):
            raise ValueError("context_mask must be (B, S) beside a context (B, S, text_dim)")
        return b, c, f, h, w


@register_model(kind="generation", renamed_args={"dim": "width"})
@variant(WanDiT)
def wan_dit() -> WanDiT:
    """A Wan-style diffusion transformer; the defaults are Wan 2.1 T2V 1.3B's shapes. Small ones
    for experiments override width, num_heads, ffn_dim, num_layers, text_dim, in_channels."""


@register_model(kind="generation", renamed_args={"dim": "width"})
@variant(WanDiT, width=1536, num_heads=12, ffn_dim=8960, num_layers=30)
def wan2_1_t2v_1_3b() -> WanDiT:
    """Wan 2.1 text-to-video 1.3B (Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json):
    30 blocks of width 1536 (12 heads of 128), MLP 8960, UMT5-XXL text (4096)."""


@register_model(kind="generation", renamed_args={"dim": "width"})
@variant(WanDiT, width=5120, num_heads=40, ffn_dim=13824, num_layers=40)
def wan2_1_t2v_14b() -> WanDiT:
    """Wan 2.1 text-to-video 14B (Wan-AI/Wan2.1-T2V-14B-Diffusers, transformer/config.json):
    40 blocks of width 5120 (40 heads of 128), MLP 13824, UMT5-XXL text (4096)."""
