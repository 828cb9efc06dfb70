"""TimeSformer: the three factorisations, embedding resizing, checkpointing and bad input.

Parity with Hugging Face's `TimesformerForVideoClassification` is in tests/convert/test_transformers.py.
"""

import copy

import pytest
import torch

from tubelet.models import create_model
from tubelet.models.timesformer import (
    TimeSformer,
    resize_position_embedding,
    resize_time_embedding,
)
from tubelet.nn.attention import Attention, temporal_attention

TINY = {"width": 16, "depth": 2, "num_heads": 2, "image_size": 32, "patch_size": 8, "num_frames": 4}


def tiny(attention: str = "divided", **kwargs) -> TimeSformer:
    torch.manual_seed(0)
    model = create_model("timesformer_base", num_classes=3, attention=attention, **TINY | kwargs)
    with torch.no_grad():  # non-zero time embedding and temporal_fc, so time matters
        for name, p in model.named_parameters():
            if "time_embed" in name or "temporal_fc" in name:
                p.normal_(0.0, 0.2)
    return model.eval()


def clip(frames: int = 4, height: int = 32, width: int = 32, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, frames, height, width, generator=torch.Generator().manual_seed(0))


def test_variants_have_the_published_sizes():
    with torch.device("meta"):  # shapes only: no memory, no initialisation work
        base = create_model("timesformer_base")
        small = create_model("timesformer_small")
    assert base.num_features == 768 and len(base.blocks) == 12
    assert base.blocks[0].attn.num_heads == 12 and base.blocks[0].mlp.fc1.out_features == 3072
    assert base.pos_embed.shape == (1, 1 + 14 * 14, 768) and base.time_embed.shape == (1, 8, 768)
    # Hugging Face's TimesformerConfig() defaults give 121,260,176 parameters with 400 labels.
    assert sum(p.numel() for p in base.parameters()) == 121_566_352
    assert small.num_features == 384 and small.blocks[0].attn.num_heads == 6


@pytest.mark.parametrize("attention", ["divided", "joint", "space_only"])
def test_every_attention_is_the_shared_sdpa_layer(attention):
    model = tiny(attention)
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attentions) == (4 if attention == "divided" else 2)
    assert hasattr(model, "time_embed") == (attention != "space_only")
    feats = model.forward_features(clip())
    expected = (2, 16, 4, 1 + 16) if attention == "space_only" else (2, 16, 1 + 4 * 16)
    assert feats.shape == expected
    assert model(clip()).shape == (2, 3)


def test_space_only_sees_each_frame_alone_and_averages_them():
    model = tiny("space_only")
    x = clip()
    y = x.clone()
    y[:, :, 1] = torch.randn_like(y[:, :, 1])
    with torch.no_grad():
        fx, fy = model.forward_features(x), model.forward_features(y)
        logits = model(x)
        per_frame = model.fc(fx[..., 0].transpose(1, 2))  # (B, T, classes)
    unchanged = [0, 2, 3]
    torch.testing.assert_close(fy[:, :, unchanged], fx[:, :, unchanged])
    assert not torch.allclose(fy[:, :, 1], fx[:, :, 1])
    torch.testing.assert_close(logits, per_frame.mean(1))


@pytest.mark.parametrize("attention", ["divided", "joint"])
def test_frame_order_matters_with_time_attention(attention):
    model = tiny(attention)
    x = clip()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x.flip(2)), atol=1e-4)


def test_class_token_update_is_the_mean_over_frames():
    """Spatial attention runs per frame with a copy of the class token; its T outputs averaged."""
    model = tiny("divided", depth=1)
    block = model.blocks[0]
    frames = 2
    tokens = torch.randn(2, 1 + frames * 16, 16)
    with torch.no_grad():
        attended = block._divided(tokens, frames)  # the block before its MLP
        cls_in = tokens[:, :1]
        # Recompute the class token by hand from the per-frame spatial attention.
        patches = tokens[:, 1:].reshape(2, frames, 16, 16)
        patches = patches + block.temporal_fc(
            temporal_attention(block.temporal_attn, block.temporal_norm1(patches))
        )
        per_frame = [
            block.attn(block.norm1(torch.cat([cls_in, patches[:, t]], 1)))[:, :1]
            for t in range(frames)
        ]
        expected_cls = cls_in + torch.stack(per_frame).mean(0)
    torch.testing.assert_close(attended[:, :1], expected_cls, atol=1e-6, rtol=0)
    assert block(tokens, frames).shape == tokens.shape


def test_resize_position_embedding_is_nearest_on_the_grid():
    pos = torch.arange(1 + 4, dtype=torch.float32).view(1, 5, 1)  # class 0, grid [[1, 2], [3, 4]]
    assert resize_position_embedding(pos, (2, 2)) is pos
    resized = resize_position_embedding(pos, (4, 2))[0, :, 0]
    assert resized.tolist() == [0, 1, 2, 1, 2, 3, 4, 3, 4]
    resized = resize_position_embedding(pos, (1, 4))[0, :, 0]
    assert resized.tolist() == [0, 1, 1, 2, 2]


def test_resize_time_embedding_is_nearest_over_frames():
    time = torch.tensor([[[1.0], [2.0]]])  # (1, T0=2, 1)
    assert resize_time_embedding(time, 2) is time
    assert resize_time_embedding(time, 4)[0, :, 0].tolist() == [1, 1, 2, 2]
    assert resize_time_embedding(time, 1)[0, :, 0].tolist() == [1]


@pytest.mark.parametrize("attention", ["divided", "joint", "space_only"])
def test_other_sizes_and_frame_counts_run(attention):
    model = tiny(attention)
    with torch.no_grad():
        for x in (clip(frames=6, height=48, width=40), clip(frames=1), clip(height=35, width=39)):
            assert model(x).shape == (2, 3)
    # A remainder smaller than a patch is dropped, as the patch convolution does.
    x = clip(height=35, width=39)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x[..., :32, :32]))


@pytest.mark.parametrize("attention", ["divided", "joint", "space_only"])
def test_grad_checkpointing_changes_nothing(attention):
    plain = tiny(attention).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    x = clip()
    target = torch.tensor([0, 2])
    outs = []
    for model in (plain, ckpt):
        out = model(x)
        torch.nn.functional.cross_entropy(out, target).backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[1], outs[0])
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=key)


def test_temporal_fc_starts_at_zero_after_the_first_block():
    model = create_model("timesformer_base", **TINY | {"depth": 3})
    assert model.blocks[0].temporal_fc.weight.abs().sum() > 0
    for block in model.blocks[1:]:
        assert block.temporal_fc.weight.abs().sum() == 0 and block.temporal_fc.bias.abs().sum() == 0


def test_bad_arguments_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="attention must be one of"):
        create_model("timesformer_base", attention="axial")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        create_model("timesformer_base", width=48, num_heads=5)
    with pytest.raises(ValueError, match="smaller than patch_size"):
        create_model("timesformer_base", image_size=8)
    model = tiny()
    with pytest.raises(ValueError, match=r"clips \(B, 3, T, H, W\), got shape \(2, 4, 3, 32, 32\)"):
        model(clip().transpose(1, 2))
    with pytest.raises(ValueError, match="smaller than one 8 patch"):
        model(clip(height=4, width=32))
    with pytest.raises(ValueError, match="features have 3 dims"):
        model.forward_head(torch.randn(2, 16))
