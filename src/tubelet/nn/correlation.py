"""Correlation of two feature maps for optical flow (RAFT, Teed & Deng 2020, section 3.2).

Two ways to give the same correlation features:

- **all pairs** (`AllPairsCorrelation`): the dot product of every pixel of `fmap1` with every pixel
  of `fmap2`, a 4D volume (B, H, W, H, W), pooled over its last two dimensions into a pyramid, then
  sampled around each pixel's current match. Memory O((HW)^2): 5.6 GiB in float32 for a 1080p frame's
  1/8-resolution maps (135 x 240), pyramid included.
- **on demand** (`OnDemandCorrelation`): correlation is linear in `fmap2`, so pooling the volume over
  `fmap2`'s dimensions equals correlating with pooled `fmap2`, and bilinearly sampling the volume equals
  correlating with bilinearly sampled `fmap2`. Only the pyramid of `fmap2` is kept and the looked-up
  values are computed when asked: memory O(HW), about 2-4x the compute per lookup.

Coordinates are absolute pixel positions (x, y) on the 1/8 grid, as `coords` (B, 2, H, W).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Lookup = Callable[[Tensor], Tensor]


Grid = tuple[Tensor, Tensor]  # (scale (2,), shift (K, K, 2)) of one pyramid level


def bilinear_sample(image: Tensor, grid: Tensor) -> Tensor:
    """Sample `image` (N, C, h, w) at `grid` (N, ..., 2), positions normalised as `window_grids`
    makes them. Bilinear, zero outside the image."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def window_grids(
    sizes: list[tuple[int, int]], radius: int, *, device: torch.device | None = None
) -> list[Grid]:
    """Per pyramid level of `sizes` ((h_l, w_l), level l at 1/2^l), the affine map from a pixel
    position p = (x, y) of level 0 to `grid_sample`'s coordinates of every window offset d there:
    `grid = p * scale + shift`, scale (2,), shift (K, K, 2), K = 2r + 1.

    Level l samples at p / 2^l + d, normalised as `align_corners=False` does, (2q + 1) / w_l - 1
    (defined for w_l = 1, unlike align_corners=True), hence scale = 2 / (2^l (w_l, h_l)) and
    shift = (2d + 1) / (w_l, h_l) - 1. Made once per pair, this turns each level's lookup into one
    multiply-add over the window instead of a chain of small kernels, every refinement step.
    """
    side = 2 * radius + 1
    offsets = window_offsets(radius, device=device).view(side, side, 2)
    grids = []
    for level, (h, w) in enumerate(sizes):
        extent = torch.tensor([w, h], dtype=torch.float32, device=device)
        grids.append((2 / (2**level * extent), (2 * offsets + 1) / extent - 1))
    return grids


def window_offsets(radius: int, *, device: torch.device | None = None) -> Tensor:
    """The (2r+1)^2 integer offsets of a lookup window as (K*K, 2), in RAFT's channel order.

    The outer index moves x and the inner one y (the original release stacks `meshgrid(dy, dx)` onto
    (x, y) coordinates; trained weights depend on this order: princeton-vl/RAFT issue 122).
    """
    d = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    outer, inner = torch.meshgrid(d, d, indexing="ij")
    return torch.stack((outer, inner), dim=-1).view(-1, 2)  # (K*K, 2) as (dx, dy)


def all_pairs_volume(fmap1: Tensor, fmap2: Tensor) -> Tensor:
    """Every pixel of `fmap1` (B, C, H, W) against every pixel of `fmap2`, divided by sqrt(C).

    Returned as (B*H*W, 1, H, W): one correlation image over `fmap2` per pixel of `fmap1`.
    """
    b, c, h, w = fmap1.shape
    corr = fmap1.flatten(2).transpose(1, 2) @ fmap2.flatten(2)  # (B, H*W, H*W)
    return corr.view(b * h * w, 1, h, w) / c**0.5


def pool_pyramid(x: Tensor, num_levels: int) -> list[Tensor]:
    """`x` and `num_levels - 1` successive 2x2 average poolings of its last two dimensions."""
    levels = [x]
    for _ in range(num_levels - 1):
        levels.append(F.avg_pool2d(levels[-1], kernel_size=2, stride=2))
    return levels


def lookup_volume_pyramid(
    pyramid: list[Tensor], coords: Tensor, *, radius: int, grids: list[Grid] | None = None
) -> Tensor:
    """Correlation features (B, L*(2r+1)^2, H, W) sampled from an all-pairs pyramid.

    Level l is sampled at coords / 2^l plus every offset of the window (RAFT eq. in section 3.2).
    `grids`: `window_grids` of the pyramid (made here when not given).
    """
    b, _, h, w = coords.shape
    if grids is None:
        grids = window_grids(_sizes(pyramid), radius, device=coords.device)
    centres = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)  # (BHW, 1, 1, 2)
    features = []
    for volume, (scale, shift) in zip(pyramid, grids, strict=True):
        grid = torch.addcmul(shift, centres, scale)  # (BHW, K, K, 2)
        features.append(bilinear_sample(volume, grid).view(b, h, w, -1))  # (B, H, W, K*K)
    return torch.cat(features, dim=-1).permute(0, 3, 1, 2).contiguous()


