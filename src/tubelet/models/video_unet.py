"""A video denoiser: a UNet whose blocks alternate spatial (per-frame) and temporal processing.

Frames are folded into the batch for everything spatial, so the spatial layers are exactly an image
denoiser run on each frame; temporal layers are inserted after them (Ho et al. 2022, "Video
Diffusion Models", sec. 3; Blattmann et al. 2023, "Align your Latents", sec. 3.1):

| layer                    | tokens / layout                  | what it mixes                         |
|--------------------------|----------------------------------|---------------------------------------|
| `ResBlock` (2D conv)     | (B*T, C, H, W)                   | space, within a frame                 |
| `SpatialAttention`       | (B*T, H*W [+ L], C)              | positions of one frame (+ conditioning)|
| `TemporalConv` (1D conv) | (B*H*W, C, T)                    | neighbouring frames at one position   |
| `TemporalAttention`      | (B*H*W, T, C) + time position    | all frames at one position            |

Every temporal layer is a residual branch whose output projection starts at zero, so a freshly
built video model computes exactly the per-frame image model (`temporal=False`): an image denoiser's
weights load into it (`load_image_weights`) and training starts from the image model.

Conditioning, all optional, summed into the timestep embedding or attended to:
- `class_labels` (B,) in `[0, num_classes]`; the extra index `num_classes` is the "null" class that
  classifier-free guidance uses for its unconditional prediction (also used when labels are None);
- `context` (B, L, `context_dim`), e.g. a text encoder's token embeddings, with an optional boolean
  `context_mask` (B, L) (True = a real token): each spatial attention projects the context tokens to
  its width and appends them to the frame's tokens as extra keys and values (joint attention, as in
  Esser et al. 2024, "Scaling Rectified Flow Transformers", sec. 4); only the frame tokens' outputs
  are kept. An all-masked or absent context is the unconditional case.

`forward(x, timesteps, class_labels=None, context=None, context_mask=None)` maps a noisy clip
(B, C, T, H, W) and integer or float diffusion timesteps (B,) to a prediction of the same shape
(noise or velocity; the scheduler in `tubelet.tasks.generation` decides which). H and W must be
divisible by `2 ** (len(channel_mults) - 1)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tubelet.models.registry import register_model
from tubelet.nn.attention import Attention, temporal_attention
from tubelet.nn.checkpoint import checkpoint_level, checkpoint_module
from tubelet.nn.positions import sinusoid_table

TEMPORAL_POSITIONS = ("sinusoidal", "learned")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Two 3x3 convs on each frame with the embedding as scale and shift (FiLM) of the second norm.

    (B*T, in_ch, H, W), emb (B*T, emb_dim) -> (B*T, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SpatialAttention(nn.Module):
    """Self-attention among the H*W positions of each frame, with optional context tokens appended
    as extra keys (see the module docstring). (B*T, C, H, W) -> same."""

    def __init__(self, channels: int, num_heads: int, context_dim: int | None) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.attn = Attention(channels, num_heads)
        self.context = nn.Linear(context_dim, channels) if context_dim else None

    def forward(
        self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None
    ) -> Tensor:
        bt, _, h, w = x.shape
        tokens = rearrange(self.norm(x), "n c h w -> n (h w) c")  # (B*T, N, C)
        mask = None
        if context is not None and self.context is not None:
            ctx = self.context(context)  # (B*T, L, C)
            tokens = torch.cat([tokens, ctx], dim=1)  # (B*T, N + L, C)
            if context_mask is not None:
                keep = torch.ones(bt, h * w, dtype=torch.bool, device=x.device)
                mask = torch.cat([keep, context_mask], dim=1)[:, None, None, :]  # (B*T,1,1,N+L)
        out = self.attn(tokens, mask)[:, : h * w]  # (B*T, N, C)
        return x + rearrange(out, "n (h w) c -> n c h w", h=h)


class TemporalConv(nn.Module):
    """A residual 1D conv over time at every position; its output conv starts at zero.
    (B*T, C, H, W) -> same."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.conv = _zero(nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2))

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        h = x.shape[2]
        y = rearrange(x, "(b t) c h w -> (b h w) c t", t=num_frames)  # (B*H*W, C, T)
        y = self.conv(F.silu(self.norm(y)))
        return x + rearrange(y, "(b h w) c t -> (b t) c h w", h=h, w=x.shape[3])


