"""Frame sizes shared by the decoding backends."""

from __future__ import annotations


def short_side_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(height, width) of `size` = (height, width) resized to short side `short_side`; the long
    side is floor(long * short_side / short), as `tubelet.data.transforms.short_side_resize` and
    torchvision compute it."""
    height, width = size
    if height <= width:
        return short_side, width * short_side // height
    return height * short_side // width, short_side