def lookup_on_demand(
    query: Tensor,
    fmap2_pyramid: list[Tensor],
    coords: Tensor,
    *,
    radius: int,
    chunk: int,
    grids: list[Grid] | None = None,
) -> Tensor:
    """The same features as `lookup_volume_pyramid`, computed from `query` (fmap1 / sqrt(C), made
    once per pair) and `fmap2`'s pyramid.

    For each offset d: sample fmap2 (level l) at coords / 2^l + d, dot with the query over
    channels. Offsets are processed in groups so that a sampled block holds at most `chunk` elements.
    """
    b, c, h, w = query.shape
    if grids is None:
        grids = window_grids(_sizes(fmap2_pyramid), radius, device=coords.device)
    per_group = max(1, chunk // (b * c * h * w))
    centres = coords.permute(0, 2, 3, 1)[:, :, :, None]  # (B, H, W, 1, 2)
    features = []
    for fmap2, (scale, shift) in zip(fmap2_pyramid, grids, strict=True):
        shifts = shift.view(-1, 2)  # (K*K, 2)
        for start in range(0, len(shifts), per_group):
            d = shifts[start : start + per_group]  # (k, 2)
            grid = torch.addcmul(d, centres, scale).reshape(b, h, -1, 2)  # (B, H, W*k, 2)
            sampled = bilinear_sample(fmap2, grid).view(b, c, h, w, -1)  # (B, C, H, W, k)
            features.append(torch.einsum("bchwk,bchw->bkhw", sampled, query))
    return torch.cat(features, dim=1)  # (B, L*K*K, H, W)


def _sizes(pyramid: list[Tensor]) -> list[tuple[int, int]]:
    return [(t.shape[-2], t.shape[-1]) for t in pyramid]


def check_pyramid_fits(fmap: Tensor, num_levels: int) -> None:
    """A ValueError unless the coarsest pyramid level keeps at least one pixel."""
    need = 2 ** (num_levels - 1)
    if min(fmap.shape[-2:]) < need:
        raise ValueError(
            f"feature maps of {tuple(fmap.shape[-2:])} are too small for a {num_levels}-level "
            f"correlation pyramid: the images must be at least {8 * need} pixels on each side"
        )


class AllPairsCorrelation(nn.Module):
    """Correlation block that stores the all-pairs volume pyramid (RAFT's original design).

    Duty (shared by every correlation block): `build(fmap1, fmap2)` returns a lookup function
    `coords (B, 2, H, W) -> features (B, out_channels, H, W)`; `out_channels` is
    `num_levels * (2 * radius + 1) ** 2`. The block holds no parameters and no state between calls.
    """

    def __init__(self, *, num_levels: int = 4, radius: int = 4) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.radius = radius
        self.out_channels = num_levels * (2 * radius + 1) ** 2

    def build(self, fmap1: Tensor, fmap2: Tensor) -> Lookup:
        """Compute the volume pyramid of `fmap1`, `fmap2` (B, C, H, W); return its lookup."""
        _check_pair(fmap1, fmap2)
        check_pyramid_fits(fmap1, self.num_levels)
        pyramid = pool_pyramid(all_pairs_volume(fmap1, fmap2), self.num_levels)
        grids = window_grids(_sizes(pyramid), self.radius, device=fmap1.device)
        return partial(lookup_volume_pyramid, pyramid, radius=self.radius, grids=grids)


class OnDemandCorrelation(AllPairsCorrelation):
    """Correlation block that never forms the volume: same features, memory O(HW) instead of O((HW)^2).

    `chunk` bounds the elements of one sampled block of `fmap2` (default 2^24, 64 MiB in float32).
    """

    def __init__(self, *, num_levels: int = 4, radius: int = 4, chunk: int = 2**24) -> None:
        super().__init__(num_levels=num_levels, radius=radius)
        self.chunk = chunk

    def build(self, fmap1: Tensor, fmap2: Tensor) -> Lookup:
        """Pool `fmap2` into a pyramid (pooling commutes with the linear correlation); return the lookup."""
        _check_pair(fmap1, fmap2)
        check_pyramid_fits(fmap1, self.num_levels)
        pyramid = pool_pyramid(fmap2, self.num_levels)
        grids = window_grids(_sizes(pyramid), self.radius, device=fmap1.device)
        query = fmap1 / fmap1.shape[1] ** 0.5
        return partial(
            lookup_on_demand, query, pyramid, radius=self.radius, chunk=self.chunk, grids=grids
        )


def _check_pair(fmap1: Tensor, fmap2: Tensor) -> None:
    if fmap1.shape != fmap2.shape or fmap1.ndim != 4:
        raise ValueError(
            f"correlation needs two feature maps of one shape (B, C, H, W), got {tuple(fmap1.shape)} "
            f"and {tuple(fmap2.shape)}"
        )
