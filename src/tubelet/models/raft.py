"""RAFT optical flow (Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms", ECCV 2020).

`raft_large` and `raft_small` are torchvision's `raft_large` / `raft_small` with the same parameter
names, so torchvision state dicts load as they are (`checkpoint_format="torchvision"`) and the
original release's go through `checkpoint_format="raft"`.

Contract of a flow model: `model(image1, image2, num_flow_updates=12, flow_init=None)` takes two
images (B, 3, H, W) float in [-1, 1] (as torchvision's RAFT; H and W divisible by 8) and returns the
list of `num_flow_updates` flow estimates (B, 2, H, W) in pixels, (dx, dy), the last one the best.
`model.estimate(...)` returns the same list plus the 1/8-resolution flow that warm-starts the next
frame pair of a video (`flow_init`, see `forward_interpolate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tubelet.models.registry import register_model
from tubelet.nn.checkpoint import checkpoint_level, checkpoint_module
from tubelet.nn.correlation import AllPairsCorrelation, OnDemandCorrelation

NormLayer = Callable[[int], nn.Module] | None
CORR_MODES = ("all_pairs", "on_demand")


def conv_norm_act(
    cin: int,
    cout: int,
    kernel_size: int,
    *,
    stride: int = 1,
    norm_layer: NormLayer = None,
    act: bool = True,
) -> nn.Sequential:
    """Conv (with bias: RAFT freezes BatchNorm after its first stage, so the bias still learns),
    then an optional norm, then an optional ReLU: keys `0` (conv), `1` (norm) as in torchvision."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=(kernel_size - 1) // 2)
    ]
    if norm_layer is not None:
        layers.append(norm_layer(cout))
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-norm-ReLU, a 1x1 projection when the stride is 2, and a ReLU after the sum."""

    def __init__(self, cin: int, cout: int, *, norm_layer: NormLayer, stride: int = 1) -> None:
        super().__init__()
        self.convnormrelu1 = conv_norm_act(cin, cout, 3, stride=stride, norm_layer=norm_layer)
        self.convnormrelu2 = conv_norm_act(cout, cout, 3, norm_layer=norm_layer)
        self.downsample = (
            nn.Identity()
            if stride == 1
            else conv_norm_act(cin, cout, 1, stride=stride, norm_layer=norm_layer, act=False)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.downsample(x) + self.convnormrelu2(self.convnormrelu1(x)))


class BottleneckBlock(nn.Module):
    """1x1 (to cout/4), 3x3 (strided), 1x1 (to cout), each conv-norm-ReLU; projection when strided."""

    def __init__(self, cin: int, cout: int, *, norm_layer: NormLayer, stride: int = 1) -> None:
        super().__init__()
        mid = cout // 4
        self.convnormrelu1 = conv_norm_act(cin, mid, 1, norm_layer=norm_layer)
        self.convnormrelu2 = conv_norm_act(mid, mid, 3, stride=stride, norm_layer=norm_layer)
        self.convnormrelu3 = conv_norm_act(mid, cout, 1, norm_layer=norm_layer)
        self.downsample = (
            nn.Identity()
            if stride == 1
            else conv_norm_act(cin, cout, 1, stride=stride, norm_layer=norm_layer, act=False)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
        return self.relu(self.downsample(x) + y)


class FeatureEncoder(nn.Module):
    """Image (B, 3, H, W) -> features (B, layers[4], H/8, W/8); also serves as the context encoder.

    A 7x7 stride-2 stem, three stages of two blocks (strides 1, 2, 2), a 1x1 projection.
    """

    def __init__(
        self,
        *,
        block: type[ResidualBlock] | type[BottleneckBlock] = ResidualBlock,
        layers: tuple[int, int, int, int, int] = (64, 64, 96, 128, 256),
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if len(layers) != 5:
            raise ValueError(f"FeatureEncoder takes 5 layer widths, got {len(layers)}: {layers}")
        self.convnormrelu = conv_norm_act(3, layers[0], 7, stride=2, norm_layer=norm_layer)
        stages = []
        for cin, cout, stride in zip(layers[:3], layers[1:4], (1, 2, 2), strict=True):
            stages.append(
                nn.Sequential(
                    block(cin, cout, norm_layer=norm_layer, stride=stride),
                    block(cout, cout, norm_layer=norm_layer, stride=1),
                )
            )
        self.layer1, self.layer2, self.layer3 = stages
        self.conv = nn.Conv2d(layers[3], layers[4], kernel_size=1)
        self.output_dim = layers[4]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.grad_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:
        x = self.convnormrelu(x)  # (B, C0, H/2, W/2)
        for stage in (self.layer1, self.layer2, self.layer3):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint_module(stage, x, level=self.grad_checkpointing)
            else:
                x = stage(x)
        return self.conv(x)  # (B, C4, H/8, W/8)


class MotionEncoder(nn.Module):
    """Encodes the current flow (B, 2, h, w) and its correlation features into motion features
    (B, out_channels, h, w), the flow itself concatenated as the last 2 channels."""

    def __init__(
        self,
        *,
        in_channels_corr: int,
        corr_layers: tuple[int, ...] = (256, 192),
        flow_layers: tuple[int, int] = (128, 64),
        out_channels: int = 128,
    ) -> None:
        super().__init__()
        self.convcorr1 = conv_norm_act(in_channels_corr, corr_layers[0], 1)
        self.convcorr2 = (
            conv_norm_act(corr_layers[0], corr_layers[1], 3)
            if len(corr_layers) == 2
            else nn.Identity()
        )
        self.convflow1 = conv_norm_act(2, flow_layers[0], 7)
        self.convflow2 = conv_norm_act(flow_layers[0], flow_layers[1], 3)
        self.conv = conv_norm_act(corr_layers[-1] + flow_layers[-1], out_channels - 2, 3)
        self.out_channels = out_channels

    def forward(self, flow: Tensor, corr_features: Tensor) -> Tensor:
        corr = self.convcorr2(self.convcorr1(corr_features))
        motion = self.convflow2(self.convflow1(flow))
        return torch.cat([self.conv(torch.cat([corr, motion], dim=1)), flow], dim=1)


class ConvGRU(nn.Module):
    """A GRU whose gates are convolutions: h' = (1 - z) h + z tanh(W_q [r h, x])."""

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        kernel_size: int | tuple[int, int],
        padding: int | tuple[int, int],
    ) -> None:
        super().__init__()
        cin = hidden_size + input_size
        self.convz = nn.Conv2d(cin, hidden_size, kernel_size, padding=padding)
        self.convr = nn.Conv2d(cin, hidden_size, kernel_size, padding=padding)
        self.convq = nn.Conv2d(cin, hidden_size, kernel_size, padding=padding)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class RecurrentBlock(nn.Module):
    """One ConvGRU (raft_small: 3x3) or two in sequence (raft_large: 1x5 then 5x1)."""

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        kernel_size: tuple = ((1, 5), (5, 1)),
        padding: tuple = ((0, 2), (2, 0)),
    ) -> None:
        super().__init__()
        if len(kernel_size) != len(padding) or len(kernel_size) not in (1, 2):
            raise ValueError("RecurrentBlock takes 1 or 2 kernel sizes with as many paddings")
        grus = [
            ConvGRU(input_size=input_size, hidden_size=hidden_size, kernel_size=k, padding=p)
            for k, p in zip(kernel_size, padding, strict=True)
        ]
        self.convgru1 = grus[0]
        if len(grus) == 2:
            self.convgru2 = grus[1]
        self.hidden_size = hidden_size

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        h = self.convgru1(h, x)
        return self.convgru2(h, x) if hasattr(self, "convgru2") else h


