"""I3D-ResNet-50: ResNet-50 with some kernels given a temporal extent, built from 2D weights.

Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017 (inflation, sec. 2.2), in the
ResNet form of Wang et al., "Non-local Neural Networks", CVPR 2018, as PySlowFast's I3D-8x8-R50
config builds it (`_TEMPORAL_KERNEL_BASIS["i3d"]`, `_POOL1["i3d"]` in its `video_model_builder.py`):

- stem: 5x7x7 conv, stride (1, 2, 2), then a 1x3x3 max-pool, stride (1, 2, 2);
- bottleneck blocks (1x1, 3x3, 1x1 convs, ResNet v1.5 stride on the 3x3) whose first conv is
  inflated to 3x1x1 in a repeating per-stage pattern: every block of layer1, blocks 0, 2, 4, ... of
  layer2 and layer3, block 1 of layer4 (`STAGES`); every other kernel stays 1 frame deep;
- a 2x1x1 temporal max-pool, stride 2, after layer1; no other temporal stride.

So (B, 3, T, H, W) -> features (B, 2048, T/2, H/32, W/32) at width=64. Module names equal
torchvision's `resnet50`, whose state dict `i3d_r50(inflate_from=PATH)` inflates key for key.

Temporal padding: "zeros" (the recipe's) pads every temporal kernel with zero frames;
"replicate" repeats the edge frames instead, so a static clip (one frame repeated) stays static
through every layer and the inflated network gives exactly the 2D network's logits on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import cycle, islice, pairwise
from pathlib import Path
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import register_model
from tubelet.nn import InflationReport, NormFactory, init_conv_weights, load_inflated
from tubelet.nn.bottleneck import EXPANSION, Bottleneck3d, ConvFactory, Triple, zero_padded_conv

TemporalPadding = Literal["zeros", "replicate"]


class ReplicateTimeConv3d(nn.Conv3d):
    """Conv3d that pads time by repeating the first and last frames; space stays zero-padded.

    (B, in_ch, T, H, W) -> (B, out_ch, T / s_t, H / s, W / s), `kernel // 2` padding on each axis.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: Triple, stride: Triple) -> None:
        padding = (0, kernel[1] // 2, kernel[2] // 2)
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.time_pad = kernel[0] // 2

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (0, 0, 0, 0, self.time_pad, self.time_pad), mode="replicate")  # T + 2 pad
        return super().forward(x)


def replicate_time_conv(in_ch: int, out_ch: int, kernel: Triple, stride: Triple) -> nn.Conv3d:
    """A `ReplicateTimeConv3d` where the kernel spans time, a plain conv where it does not."""
    if kernel[0] == 1:
        return zero_padded_conv(in_ch, out_ch, kernel, stride)
    return ReplicateTimeConv3d(in_ch, out_ch, kernel, stride)


TEMPORAL_PADDINGS: dict[str, ConvFactory] = {
    "zeros": zero_padded_conv,
    "replicate": replicate_time_conv,
}


@dataclass(frozen=True)
class I3DStage:
    """One residual stage: `depth` bottlenecks of `multiplier * width` inner channels (4x that out);
    the first block strides space by `stride`; block i's first conv spans
    `time_kernels[i % len(time_kernels)]` frames."""

    depth: int
    multiplier: int
    stride: int
    time_kernels: tuple[int, ...]

    def block_time_kernels(self) -> list[int]:
        """The temporal kernel of each block's first conv, in order."""
        return list(islice(cycle(self.time_kernels), self.depth))


# PySlowFast's I3D-R50 (ResNet-50 depths 3, 4, 6, 3).
STAGES = (
    I3DStage(depth=3, multiplier=1, stride=1, time_kernels=(3,)),
    I3DStage(depth=4, multiplier=2, stride=2, time_kernels=(3, 1)),
    I3DStage(depth=6, multiplier=4, stride=2, time_kernels=(3, 1)),
    I3DStage(depth=3, multiplier=8, stride=2, time_kernels=(1, 3)),
)


