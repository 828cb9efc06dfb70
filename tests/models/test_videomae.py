"""VideoMAE pre-training model: masks, per-patch normalised targets, loss on masked tubes only."""

import copy
import math

import pytest
import torch

from tubelet.models import create_model
from tubelet.models.videomae import MaskedVideoOutput, VideoMAEPretrain
from tubelet.nn.masking import tube_mask, unpatchify


def tiny(**kwargs) -> VideoMAEPretrain:
    torch.manual_seed(0)
    args = {"head_dim": 8, "depth": 2, "decoder_depth": 1, "patch_size": 8, **kwargs}
    return create_model("videomae_pretrain_t", **args)


def clip(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))


def test_output_holds_loss_pred_and_the_drawn_mask():
    model = tiny(mask_ratio=0.75).eval()
    with torch.no_grad():
        out = model(clip())
    assert isinstance(out, MaskedVideoOutput)
    assert out.mask.shape == (2, 8) and out.mask.dtype == torch.bool
    assert (out.mask.sum(1) == 6).all()  # int(0.75 * 4) of 4 positions, in both slices
    assert torch.equal(out.mask[:, :4], out.mask[:, 4:])  # tube masking
    assert out.pred.shape == (2, 6, 2 * 8 * 8 * 3)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_targets_are_tube_pixels_normalised_per_channel():
    model = tiny()
    x = clip()
    target = model.targets(x)  # (B, N, 2*8*8*3)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    pixels = x[1] * std + mean  # (C, T, H, W) in [0, 1] units
    tube = pixels[:, 2:4, 8:16, 0:8]  # tube (t=1, h=1, w=0) = number 1*4 + 1*2 + 0 = 6
    values = tube.permute(1, 2, 3, 0).reshape(-1, 3)  # (frame, row, col) x channel
    expected = (values - values.mean(0)) / (values.std(0) + 1e-6)
    torch.testing.assert_close(target[1, 6], expected.flatten())
    raw = tiny(norm_pix_loss=False).targets(x)
    torch.testing.assert_close(raw[1, 6], values.flatten())


def test_loss_is_mse_on_the_masked_tubes_only():
    model = tiny().eval()
    x = clip()
    mask = tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x, mask=mask)
    target = model.targets(x)[mask].view(2, -1, out.pred.shape[-1])
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.pred, target))
    assert torch.equal(out.mask, mask)


def test_unnormalised_target_loss_is_mse_to_the_raw_tube_pixels():
    model = tiny(norm_pix_loss=False).eval()
    x = torch.zeros(1, 3, 4, 16, 16)
    x[:, :, :, :8, :8] = 1.0  # tubes 0 and 4 (top left, both slices): value 1, the rest 0
    mask = torch.tensor([[True, False, False, False, True, False, False, False]])
    out = model(x, mask=mask)
    # Hand case: the pixels of the masked tubes are (1 * std + mean) per channel.
    pixel = torch.tensor([0.485 + 0.229, 0.456 + 0.224, 0.406 + 0.225])
    target = pixel.repeat(2 * 8 * 8).expand(1, 2, -1)  # (B, M, P*C), channel fastest
    expected = ((out.pred - target) ** 2).mean()
    torch.testing.assert_close(out.loss, expected)
    with torch.no_grad():  # a prediction of exactly those pixels costs nothing
        model.decoder_head.weight.zero_()
        model.decoder_head.bias.copy_(target[0, 0])
    assert model(x, mask=mask).loss.item() < 1e-12


def test_linears_start_xavier_uniform_as_videomae_pretraining():
    model = tiny(head_dim=16)
    for name in ("encoder.blocks.0.attn.qkv", "decoder_blocks.0.mlp.fc1", "decoder_head"):
        layer = model.get_submodule(name)
        bound = math.sqrt(6 / sum(layer.weight.shape))  # U(-bound, bound), Xavier-uniform
        assert 0.9 * bound < layer.weight.abs().max() <= bound, name
        assert not layer.bias.any(), name


def test_predictions_depend_on_the_visible_tubes_from_the_start():
    # With the normal(0.02) initialisation at this width, flipping the visible pixels moved the
    # predictions by 0.05%: the decoder ignored the encoder and the loss sat at its trivial value.
    model = tiny(head_dim=16).eval()
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = tube_mask(2, (2, 4, 4), 0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred, flipped = (model(v, mask=mask).pred for v in (x, x.flip(-1)))
    assert (pred - flipped).norm() > 0.01 * pred.norm()


def test_bad_masks_and_arguments_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match=r"\(2, 8\)"):
        model(clip(), mask=torch.zeros(2, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny(mask_ratio=0.0)
    with pytest.raises(ValueError, match="tube, random"):
        tiny(masking="grid")


@pytest.mark.parametrize("level", [True, "selective"])
def test_grad_checkpointing_leaves_loss_and_grads_unchanged(level):
    plain = tiny().train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(level)
    assert ckpt.encoder.grad_checkpointing == ("full" if level is True else level)
    mask = tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(0))
    losses = []
    for model in (plain, ckpt):
        out = model(clip(), mask=mask)
        out.loss.backward()
        losses.append(out.loss.detach())
    torch.testing.assert_close(losses[1], losses[0])
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=key)
    with pytest.raises(ValueError, match="unknown grad checkpointing level"):
        ckpt.set_grad_checkpointing("stages")


def test_training_steps_lower_the_reconstruction_loss():
    model = tiny(mask_ratio=0.5).train()
    x = clip(4)
    mask = tube_mask(4, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = model(x, mask=mask).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_reconstruct_keeps_visible_tubes_and_inverts_the_target_normalisation():
    model = tiny().eval()
    x = clip()
    mask = tube_mask(2, (2, 2, 2), 0.5, generator=torch.Generator().manual_seed(0))
    target = model.targets(x)[mask].view(2, 4, -1)
    perfect = MaskedVideoOutput(loss=torch.tensor(0.0), pred=target, mask=mask)
    # A perfect prediction gives back the clip in pixel units, masked tubes included.
    torch.testing.assert_close(model.reconstruct(x, perfect), model.pixels(x), atol=1e-5, rtol=0)
    zero = MaskedVideoOutput(loss=torch.tensor(0.0), pred=torch.zeros_like(target), mask=mask)
    blurred = model.reconstruct(x, zero)
    per_tube = (~mask)[..., None].float().expand(2, 8, 2 * 8 * 8 * 3)  # (B, N, P*C)
    visible = unpatchify(per_tube, (2, 2, 2), 2, 8).bool()  # (B, C, T, H, W)
    torch.testing.assert_close(blurred[visible], model.pixels(x)[visible])
    assert not torch.allclose(blurred[~visible], model.pixels(x)[~visible])
