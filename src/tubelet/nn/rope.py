"""Rotary position embeddings (RoPE) over a 3D (frame, row, column) token grid: one table builder
(`rope_3d`) and one rotation (`apply_rope`, which `tubelet.nn.attention.Attention` runs), for V-JEPA 2
(`vjepa_rope_3d`) and Wan 2.1 (`wan_rope_3d`).

Su et al., "RoFormer" (2021): instead of adding a position to a token, queries and keys are turned
by angles proportional to their positions, so q.k depends on the offset between them. V-JEPA 2
(Assran et al. 2025, section 2; `RoPEAttention` in facebookresearch/vjepa2) splits each head's
channels into three equal even-sized chunks, one per axis, and leaves the remainder as it is:

| symbol | meaning |
|---|---|
| d_h | channels per head |
| c = 2 * floor(floor(d_h / 3) / 2) | channels per axis (d_h=64: 20 each, 4 left unturned) |
| p | the token's frame, row or column index on the input's own grid |
| w_i = 10000^(-i / (c/2)), i < c/2 | frequencies |
| a_j = p * w_(j mod c/2), j < c | the angle of channel j |

and channel pairs (2i, 2i+1) become x * cos(a) + (-x_(2i+1), x_(2i)) * sin(a). (The angle table
repeats [w_0..w_(c/2-1)] twice while the pairs are interleaved, so a pair is turned by two different
angles; this is the published model's layout, kept so its weights give its outputs.)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def grid_positions(grid: tuple[int, int, int], device: torch.device | None = None) -> Tensor:
    """(3, t*h*w) integer (frame, row, column) of every token of a (t, h, w) grid, in (t, h, w) order."""
    t, h, w = grid
    axes = torch.meshgrid(
        torch.arange(t, device=device),
        torch.arange(h, device=device),
        torch.arange(w, device=device),
        indexing="ij",
    )
    return torch.stack([a.flatten() for a in axes])  # (3, N)


def axis_channels(head_dim: int) -> int:
    """Channels per axis in V-JEPA 2's 3D RoPE: 2 * floor(floor(head_dim / 3) / 2)."""
    return 2 * ((head_dim // 3) // 2)


def rope_3d(
    grid: tuple[int, int, int],
    bands: tuple[int, int, int],
    head_dim: int,
    *,
    base: float = 10000.0,
    layout: Literal["tiled", "interleaved"] = "interleaved",
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """(cos, sin), each (N, head_dim) float32: the rotary angles of every token of a (t, h, w)
    `grid`, for `apply_rope`. A head's channels are cut into `bands` (c_t, c_h, c_w), even sizes,
    one per axis, in that order; the channels after them keep angle 0 (cos 1, sin 0). In a band of
    c channels the c/2 frequencies are w_i = base^(-2i / c) and p * w_i fills the band as
    `layout` says:

    - "interleaved": [a_0, a_0, a_1, a_1, ...], both channels of a pair by one angle (RoFormer's
      rotation; Wan 2.1);
    - "tiled": [a_0, ..., a_(c/2-1), a_0, ..., a_(c/2-1)] (V-JEPA 2's, see the module table).

    Angles are computed in `dtype` (Wan uses float64, V-JEPA 2 float32).
    """
    if sum(bands) > head_dim or any(b < 2 or b % 2 for b in bands):
        raise ValueError(
            f"rotary bands {bands} must be even, >= 2 and fit in the head's {head_dim} channels"
        )
    pos = grid_positions(grid, device).to(dtype)  # (3, N)
    angles = []
    for axis, band in enumerate(bands):
        exponent = torch.arange(0, band, 2, dtype=dtype, device=device) / band  # 2i / c
        angle = pos[axis][:, None] * (1.0 / base**exponent)  # (N, c/2)
        if layout == "interleaved":
            angles.append(angle.repeat_interleave(2, dim=1))  # (N, c)
        else:
            angles.append(torch.cat([angle, angle], dim=1))  # (N, c)
    table = torch.nn.functional.pad(torch.cat(angles, dim=1), (0, head_dim - sum(bands)))
    return table.cos().float(), table.sin().float()  # (N, head_dim) each


def vjepa_rope_3d(
    grid: tuple[int, int, int],
    head_dim: int,
    *,
    base: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """V-JEPA 2's tables (see the module table): `rope_3d` with three bands of `axis_channels`
    each, tiled, in float32."""
    c = axis_channels(head_dim)
    if c == 0:
        raise ValueError(f"head_dim {head_dim} is too small for 3D rotary positions (need >= 6)")
    return rope_3d(grid, (c, c, c), head_dim, base=base, layout="tiled", device=device)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Turn channel pairs of `x` (..., N, d) by the angle tables (N, d):
    (x_2i, x_2i+1) -> (x_2i cos_2i - x_2i+1 sin_2i, x_2i+1 cos_2i+1 + x_2i sin_2i+1).

    When both channels of a pair share their angle this is the rotation of RoFormer (eq. 34)."""
    pairs = x.unflatten(-1, (-1, 2))  # (..., N, d/2, 2)
    partner = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (..., N, d)
    return x * cos.to(x.dtype) + partner * sin.to(x.dtype)


def wan_rope_3d(
    grid: tuple[int, int, int],
    head_dim: int,
    *,
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Wan 2.1's tables (`WanRotaryPosEmbed`): `rope_3d` with 2 * (d // 6) channels to each
    spatial axis and the rest to time, interleaved, computed in float64 as Wan does."""
    space = 2 * (head_dim // 6)
    bands = (head_dim - 2 * space, space, space)
    if head_dim % 2 or min(bands) < 2:
        raise ValueError(f"Wan's 3D RoPE needs an even head dim of at least 6, got {head_dim}")
    return rope_3d(grid, bands, head_dim, base=theta, dtype=torch.float64, device=device)
