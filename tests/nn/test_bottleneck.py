import torch
from torch import nn

from tubelet.nn import Bottleneck3d


def test_shapes_names_and_shortcut():
    block = Bottleneck3d(8, 16, stride=2, time_kernel=3, norm_layer=nn.BatchNorm3d)
    assert block(torch.randn(2, 8, 5, 12, 12)).shape == (2, 16, 5, 6, 6)  # time kept, space halved
    assert block.conv1.weight.shape == (4, 8, 3, 1, 1)  # inner = out / 4, temporal kernel first
    assert block.conv2.stride == (1, 2, 2)
    assert isinstance(block.downsample, nn.Sequential)
    same = Bottleneck3d(16, 16, stride=1, time_kernel=1, norm_layer=nn.BatchNorm3d)
    assert isinstance(same.downsample, nn.Identity)


def test_residual_adds_the_input_when_the_branch_is_zero():
    block = Bottleneck3d(8, 8, stride=1, time_kernel=3, norm_layer=nn.BatchNorm3d).eval()
    nn.init.zeros_(block.bn3.weight)  # the residual branch outputs zero
    x = torch.rand(1, 8, 3, 4, 4)
    torch.testing.assert_close(block(x), x)
