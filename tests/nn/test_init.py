"""init_conv_weights: He-normal with fan-out on every conv, zero conv biases, nothing else."""

import math

import torch
from torch import nn

from tubelet.nn import init_conv_weights


def test_convs_get_fan_out_he_normal_and_other_layers_are_left_alone():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(4, 32, 5),
        nn.Conv2d(4, 64, 3),  # fan-in 36, fan-out 576: the two stds differ 4x
        nn.Conv3d(2, 32, 3, bias=False),
        nn.BatchNorm3d(32),
        nn.Linear(8, 3),
    )
    linear = model[4].weight.detach().clone()
    init_conv_weights(model)
    for conv in model[:3]:
        fan_out = conv.out_channels * math.prod(conv.kernel_size)
        std = conv.weight.std().item()
        assert abs(std - math.sqrt(2.0 / fan_out)) < 0.1 * std, type(conv).__name__
        assert abs(conv.weight.mean().item()) < 0.1 * std
    assert torch.equal(model[0].bias, torch.zeros(32))
    assert torch.equal(model[1].bias, torch.zeros(64))
    assert torch.equal(model[4].weight, linear)
    assert torch.equal(model[3].weight, torch.ones(32))
