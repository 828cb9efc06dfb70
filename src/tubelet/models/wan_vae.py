"""The Wan 2.1 causal 3D VAE: video (B, 3, T, H, W) <-> latents (B, z, 1 + (T-1)/4, H/8, W/8).

Wan Team 2025, "Wan: Open and Advanced Large-Scale Video Generative Models", sec. 3.1. Every 3D
convolution is *causal* in time: it pads only the past (2 p_t frames), so an output frame depends
on its own and earlier input frames. The first frame is kept on its own (the time downsamplers
leave it alone, the upsamplers do not double it), so one image is also a valid clip:

| layer            | encoder                                   | decoder                           |
|------------------|-------------------------------------------|-----------------------------------|
| `CausalConv3d`   | 3x3x3, zero-padded in the past            | same                              |
| `ResBlock`       | RMS norm -> SiLU -> conv, twice, residual | same                              |
| `Resample`       | 3x3 conv stride 2; "3d": + time conv      | nearest 2x + conv; "3d": + time   |
|                  | 3x1x1 stride 2                            | conv to 2 frames per frame        |
| `AttentionBlock` | single-head attention within a frame      | same (middle only)                |

Causality makes long videos cheap: `encode`/`decode` with `chunked=True` run the clip in chunks
(the first frame, then 4 frames at a time; one latent frame at a time to decode), and every causal
layer keeps the last two frames it saw in a `CausalCache`, so a chunk sees exactly the past a
whole-clip pass would. Both paths give the same result; memory is bounded by one chunk's.
`chunked=False` runs the whole clip at once (faster for short training clips, and what
checkpointing applies to).

`encode` returns the posterior's mean and log-variance (B, z, T', H', W') each; `decode` clamps
reconstructions to [-1, 1]. `latents_mean`/`latents_std` are the per-channel statistics the
published weights ship, with which `normalize_latents` makes latents about unit-variance for a
diffusion model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tubelet.models.registry import register_model, variant
from tubelet.nn.attention import Attention
from tubelet.nn.checkpoint import checkpoint_level, checkpoint_module

# Frames of the past a causal 3x3x3 convolution needs (its time padding).
CACHE_FRAMES = 2
# The published Wan 2.1 VAE's per-channel latent statistics (its config.json, diffusers' defaults).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


class CausalCache:
    """The last frames each causal layer saw in the previous chunk, in the order the layers run.

    `start_chunk()` rewinds to the first layer; a layer calls `swap(x)` with its input chunk and
    gets back what it stored in the previous chunk (None in the first), and stores the last
    `CACHE_FRAMES` frames of `x` (with the previous chunk's last frame in front when `x` is
    shorter), as diffusers' `feat_cache` does.
    """

    def __init__(self) -> None:
        self.slots: list[Tensor] = []
        self.index = 0

    def start_chunk(self) -> None:
        self.index = 0

    def peek(self) -> Tensor | None:
        """What the next layer stored in the previous chunk (None in the first chunk)."""
        return self.slots[self.index] if self.index < len(self.slots) else None

    def put(self, value: Tensor) -> None:
        """Store `value` for the next layer and move on to the layer after it."""
        if self.index < len(self.slots):
            self.slots[self.index] = value
        else:
            self.slots.append(value)
        self.index += 1

    def swap(self, x: Tensor) -> Tensor | None:
        """(previous chunk's frames or None); stores the last frames of `x` (B, C, T, H, W)."""
        prev = self.peek()
        keep = x[:, :, -CACHE_FRAMES:]
        if keep.shape[2] < CACHE_FRAMES and prev is not None:
            keep = torch.cat([prev[:, :, -1:], keep], dim=2)
        self.put(keep)
        return prev


class CausalConv3d(nn.Conv3d):
    """A Conv3d padded by 2 * padding_t frames in the past only (none in the future) and by
    `padding` symmetrically in space. `forward(x, past)`: `past` (B, C, P, H, W) are real frames
    that replace P of the zero frames in front."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        *,
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)
        pt, ph, pw = (padding,) * 3 if isinstance(padding, int) else padding
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)

    def forward(self, x: Tensor, past: Tensor | None = None) -> Tensor:
        pad_t = self.time_pad
        if past is not None and pad_t > 0:
            x = torch.cat([past.to(x.dtype), x], dim=2)  # (B, C, P + T, H, W)
            pad_t -= past.shape[2]
        return super().forward(F.pad(x, (*self.space_pad, pad_t, 0)))


def causal_conv(conv: CausalConv3d, x: Tensor, cache: CausalCache | None) -> Tensor:
    """`conv(x)`, with the previous chunk's frames from `cache` in front when chunking."""
    return conv(x) if cache is None else conv(x, cache.swap(x))


class RMSNorm(nn.Module):
    """x / ||x|| * sqrt(C) * weight over the channel dim 1 of (B, C, ...) (L2 normalisation,
    which is RMS normalisation without epsilon inside the root: F.normalize's 1e-12 floor)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = channels**0.5
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        normed = F.normalize(x.float(), dim=1).to(x.dtype)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return normed * self.scale * self.weight.view(shape)


class ResBlock(nn.Module):
    """(RMS norm -> SiLU -> causal 3x3x3 conv) twice, plus a 1x1x1 shortcut when widths differ."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = RMSNorm(in_ch)
        self.conv1 = CausalConv3d(in_ch, out_ch, 3, padding=1)
        self.norm2 = RMSNorm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_ch, out_ch, 3, padding=1)
        self.shortcut = CausalConv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        h = causal_conv(self.conv1, F.silu(self.norm1(x)), cache)
        h = causal_conv(self.conv2, self.dropout(F.silu(self.norm2(h))), cache)
        return self.shortcut(x) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention among the H*W positions of each frame, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = RMSNorm(channels)
        self.attn = Attention(channels, 1)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        b, _, _, h, _ = x.shape
        tokens = rearrange(self.norm(x), "b c t h w -> (b t) (h w) c")  # (B*T, N, C)
        out = rearrange(self.attn(tokens), "(b t) (h w) c -> b c t h w", b=b, h=h)
        return x + out


