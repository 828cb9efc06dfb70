"""Tube masks for masked video pre-training, and the tube <-> pixel rearranges they index.

A clip (B, C, T, H, W) cut into tubelets of `tubelet_size` frames x `patch_size` x `patch_size`
pixels has a grid (t, h, w) = (T / tubelet_size, H / patch_size, W / patch_size) of N = t*h*w tubes,
numbered in (t, h, w) order: the order of the tokens of a tubelet embedding (a strided Conv3d
flattened), of VideoMAE's masks and of its reconstruction targets. A mask is boolean (B, N),
True = masked (hidden from the encoder), the convention of Hugging Face's `bool_masked_pos`.

- `tube_mask`: the same spatial positions masked in every temporal slice (VideoMAE, section 3.3):
  a masked tube cannot be recovered by copying its neighbour in time.
- `random_mask`: each tube masked on its own (MAE-ST's random masking), for comparison.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor

Grid = tuple[int, int, int]
MaskFn = Callable[..., Tensor]


def _check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(
            f"mask ratio must be in [0, 1) so that some tubes stay visible, got {ratio}"
        )


def _mask_from_noise(noise: Tensor, num_masked: int) -> Tensor:
    """(B, n) uniform noise -> (B, n) bool with the `num_masked` lowest-noise positions True."""
    mask = torch.zeros(noise.shape, dtype=torch.bool, device=noise.device)
    if num_masked:
        mask.scatter_(1, noise.argsort(dim=1)[:, :num_masked], True)
    return mask


def tube_mask(
    batch: int,
    grid: Grid,
    ratio: float = 0.9,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(B, t*h*w) bool: per clip, `int(ratio * h * w)` spatial positions masked in every slice.

    Every clip of the batch masks the same number of tubes, so the visible tokens stack into one
    (B, L, D) tensor. `generator` makes the draw reproducible (it must live on `device`).
    """
    _check_ratio(ratio)
    t, h, w = grid
    noise = torch.rand(batch, h * w, generator=generator, device=device)  # (B, h*w)
    spatial = _mask_from_noise(noise, int(ratio * h * w))  # (B, h*w)
    return spatial.repeat(1, t)  # (B, t*h*w): slice i covers tubes i*h*w ... (i+1)*h*w - 1


def random_mask(
    batch: int,
    grid: Grid,
    ratio: float = 0.9,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(B, t*h*w) bool: per clip, `int(ratio * t * h * w)` tubes masked anywhere in space-time."""
    _check_ratio(ratio)
    n = grid[0] * grid[1] * grid[2]
    noise = torch.rand(batch, n, generator=generator, device=device)  # (B, N)
    return _mask_from_noise(noise, int(ratio * n))


MASKINGS: dict[str, MaskFn] = {"tube": tube_mask, "random": random_mask}


def masking_fn(name: str) -> MaskFn:
    """The mask function called `name` ("tube" or "random")."""
    if name not in MASKINGS:
        raise ValueError(f"unknown masking {name!r}; choose one of {', '.join(MASKINGS)}")
    return MASKINGS[name]


def check_mask(mask: Tensor, batch: int, num_tubes: int) -> None:
    """Raise a ValueError unless `mask` is bool (batch, num_tubes) hiding as many tubes in each clip."""
    if mask.dtype != torch.bool or mask.shape != (batch, num_tubes):
        raise ValueError(
            f"mask must be bool of shape (batch, tubes) = ({batch}, {num_tubes}), got "
            f"{mask.dtype} {tuple(mask.shape)}; draw one with tubelet.nn.masking.tube_mask"
        )
    counts = mask.sum(dim=1)
    if (counts != counts[0]).any():
        raise ValueError(
            f"every clip must mask the same number of tubes (got {counts.tolist()}), so that the "
            "visible tokens of the batch stack into one tensor"
        )
    if counts[0] == num_tubes:
        raise ValueError("the mask hides every tube; at least one must stay visible")


def keep_visible(tokens: Tensor, mask: Tensor) -> Tensor:
    """(B, N, D) tokens -> (B, N - masked, D): the unmasked ones, in their original order."""
    b, n, d = tokens.shape
    check_mask(mask, b, n)
    return tokens[~mask].reshape(b, -1, d)  # boolean indexing keeps row-major (per clip) order


def patchify(clip: Tensor, tubelet_size: int, patch_size: int) -> Tensor:
    """(B, C, T, H, W) -> (B, N, tubelet_size * patch_size**2 * C), tubes in (t, h, w) order.

    The values of each tube are laid out (frame, row, column, channel), as VideoMAE's targets.
    """
    _check_tiles(clip.shape, tubelet_size, patch_size)
    return rearrange(
        clip,
        "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)",
        pt=tubelet_size, ph=patch_size, pw=patch_size,
    )  # fmt: skip


def unpatchify(patches: Tensor, grid: Grid, tubelet_size: int, patch_size: int) -> Tensor:
    """The inverse of `patchify`: (B, N, tubelet_size * patch_size**2 * C) -> (B, C, T, H, W)."""
    t, h, w = grid
    return rearrange(
        patches,
        "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)",
        t=t, h=h, w=w, pt=tubelet_size, ph=patch_size, pw=patch_size,
    )  # fmt: skip


def tube_grid(shape: torch.Size | tuple[int, ...], tubelet_size: int, patch_size: int) -> Grid:
    """The (t, h, w) tube grid of a clip of shape (B, C, T, H, W)."""
    _check_tiles(shape, tubelet_size, patch_size)
    _, _, frames, height, width = shape
    return frames // tubelet_size, height // patch_size, width // patch_size


def _check_tiles(shape: torch.Size | tuple[int, ...], tubelet_size: int, patch_size: int) -> None:
    if len(shape) != 5:
        raise ValueError(f"expected a clip (B, C, T, H, W), got shape {tuple(shape)}")
    frames, height, width = shape[2:]
    if frames % tubelet_size or height % patch_size or width % patch_size:
        raise ValueError(
            f"a clip of {frames} frames of {height}x{width} does not split into tubes of "
            f"{tubelet_size} frames x {patch_size}x{patch_size} pixels; use a frame count divisible "
            f"by {tubelet_size} and a size divisible by {patch_size}"
        )
