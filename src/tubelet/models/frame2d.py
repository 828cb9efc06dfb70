"""The per-frame baseline: a 2D ResNet applied to every frame, its predictions averaged over time.

Frames are folded into the batch, so the trunk never sees time; the head pools features over
(T, h, w) and applies one linear layer, which equals averaging per-frame logits (the head is linear).
The trunk's module names equal torchvision's `resnet18`, so its ImageNet weights load at width=64
with `checkpoint_format="torchvision"`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

from einops import rearrange
from torch import Tensor, nn

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import register_model
from tubelet.nn import NormFactory, init_conv_weights, residual_stage


@dataclass(frozen=True)
class Stage2d:
    """One residual stage: `depth` blocks with `multiplier * width` output channels; the first
    block strides by `stride`."""

    depth: int
    multiplier: int
    stride: int


class BasicBlock2d(nn.Module):
    """Two 3x3 convs and a residual: (N, in_ch, H, W) -> (N, out_ch, H / stride, W / stride)."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, norm_layer: NormFactory) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = norm_layer(out_ch)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), norm_layer(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.downsample(x)
        return self.relu(out)


class FrameResNet(VideoClassifier):
    """2D ResNet on each frame: stem (7x7 conv, max-pool), stages `layer1..layerN`, pooled head.

    Input (B, 3, T, H, W); `forward_features` gives (B, D, T, h, w) with D = `num_features`, and
    the logits are the mean of the per-frame logits.
    """

    def __init__(
        self,
        stages: Sequence[Stage2d],
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
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stage_names = tuple(f"layer{i}" for i in range(1, len(stages) + 1))
        block = partial(BasicBlock2d, norm_layer=norm_layer)
        for name, spec, (in_ch, out_ch) in zip(
            self.stage_names, stages, pairwise(channels), strict=True
        ):
            stage = residual_stage(block, in_ch, out_ch, depth=spec.depth, stride=spec.stride)
            self.add_module(name, stage)
        init_conv_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> per-frame features (B, D, T, h, w)."""
        batch = x.shape[0]
        x = rearrange(x, "b c t h w -> (b t) c h w")  # (B*T, 3, H, W)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B*T, width, H/4, W/4)
        for name in self.stage_names:
            x = self.maybe_checkpoint(getattr(self, name), x)
        return rearrange(x, "(b t) d h w -> b d t h w", b=batch)  # (B, D, T, h, w)


def _build(
    depths: tuple[int, int, int, int],
    *,
    num_classes: int,
    width: int,
    dropout: float,
    norm_layer: NormFactory,
) -> FrameResNet:
    """A four-stage FrameResNet with channels width * (1, 2, 4, 8)."""
    stages = [
        Stage2d(depth=depth, multiplier=mult, stride=stride)
        for depth, mult, stride in zip(depths, (1, 2, 4, 8), (1, 2, 2, 2), strict=True)
    ]
    return FrameResNet(
        stages, num_classes=num_classes, width=width, dropout=dropout, norm_layer=norm_layer
    )


@register_model
def frame2d_resnet18(
    *,
    num_classes: int = 400,
    width: int = 64,
    dropout: float = 0.0,
    norm_layer: NormFactory = nn.BatchNorm2d,
) -> FrameResNet:
    """ResNet-18 on every frame, logits averaged over time (torchvision `resnet18` at width=64)."""
    return _build(
        (2, 2, 2, 2), num_classes=num_classes, width=width, dropout=dropout, norm_layer=norm_layer
    )
