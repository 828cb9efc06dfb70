"""Weight initialisation schemes shared by model families."""

from __future__ import annotations

from torch import nn


def init_conv_weights(module: nn.Module) -> None:
    """He-normal (fan-out, ReLU gain) weights and zero biases for every conv in `module`, in place.

    The scheme of ResNets and their video descendants (He et al., "Delving Deep into Rectifiers",
    ICCV 2015); fan-out keeps the variance of gradients flowing back through ReLU convs.
    Other layers keep their own initialisation.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
