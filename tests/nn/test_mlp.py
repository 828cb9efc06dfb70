"""The shared feed-forward block."""

import torch
from torch import nn

from tubelet.nn.mlp import Mlp


def test_mlp_is_fc1_act_fc2_with_peer_key_names():
    mlp = Mlp(4, 12)
    assert list(mlp.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    x = torch.randn(2, 3, 4)
    expected = mlp.fc2(nn.functional.gelu(mlp.fc1(x)))
    torch.testing.assert_close(mlp(x), expected)


def test_activation_is_a_factory():
    mlp = Mlp(4, 8, act_layer=nn.ReLU)
    assert isinstance(mlp.act, nn.ReLU)
    x = torch.randn(5, 4)
    torch.testing.assert_close(mlp(x), mlp.fc2(torch.relu(mlp.fc1(x))))
