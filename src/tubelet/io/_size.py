"""Frame sizes shared by the decoding backends."""

from __future__ import annotations

import torch


def short_side_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(height, width) of `size` = (height, width) resized to short side `short_side`; the long
    side is floor(long * short_side / short), as `tubelet.data.transforms.short_side_resize` and
    torchvision compute it."""
    height, width = size
    if height <= width:
        return short_side, width * short_side // height
    return height * short_side // width, short_side


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, H, W, 3) frames resized to uint8 (N, height, width, 3) for `size` = (height,
    width), on the frames' own device (a GPU too): bilinear, antialiased, rounded, with
    torchvision's `resize`, as `tubelet.data.transforms.short_side_resize` resamples."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    channels_first = frames.permute(0, 3, 1, 2)  # (N, 3, H, W)
    resized = resize(channels_first, list(size), InterpolationMode.BILINEAR, antialias=True)
    return resized.permute(0, 2, 3, 1).contiguous()  # (N, height, width, 3)
