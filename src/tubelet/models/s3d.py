"""S3D: Inception-v1 with separable 3D convolutions.

Xie et al., "Rethinking Spatiotemporal Feature Learning: Speed-Accuracy Trade-offs in Video
Classification", ECCV 2018. Every k x k x k conv of the Inception network is a 1 x k x k spatial conv
followed by a k x 1 x 1 temporal one. Module names and parameter shapes of the trunk (`features`)
equal torchvision's `models.video.s3d` at width=64, so its Kinetics-400 weights load with
`checkpoint_format="torchvision"` (the importer turns its 1x1x1 conv classifier into `fc`).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import register_model
from tubelet.nn import NormFactory, init_conv_weights

# S3D's BatchNorm settings (the TensorFlow release's, kept by torchvision).
s3d_norm: NormFactory = partial(nn.BatchNorm3d, eps=1e-3, momentum=1e-3)


def conv_norm_act(
    in_ch: int,
    out_ch: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    norm_layer: NormFactory,
) -> nn.Sequential:
    """Conv3d without bias, norm, ReLU (keys "0", "1" like torchvision's `Conv3dNormActivation`)."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False),
        norm_layer(out_ch),
        nn.ReLU(inplace=True),
    )


def separable_conv(
    in_ch: int, out_ch: int, kernel: int, stride: int, norm_layer: NormFactory
) -> nn.Sequential:
    """A k x k x k conv split into 1 x k x k (space) then k x 1 x 1 (time), each with norm and ReLU.

    (B, in_ch, T, H, W) -> (B, out_ch, T / stride, H / stride, W / stride), padding k // 2.
    """
    pad = kernel // 2
    return nn.Sequential(
        conv_norm_act(
            in_ch, out_ch, (1, kernel, kernel), (1, stride, stride), (0, pad, pad), norm_layer
        ),
        conv_norm_act(out_ch, out_ch, (kernel, 1, 1), (stride, 1, 1), (pad, 0, 0), norm_layer),
    )


