"""SlowFast and Slow networks on ResNet-50 bottleneck stages.

Feichtenhofer, Fan, Malik and He, "SlowFast Networks for Video Recognition", ICCV 2019.

A Slow pathway sees few frames with full channels (spatial semantics); a Fast pathway sees `alpha`
times more frames with `1/beta_inv` of the channels (motion). After the stem and after each of the
first three stages, a lateral connection carries Fast features into the Slow pathway: a
time-strided `fusion_kernel` x 1 x 1 conv (stride `alpha` in time) to `fusion_ratio` (2) times the
Fast channels, BatchNorm and ReLU, concatenated to the Slow features along channels. The last stage
has none: the head concatenates both pathways anyway (PyTorchVideo's `create_slowfast` and
PySlowFast do the same).

The model takes one clip at the Fast frame rate and makes both inputs itself (`slow_frame_indices`).
The Slow pathway's stride tau over the video's frames is therefore set by how the clip is sampled:
the 8x8 recipe (tau = 8, alpha = 4) gives the model 32 frames taken every tau / alpha = 2 frames.

Parameter shapes equal PyTorchVideo's `create_slowfast` / `create_resnet` (hub `slowfast_r50`,
`slow_r50`) and PySlowFast's `SLOWFAST_8x8_R50` / `SLOW_8x8_R50` at width=64; their checkpoints load
with `checkpoint_format="pytorchvideo"` or `"pyslowfast"` (`tubelet.convert.pytorchvideo`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import pairwise

import torch
from einops import reduce
from torch import Tensor, nn

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import register_model
from tubelet.nn import NormFactory, init_conv_weights, residual_stage
from tubelet.nn.bottleneck import EXPANSION, Bottleneck3d


@dataclass(frozen=True)
class StageSpec:
    """One bottleneck stage: `depth` blocks with `multiplier * width` inner channels.

    temporal_kernel: the time extent of each block's first (1x1 in space) conv; 1 keeps the stage
        purely spatial (the Slow pathway's early stages, SlowFast paper Table 1).
    spatial_stride: the stride of the first block's 1x3x3 conv; time is never strided.
    """

    depth: int
    multiplier: int
    temporal_kernel: int
    spatial_stride: int


@dataclass(frozen=True)
class PathwaySpec:
    """One pathway: a stem with `width` channels and temporal kernel `stem_temporal_kernel`, then
    `stages`. `lateral_channels[i]` channels are concatenated to stage i's input (the fused Fast
    features; zeros for a pathway that receives none)."""

    width: int
    stem_temporal_kernel: int
    stages: tuple[StageSpec, ...]
    lateral_channels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.lateral_channels) != len(self.stages):
            raise ValueError(
                f"lateral_channels needs one entry per stage ({len(self.stages)}), "
                f"got {self.lateral_channels}"
            )

    @property
    def level_channels(self) -> list[int]:
        """Output channels of the stem and of each stage, in order (before any fusion)."""
        return [self.width] + [EXPANSION * s.multiplier * self.width for s in self.stages]

    @property
    def out_channels(self) -> int:
        """Channels of the last stage's output."""
        return self.level_channels[-1]


def r50_stages(temporal_kernels: tuple[int, int, int, int]) -> tuple[StageSpec, ...]:
    """The four stages of a ResNet-50 (3, 4, 6, 3 blocks) with the given temporal kernels."""
    return tuple(
        StageSpec(depth=depth, multiplier=mult, temporal_kernel=kt, spatial_stride=stride)
        for depth, mult, kt, stride in zip(
            (3, 4, 6, 3), (1, 2, 4, 8), temporal_kernels, (1, 2, 2, 2), strict=True
        )
    )


# Temporal kernels of SlowFast paper Table 1 (PySlowFast `_TEMPORAL_KERNEL_BASIS["slowfast"]`).
SLOW_STEM_KERNEL, SLOW_STAGE_KERNELS = 1, (1, 1, 3, 3)
FAST_STEM_KERNEL, FAST_STAGE_KERNELS = 5, (3, 3, 3, 3)


