"""Random weights for peer models in parity tests, so that a wrong mapping cannot hide behind
default initialisation (BatchNorm's identity statistics, zero biases)."""

import torch
from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def randomise(peer: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics and every Linear layer
    random weights (seeded); return the peer in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in peer.modules():
            if isinstance(m, _NORMS):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, m.in_features**-0.5)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1)
    return peer.eval()
