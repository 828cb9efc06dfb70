"""RMSNorm on the fused kernel under mixed precision, equal to torch's in float32."""

import warnings

import torch
from torch import nn

from tubelet.nn.norm import RMSNorm


def test_rms_norm_equals_torch_s_in_float32_and_stays_fused_in_bf16():
    torch.manual_seed(0)
    ours, theirs = RMSNorm(16, eps=1e-6), nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, 16)
    assert torch.equal(ours(x), theirs(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it leaves the fused kernel
        out = ours(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), theirs(x), rtol=0.02, atol=0.02)
