"""V-JEPA 2's encoder and probes: variant sizes, rotary positions at any grid, the two heads."""

import pytest
import torch

from tubelet.models import create_model
from tubelet.models.vjepa2 import VJEPA2


def tiny(**kwargs) -> VJEPA2:
    torch.manual_seed(0)
    args = {"width": 24, "depth": 2, "num_heads": 2, "patch_size": 8, "num_classes": 3}
    return create_model("vjepa2_vitl", **{**args, **kwargs})


def test_variants_have_the_published_sizes():
    for name, width, depth, heads, mlp, millions in [
        ("vjepa2_vitl", 1024, 24, 16, 4096, 304),
        ("vjepa2_vith", 1280, 32, 16, 5120, 632),
        ("vjepa2_vitg", 1408, 40, 22, 6144, 1012),
    ]:
        with torch.device("meta"):  # shapes only: no memory for a billion parameters
            model = create_model(name, head="linear")
        assert model.num_features == width and len(model.blocks) == depth
        assert model.blocks[0].attn.num_heads == heads
        assert model.blocks[0].mlp.fc1.out_features == mlp
        assert model.patch_embed.proj.kernel_size == (2, 16, 16)
        encoder = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc."))
        assert round(encoder / 1e6) == millions


def test_any_frame_count_and_size_runs_and_positions_matter():
    model = tiny().eval()
    for shape in [(4, 32, 32), (6, 24, 40), (1, 16, 16)]:
        x = torch.randn(1, 3, *shape)
        with torch.no_grad():
            feats = model.forward_features(x)
        t = max(shape[0], 2) // 2
        assert feats.shape == (1, 24, t, shape[1] // 8, shape[2] // 8)
    # Without an added position table, only the rotary positions tell the frames apart (weights
    # large enough that attention is far from uniform).
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(1, 3, 4, 16, 16)
    swapped = torch.cat([x[:, :, 2:], x[:, :, :2]], dim=2)
    with torch.no_grad():
        a, b = model.forward_features(x), model.forward_features(swapped)
    assert (a[:, :, 0] - b[:, :, 1]).abs().max() > 1e-3  # float error is ~1e-6


def test_linear_head_is_the_token_mean_and_attentive_head_is_learned():
    x = torch.randn(2, 3, 4, 16, 16)
    linear = tiny(head="linear").eval()
    assert linear.pooler is None
    with torch.no_grad():
        feats = linear.forward_features(x)
        torch.testing.assert_close(
            linear.forward_head(feats, pre_logits=True), feats.mean((2, 3, 4))
        )
    attentive = tiny(num_pooler_layers=2).eval()
    assert len(attentive.pooler.blocks) == 2
    with torch.no_grad():
        assert attentive.forward_head(attentive.forward_features(x)).shape == (2, 3)
    with pytest.raises(ValueError, match="head must be one of"):
        tiny(head="mlp")


def test_selective_checkpointing_gives_the_same_gradients():
    plain = tiny().train()
    ckpt = tiny().train()
    ckpt.set_grad_checkpointing("selective")
    x = torch.randn(2, 3, 4, 16, 16)
    for model in (plain, ckpt):
        model(x).square().sum().backward()
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=key)
    with pytest.raises(ValueError, match="grad checkpointing level"):
        ckpt.set_grad_checkpointing("some")


def test_a_seed_gives_the_same_backbone_whatever_the_head():
    attentive, linear = tiny(head="attentive"), tiny(head="linear")
    for key, value in linear.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(attentive.state_dict()[key], value), key
