"""Optical flow: RAFT's sequence loss, end-point-error metrics and KITTI's Fl-all, the eval step.

| symbol | meaning |
|---|---|
| f_i | the i-th of N flow estimates (B, 2, H, W) |
| f* | ground-truth flow; v the valid mask (known and |f*| < max_flow) |
| EPE(x) | ||f_N(x) - f*(x)||_2, the end-point error at pixel x |

1. Sequence loss (RAFT eq. 7): sum_i gamma^(N-i) * mean_x(v(x) * |f_i(x) - f*(x)|_1), gamma = 0.8;
   the mean runs over every pixel and both components, invalid ones counting as zero (as the
   original release and torchvision's reference do).
2. EPE: the mean of EPE over valid pixels; 1px/3px/5px: the share of valid pixels with EPE below
   1/3/5 pixels.
3. Fl-all (KITTI 2015): the share of valid pixels that are outliers, EPE > 3 px and
   EPE > 5% of |f*|, in percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sequence_loss(
    flows: list[Tensor],
    target: Tensor,
    valid: Tensor,
    *,
    gamma: float = 0.8,
    max_flow: float = 400.0,
) -> Tensor:
    """Step 1 of the module docstring: estimates (N of (B, 2, H, W)), target (B, 2, H, W), valid (B, H, W)."""
    mask = (valid & (target.square().sum(1).sqrt() < max_flow))[:, None]  # (B, 1, H, W)
    n = len(flows)
    weights = gamma ** torch.arange(n - 1, -1, -1, dtype=target.dtype, device=target.device)
    errors = torch.stack([((f - target).abs() * mask).mean() for f in flows])  # (N,)
    return (weights * errors).sum()


def end_point_error(flow: Tensor, target: Tensor) -> Tensor:
    """Per-pixel EPE (B, H, W) of flow against target, both (B, 2, H, W)."""
    return (flow - target).square().sum(1).sqrt()


def pad_to_multiple(x: Tensor, multiple: int = 8) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Replicate-pad (B, C, H, W) so H and W divide by `multiple`; returns the padding
    (left, right, top, bottom) to crop the result with `unpad`."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    return (F.pad(x, pad, mode="replicate") if any(pad) else x), pad


def unpad(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """Undo `pad_to_multiple` on (B, C, H', W')."""
    left, right, top, bottom = pad
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


@dataclass
class FlowMeter:
    """Accumulates per-pixel errors over valid pixels; `compute()` gives the step 2-3 metrics.

    Pixel counts are integers and the error sums are kept per image and added with `math.fsum`
    (correctly rounded whatever the order), so merging the meters of several processes gives the
    metrics of one meter over all images exactly.
    """

    _pixels: int = 0
    _counts: dict[str, int] = field(
        default_factory=lambda: {"px1": 0, "px3": 0, "px5": 0, "outliers": 0}
    )
    _epe_sums: list[float] = field(default_factory=list)  # per image, over its valid pixels
    _image_epe: list[float] = field(default_factory=list)

    def update(self, flow: Tensor, target: Tensor, valid: Tensor) -> None:
        """Add a batch: estimates and targets (B, 2, H, W), valid (B, H, W) bool."""
        epe = end_point_error(flow.float(), target.float())  # (B, H, W)
        magnitude = target.float().square().sum(1).sqrt()
        for e, m, v in zip(epe, magnitude, valid, strict=True):
            e, m = e[v], m[v]
            if not len(e):
                continue
            self._pixels += len(e)
            self._epe_sums.append(e.double().sum().item())
            for threshold in (1, 3, 5):
                self._counts[f"px{threshold}"] += int((e < threshold).sum())
            self._counts["outliers"] += int(((e > 3) & (e > 0.05 * m)).sum())
            self._image_epe.append(e.mean().item())

    def merge(self, other: FlowMeter) -> None:
        """Add another process's results (a disjoint share of the image pairs)."""
        self._pixels += other._pixels
        for key, count in other._counts.items():
            self._counts[key] += count
        self._epe_sums += other._epe_sums
        self._image_epe += other._image_epe

    def compute(self) -> dict[str, Any]:
        """EPE (over all valid pixels), per-image EPE, 1/3/5 px accuracy, Fl-all (%)."""
        if not self._pixels:
            raise ValueError("no valid ground-truth pixels were evaluated")
        n = self._pixels
        return {
            "epe": math.fsum(self._epe_sums) / n,
            "per_image_epe": math.fsum(self._image_epe) / len(self._image_epe),
            "px1": self._counts["px1"] / n,
            "px3": self._counts["px3"] / n,
            "px5": self._counts["px5"] / n,
            "fl_all": 100.0 * self._counts["outliers"] / n,
            "num_pairs": len(self._image_epe),
        }


@dataclass(frozen=True)
class FlowTask:
    """Trains a flow model with the sequence loss; evaluates the last estimate.

    A batch holds `image1`, `image2` (B, 3, H, W) in [-1, 1], `flow` (B, 2, H, W), `valid` (B, H, W).
    Evaluation pads frames whose sides are not multiples of 8 and crops the flow back.
    """

    train_updates: int = 12
    eval_updates: int = 12
    gamma: float = 0.8

    def new_meter(self) -> FlowMeter:
        return FlowMeter()

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        flows = model(batch["image1"], batch["image2"], num_flow_updates=self.train_updates)
        return sequence_loss(flows, batch["flow"], batch["valid"], gamma=self.gamma)

    @torch.no_grad()
    def predict(self, model: nn.Module, image1: Tensor, image2: Tensor) -> Tensor:
        """The final flow (B, 2, H, W) for images of any size (padded to multiples of 8)."""
        padded1, pad = pad_to_multiple(image1)
        padded2, _ = pad_to_multiple(image2)
        return unpad(model(padded1, padded2, num_flow_updates=self.eval_updates)[-1], pad)

    @torch.no_grad()
    def evaluate_batch(self, model: nn.Module, batch: dict[str, Any], meter: FlowMeter) -> None:
        flow = self.predict(model, batch["image1"], batch["image2"])
        meter.update(flow, batch["flow"], batch["valid"])