class Resample(nn.Module):
    """Halve ("down2d", "down3d") or double ("up2d", "up3d") the frame size; the "3d" modes also
    halve or double the frame count, leaving the first frame on its own.

    down: zero pad right/bottom, 3x3 conv stride 2 on each frame; "3d" then a 3x1x1 time conv with
    stride 2 over [x_0, x_1, x_2], [x_2, x_3, x_4], ... with x_0 passed through.
    up: "3d" first a causal 3x1x1 time conv from C to 2C channels on frames 1.. (two frames out of
    each); then nearest-exact 2x upsampling and a 3x3 conv to `out_channels`.
    """

    def __init__(self, channels: int, mode: str, out_channels: int | None = None) -> None:
        super().__init__()
        if mode not in ("down2d", "down3d", "up2d", "up3d"):
            raise ValueError(f"unknown resample mode {mode!r}")
        self.mode = mode
        self.up = mode.startswith("up")
        if self.up:
            self.conv = nn.Conv2d(channels, out_channels or channels // 2, 3, padding=1)
        else:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2)
        self.time_conv: CausalConv3d | None = None
        if mode == "up3d":
            self.time_conv = CausalConv3d(channels, 2 * channels, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "down3d":
            self.time_conv = CausalConv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        if self.up and self.time_conv is not None:
            x = self._double_frames(x, cache)
        b = x.shape[0]
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        if self.up:
            frames = F.interpolate(frames.float(), scale_factor=2.0, mode="nearest-exact")
            frames = self.conv(frames.to(x.dtype))
        else:
            frames = self.conv(F.pad(frames, (0, 1, 0, 1)))
        x = rearrange(frames, "(b t) c h w -> b c t h w", b=b)
        if not self.up and self.time_conv is not None:
            x = self._halve_frames(x, cache)
        return x

    def _double_frames(self, x: Tensor, cache: CausalCache | None) -> Tensor:
        """(B, C, T, H, W) -> (B, C, 1 + 2 (T - 1), H, W) in a whole clip; a chunk's frames are
        all doubled except in the first chunk, which holds frame 0 only."""
        assert self.time_conv is not None
        if cache is None:
            rest = x[:, :, 1:]
            if rest.shape[2] == 0:
                return x
            return torch.cat([x[:, :, :1], self._interleave(self.time_conv(rest))], dim=2)
        if cache.peek() is None:  # the first chunk: frame 0 is not doubled
            cache.put(x[:, :, :0])
            return x
        return self._interleave(self.time_conv(x, cache.swap(x)))

    @staticmethod
    def _interleave(y: Tensor) -> Tensor:
        """(B, 2C, T, H, W) -> (B, C, 2T, H, W): channel halves are the two frames of each step."""
        return rearrange(y, "b (two c) t h w -> b c (t two) h w", two=2)

    def _halve_frames(self, x: Tensor, cache: CausalCache | None) -> Tensor:
        """(B, C, 1 + 2k, H, W) -> (B, C, 1 + k, H, W): frame 0, then the strided time conv."""
        assert self.time_conv is not None
        if cache is None:
            if x.shape[2] < 3:
                return x[:, :, :1]
            return torch.cat([x[:, :, :1], self.time_conv(x)], dim=2)
        prev = cache.peek()
        cache.put(x[:, :, -1:])
        if prev is None:  # the first chunk: frame 0 passes through
            return x
        return self.time_conv(torch.cat([prev[:, :, -1:], x], dim=2))


class MidBlock(nn.Module):
    """ResBlock -> AttentionBlock -> ResBlock at the lowest resolution."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.res1 = ResBlock(channels, channels, dropout)
        self.attn = AttentionBlock(channels)
        self.res2 = ResBlock(channels, channels, dropout)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        return self.res2(self.attn(self.res1(x, cache)), cache)


class UpLevel(nn.Module):
    """`num_blocks` ResBlocks, then an optional `Resample` up."""

    def __init__(
        self, in_ch: int, out_ch: int, num_blocks: int, dropout: float, upsample: str | None
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [ResBlock(in_ch if i == 0 else out_ch, out_ch, dropout) for i in range(num_blocks)]
        )
        self.upsample = Resample(out_ch, upsample) if upsample else None

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, cache)
        return self.upsample(x, cache) if self.upsample is not None else x


class _Coder(nn.Module):
    """Shared run of a stack of layers, each called as `layer(x, cache)`, with checkpointing of
    whole-clip training passes."""

    grad_checkpointing: bool | str = False

    def run(self, layer: nn.Module, x: Tensor, cache: CausalCache | None) -> Tensor:
        if cache is None and self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint_module(layer, x, level=checkpoint_level(self.grad_checkpointing))
        return layer(x, cache)


class Encoder(_Coder):
    """conv_in -> per level: ResBlocks (+ attention at `attn_scales`) and a downsample (all but the
    last level; in time where `temporal_downsample`) -> MidBlock -> RMS norm, SiLU, conv_out."""

    def __init__(
        self,
        *,
        in_channels: int,
        dim: int,
        out_channels: int,
        dim_mult: Sequence[int],
        num_res_blocks: int,
        attn_scales: Sequence[float],
        temporal_downsample: Sequence[bool],
        dropout: float,
    ) -> None:
        super().__init__()
        dims = [dim * m for m in (1, *dim_mult)]
        self.conv_in = CausalConv3d(in_channels, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        scale = 1.0
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(cin, cout, dropout))
                if scale in attn_scales:
                    layers.append(AttentionBlock(cout))
                cin = cout
            if i != len(dim_mult) - 1:
                layers.append(Resample(cout, "down3d" if temporal_downsample[i] else "down2d"))
                scale /= 2.0
        self.down = nn.ModuleList(layers)
        self.mid = MidBlock(dims[-1], dropout)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3, padding=1)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        x = causal_conv(self.conv_in, x, cache)
        for layer in self.down:
            x = self.run(layer, x, cache)
        x = self.run(self.mid, x, cache)
        return causal_conv(self.conv_out, F.silu(self.norm_out(x)), cache)


class Decoder(_Coder):
    """conv_in -> MidBlock -> per level: num_res_blocks + 1 ResBlocks and an upsample (all but the
    last level; in time where `temporal_upsample`) -> RMS norm, SiLU, conv_out. Each upsample
    halves the width it hands on (Wan 2.1)."""

    def __init__(
        self,
        *,
        dim: int,
        z_dim: int,
        out_channels: int,
        dim_mult: Sequence[int],
        num_res_blocks: int,
        temporal_upsample: Sequence[bool],
        dropout: float,
    ) -> None:
        super().__init__()
        dims = [dim * m for m in (dim_mult[-1], *reversed(dim_mult))]
        self.conv_in = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.mid = MidBlock(dims[0], dropout)
        levels = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if i > 0:
                cin //= 2  # the previous level's upsample conv halved the width
            last = i == len(dim_mult) - 1
            mode = None if last else ("up3d" if temporal_upsample[i] else "up2d")
            levels.append(UpLevel(cin, cout, num_res_blocks + 1, dropout, mode))
        self.up = nn.ModuleList(levels)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3, padding=1)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        x = causal_conv(self.conv_in, x, cache)
        x = self.run(self.mid, x, cache)
        for level in self.up:
            x = self.run(level, x, cache)
        return causal_conv(self.conv_out, F.silu(self.norm_out(x)), cache)


class Posterior(NamedTuple):
    """The encoder's diagonal Gaussian over latents: mean and log-variance (B, z, T', H', W')."""

    mean: Tensor
    logvar: Tensor

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """mean + std * eps (the reparameterisation of Kingma & Welling 2014, sec. 2.4)."""
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * noise.to(self.mean.device)

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per clip (B,): 0.5 sum(mean^2 + var - 1 - logvar)."""
        var = torch.exp(self.logvar)
        return 0.5 * (self.mean.pow(2) + var - 1.0 - self.logvar).flatten(1).sum(1)


