"""Residual stages: a run of blocks of which only the first changes width and resolution."""

from __future__ import annotations

from typing import Protocol

from torch import nn


class BlockFactory(Protocol):
    """Builds one residual block (B, in_ch, ...) -> (B, out_ch, ... / stride)."""

    def __call__(self, in_ch: int, out_ch: int, *, stride: int) -> nn.Module: ...


def residual_stage(
    block: BlockFactory, in_ch: int, out_ch: int, *, depth: int, stride: int
) -> nn.Sequential:
    """`depth` blocks in sequence, named "0".."depth-1" (torchvision's `layerN.i` keys).

    The first block maps `in_ch` to `out_ch` channels and strides by `stride`; the others keep
    `out_ch` at stride 1.
    """
    if depth < 1:
        raise ValueError(f"a residual stage needs depth >= 1, got {depth}")
    first = block(in_ch, out_ch, stride=stride)
    return nn.Sequential(first, *(block(out_ch, out_ch, stride=1) for _ in range(depth - 1)))
