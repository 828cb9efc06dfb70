"""The video denoiser: shapes, identity-initialised temporal layers, conditioning, checkpointing."""

import copy

import pytest
import torch

from tubelet.models import create_model
from tubelet.models.video_unet import VideoUNet

TINY = {"width": 8, "channel_mults": (1, 2), "attention_levels": (False, True),
        "num_heads": 2}  # fmt: skip


def tiny(**kwargs) -> VideoUNet:
    torch.manual_seed(0)
    return create_model("video_unet", num_classes=4, **{**TINY, **kwargs})


def inputs(b=2, t=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, t, size, size, generator=g), torch.tensor([3, 700][:b])


def randomise(model: torch.nn.Module) -> None:
    """Every weight random, so no output is zero by construction (the output conv is not)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_registered_as_a_generation_model():
    from tubelet.models import model_kind

    assert model_kind("video_unet") == "generation"


def test_output_has_the_input_shape():
    x, t = inputs()
    out = tiny()(x, t, torch.tensor([0, 3]))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("position", ["sinusoidal", "learned"])
def test_fresh_temporal_layers_equal_the_per_frame_image_model(position):
    image = tiny(temporal=False)
    randomise(image)
    video = tiny(temporal=True, temporal_position=position)
    left_at_init = video.load_image_weights(image.state_dict())
    assert left_at_init == sorted(video.temporal_parameter_names())
    assert any(".temporal_attn." in k for k in left_at_init)
    assert any(".temporal_conv." in k for k in left_at_init)
    x, t = inputs()
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        joint = video(x, t, labels)
        per_frame = torch.cat(
            [image(x[:, :, i : i + 1], t, labels) for i in range(x.shape[2])], dim=2
        )
    torch.testing.assert_close(joint, per_frame, rtol=1e-5, atol=1e-5)


def test_trained_temporal_layers_mix_frames_and_the_image_model_does_not():
    x, t = inputs()
    changed = x.clone()
    changed[:, :, 0] += 1.0  # change frame 0 only
    image = tiny(temporal=False)
    randomise(image)
    video = tiny()
    randomise(video)  # temporal outputs no longer zero
    with torch.no_grad():
        assert torch.equal(image(x, t)[:, :, 1:], image(changed, t)[:, :, 1:])
        assert not torch.allclose(video(x, t)[:, :, 1:], video(changed, t)[:, :, 1:])


def test_learned_positions_refuse_more_frames_than_their_table():
    video = tiny(temporal_position="learned", max_frames=4)
    randomise(video)
    with pytest.raises(ValueError, match="max_frames"):
        video(*inputs(t=5))


def test_class_labels_and_null_class_change_the_output():
    model = tiny()
    randomise(model)
    x, t = inputs()
    with torch.no_grad():
        a = model(x, t, torch.tensor([0, 0]))
        b = model(x, t, torch.tensor([1, 1]))
        null = model(x, t, torch.tensor([4, 4]))  # index num_classes: the null class
        assert torch.equal(model(x, t), null)
    assert not torch.allclose(a, b) and not torch.allclose(a, null)


def test_context_tokens_condition_through_attention_and_respect_the_mask():
    model = tiny(context_dim=6)
    randomise(model)
    x, t = inputs()
    ctx = torch.randn(2, 3, 6)
    with torch.no_grad():
        plain = model(x, t)
        with_ctx = model(x, t, context=ctx)
        mask = torch.tensor([[True, True, False], [True, True, False]])
        masked = model(x, t, context=ctx, context_mask=mask)
        changed = ctx.clone()
        changed[:, 2] += 5.0  # only the masked-out token changes
        masked_changed = model(x, t, context=changed, context_mask=mask)
        all_masked = model(x, t, context=ctx, context_mask=torch.zeros(2, 3, dtype=torch.bool))
    assert not torch.allclose(plain, with_ctx)
    torch.testing.assert_close(masked, masked_changed)
    assert not torch.allclose(masked, with_ctx)
    torch.testing.assert_close(all_masked, plain, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_clear_errors():
    model = tiny()
    x, t = inputs()
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(x[:, :2], t)
    with pytest.raises(ValueError, match="divisible by 2"):
        model(x[..., :7, :7], t)
    with pytest.raises(ValueError, match="timesteps"):
        model(x, t[:1])
    with pytest.raises(ValueError, match="context_dim"):
        model(x, t, context=torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="attention_levels"):
        VideoUNet(channel_mults=(1, 2), attention_levels=(True,))
    with pytest.raises(ValueError, match="temporal_position"):
        VideoUNet(temporal_position="rope")
    with pytest.raises(ValueError, match="not the weights"):
        tiny().load_image_weights(tiny(width=16).state_dict())


def test_grad_checkpointing_changes_nothing():
    plain = tiny().train()
    randomise(plain)
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    x, t = inputs()
    for model in (plain, ckpt):
        model(x, t, torch.tensor([0, 1])).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    ckpt.set_grad_checkpointing(False)
    assert not ckpt.grad_checkpointing
