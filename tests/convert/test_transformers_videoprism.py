"""Hugging Face VideoPrism folders import into `videoprism_*` exactly: the factorised encoder,
the attention-pooling head and classifier, and the video-text model's two towers."""

import json

import pytest
import torch
from torch import nn

from tubelet.convert import load_checkpoint
from tubelet.models import create_model

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "VideoPrismClipModel"):
    pytest.skip("this transformers has no VideoPrism", allow_module_level=True)
from transformers import (  # noqa: E402
    VideoPrismClipModel,
    VideoPrismConfig,
    VideoPrismForVideoClassification,
    VideoPrismVisionConfig,
    VideoPrismVisionModel,
)

VISION = {
    "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 48, "num_spatial_layers": 2,
    "num_temporal_layers": 1, "tubelet_size": [1, 8, 8], "image_size": 32, "num_frames": 4,
    "num_auxiliary_layers": 1,
}  # fmt: skip
TEXT = {
    "vocab_size": 50, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
    "num_attention_heads": 4, "max_position_embeddings": 16,
}  # fmt: skip


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (the offset LayerNorms too, which start at zero)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def clip(frames: int = 4, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, frames, height, width, generator=torch.Generator().manual_seed(seed))


def hf(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)  # Hugging Face takes (B, T, C, H, W)


@pytest.mark.parametrize(("frames", "height", "width"), [(4, 32, 32), (6, 40, 32), (2, 24, 24)])
def test_classifier_features_and_logits_equal_the_peer(tmp_path, frames, height, width):
    peer = randomised(
        VideoPrismForVideoClassification(VideoPrismVisionConfig(**VISION, num_labels=5))
    )
    peer.save_pretrained(tmp_path)
    model = create_model("videoprism_l", checkpoint=str(tmp_path), checkpoint_format="transformers")
    model.eval()
    assert model.num_classes == 5 and model.num_features == 32
    x = clip(frames, height, width)
    # Another size or frame count: the peer resamples its tables only when asked to.
    resample = (frames, height, width) != (4, 32, 32)
    with torch.no_grad():
        tokens = peer.vision_model(hf(x), interpolate_pos_encoding=resample).last_hidden_state
        logits = peer(hf(x), interpolate_pos_encoding=resample).logits[:, 0]  # (B, 1, K) there
        assert (model.forward_features(x).flatten(2).transpose(1, 2) - tokens).abs().max() <= 1e-4
        assert (model(x) - logits).abs().max() <= 1e-4


def test_backbone_folder_gets_a_new_head(tmp_path):
    peer = randomised(VideoPrismVisionModel(VideoPrismVisionConfig(**VISION)))
    peer.save_pretrained(tmp_path)
    model = create_model(
        "videoprism_b", num_classes=3, checkpoint=str(tmp_path), checkpoint_format="transformers"
    ).eval()
    x = clip()
    with torch.no_grad():
        tokens = peer(hf(x)).last_hidden_state
        assert (model.forward_features(x).flatten(2).transpose(1, 2) - tokens).abs().max() <= 1e-4
    report = load_checkpoint(model, "videoprism_b", tmp_path, "transformers")
    assert set(report.initialised) == {
        k for k in model.state_dict() if k.startswith(("pooler.", "fc."))
    }


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("videoprism_lvt")
    peer = randomised(VideoPrismClipModel(VideoPrismConfig(vision_config=VISION, text_config=TEXT)))
    peer.save_pretrained(path)
    return path, peer


def text_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, 50, (3, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 9:] = 0
    return ids.masked_fill(mask == 0, 0), mask  # padding id 0, as the tokenizer pads


def test_video_text_embeddings_and_similarities_equal_the_peer(clip_folder):
    path, peer = clip_folder
    model = create_model("videoprism_lvt_l", checkpoint=str(path), checkpoint_format="transformers")
    model.eval()
    ids, mask = text_batch()
    for x, resample in ((clip(), False), (clip(6, 40, 40), True)):
        with torch.no_grad():
            out = peer(hf(x), input_ids=ids, attention_mask=mask, interpolate_pos_encoding=resample)
            assert (model.encode_video(x) - out.video_embeds).abs().max() <= 1e-4
            assert (model.encode_text(ids, mask) - out.text_embeds).abs().max() <= 1e-4
            expected = out.video_embeds @ out.text_embeds.T
            assert (model.similarity(x, ids, mask) - expected).abs().max() <= 1e-4
    # Padding changes nothing but the length: the same texts padded to 12 give the same vectors.
    with torch.no_grad():
        short = model.encode_text(ids[:, :12], mask[:, :12])
        torch.testing.assert_close(short[1:], model.encode_text(ids, mask)[1:])


def test_clip_folder_drops_the_fixed_text_table_and_adds_a_probe_head(clip_folder):
    path, _ = clip_folder
    model = create_model("videoprism_lvt_b", num_classes=4, checkpoint=str(path),
                         checkpoint_format="transformers")  # fmt: skip
    report = load_checkpoint(model, "videoprism_lvt_b", path, "transformers")
    assert all(k.startswith("text_model.embeddings.position_") for k in report.dropped)
    assert set(report.initialised) == {"fc.weight", "fc.bias"}
    assert model(clip()).shape == (2, 4)


def test_other_models_and_configs_are_refused(clip_folder, tmp_path):
    path, _ = clip_folder
    with pytest.raises(ValueError, match="videoprism_lvt_b"):
        create_model("videoprism_b", checkpoint=str(path), checkpoint_format="transformers")
    config = json.loads((path / "config.json").read_text())
    config["text_config"]["hidden_act"] = "gelu"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="relu"):
        create_model("videoprism_lvt_b", checkpoint=str(tmp_path), checkpoint_format="transformers")