def slow_frame_indices(num_frames: int, alpha: int) -> Tensor:
    """Indices of the `num_frames // alpha` frames of a Fast-rate clip that the Slow pathway sees.

    They are spread evenly from the first frame to the last and truncated to integers,
    `floor(i * (T - 1) / (T // alpha - 1))`: for T = 32, alpha = 4 that is 0, 4, 8, 13, 17, 22, 26,
    31, and for T = 8, alpha = 4 it is 0, 7 -- not a plain stride. This is PyTorchVideo's
    `PackPathway` and PySlowFast's `pack_pathway_output` (`slowfast/datasets/utils.py`), so imported
    checkpoints see the frames they were trained on.
    """
    if alpha < 1 or num_frames < alpha:
        raise ValueError(f"need alpha >= 1 and at least alpha frames, got T={num_frames}, {alpha=}")
    return torch.linspace(0, num_frames - 1, num_frames // alpha).long()


class Stem(nn.Module):
    """kt x 7 x 7 conv (stride 1, 2, 2), norm, ReLU, 1x3x3 max-pool (stride 1, 2, 2):
    (B, 3, T, H, W) -> (B, width, T, H / 4, W / 4)."""

    def __init__(self, width: int, temporal_kernel: int, norm_layer: NormFactory) -> None:
        super().__init__()
        kt = temporal_kernel
        self.conv = nn.Conv3d(
            3, width, (kt, 7, 7), stride=(1, 2, 2), padding=(kt // 2, 3, 3), bias=False
        )
        self.bn = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class Pathway(nn.Module):
    """The modules of one pathway: `stem` and `stages[i]` (a `residual_stage` of `Bottleneck3d`).

    It has no forward of its own: the classifier runs the stages one by one so that it can fuse
    between them and checkpoint each stage.
    """

    def __init__(self, spec: PathwaySpec, norm_layer: NormFactory) -> None:
        super().__init__()
        self.stem = Stem(spec.width, spec.stem_temporal_kernel, norm_layer)
        stages = []
        for stage, lateral, (in_ch, out_ch) in zip(
            spec.stages, spec.lateral_channels, pairwise(spec.level_channels), strict=True
        ):
            block = partial(Bottleneck3d, time_kernel=stage.temporal_kernel, norm_layer=norm_layer)
            stages.append(
                residual_stage(
                    block, in_ch + lateral, out_ch, depth=stage.depth, stride=stage.spatial_stride
                )
            )
        self.stages = nn.ModuleList(stages)


class FastToSlowFusion(nn.Module):
    """Lateral connection: Fast (B, C_f, T, H, W) -> (B, ratio * C_f, T / alpha, H, W), to be
    concatenated to the Slow features. A `kernel` x 1 x 1 conv with time stride `alpha`, norm, ReLU
    (SlowFast paper Sec. 3.4, "time-strided convolution")."""

    def __init__(
        self, fast_ch: int, *, alpha: int, kernel: int, ratio: int, norm_layer: NormFactory
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            fast_ch,
            ratio * fast_ch,
            (kernel, 1, 1),
            stride=(alpha, 1, 1),
            padding=(kernel // 2, 0, 0),
            bias=False,
        )
        self.bn = norm_layer(ratio * fast_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, fast: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(fast)))


class SlowOnly(VideoClassifier):
    """The Slow pathway alone (the "Slow-only" baseline of the SlowFast paper): every input frame.

    (B, 3, T, H, W) -> features (B, D, T, H / 32, W / 32), D = `num_features`.
    """

    def __init__(
        self, spec: PathwaySpec, *, num_classes: int, dropout: float, norm_layer: NormFactory
    ) -> None:
        super().__init__(num_features=spec.out_channels, num_classes=num_classes, dropout=dropout)
        self.slow = Pathway(spec, norm_layer)
        init_conv_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> un-pooled features (B, D, T, H', W')."""
        x = self.slow.stem(x)
        for stage in self.slow.stages:
            x = self.maybe_checkpoint(stage, x)
        return x


class SlowFast(VideoClassifier):
    """Two pathways with Fast-to-Slow lateral connections and a head over both.

    Input: one clip (B, 3, T, H, W) at the Fast frame rate, T a multiple of `alpha`. The Fast
    pathway sees all T frames, the Slow pathway the T / alpha frames of `slow_frame_indices`.

    Features: the Slow output (B, D_s, T / alpha, H', W') concatenated along channels with the Fast
    output (B, D_f, T, H', W') averaged over each run of `alpha` frames, giving
    (B, D_s + D_f, T / alpha, H', W'). Their mean over time and space -- the default
    `pool_features` -- is exactly [mean of Slow, mean of Fast], what PyTorchVideo's and
    PySlowFast's heads pool and concatenate before the classifier.
    """

    def __init__(
        self,
        slow: PathwaySpec,
        fast: PathwaySpec,
        *,
        alpha: int,
        fusion_kernel: int,
        fusion_ratio: int,
        num_classes: int,
        dropout: float,
        norm_layer: NormFactory,
    ) -> None:
        super().__init__(
            num_features=slow.out_channels + fast.out_channels,
            num_classes=num_classes,
            dropout=dropout,
        )
        self.alpha = alpha
        self.slow = Pathway(slow, norm_layer)
        self.fast = Pathway(fast, norm_layer)
        # One fusion after the stem and after every stage but the last.
        self.fusions = nn.ModuleList(
            FastToSlowFusion(
                ch, alpha=alpha, kernel=fusion_kernel, ratio=fusion_ratio, norm_layer=norm_layer
            )
            for ch in fast.level_channels[:-1]
        )
        init_conv_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> un-pooled features (B, D_s + D_f, T / alpha, H', W')."""
        num_frames = x.shape[2]
        if num_frames % self.alpha:
            raise ValueError(
                f"SlowFast with alpha={self.alpha} needs a clip whose frame count is a multiple of "
                f"{self.alpha}, got T={num_frames}; sample {self.alpha}*k frames"
            )
        idx = slow_frame_indices(num_frames, self.alpha).to(x.device)
        slow = self.slow.stem(x.index_select(2, idx))  # (B, C_s, T / alpha, H/4, W/4)
        fast = self.fast.stem(x)  # (B, C_f, T, H/4, W/4)
        for i, (slow_stage, fast_stage) in enumerate(
            zip(self.slow.stages, self.fast.stages, strict=True)
        ):
            if i < len(self.fusions):  # the lateral connection into this stage
                slow = torch.cat([slow, self.fusions[i](fast)], dim=1)
            slow = self.maybe_checkpoint(slow_stage, slow)
            fast = self.maybe_checkpoint(fast_stage, fast)
        # (B, D_f, T, H', W') -> (B, D_f, T / alpha, H', W'): equal runs, so means are preserved.
        fast = reduce(fast, "b c (t a) h w -> b c t h w", "mean", a=self.alpha)
        return torch.cat([slow, fast], dim=1)


def _check_width(width: int, beta_inv: int) -> None:
    if beta_inv < 1 or width < beta_inv or width % beta_inv:
        raise ValueError(
            f"width must be a positive multiple of beta_inv so the Fast pathway keeps whole "
            f"channels, got {width=}, {beta_inv=}"
        )


@register_model
def slowfast_r50(
    *,
    num_classes: int = 400,
    width: int = 64,
    alpha: int = 4,
    beta_inv: int = 8,
    fusion_kernel: int = 7,
    fusion_ratio: int = 2,
    dropout: float = 0.5,
    norm_layer: NormFactory = nn.BatchNorm3d,
) -> SlowFast:
    """SlowFast-R50 (PyTorchVideo hub `slowfast_r50`, PySlowFast `SLOWFAST_8x8_R50` at width=64).

    alpha: the Fast pathway sees alpha times more frames than the Slow one.
    beta_inv: the Fast pathway has 1/beta_inv of the Slow pathway's channels (beta = 1/8).
    fusion_kernel: time extent of the lateral convs (odd; their time stride is alpha).
    fusion_ratio: a lateral conv's output has fusion_ratio times the Fast channels.
    width: the Slow stem's channels (64 in the paper; smaller for tests and CPU demos).
    dropout: before the classifier (0.5 in the published recipes).
    """
    _check_width(width, beta_inv)
    if alpha < 1 or fusion_ratio < 1 or fusion_kernel < 1 or fusion_kernel % 2 == 0:
        raise ValueError(
            f"alpha and fusion_ratio must be >= 1 and fusion_kernel odd (an even kernel gives one "
            f"fused frame more than the Slow pathway has), got {alpha=}, {fusion_ratio=}, "
            f"{fusion_kernel=}"
        )
    stages_fast = r50_stages(FAST_STAGE_KERNELS)
    fast = PathwaySpec(
        width=width // beta_inv,
        stem_temporal_kernel=FAST_STEM_KERNEL,
        stages=stages_fast,
        lateral_channels=(0,) * len(stages_fast),
    )
    # Fused channels entering Slow stage i: fusion_ratio times the Fast channels leaving level i.
    slow = PathwaySpec(
        width=width,
        stem_temporal_kernel=SLOW_STEM_KERNEL,
        stages=r50_stages(SLOW_STAGE_KERNELS),
        lateral_channels=tuple(fusion_ratio * ch for ch in fast.level_channels[:-1]),
    )
    return SlowFast(
        slow,
        fast,
        alpha=alpha,
        fusion_kernel=fusion_kernel,
        fusion_ratio=fusion_ratio,
        num_classes=num_classes,
        dropout=dropout,
        norm_layer=norm_layer,
    )


@register_model
def slow_r50(
    *,
    num_classes: int = 400,
    width: int = 64,
    dropout: float = 0.5,
    norm_layer: NormFactory = nn.BatchNorm3d,
) -> SlowOnly:
    """Slow-R50, the 8x8 recipe (PyTorchVideo hub `slow_r50`, PySlowFast `SLOW_8x8_R50` at
    width=64): the Slow pathway alone on every frame it is given (8 frames sampled every 8th)."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    stages = r50_stages(SLOW_STAGE_KERNELS)
    spec = PathwaySpec(
        width=width,
        stem_temporal_kernel=SLOW_STEM_KERNEL,
        stages=stages,
        lateral_channels=(0,) * len(stages),
    )
    return SlowOnly(spec, num_classes=num_classes, dropout=dropout, norm_layer=norm_layer)