class TemporalAttention(nn.Module):
    """Residual attention across the T frames at each position, with the frame index added to the
    tokens (fixed sinusoids or a learned table of `max_frames` rows); the output projection starts at
    zero. (B*T, C, H, W) -> same."""

    def __init__(self, channels: int, num_heads: int, *, position: str, max_frames: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.attn = Attention(channels, num_heads)
        _zero(self.attn.proj)
        self.position = position
        self.max_frames = max_frames
        if position == "learned":
            self.pos = nn.Parameter(torch.zeros(max_frames, channels))
            nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        c, h = x.shape[1], x.shape[2]
        tokens = rearrange(self.norm(x), "(b t) c h w -> b t (h w) c", t=num_frames)  # (B,T,N,C)
        if self.position == "learned":
            if num_frames > self.max_frames:
                raise ValueError(
                    f"clip has {num_frames} frames but the learned temporal positions cover "
                    f"{self.max_frames}; build the model with max_frames>={num_frames}"
                )
            pos = self.pos[:num_frames]
        else:
            pos = sinusoid_table(torch.arange(num_frames, device=x.device), c, layout="cos_sin")
        tokens = tokens + pos.to(tokens.dtype)[None, :, None, :]
        out = temporal_attention(self.attn, tokens)  # (B, T, N, C)
        return x + rearrange(out, "b t (h w) c -> (b t) c h w", h=h)


class SpaceTimeBlock(nn.Module):
    """ResBlock -> [TemporalConv] -> [SpatialAttention] -> [TemporalAttention], on (B*T, C, H, W).

    The temporal layers exist only when `temporal`; spatial attention only when `attention`
    (attention over T frames is cheap at any resolution, attention over H*W positions is not).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        emb_dim: int,
        attention: bool,
        temporal: bool,
        num_heads: int,
        context_dim: int | None,
        temporal_position: str,
        max_frames: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout)
        self.temporal_conv = TemporalConv(out_ch) if temporal else None
        self.spatial_attn = SpatialAttention(out_ch, num_heads, context_dim) if attention else None
        self.temporal_attn = (
            TemporalAttention(out_ch, num_heads, position=temporal_position, max_frames=max_frames)
            if temporal
            else None
        )

    def forward(
        self,
        x: Tensor,
        emb: Tensor,
        num_frames: int,
        context: Tensor | None,
        context_mask: Tensor | None,
    ) -> Tensor:
        x = self.res(x, emb)
        if self.temporal_conv is not None:
            x = self.temporal_conv(x, num_frames)
        if self.spatial_attn is not None:
            x = self.spatial_attn(x, context, context_mask)
        if self.temporal_attn is not None:
            x = self.temporal_attn(x, num_frames)
        return x


class VideoUNet(nn.Module):
    """The denoiser (see the module docstring for the contract).

    `channel_mults[i] * width` channels at level i (resolution halved between levels);
    `attention_levels[i]` puts spatial attention in that level's blocks (temporal conv and
    attention are in every block when `temporal`);
    `num_res_blocks` blocks per level going down (one more going up, as in Dhariwal & Nichol 2021).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        width: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        attention_levels: Sequence[bool] = (False, True, True),
        num_res_blocks: int = 1,
        num_heads: int = 4,
        num_classes: int | None = None,
        context_dim: int | None = None,
        temporal: bool = True,
        temporal_position: str = "sinusoidal",
        max_frames: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(attention_levels) != len(channel_mults):
            raise ValueError(
                f"attention_levels needs one flag per level: {len(channel_mults)} levels "
                f"(channel_mults={list(channel_mults)}), got {list(attention_levels)}"
            )
        if temporal_position not in TEMPORAL_POSITIONS:
            raise ValueError(
                f"temporal_position must be one of {TEMPORAL_POSITIONS}, not {temporal_position!r}"
            )
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.context_dim = context_dim
        self.temporal = temporal
        self.num_levels = len(channel_mults)
        self.grad_checkpointing = False
        emb_dim = 4 * width
        self.width = width
        self.time_mlp = nn.Sequential(
            nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        # One extra row: the null class of classifier-free guidance.
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        def block(cin: int, cout: int, attention: bool) -> SpaceTimeBlock:
            return SpaceTimeBlock(
                cin, cout, emb_dim=emb_dim, attention=attention, temporal=temporal,
                num_heads=num_heads, context_dim=context_dim,
                temporal_position=temporal_position, max_frames=max_frames, dropout=dropout,
            )  # fmt: skip

        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [width]
        ch = width
        for level, (mult, attn) in enumerate(zip(channel_mults, attention_levels, strict=True)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(block(ch, mult * width, attn))
                ch = mult * width
                skips.append(ch)
            self.down.append(blocks)
            last = level == self.num_levels - 1
            self.downsample.append(
                nn.Identity() if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1)
            )
            if not last:
                skips.append(ch)
        self.mid = nn.ModuleList([block(ch, ch, True), block(ch, ch, False)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            mult, attn = channel_mults[level], attention_levels[level]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(block(ch + skips.pop(), mult * width, attn))
                ch = mult * width
            self.up.append(blocks)
            self.upsample.append(nn.Identity() if level == 0 else nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Recompute each block's activations in backward instead of keeping them (same output);
        "selective" keeps the attention outputs (`tubelet.nn.checkpoint`)."""
        self.grad_checkpointing = checkpoint_level(enable) or False

    def temporal_parameter_names(self) -> list[str]:
        """The names of the parameters that only the temporal layers have."""
        return [
            name
            for name, _ in self.named_parameters()
            if ".temporal_conv." in name or ".temporal_attn." in name
        ]

    def load_image_weights(self, state_dict: dict[str, Tensor]) -> list[str]:
        """Load a per-frame image denoiser's weights (`temporal=False`, same other settings) into
        this model; return the temporal parameter names left at their (identity) initialisation.

        Refuses, naming the keys, a state dict that lacks a spatial weight or has unknown keys.
        """
        own = self.state_dict()
        temporal = set(self.temporal_parameter_names())
        missing = [k for k in own if k not in state_dict and k not in temporal]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = [k for k in state_dict if k in own and own[k].shape != state_dict[k].shape]
        if missing or unexpected or mismatched:
            raise ValueError(
                f"not the weights of this model's image denoiser: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}, other shapes {mismatched[:3]}; build both with the "
                "same arguments but temporal"
            )
        result = self.load_state_dict(state_dict, strict=False)
        return sorted(k for k in result.missing_keys if k in temporal)

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        class_labels: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        b, c, t, h, w = self._check_input(x, timesteps, class_labels, context, context_mask)
        emb = self.time_mlp(sinusoid_table(timesteps, self.width, layout="cos_sin").to(x.dtype))
        if self.class_emb is not None:
            if class_labels is None:
                class_labels = torch.full((b,), self.num_classes, device=x.device)
            emb = emb + self.class_emb(class_labels)  # (B, E)
        emb = emb.repeat_interleave(t, dim=0)  # (B*T, E)
        if context is not None:
            context = context.repeat_interleave(t, dim=0)  # (B*T, L, D)
            if context_mask is not None:
                context_mask = context_mask.repeat_interleave(t, dim=0)  # (B*T, L)
        cond = (emb, t, context, context_mask)

        hs = [self.conv_in(rearrange(x, "b c t h w -> (b t) c h w"))]  # (B*T, C0, H, W)
        for blocks, down in zip(self.down, self.downsample, strict=True):
            for blk in blocks:
                hs.append(self._run(blk, hs[-1], *cond))
            if not isinstance(down, nn.Identity):
                hs.append(down(hs[-1]))
        y = hs[-1]
        for blk in self.mid:
            y = self._run(blk, y, *cond)
        for blocks, up in zip(self.up, self.upsample, strict=True):
            for blk in blocks:
                y = self._run(blk, torch.cat([y, hs.pop()], dim=1), *cond)
            if not isinstance(up, nn.Identity):
                y = up(F.interpolate(y, scale_factor=2.0, mode="nearest"))
        y = self.conv_out(F.silu(self.norm_out(y)))  # (B*T, C, H, W)
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)

    def _run(self, block: SpaceTimeBlock, x: Tensor, *args: Any) -> Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint_module(block, x, *args, level=self.grad_checkpointing)
        return block(x, *args)

    def _check_input(
        self,
        x: Tensor,
        timesteps: Tensor,
        class_labels: Tensor | None,
        context: Tensor | None,
        context_mask: Tensor | None,
    ) -> tuple[int, int, int, int, int]:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"VideoUNet takes clips (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}"
            )
        b, c, t, h, w = x.shape
        factor = 2 ** (self.num_levels - 1)
        if h % factor or w % factor:
            raise ValueError(
                f"frame size {h}x{w} must be divisible by {factor} ({self.num_levels} levels)"
            )
        if timesteps.shape != (b,):
            raise ValueError(f"timesteps must have shape ({b},), got {tuple(timesteps.shape)}")
        if class_labels is not None and self.class_emb is None:
            raise ValueError("class_labels given to a model built without num_classes")
        if context is not None:
            if self.context_dim is None:
                raise ValueError("context given to a model built without context_dim")
            if context.ndim != 3 or context.shape[0] != b or context.shape[2] != self.context_dim:
                raise ValueError(
                    f"context must be (B={b}, L, {self.context_dim}), got {tuple(context.shape)}"
                )
            if context_mask is not None and context_mask.shape != context.shape[:2]:
                raise ValueError(
                    f"context_mask must be {tuple(context.shape[:2])}, got "
                    f"{tuple(context_mask.shape)}"
                )
        return b, c, t, h, w


@register_model(kind="generation", renamed_args={"base_channels": "width"})
def video_unet(
    *,
    num_classes: int | None = 10,
    width: int = 32,
    channel_mults: Sequence[int] = (1, 2, 2),
    attention_levels: Sequence[bool] = (False, True, True),
    num_res_blocks: int = 1,
    num_heads: int = 4,
    in_channels: int = 3,
    context_dim: int | None = None,
    temporal: bool = True,
    temporal_position: str = "sinusoidal",
    max_frames: int = 32,
    dropout: float = 0.0,
) -> VideoUNet:
    """The video denoiser: 3 levels (32/64/64 channels), spatial attention at the two lower
    resolutions, temporal conv and attention in every block unless `temporal=False` (the per-frame
    image baseline). `width` is the first level's channels (`base_channels` in older runs)."""
    return VideoUNet(
        num_classes=num_classes, width=width, channel_mults=tuple(channel_mults),
        attention_levels=tuple(attention_levels), num_res_blocks=num_res_blocks,
        num_heads=num_heads, in_channels=in_channels, context_dim=context_dim, temporal=temporal,
        temporal_position=temporal_position, max_frames=max_frames, dropout=dropout,
    )  # fmt: skip
