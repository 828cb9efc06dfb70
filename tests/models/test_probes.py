"""Probes over cached token features: attentive pooling and a linear layer over all tokens."""

import torch

from tubelet.models import create_model, model_kind


def test_probes_are_feature_models_that_ignore_padding():
    x = torch.randn(2, 5, 48)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    padded = x.clone()
    padded[0, 3:] = 99.0  # what padding holds must not matter
    for name, args in (("attentive_probe", {"depth": 1}), ("linear_probe", {"num_tokens": 5})):
        assert model_kind(name) == "features"
        torch.manual_seed(0)
        model = create_model(name, in_dim=48, num_classes=3, **args).eval()
        with torch.no_grad():
            assert model(x, mask).shape == (2, 3)
            torch.testing.assert_close(model(x, mask), model(padded, mask))


def test_linear_probe_sees_token_order_and_the_attentive_probe_sees_a_set():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8)
    flipped = x.flip(1)
    linear = create_model("linear_probe", in_dim=8, num_classes=3, num_tokens=4).eval()
    torch.nn.init.normal_(linear.fc.weight)
    attentive = create_model("attentive_probe", in_dim=8, num_classes=3, depth=1).eval()
    with torch.no_grad():
        assert not torch.allclose(linear(x), linear(flipped))
        torch.testing.assert_close(attentive(x), attentive(flipped))  # no positions of its own
