"""Rotary position embeddings (RoPE) over a 3D (frame, row, column) token grid, as V-JEPA 2 uses.

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


def vjepa_rope_3d(
    grid: tuple[int, int, int],
    head_dim: int,
    *,
    base: float = 10000.0,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """(cos, sin), each (N, head_dim): the angles of every token of `grid` (see the module
    table); the last head_dim - 3c channels get angle 0 (cos 1, sin 0), so they stay as they are."""
    c = axis_channels(head_dim)
    if c == 0:
        raise ValueError(f"head_dim {head_dim} is too small for 3D rotary positions (need >= 6)")
    omega = torch.arange(c // 2, device=device, dtype=dtype) / (c / 2.0)
    omega = 1.0 / base**omega  # (c/2,)
    pos = grid_positions(grid, device)  # (3, N)
    angles = pos[..., None] * omega  # (3, N, c/2)
    angles = torch.cat([angles, angles], dim=-1)  # (3, N, c): the table repeats, pairs interleave
    angles = torch.cat(list(angles), dim=-1)  # (N, 3c): frame, row, column chunks
    angles = torch.nn.functional.pad(angles, (0, head_dim - 3 * c))  # (N, head_dim)
    return angles.cos(), angles.sin()


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
    """(cos, sin), each (N, head_dim) float32, in Wan 2.1's layout (`WanRotaryPosEmbed`): the
    head's channels are split into time, row and column bands, 2 * (d // 6) channels to each
    spatial axis and the rest to time; in a band of c channels, pair (2i, 2i+1) turns by
    p * theta^(-2i / c), both channels of the pair by the same angle (RoFormer's rotation).
    Angles are computed in float64, as Wan does."""
    space = 2 * (head_dim // 6)
    bands = (head_dim - 2 * space, space, space)
    if head_dim % 2 or min(bands) < 2:
        raise ValueError(f"Wan's 3D RoPE needs an even head dim of at least 6, got {head_dim}")
    pos = grid_positions(grid, device).double()  # (3, N)
    angles = []
    for axis, band in enumerate(bands):
        freqs = theta ** (-torch.arange(0, band, 2, dtype=torch.float64, device=device) / band)
        angles.append((pos[axis][:, None] * freqs).repeat_interleave(2, dim=1))  # (N, band)
    table = torch.cat(angles, dim=1)  # (N, head_dim)
    return table.cos().float(), table.sin().float()