class VAEOutput(NamedTuple):
    """`forward`'s result: the reconstruction (B, C, T, H, W) and the posterior it decoded."""

    reconstruction: Tensor
    posterior: Posterior


class WanVAE(nn.Module):
    """The causal video VAE (see the module docstring).

    `width`: the encoder's base channels (`decoder_width` the decoder's, default the same);
    `width * dim_mult[i]` channels per level; `temporal_downsample[i]` halves the frame count after level i
    (the decoder mirrors it). Clips need 1 + k * `time_factor` frames and sides divisible by
    `space_factor`.
    """

    def __init__(
        self,
        *,
        width: int = 96,
        decoder_width: int | None = None,
        z_dim: int = 16,
        dim_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_scales: Sequence[float] = (),
        temporal_downsample: Sequence[bool] = (False, True, True),
        in_channels: int = 3,
        out_channels: int = 3,
        dropout: float = 0.0,
        latents_mean: Sequence[float] | None = None,
        latents_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if len(temporal_downsample) != len(dim_mult) - 1:
            raise ValueError(
                f"temporal_downsample needs one flag per downsample ({len(dim_mult) - 1} for "
                f"dim_mult={list(dim_mult)}), got {list(temporal_downsample)}"
            )
        for label, stats in (("latents_mean", latents_mean), ("latents_std", latents_std)):
            if stats is not None and len(stats) != z_dim:
                raise ValueError(f"{label} needs {z_dim} values (z_dim), got {len(stats)}")
        self.in_channels = in_channels
        self.z_dim = z_dim
        self.time_factor = 2 ** sum(bool(d) for d in temporal_downsample)
        self.space_factor = 2 ** (len(dim_mult) - 1)
        self.latents_mean = tuple(latents_mean) if latents_mean is not None else (0.0,) * z_dim
        self.latents_std = tuple(latents_std) if latents_std is not None else (1.0,) * z_dim
        self.encoder = Encoder(
            in_channels=in_channels, dim=width, out_channels=2 * z_dim, dim_mult=dim_mult,
            num_res_blocks=num_res_blocks, attn_scales=attn_scales,
            temporal_downsample=temporal_downsample, dropout=dropout,
        )  # fmt: skip
        self.quant_conv = CausalConv3d(2 * z_dim, 2 * z_dim, 1)
        self.post_quant_conv = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder(
            dim=decoder_width or width, z_dim=z_dim, out_channels=out_channels, dim_mult=dim_mult,
            num_res_blocks=num_res_blocks, temporal_upsample=tuple(reversed(temporal_downsample)),
            dropout=dropout,
        )  # fmt: skip

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Recompute each encoder/decoder level's activations in backward (whole-clip passes);
        "selective" keeps attention outputs (`tubelet.nn.checkpoint`)."""
        level = checkpoint_level(enable) or False
        self.encoder.grad_checkpointing = level
        self.decoder.grad_checkpointing = level

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(T', H', W') of the latents of a clip of `frames` x `height` x `width`."""
        self._check_size(frames, height, width)
        t = 1 + (frames - 1) // self.time_factor
        return t, height // self.space_factor, width // self.space_factor

    def encode(self, x: Tensor, *, chunked: bool = True) -> Posterior:
        """Clips (B, C, T, H, W) in [-1, 1] -> the latent posterior; `chunked` runs frame 0, then
        `time_factor` frames at a time through the causal cache (same result, less memory)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"WanVAE encodes clips (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}"
            )
        self._check_size(*x.shape[2:])
        if chunked:
            cache = CausalCache()
            rest = x[:, :, 1:]
            chunks = [x[:, :, :1], *(rest.split(self.time_factor, dim=2) if rest.shape[2] else ())]
            out = []
            for chunk in chunks:
                cache.start_chunk()
                out.append(self.encoder(chunk, cache))
            h = torch.cat(out, dim=2)
        else:
            h = self.encoder(x)
        mean, logvar = self.quant_conv(h).chunk(2, dim=1)
        return Posterior(mean, logvar.clamp(-30.0, 20.0))

    def decode(self, z: Tensor, *, chunked: bool = True) -> Tensor:
        """Latents (B, z, T', H', W') -> clips (B, C, 1 + time_factor (T' - 1), H, W) in [-1, 1];
        `chunked` decodes one latent frame at a time through the causal cache."""
        if z.ndim != 5 or z.shape[1] != self.z_dim:
            raise ValueError(
                f"WanVAE decodes latents (B, {self.z_dim}, T, H, W), got {tuple(z.shape)}"
            )
        x = self.post_quant_conv(z)
        if chunked:
            cache = CausalCache()
            out = []
            for frame in x.split(1, dim=2):
                cache.start_chunk()
                out.append(self.decoder(frame, cache))
            y = torch.cat(out, dim=2)
        else:
            y = self.decoder(x)
        return y.clamp(-1.0, 1.0)

    def forward(
        self, x: Tensor, *, sample: bool = True, generator: torch.Generator | None = None
    ) -> VAEOutput:
        """Encode and decode a whole clip (the training pass): decode a posterior sample, or its
        mean when `sample` is False. The reconstruction is not clamped, so its loss has gradients."""
        posterior = self.encode(x, chunked=False)
        z = posterior.sample(generator) if sample else posterior.mean
        return VAEOutput(self.decoder(self.post_quant_conv(z)), posterior)

    def normalize_latents(self, z: Tensor) -> Tensor:
        """(z - latents_mean) / latents_std per channel: the diffusion model's input scale."""
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize_latents(self, z: Tensor) -> Tensor:
        """The inverse of `normalize_latents`, before `decode`."""
        mean, std = self._stats(z)
        return z * std + mean

    def _stats(self, z: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(self.latents_mean, dtype=z.dtype, device=z.device).view(shape)
        std = torch.tensor(self.latents_std, dtype=z.dtype, device=z.device).view(shape)
        return mean, std

    def _check_size(self, frames: int, height: int, width: int) -> None:
        if (
            (frames - 1) % self.time_factor
            or height % self.space_factor
            or width % self.space_factor
        ):
            raise ValueError(
                f"WanVAE takes 1 + k*{self.time_factor} frames and sides divisible by "
                f"{self.space_factor}; got {frames} frames of {height}x{width}"
            )


@register_model(kind="autoencoder", renamed_args={"dim": "width", "decoder_dim": "decoder_width"})
@variant(WanVAE, latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD)
def wan_vae() -> WanVAE:
    """The Wan 2.1 VAE (base width 96, 16 latent channels, 4x time and 8x space compression),
    with its published latent statistics (`normalize_latents`)."""