class I3DResNet(VideoClassifier):
    """Stem, bottleneck stages `layer1..layer4` (time halved after layer1), pooled linear head.

    Input (B, 3, T, H, W) with T >= 2; `forward_features` gives (B, D, T/2, H/32, W/32),
    D = `num_features` = 32 * width. `inflation_report` holds the report of the 2D weights this
    model was inflated from (None when it was not).
    """

    def __init__(
        self,
        stages: Sequence[I3DStage],
        *,
        num_classes: int,
        width: int,
        dropout: float,
        conv: ConvFactory,
        norm_layer: NormFactory,
        stem_time_kernel: int = 5,
    ) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        outs = [width] + [spec.multiplier * width * EXPANSION for spec in stages]
        super().__init__(num_features=outs[-1], num_classes=num_classes, dropout=dropout)
        self.conv1 = conv(3, width, (stem_time_kernel, 7, 7), (1, 2, 2))
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.time_pool = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))
        self.stage_names = tuple(f"layer{i}" for i in range(1, len(stages) + 1))
        for name, spec, (in_ch, out_ch) in zip(
            self.stage_names, stages, pairwise(outs), strict=True
        ):
            blocks = [
                Bottleneck3d(
                    in_ch if i == 0 else out_ch,
                    out_ch,
                    stride=spec.stride if i == 0 else 1,
                    time_kernel=kt,
                    conv=conv,
                    norm_layer=norm_layer,
                )
                for i, kt in enumerate(spec.block_time_kernels())
            ]
            self.add_module(name, nn.Sequential(*blocks))
        init_conv_weights(self)
        self.inflation_report: InflationReport | None = None

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> un-pooled features (B, D, T/2, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, width, T, H/4, W/4)
        for i, name in enumerate(self.stage_names):
            x = self.maybe_checkpoint(getattr(self, name), x)
            if i == 0:
                x = self.time_pool(x)  # (B, 4 * width, T/2, H/4, W/4)
        return x


@register_model(weight_init_args=("inflate_from", "new_head"))
def i3d_r50(
    *,
    num_classes: int = 400,
    width: int = 64,
    dropout: float = 0.5,
    norm_layer: NormFactory = nn.BatchNorm3d,
    temporal_padding: TemporalPadding = "zeros",
    inflate_from: str | Path | None = None,
    new_head: bool = False,
) -> I3DResNet:
    """I3D-ResNet-50 (PySlowFast's I3D-8x8-R50 recipe, its 0.5 head dropout).

    temporal_padding: "zeros" or "replicate" (edge frames repeated; keeps static clips static).
    inflate_from: a torchvision `resnet50` state dict (.pth / .safetensors) to inflate, at width=64.
    new_head: with `inflate_from`, keep a fresh classifier instead of the checkpoint's `fc`
        (needed when num_classes differs from the checkpoint's, e.g. ImageNet's 1000).
    """
    if temporal_padding not in TEMPORAL_PADDINGS:
        raise ValueError(
            f"temporal_padding must be one of {sorted(TEMPORAL_PADDINGS)}, got {temporal_padding!r}"
        )
    if new_head and inflate_from is None:
        raise ValueError("new_head=True only applies with inflate_from=PATH (a 2D checkpoint)")
    model = I3DResNet(
        STAGES,
        num_classes=num_classes,
        width=width,
        dropout=dropout,
        conv=TEMPORAL_PADDINGS[temporal_padding],
        norm_layer=norm_layer,
    )
    if inflate_from is not None:
        from tubelet.convert import read_state_dict

        model.inflation_report = load_inflated(
            model,
            read_state_dict(inflate_from),
            skip=("fc",) if new_head else (),
            source=str(inflate_from),
            hint="i3d_r50 inflates torchvision's resnet50 at width=64; pass new_head=True to "
            "start a fresh classifier when num_classes differs from the checkpoint's.",
        )
    return model
