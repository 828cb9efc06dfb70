"""The shared feed-forward block."""

import pytest
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


def test_dropout_after_the_activation_and_fc2_in_training_only():
    mlp = Mlp(4, 8, drop=0.5)
    x = torch.randn(64, 4)
    torch.testing.assert_close(mlp.eval()(x), mlp.fc2(nn.functional.gelu(mlp.fc1(x))))
    assert not torch.allclose(mlp.train()(x), mlp.eval()(x))
    assert list(mlp.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


@pytest.mark.parametrize(
    "layers",
    [
        lambda: [nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4), nn.Dropout(0.1)],  # temporal's
        lambda: [nn.Linear(4, 8), nn.GELU(), nn.Dropout(0.1), nn.Linear(8, 4)],  # ActionFormer's
    ],
)
def test_weights_of_the_sequential_mlps_it_replaced_still_load(layers):
    old = nn.ModuleDict({"mlp": nn.Sequential(*layers())}).eval()
    new = nn.ModuleDict({"mlp": Mlp(4, 8, drop=0.1)}).eval()
    new.load_state_dict(old.state_dict())  # strict: every key placed
    x = torch.randn(3, 4)
    torch.testing.assert_close(new["mlp"](x), old["mlp"](x))


def test_out_dim_makes_an_embedder_with_the_same_key_names():
    mlp = Mlp(6, 4, out_dim=4, act_layer=nn.SiLU)  # Wan's timestep embedder: 6 -> 4 -> 4
    assert list(mlp.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    x = torch.randn(3, 6)
    assert mlp(x).shape == (3, 4)
    torch.testing.assert_close(mlp(x), mlp.fc2(nn.functional.silu(mlp.fc1(x))))
