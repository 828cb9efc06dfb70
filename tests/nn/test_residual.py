"""residual_stage: the first block changes width and stride, the others keep them."""

import pytest
import torch
from torch import nn

from tubelet.nn import residual_stage


def test_first_block_widens_and_strides():
    built = []

    def block(in_ch: int, out_ch: int, *, stride: int) -> nn.Module:
        built.append((in_ch, out_ch, stride))
        return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)

    stage = residual_stage(block, 3, 8, depth=3, stride=2)
    assert built == [(3, 8, 2), (8, 8, 1), (8, 8, 1)]
    assert [name for name, _ in stage.named_children()] == ["0", "1", "2"]
    assert stage(torch.randn(1, 3, 16, 16)).shape == (1, 8, 8, 8)


def test_empty_stage_is_refused():
    with pytest.raises(ValueError, match="depth >= 1"):
        residual_stage(lambda i, o, *, stride: nn.Identity(), 3, 8, depth=0, stride=1)
