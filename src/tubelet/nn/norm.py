"""Normalisation layers that keep mixed precision on its fast path."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.RMSNorm):
    """`nn.RMSNorm` whose weight follows its input's dtype.

    Under bf16 autocast the input of a query/key norm is bfloat16 (a projection's output) while
    the weight stays float32, and `torch.rms_norm` then leaves its fused kernel for a slower
    composite ("Mismatch dtype between input and weight"). The fused kernel accumulates in float32
    either way; in float32 this is `nn.RMSNorm` exactly. Same parameters and state-dict keys.
    """

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight
        if weight is not None and weight.dtype != x.dtype:
            weight = weight.to(x.dtype)
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)
