"""The 3D ResNet bottleneck shared by I3D, Slow and SlowFast, and the conv factory it builds with."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from tubelet.nn.factories import NormFactory

Triple = tuple[int, int, int]
ConvFactory = Callable[[int, int, Triple, Triple], nn.Conv3d]
"""Builds a bias-free Conv3d (in_ch, out_ch, kernel, stride) padded by kernel // 2 on every axis."""

EXPANSION = 4  # a bottleneck's output has 4x its inner channels (He et al. 2016, Table 1)


def zero_padded_conv(in_ch: int, out_ch: int, kernel: Triple, stride: Triple) -> nn.Conv3d:
    """Bias-free Conv3d padded with zeros by kernel // 2 on every axis."""
    padding = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
    return nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)


class Bottleneck3d(nn.Module):
    """kT x 1 x 1 conv to `out_ch / 4`, 1x3x3 conv (strided in space), 1x1x1 conv to `out_ch`, residual.

    (B, in_ch, T, H, W) -> (B, out_ch, T, H / stride, W / stride). The stride sits on the 3x3 conv
    (ResNet v1.5; PyTorchVideo's conv_b, PySlowFast's STRIDE_1X1=False); the shortcut is a strided
    1x1x1 conv with norm when the shape changes. Names equal torchvision's `Bottleneck` (conv1..3,
    bn1..3, downsample.0/.1), so 2D ResNet-50 weights inflate key for key.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        stride: int,
        time_kernel: int,
        norm_layer: NormFactory,
        conv: ConvFactory = zero_padded_conv,
    ) -> None:
        super().__init__()
        inner = out_ch // EXPANSION
        self.conv1 = conv(in_ch, inner, (time_kernel, 1, 1), (1, 1, 1))
        self.bn1 = norm_layer(inner)
        self.conv2 = conv(inner, inner, (1, 3, 3), (1, stride, stride))
        self.bn2 = norm_layer(inner)
        self.conv3 = conv(inner, out_ch, (1, 1, 1), (1, 1, 1))
        self.bn3 = norm_layer(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                conv(in_ch, out_ch, (1, 1, 1), (1, stride, stride)), norm_layer(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, inner, T, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, inner, T, H / s, W / s)
        out = self.bn3(self.conv3(out))  # (B, out_ch, T, H / s, W / s)
        out += self.downsample(x)
        return self.relu(out)
