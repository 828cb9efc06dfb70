"""3D ResNets for video: R3D-18, MC3-18 and R(2+1)D-18.

Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition", CVPR 2018.
The three variants differ only in how a residual block realises its 3x3x3 convolution (`BlockConv`)
and in the stem. Module names and parameter shapes equal torchvision's `models.video` at width=64,
so torchvision's Kinetics-400 weights load 1:1 with `checkpoint_format="torchvision"`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

from torch import Tensor, nn

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import register_model
from tubelet.nn import NormFactory, init_conv_weights, residual_stage

StemFactory = Callable[[int, NormFactory], nn.Module]


def factorised_channels(in_ch: int, out_ch: int) -> int:
    """Hidden channels M of a (2+1)D conv standing in for a 3x3x3 conv from `in_ch` to `out_ch`.

    M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out)) with t = d = 3 keeps the parameter count of
    the 3D conv (Tran et al. 2018, Sec. 3.5).
    """
    return (27 * in_ch * out_ch) // (9 * in_ch + 3 * out_ch)


@dataclass(frozen=True)
class BlockConv:
    """How a residual block realises its 3x3x3 convolution.

    temporal: the kernel spans 3 frames and a block's stride also applies to time; False gives a
        spatial-only 1x3x3 conv that keeps T (MC3's upper stages).
    factorised: (2+1)D: a 1x3x3 spatial conv to `mid_ch` channels, norm, ReLU, then a 3x1x1
        temporal conv (R(2+1)D).
    """

    temporal: bool = True
    factorised: bool = False

    def __post_init__(self) -> None:
        if self.factorised and not self.temporal:
            raise ValueError("a factorised (2+1)D conv needs temporal=True")

    def time_stride(self, stride: int) -> int:
        """Temporal stride of a block whose spatial stride is `stride`."""
        return stride if self.temporal else 1

    def build(
        self, in_ch: int, out_ch: int, mid_ch: int, stride: int, norm_layer: NormFactory
    ) -> nn.Module:
        """The conv (B, in_ch, T, H, W) -> (B, out_ch, T / time_stride, H / stride, W / stride).

        `mid_ch` is the hidden width of the (2+1)D factorisation; unfactorised convs do not use it.
        """
        if self.factorised:
            return nn.Sequential(
                nn.Conv3d(
                    in_ch,
                    mid_ch,
                    (1, 3, 3),
                    stride=(1, stride, stride),
                    padding=(0, 1, 1),
                    bias=False,
                ),
                norm_layer(mid_ch),
                nn.ReLU(inplace=True),
                nn.Conv3d(
                    mid_ch, out_ch, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False
                ),
            )
        kt = 3 if self.temporal else 1
        return nn.Conv3d(
            in_ch,
            out_ch,
            (kt, 3, 3),
            stride=(self.time_stride(stride), stride, stride),
            padding=(kt // 2, 1, 1),
            bias=False,
        )


FULL_3D = BlockConv()
SPATIAL_ONLY = BlockConv(temporal=False)
FACTORISED_2PLUS1D = BlockConv(factorised=True)


@dataclass(frozen=True)
class StageSpec:
    """One residual stage: `depth` blocks with `multiplier * width` output channels; the first block
    strides by `stride` in space (and in time when `conv` is temporal)."""

    depth: int
    multiplier: int
    stride: int
    conv: BlockConv


class BasicBlock3d(nn.Module):
    """Two convs and a residual: (B, in_ch, T, H, W) -> (B, out_ch, T / s_t, H / s, W / s)."""

    def __init__(
        self, in_ch: int, out_ch: int, *, conv: BlockConv, stride: int, norm_layer: NormFactory
    ) -> None:
        super().__init__()
        # Both convs use the block's (in_ch, out_ch) for the (2+1)D width, as torchvision does.
        mid = factorised_channels(in_ch, out_ch)
        self.conv1 = nn.Sequential(
            conv.build(in_ch, out_ch, mid, stride, norm_layer),
            norm_layer(out_ch),
            nn.ReLU(inplace=True),
        )
        self.conv2 = nn.Sequential(
            conv.build(out_ch, out_ch, mid, 1, norm_layer), norm_layer(out_ch)
        )
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv3d(
                    in_ch,
                    out_ch,
                    kernel_size=1,
                    stride=(conv.time_stride(stride), stride, stride),
                    bias=False,
                ),
                norm_layer(out_ch),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        out += self.downsample(x)
        return self.relu(out)


def basic_stem(width: int, norm_layer: NormFactory) -> nn.Sequential:
    """3x7x7 conv, stride (1, 2, 2): (B, 3, T, H, W) -> (B, width, T, H/2, W/2)."""
    return nn.Sequential(
        nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        norm_layer(width),
        nn.ReLU(inplace=True),
    )


def factorised_stem(width: int, norm_layer: NormFactory) -> nn.Sequential:
    """(2+1)D stem, 1x7x7 then 3x1x1: (B, 3, T, H, W) -> (B, width, T, H/2, W/2)."""
    # 45 hidden channels at width 64 is torchvision's choice (not the Sec. 3.5 formula); scale it.
    mid = max(1, 45 * width // 64)
    return nn.Sequential(
        nn.Conv3d(3, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        norm_layer(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, (3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
        norm_layer(width),
        nn.ReLU(inplace=True),
    )


class VideoResNet(VideoClassifier):
    """A stem, residual stages `layer1..layerN`, global average pooling, dropout and a linear head.

    Input (B, 3, T, H, W); `forward_features` gives (B, D, T', H', W') with D = `num_features`.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[StageSpec],
        *,
        num_classes: int,
        width: int,
        dropout: float,
        norm_layer: NormFactory,
    ) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        channels = [width] + [spec.multiplier * width for spec in stages]
        super().__init__(num_features=channels[-1], num_classes=num_classes, dropout=dropout)
        self.stem = stem
        self.stage_names = tuple(f"layer{i}" for i in range(1, len(stages) + 1))
        for name, spec, (in_ch, out_ch) in zip(
            self.stage_names, stages, pairwise(channels), strict=True
        ):
            block = partial(BasicBlock3d, conv=spec.conv, norm_layer=norm_layer)
            stage = residual_stage(block, in_ch, out_ch, depth=spec.depth, stride=spec.stride)
            self.add_module(name, stage)
        init_conv_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> un-pooled features (B, D, T', H', W')."""
        x = self.stem(x)
        for name in self.stage_names:
            x = self.maybe_checkpoint(getattr(self, name), x)
        return x


def _build(
    stem: StemFactory,
    convs: tuple[BlockConv, BlockConv, BlockConv, BlockConv],
    *,
    num_classes: int,
    width: int,
    dropout: float,
    norm_layer: NormFactory,
) -> VideoResNet:
    """An 18-layer VideoResNet: two blocks per stage, channels width * (1, 2, 4, 8)."""
    stages = [
        StageSpec(depth=2, multiplier=mult, stride=stride, conv=conv)
        for mult, stride, conv in zip((1, 2, 4, 8), (1, 2, 2, 2), convs, strict=True)
    ]
    return VideoResNet(
        stem(width, norm_layer),
        stages,
        num_classes=num_classes,
        width=width,
        dropout=dropout,
        norm_layer=norm_layer,
    )


@register_model
def r3d_18(
    *,
    num_classes: int = 400,
    width: int = 64,
    dropout: float = 0.0,
    norm_layer: NormFactory = nn.BatchNorm3d,
) -> VideoResNet:
    """R3D-18: full 3x3x3 convolutions in every stage (torchvision `r3d_18` at width=64)."""
    return _build(
        basic_stem,
        (FULL_3D,) * 4,
        num_classes=num_classes,
        width=width,
        dropout=dropout,
        norm_layer=norm_layer,
    )


@register_model
def mc3_18(
    *,
    num_classes: int = 400,
    width: int = 64,
    dropout: float = 0.0,
    norm_layer: NormFactory = nn.BatchNorm3d,
) -> VideoResNet:
    """MC3-18: 3D convolutions in the first stage, spatial-only 1x3x3 ones above it."""
    return _build(
        basic_stem,
        (FULL_3D, SPATIAL_ONLY, SPATIAL_ONLY, SPATIAL_ONLY),
        num_classes=num_classes,
        width=width,
        dropout=dropout,
        norm_layer=norm_layer,
    )


@register_model
def r2plus1d_18(
    *,
    num_classes: int = 400,
    width: int = 64,
    dropout: float = 0.0,
    norm_layer: NormFactory = nn.BatchNorm3d,
) -> VideoResNet:
    """R(2+1)D-18: every 3x3x3 conv factorised into 1x3x3 spatial then 3x1x1 temporal."""
    return _build(
        factorised_stem,
        (FACTORISED_2PLUS1D,) * 4,
        num_classes=num_classes,
        width=width,
        dropout=dropout,
        norm_layer=norm_layer,
    )
