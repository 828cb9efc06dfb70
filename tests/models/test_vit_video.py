"""Video ViT: token layout, fixed positions, the masked encoder, the head and checkpointing."""

import copy

import pytest
import torch

from tubelet.models import create_model
from tubelet.models.vit_video import VideoViT
from tubelet.nn.masking import tube_mask


def tiny(**kwargs) -> VideoViT:
    torch.manual_seed(0)
    args = {"num_classes": 5, "head_dim": 8, "depth": 2, "patch_size": 8, **kwargs}
    return create_model("vit_s_16_video", **args)


def test_variants_have_the_published_widths():
    for name, dim in (("vit_b_16_video", 768), ("vit_s_16_video", 384), ("vit_t_16_video", 192)):
        model = create_model(name, num_classes=3, depth=1)
        assert model.num_features == dim
        assert model.encoder.patch_embed.proj.kernel_size == (2, 16, 16)


def test_features_are_tokens_on_the_tube_grid():
    model = tiny().eval()
    x = torch.randn(2, 3, 4, 16, 24)
    with torch.no_grad():
        feats = model.forward_features(x)
        tokens = model.encoder(x)
    assert feats.shape == (2, 48, 2, 2, 3)
    assert torch.equal(feats.flatten(2).transpose(1, 2), tokens)  # (t, h, w) token order
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 3, 4, 20, 16))


def test_logits_are_fc_of_normalised_mean_token():
    model = tiny().eval()
    x = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        tokens = model.encoder(x)
        expected = model.fc(model.fc_norm(tokens.mean(1)))
        torch.testing.assert_close(model(x), expected)


def test_masked_encoder_sees_only_visible_tubes():
    model = tiny().eval()
    x = torch.randn(2, 3, 4, 32, 32)  # 2 x 4 x 4 = 32 tubes
    mask = tube_mask(2, (2, 4, 4), 0.75, generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    hidden = mask.view(2, 2, 4, 4)  # (B, t, h, w)
    pixels = hidden.repeat_interleave(2, 1).repeat_interleave(8, 2).repeat_interleave(8, 3)
    changed[pixels[:, None].expand_as(x)] = 100.0  # overwrite every masked tube
    with torch.no_grad():
        out = model.encoder(x, mask)
        again = model.encoder(changed, mask)
        full = model.encoder(x)
    assert out.shape == (2, 8, 48)
    torch.testing.assert_close(again, out)  # masked pixels never reach the encoder
    assert not torch.allclose(out, full[~mask].view(2, 8, 48))  # visible tokens attend to fewer


@pytest.mark.parametrize("level", [True, "selective"])
def test_grad_checkpointing_leaves_outputs_and_grads_unchanged(level):
    plain = tiny(drop_path=0.2).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(level)
    assert ckpt.encoder.grad_checkpointing == ("full" if level is True else level)
    x = torch.randn(2, 3, 4, 16, 16)
    outs = []
    for model in (plain, ckpt):
        torch.manual_seed(1)  # the same stochastic-depth draws
        out = model(x)
        out.square().sum().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[1], outs[0])
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=key)


def test_training_steps_lower_the_loss():
    model = tiny().train()
    x = torch.randn(4, 3, 4, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
