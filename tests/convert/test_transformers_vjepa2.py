"""Hugging Face V-JEPA 2 folders import into `vjepa2_*` exactly: encoder, attentive pooler,
classifier; the predictor (pre-training only) is dropped and a backbone folder gets a new head."""

import json

import pytest
import torch
from torch import nn

from tubelet.convert import load_checkpoint
from tubelet.models import create_model

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "VJEPA2ForVideoClassification"):
    pytest.skip("this transformers has no V-JEPA 2", allow_module_level=True)
from transformers import VJEPA2Config, VJEPA2ForVideoClassification, VJEPA2Model  # noqa: E402

# 2 blocks of 4 heads x 12 channels (rotary chunks of 4 per axis), 8x8 patches on 32x32 clips.
SMALL = {
    "hidden_size": 48, "num_attention_heads": 4, "num_hidden_layers": 2, "mlp_ratio": 2.0,
    "patch_size": 8, "crop_size": 32, "frames_per_clip": 4, "num_pooler_layers": 1,
    "pred_hidden_size": 24, "pred_num_attention_heads": 2, "pred_num_hidden_layers": 1,
}  # fmt: skip


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (LayerNorm scales near 1), so that no wrong mapping hides behind
    zeros or ones."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)
    return model.eval()


def clip(frames: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def hf(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)  # Hugging Face takes (B, T, C, H, W)


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("vjepa2_cls")
    peer = randomised(VJEPA2ForVideoClassification(VJEPA2Config(**SMALL, num_labels=5)))
    peer.save_pretrained(path)
    return path, peer


def test_features_and_logits_equal_the_peer_at_its_size_and_other_frame_counts(classifier_folder):
    path, peer = classifier_folder
    model = create_model("vjepa2_vitl", checkpoint=str(path), checkpoint_format="transformers")
    model.eval()
    assert model.num_classes == 5 and model.num_features == 48 and len(model.blocks) == 2
    for frames in (4, 8, 1):  # the config's 4, more frames, and an image (repeated into a tube)
        x = clip(frames)
        with torch.no_grad():
            tokens = peer.vjepa2(pixel_values_videos=hf(x), skip_predictor=True).last_hidden_state
            feats = model.forward_features(x)
            assert (feats.flatten(2).transpose(1, 2) - tokens).abs().max() <= 1e-4
            assert (model(x) - peer(pixel_values_videos=hf(x)).logits).abs().max() <= 1e-4


def test_another_size_takes_rows_and_columns_from_the_input(classifier_folder):
    # Hugging Face reads the grid from config.crop_size (the published code from the input), so
    # at 48 px the peer configured for 48 px is the reference; the weights do not depend on it.
    path, peer = classifier_folder
    model = create_model("vjepa2_vitg", checkpoint=str(path), checkpoint_format="transformers")
    peer48 = VJEPA2ForVideoClassification.from_pretrained(path, crop_size=48).eval()
    x = clip(6, 48)
    with torch.no_grad():
        expected = peer48(pixel_values_videos=hf(x)).logits
        assert (model.eval()(x) - expected).abs().max() <= 1e-4
        # ... and the peer at its own 32 px config computes other positions for that clip.
        assert (peer(pixel_values_videos=hf(x)).logits - expected).abs().max() > 1e-3


def test_backbone_folder_drops_the_predictor_and_starts_a_new_head(tmp_path, caplog):
    peer = randomised(VJEPA2Model(VJEPA2Config(**SMALL)))
    peer.save_pretrained(tmp_path)
    with caplog.at_level("INFO", logger="tubelet.convert"):
        model = create_model(
            "vjepa2_vith", num_classes=3, checkpoint=str(tmp_path), checkpoint_format="transformers"
        ).eval()
    assert "predictor" in caplog.text and "initialised" in caplog.text
    x = clip()
    with torch.no_grad():
        tokens = peer(pixel_values_videos=hf(x), skip_predictor=True).last_hidden_state
        assert (model.forward_features(x).flatten(2).transpose(1, 2) - tokens).abs().max() <= 1e-4
    assert model(x).shape == (2, 3)
    report = load_checkpoint(model, "vjepa2_vith", tmp_path, "transformers")
    assert all(k.startswith("predictor.") for k in report.dropped) and report.dropped
    assert set(report.initialised) == {
        k for k in model.state_dict() if k.startswith(("pooler.", "fc."))
    }


def test_a_partial_head_or_another_model_is_refused(classifier_folder, tmp_path):
    path, peer = classifier_folder
    from safetensors.torch import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    del state["classifier.bias"]
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ValueError, match=r"missing: fc\.bias"):
        create_model("vjepa2_vitl", checkpoint=str(tmp_path), checkpoint_format="transformers")
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "videomae"}))
    with pytest.raises(ValueError, match="not V-JEPA 2"):
        create_model("vjepa2_vitl", checkpoint=str(tmp_path), checkpoint_format="transformers")
