"""Fixed sine-cosine position tables ("Attention is all you need", section 3.5).

One formula serves token positions (VideoMAE's table) and diffusion timesteps (the DDPM timestep
embedding): position p gets the angles p * w_k with w_k = max_period ** (-2k / dim), k = 0, 1, ...
The two differ only in how sines and cosines are laid out along the channels (`LAYOUTS`).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import unset_fake_temporarily

LAYOUTS = ("interleaved", "cos_sin")


def sinusoid_table(
    positions: Tensor,
    dim: int,
    *,
    layout: str = "interleaved",
    max_period: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(N,) positions -> (N, dim) float32 table of sines and cosines of p * w_k.

    `layout="interleaved"`: sin in channel 2k, cos in channel 2k + 1 (VideoMAE's, and the paper's);
    `layout="cos_sin"`: the dim // 2 cosines, then the sines, and a zero channel when `dim` is odd
    (the DDPM / Stable Diffusion timestep embedding with `flip_sin_to_cos`). `dtype` is the
    precision of the angles (VideoMAE computes its table in float64 with numpy).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    half = (dim + 1) // 2 if layout == "interleaved" else dim // 2
    k = torch.arange(half, dtype=dtype, device=positions.device)
    freqs = max_period ** (-2 * k / dim)  # (half,)
    angles = positions.to(dtype)[:, None] * freqs[None]  # (N, half)
    if layout == "interleaved":
        table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :dim]  # (N, dim)
    else:
        table = torch.cat([angles.cos(), angles.sin()], dim=-1)  # (N, 2 * half)
        table = torch.nn.functional.pad(table, (0, dim % 2))  # (N, dim)
    return table.float()


@lru_cache(maxsize=16)
def _position_table(length: int, dim: int) -> Tensor:
    return sinusoid_table(torch.arange(length), dim, dtype=torch.float64)


def sinusoid_positions(length: int, dim: int) -> Tensor:
    """(length, dim) fixed positions of tokens 0 .. length - 1, interleaved (VideoMAE's table,
    which it adds to its tubelet tokens instead of learned positions), cached per shape."""
    # Built outside any FakeTensorMode (`tubelet memory --count-only` runs the model in one), so
    # the cache always holds a real table.
    with unset_fake_temporarily():
        return _position_table(length, dim)