class FlowHead(nn.Module):
    """Hidden state (B, hidden, h, w) -> flow update (B, 2, h, w)."""

    def __init__(self, *, in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_size, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_size, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    """Motion encoder -> recurrent block (input: context and motion features) -> flow head.

    Duty: `forward(hidden, context, corr_features, flow) -> (hidden, delta_flow)` and a
    `hidden_state_size` attribute (the context encoder's first channels initialise the hidden state).
    """

    def __init__(
        self, *, motion_encoder: MotionEncoder, recurrent_block: RecurrentBlock, flow_head: FlowHead
    ) -> None:
        super().__init__()
        self.motion_encoder = motion_encoder
        self.recurrent_block = recurrent_block
        self.flow_head = flow_head
        self.hidden_state_size = recurrent_block.hidden_size

    def forward(
        self, hidden: Tensor, context: Tensor, corr_features: Tensor, flow: Tensor
    ) -> tuple[Tensor, Tensor]:
        motion = self.motion_encoder(flow, corr_features)
        hidden = self.recurrent_block(hidden, torch.cat([context, motion], dim=1))
        return hidden, self.flow_head(hidden)


class MaskPredictor(nn.Module):
    """Hidden state -> (B, 8*8*9, h, w) logits of the convex upsampling weights (paper appendix B)."""

    def __init__(
        self, *, in_channels: int, hidden_size: int = 256, multiplier: float = 0.25
    ) -> None:
        super().__init__()
        self.convrelu = conv_norm_act(in_channels, hidden_size, 3)
        self.conv = nn.Conv2d(hidden_size, 8 * 8 * 9, 1)
        # The original scales the mask by 0.25 "to downweight the gradients" of this branch
        # (princeton-vl/RAFT issue 24); kept so that published weights give the same flow.
        self.multiplier = multiplier

    def forward(self, hidden: Tensor) -> Tensor:
        return self.multiplier * self.conv(self.convrelu(hidden))


def coords_grid(batch: int, h: int, w: int, *, device: torch.device | None = None) -> Tensor:
    """Pixel coordinates (B, 2, h, w) as (x, y)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    return torch.stack((xs, ys)).float()[None].expand(batch, -1, -1, -1)


def upsample_flow(flow: Tensor, mask: Tensor | None = None, factor: int = 8) -> Tensor:
    """Flow (B, 2, h, w) -> (B, 2, h*f, w*f) in full-resolution pixels.

    With `mask` (B, 9*f*f, h, w): each fine pixel is a convex combination (softmax weights) of the
    3x3 coarse neighbours (paper section 3.3); without: bilinear with aligned corners.
    """
    b, _, h, w = flow.shape
    if mask is None:
        return factor * F.interpolate(
            flow, size=(h * factor, w * factor), mode="bilinear", align_corners=True
        )
    weights = mask.view(b, 1, 9, factor, factor, h, w).softmax(dim=2)
    neighbours = F.unfold(factor * flow, kernel_size=3, padding=1).view(b, 2, 9, 1, 1, h, w)
    fine = (weights * neighbours).sum(dim=2)  # (B, 2, f, f, h, w)
    return fine.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, h * factor, w * factor)


def forward_interpolate(flow: Tensor) -> Tensor:
    """Carry a flow field (B, 2, h, w) forward along itself: the warm start for the next frame pair.

    The motion at x in frame t is assumed to continue from x + flow(x) in frame t+1, so each vector is
    splatted (bilinear weights) to where it points; pixels that receive nothing keep their own vector.
    This is the original release's `forward_interpolate` with splatting in place of scipy's griddata.
    """
    b, _, h, w = flow.shape
    target = coords_grid(b, h, w, device=flow.device) + flow  # (B, 2, h, w)
    x0, y0 = target[:, 0].floor(), target[:, 1].floor()
    values = torch.zeros(b, 3, h * w, device=flow.device, dtype=flow.dtype)
    payload = torch.cat([flow, torch.ones_like(flow[:, :1])], dim=1).flatten(2)  # (B, 3, h*w)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (target[:, 0] - xi).abs()) * (1 - (target[:, 1] - yi).abs())
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().flatten(1)  # (B, h*w)
            weighted = payload * (weight * inside).flatten(1)[:, None]
            values.scatter_add_(2, index[:, None].expand(-1, 3, -1), weighted)
    total = values[:, 2:]
    splatted = values[:, :2] / total.clamp(min=1e-6)
    out = torch.where(total > 1e-3, splatted, flow.flatten(2))
    return out.view(b, 2, h, w)


@dataclass
class FlowEstimate:
    """`flows`: one (B, 2, H, W) estimate per update, the last the best; `flow_low`: the last
    estimate at 1/8 resolution (B, 2, H/8, W/8), to warm-start the next frame pair."""

    flows: list[Tensor]
    flow_low: Tensor


class RAFT(nn.Module):
    """RAFT with its parts injected; each part's duty:

    - `feature_encoder`: image (B, 3, H, W) -> features (B, C, H/8, W/8); runs on both images.
    - `context_encoder`: image1 -> (B, hidden + context, H/8, W/8); the first `hidden_state_size`
      channels (tanh) initialise the recurrent state, the rest (ReLU) is the context at every update.
    - `corr_block`: `build(fmap1, fmap2)` -> lookup `coords (B, 2, h, w) -> (B, out_channels, h, w)`
      (`AllPairsCorrelation` or the memory-saving `OnDemandCorrelation`).
    - `update_block`: `(hidden, context, corr_features, flow) -> (hidden, delta_flow)`, with
      `hidden_state_size`.
    - `mask_predictor` (optional): hidden -> convex upsampling weights; without it, bilinear.
    """

    def __init__(
        self,
        *,
        feature_encoder: nn.Module,
        context_encoder: nn.Module,
        corr_block: AllPairsCorrelation,
        update_block: UpdateBlock,
        mask_predictor: MaskPredictor | None = None,
    ) -> None:
        super().__init__()
        self.feature_encoder = feature_encoder
        self.context_encoder = context_encoder
        self.corr_block = corr_block
        self.update_block = update_block
        self.mask_predictor = mask_predictor
        if not hasattr(update_block, "hidden_state_size"):
            raise ValueError("the update_block must expose a hidden_state_size attribute")

    def forward(
        self,
        image1: Tensor,
        image2: Tensor,
        num_flow_updates: int = 12,
        flow_init: Tensor | None = None,
    ) -> list[Tensor]:
        """The flow estimates (B, 2, H, W) after each of `num_flow_updates` updates."""
        return self.estimate(image1, image2, num_flow_updates, flow_init).flows

    def estimate(
        self,
        image1: Tensor,
        image2: Tensor,
        num_flow_updates: int = 12,
        flow_init: Tensor | None = None,
    ) -> FlowEstimate:
        """Flow from `image1` to `image2` (B, 3, H, W in [-1, 1]); `flow_init` (B, 2, H/8, W/8)
        starts the updates from a previous estimate instead of zero."""
        b, _, h, w = image1.shape
        if image1.shape != image2.shape or image1.ndim != 4 or image1.shape[1] != 3:
            raise ValueError(
                f"RAFT takes two images of one shape (B, 3, H, W), got {tuple(image1.shape)} and "
                f"{tuple(image2.shape)}"
            )
        if h % 8 or w % 8:
            raise ValueError(f"RAFT needs H and W divisible by 8, got {h}x{w}; pad or resize")
        if num_flow_updates < 1:
            raise ValueError(f"num_flow_updates must be at least 1, got {num_flow_updates}")
        fmap1, fmap2 = self.feature_encoder(torch.cat([image1, image2])).chunk(2)  # (B, C, h, w)
        lookup = self.corr_block.build(fmap1, fmap2)
        hidden_size = self.update_block.hidden_state_size
        context_out = self.context_encoder(image1)
        if context_out.shape[1] <= hidden_size:
            raise ValueError(
                f"the context encoder gives {context_out.shape[1]} channels; it needs more than "
                f"the hidden state's {hidden_size}"
            )
        hidden, context = context_out.split([hidden_size, context_out.shape[1] - hidden_size], 1)
        hidden, context = torch.tanh(hidden), F.relu(context)

        coords0 = coords_grid(b, h // 8, w // 8, device=image1.device)
        coords1 = coords0.clone()
        if flow_init is not None:
            if flow_init.shape != coords0.shape:
                raise ValueError(
                    f"flow_init must be the 1/8-resolution flow {tuple(coords0.shape)}, "
                    f"got {tuple(flow_init.shape)}"
                )
            coords1 = coords1 + flow_init
        flows = []
        for _ in range(num_flow_updates):
            coords1 = (
                coords1.detach()
            )  # no gradient through the lookup position (paper section 3.4)
            corr_features = lookup(coords1)
            hidden, delta = self.update_block(hidden, context, corr_features, coords1 - coords0)
            coords1 = coords1 + delta
            mask = None if self.mask_predictor is None else self.mask_predictor(hidden)
            flows.append(upsample_flow(coords1 - coords0, mask))
        return FlowEstimate(flows=flows, flow_low=coords1 - coords0)

    def set_corr_mode(self, mode: str, *, chunk: int = 2**24) -> None:
        """Switch to the "all_pairs" or the memory-saving "on_demand" correlation (parameter-free,
        the flow stays the same), e.g. to run a model trained on small crops on 1080p frames."""
        levels, radius = self.corr_block.num_levels, self.corr_block.radius
        self.corr_block = make_corr_block(mode, num_levels=levels, radius=radius, chunk=chunk)

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Recompute the encoders' stages in backward instead of storing their activations (no
        attention in them: "selective" recomputes everything too)."""
        level = checkpoint_level(enable) or False
        for encoder in (self.feature_encoder, self.context_encoder):
            if hasattr(encoder, "grad_checkpointing"):
                encoder.grad_checkpointing = level

    @property
    def grad_checkpointing(self) -> bool:
        return bool(getattr(self.feature_encoder, "grad_checkpointing", False))


@dataclass(frozen=True)
class RaftConfig:
    """The hyper-parameters that tell raft_large from raft_small (torchvision's values)."""

    feature_layers: tuple[int, int, int, int, int]
    context_layers: tuple[int, int, int, int, int]
    block: type[ResidualBlock] | type[BottleneckBlock]
    context_norm: NormLayer
    radius: int
    motion_corr_layers: tuple[int, ...]
    motion_flow_layers: tuple[int, int]
    motion_out_channels: int
    hidden_size: int
    gru_kernels: tuple
    gru_paddings: tuple
    flow_head_hidden: int
    convex_upsampling: bool


LARGE = RaftConfig(
    feature_layers=(64, 64, 96, 128, 256), context_layers=(64, 64, 96, 128, 256),
    block=ResidualBlock, context_norm=nn.BatchNorm2d, radius=4, motion_corr_layers=(256, 192),
    motion_flow_layers=(128, 64), motion_out_channels=128, hidden_size=128,
    gru_kernels=((1, 5), (5, 1)), gru_paddings=((0, 2), (2, 0)), flow_head_hidden=256,
    convex_upsampling=True,
)  # fmt: skip
SMALL = RaftConfig(
    feature_layers=(32, 32, 64, 96, 128), context_layers=(32, 32, 64, 96, 160),
    block=BottleneckBlock, context_norm=None, radius=3, motion_corr_layers=(96,),
    motion_flow_layers=(64, 32), motion_out_channels=82, hidden_size=96, gru_kernels=(3,),
    gru_paddings=(1,), flow_head_hidden=128, convex_upsampling=False,
)  # fmt: skip


def make_corr_block(
    mode: str, *, num_levels: int = 4, radius: int = 4, chunk: int = 2**24
) -> AllPairsCorrelation:
    """The correlation block of `mode`: "all_pairs" (stored volume) or "on_demand" (memory O(HW))."""
    if mode not in CORR_MODES:
        raise ValueError(f"corr_mode must be one of {CORR_MODES}, not {mode!r}")
    if mode == "all_pairs":
        return AllPairsCorrelation(num_levels=num_levels, radius=radius)
    return OnDemandCorrelation(num_levels=num_levels, radius=radius, chunk=chunk)


def _build(config: RaftConfig, *, corr_mode: str, corr_chunk: int, num_levels: int = 4) -> RAFT:
    corr_block = make_corr_block(
        corr_mode, num_levels=num_levels, radius=config.radius, chunk=corr_chunk
    )
    motion = MotionEncoder(
        in_channels_corr=corr_block.out_channels,
        corr_layers=config.motion_corr_layers,
        flow_layers=config.motion_flow_layers,
        out_channels=config.motion_out_channels,
    )
    context_channels = config.context_layers[-1] - config.hidden_size
    recurrent = RecurrentBlock(
        input_size=motion.out_channels + context_channels,
        hidden_size=config.hidden_size,
        kernel_size=config.gru_kernels,
        padding=config.gru_paddings,
    )
    head = FlowHead(in_channels=config.hidden_size, hidden_size=config.flow_head_hidden)
    return RAFT(
        feature_encoder=FeatureEncoder(
            block=config.block, layers=config.feature_layers, norm_layer=nn.InstanceNorm2d
        ),
        context_encoder=FeatureEncoder(
            block=config.block, layers=config.context_layers, norm_layer=config.context_norm
        ),
        corr_block=corr_block,
        update_block=UpdateBlock(motion_encoder=motion, recurrent_block=recurrent, flow_head=head),
        mask_predictor=MaskPredictor(in_channels=config.hidden_size)
        if config.convex_upsampling
        else None,
    )


@register_model(kind="flow")
def raft_large(*, corr_mode: str = "all_pairs", corr_chunk: int = 2**24) -> RAFT:
    """RAFT (5.3M parameters): residual encoders, radius-4 lookup, separable ConvGRU, convex
    upsampling. `corr_mode="on_demand"` computes correlations on demand (for large frames)."""
    return _build(LARGE, corr_mode=corr_mode, corr_chunk=corr_chunk)


@register_model(kind="flow")
def raft_small(*, corr_mode: str = "all_pairs", corr_chunk: int = 2**24) -> RAFT:
    """RAFT-small (1.0M parameters): bottleneck encoders, radius-3 lookup, 3x3 ConvGRU, bilinear
    upsampling. `corr_mode="on_demand"` computes correlations on demand (for large frames)."""
    return _build(SMALL, corr_mode=corr_mode, corr_chunk=corr_chunk)