@dataclass(frozen=True)
class InceptionSpec:
    """Output channels of one Inception block's four branches at width=64.

    b0: 1x1x1 conv; b1_mid -> b1: 1x1x1 conv then separable 3x3x3; b2_mid -> b2: the same with
    fewer channels; b3: 3x3x3 max-pool then 1x1x1 conv.
    """

    b0: int
    b1_mid: int
    b1: int
    b2_mid: int
    b2: int
    b3: int

    def scaled(self, width: int) -> InceptionSpec:
        """The block at `width` (64 is the published network): every width times width / 64."""
        return InceptionSpec(*(max(1, c * width // 64) for c in astuple(self)))

    @property
    def out_ch(self) -> int:
        """Channels of the block's output: its branches concatenated."""
        return self.b0 + self.b1 + self.b2 + self.b3


class SepInception3d(nn.Module):
    """Four parallel branches concatenated: (B, in_ch, T, H, W) -> (B, spec.out_ch, T, H, W)."""

    def __init__(self, in_ch: int, spec: InceptionSpec, norm_layer: NormFactory) -> None:
        super().__init__()
        one = (1, 1, 1)
        zero = (0, 0, 0)
        self.branch0 = conv_norm_act(in_ch, spec.b0, one, one, zero, norm_layer)
        self.branch1 = nn.Sequential(
            conv_norm_act(in_ch, spec.b1_mid, one, one, zero, norm_layer),
            separable_conv(spec.b1_mid, spec.b1, 3, 1, norm_layer),
        )
        self.branch2 = nn.Sequential(
            conv_norm_act(in_ch, spec.b2_mid, one, one, zero, norm_layer),
            separable_conv(spec.b2_mid, spec.b2, 3, 1, norm_layer),
        )
        self.branch3 = nn.Sequential(
            nn.MaxPool3d(3, stride=1, padding=1),
            conv_norm_act(in_ch, spec.b3, one, one, zero, norm_layer),
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch0, self.branch1, self.branch2, self.branch3)
        return torch.cat([branch(x) for branch in branches], dim=1)  # (B, out_ch, T, H, W)


# The smallest clip the trunk takes: a T or H below these leaves the last max-pool one step.
MIN_FRAMES = 5
MIN_SIZE = 17

# Inception blocks of S3D (Inception-v1's Mixed_3b..Mixed_5c) at width=64.
MIXED_3 = (InceptionSpec(64, 96, 128, 16, 32, 32), InceptionSpec(128, 128, 192, 32, 96, 64))
MIXED_4 = (
    InceptionSpec(192, 96, 208, 16, 48, 64),
    InceptionSpec(160, 112, 224, 24, 64, 64),
    InceptionSpec(128, 128, 256, 24, 64, 64),
    InceptionSpec(112, 144, 288, 32, 64, 64),
    InceptionSpec(256, 160, 320, 32, 128, 128),
)
MIXED_5 = (InceptionSpec(256, 160, 320, 32, 128, 128), InceptionSpec(384, 192, 384, 48, 128, 128))


class S3D(VideoClassifier):
    """S3D trunk `features` (stem, Inception stages between max-pools), local pooling, linear head.

    Input (B, 3, T, H, W); the trunk downsamples time by 8 and space by 32. `forward_features`
    returns the trunk's map after S3D's stride-1 average pooling over `pool_size` windows,
    (B, D, T/8 - 1, H/32 - 6, W/32 - 6) at the published size; the head averages it. Where the map
    is smaller than a window (short or small clips) the window is cut to the map, so any clip of
    at least `MIN_FRAMES` frames of `MIN_SIZE` pixels works. The mean of window averages followed
    by the linear head equals torchvision's pool -> 1x1x1 conv -> mean, so the logits match its
    model exactly.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        width: int,
        dropout: float,
        norm_layer: NormFactory,
        pool_size: tuple[int, int, int] = (2, 7, 7),
    ) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        stem_ch, mid_ch = width, 3 * width
        layers: list[nn.Module] = [
            separable_conv(3, stem_ch, 7, 2, norm_layer),  # (B, w, T/2, H/2, W/2)
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            conv_norm_act(stem_ch, stem_ch, (1, 1, 1), (1, 1, 1), (0, 0, 0), norm_layer),
            separable_conv(stem_ch, mid_ch, 3, 1, norm_layer),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # (B, 3w, T/2, H/8, W/8)
        ]
        in_ch = mid_ch
        pools = (
            nn.MaxPool3d(3, stride=2, padding=1),  # after Mixed_3: (.., T/4, H/16, W/16)
            nn.MaxPool3d(2, stride=2),  # after Mixed_4: (.., T/8, H/32, W/32)
            None,
        )
        for specs, pool in zip((MIXED_3, MIXED_4, MIXED_5), pools, strict=True):
            for spec in (s.scaled(width) for s in specs):
                layers.append(SepInception3d(in_ch, spec, norm_layer))
                in_ch = spec.out_ch
            if pool is not None:
                layers.append(pool)
        super().__init__(num_features=in_ch, num_classes=num_classes, dropout=dropout)
        self.features = nn.Sequential(*layers)
        self.pool_size = pool_size
        init_conv_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> window-averaged features (B, D, t, h, w) (see the class docstring)."""
        frames, height, width = x.shape[2:]
        if frames < MIN_FRAMES or min(height, width) < MIN_SIZE:
            raise ValueError(
                f"S3D needs clips of at least {MIN_FRAMES} frames of {MIN_SIZE}x{MIN_SIZE} pixels "
                f"(it halves time 3 times and space 5 times), got "
                f"{frames} frames of {height}x{width}"
            )
        for layer in self.features:
            x = self.maybe_checkpoint(layer, x)  # (B, D, T/8, H/32, W/32) after the last
        kernel = tuple(min(k, n) for k, n in zip(self.pool_size, x.shape[2:], strict=True))
        return F.avg_pool3d(x, kernel, stride=1)  # (B, D, T/8 - kt + 1, ...)


@register_model
def s3d(
    *,
    num_classes: int = 400,
    width: int = 64,
    dropout: float = 0.2,
    norm_layer: NormFactory = s3d_norm,
) -> S3D:
    """S3D (torchvision `s3d` at width=64): separable Inception-v1, 1024 features."""
    return S3D(num_classes=num_classes, width=width, dropout=dropout, norm_layer=norm_layer)
