"""VideoClassifier: the shared head and contract, on a minimal subclass."""

import pytest
import torch
from torch import nn

from tubelet.models.base import VideoClassifier


class Tiny(VideoClassifier):
    def __init__(self, num_features: int = 4) -> None:
        super().__init__(num_features=num_features, num_classes=3)
        self.proj = nn.Conv3d(3, num_features, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.maybe_checkpoint(self.proj, x)  # (B, 4, T, H, W)


def test_base_is_abstract_and_validates():
    with pytest.raises(TypeError, match="forward_features"):
        VideoClassifier(num_features=4, num_classes=3)
    with pytest.raises(ValueError, match="num_features"):
        Tiny(num_features=0)


def test_head_pools_every_dim_after_channels():
    model = Tiny().eval()
    assert [k for k in model.state_dict() if k.startswith("fc")] == ["fc.weight", "fc.bias"]
    for feats in (torch.randn(2, 4, 5), torch.randn(2, 4, 2, 3, 3)):
        torch.testing.assert_close(
            model.forward_head(feats, pre_logits=True), feats.flatten(2).mean(2)
        )
    with pytest.raises(ValueError, match=r"got shape \(2, 4\)"):
        model.forward_head(torch.randn(2, 4))


def test_checkpointing_only_when_a_training_graph_is_recorded():
    model = Tiny()
    model.set_grad_checkpointing()
    calls = []
    model.proj.register_forward_pre_hook(lambda m, a: calls.append(1))
    x = torch.randn(1, 3, 2, 4, 4)
    with torch.no_grad():
        model.train()(x)
    model.eval()(x).sum().backward()
    assert len(calls) == 2  # neither call checkpointed
    model.train()(x).sum().backward()
    assert len(calls) == 4  # forward + recomputation


def test_checkpointing_levels_are_stored_and_bad_ones_refused():
    model = Tiny()
    for enable, stored in ((True, "full"), ("selective", "selective"), (False, False)):
        model.set_grad_checkpointing(enable)
        assert model.grad_checkpointing == stored
    model.set_grad_checkpointing("selective")
    x = torch.randn(1, 3, 2, 4, 4, requires_grad=True)
    model.train()(x).sum().backward()  # no attention in the trunk: recomputed as under "full"
    assert x.grad is not None
    with pytest.raises(ValueError, match="unknown grad checkpointing level 'all'"):
        model.set_grad_checkpointing("all")
