"""VideoPrism's factorised encoder, pooling head and text tower."""

import pytest
import torch

from tubelet.models import create_model
from tubelet.models.videoprism import OffsetLayerNorm, text_positions

TINY = {"width": 16, "num_heads": 2, "mlp_dim": 24, "spatial_depth": 1, "temporal_depth": 1,
        "patch_size": 8, "image_size": 32, "num_frames": 4, "num_classes": 3}  # fmt: skip


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "width", "spatial", "frames", "text"),
    [("videoprism_b", 768, 12, 16, False), ("videoprism_l", 1024, 24, 8, False),
     ("videoprism_lvt_b", 768, 12, 16, True), ("videoprism_lvt_l", 1024, 24, 8, True)],
)  # fmt: skip
def test_variants_have_the_published_sizes(name, width, spatial, frames, text):
    with torch.device("meta"):  # shapes only
        model = create_model(name)
    assert model.num_features == width and len(model.encoder.spatial_blocks) == spatial
    assert len(model.encoder.temporal_blocks) == 4
    assert model.encoder.temporal_pos.shape == (1, frames, width)
    assert model.encoder.spatial_pos.shape == (1, 16 * 16, width)  # 288 px in 18 px patches
    assert model.encoder.patch_embed.kernel_size == (18, 18)
    assert hasattr(model, "text") == text
    if text:
        assert len(model.text.blocks) == 12 and len(model.aux_blocks) == 2
        assert model.text.token_embed.num_embeddings == 64000


def test_offset_layer_norm_scales_by_one_plus_weight():
    norm = OffsetLayerNorm(4)
    x = torch.randn(2, 4)
    torch.testing.assert_close(norm(x), torch.nn.functional.layer_norm(x, (4,), eps=1e-6))
    with torch.no_grad():
        norm.weight.fill_(1.0)
    torch.testing.assert_close(norm(x), 2 * torch.nn.functional.layer_norm(x, (4,), eps=1e-6))


def test_spatial_blocks_see_one_frame_and_temporal_blocks_mix_them():
    model = randomised(create_model("videoprism_b", **TINY))
    x = torch.rand(1, 3, 4, 32, 32)
    changed = x.clone()
    changed[:, :, 3] = torch.rand(3, 32, 32)
    with torch.no_grad():
        a, b = model.forward_features(x), model.forward_features(changed)
        model.encoder.temporal_blocks = torch.nn.ModuleList()  # the spatial half alone
        c, d = model.forward_features(x), model.forward_features(changed)
    assert not torch.allclose(a[:, :, 0], b[:, :, 0], atol=1e-4)  # frame 3 reached frame 0
    torch.testing.assert_close(c[:, :, :3], d[:, :, :3])  # without them frames stay apart


def test_text_positions_are_sine_then_cosine_halves():
    table = text_positions(5, 8)
    assert table.shape == (5, 8)
    torch.testing.assert_close(table[3, :4], torch.sin(3 / 10000 ** (torch.arange(0, 8, 2) / 8)))
    torch.testing.assert_close(table[3, 4:], torch.cos(3 / 10000 ** (torch.arange(0, 8, 2) / 8)))


def test_text_tower_is_causal_and_ignores_padding():
    model = randomised(create_model("videoprism_lvt_b", **TINY, text_depth=1, vocab_size=30,
                                    max_text_len=8))  # fmt: skip
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 9, 9]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        emb = model.encode_text(ids, mask)
        assert torch.allclose(emb[0], emb[1], atol=1e-6)  # padding ids and lengths do not matter
        assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
        with pytest.raises(ValueError, match="at most 8"):
            model.encode_text(torch.zeros(1, 9, dtype=torch.long))
        video = model.encode_video(torch.rand(2, 3, 4, 32, 32))
        assert model.similarity(torch.rand(2, 3, 4, 32, 32), ids, mask).shape == (2, 2)
    assert torch.allclose(video.norm(dim=-1), torch.ones(2), atol=1e-5)
