"""Hugging Face TimeSformer folders import into `timesformer_*` exactly (VideoMAE: its own file)."""

import json

import pytest
import torch
from peer_weights import randomise
from torch import nn
from transformers import TimesformerConfig, TimesformerForVideoClassification

from tubelet.convert import list_formats
from tubelet.convert.transformers import CONFIG_READERS, CONVERTERS, timesformer_key
from tubelet.models import create_model

SMALL = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
    "image_size": 32, "patch_size": 8, "num_frames": 4, "num_labels": 7,
}  # fmt: skip
HF_ATTENTION = {
    "divided_space_time": "divided",
    "joint_space_time": "joint",
    "space_only": "space_only",
}


def randomised_peer(seed: int = 0, **config) -> TimesformerForVideoClassification:
    """The peer with every weight random: Linear layers (randomise), and also the patch
    convolution, LayerNorm affines and the class/space/time embeddings (HF starts the time
    embedding at zero, which would hide a wrong mapping)."""
    torch.manual_seed(seed)
    peer = randomise(TimesformerForVideoClassification(TimesformerConfig(**SMALL | config)), seed)
    with torch.no_grad():
        for m in peer.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
            elif isinstance(m, nn.Conv2d):
                m.weight.normal_(0.0, 0.1)
                m.bias.normal_(0.0, 0.1)
        for name, p in peer.named_parameters():
            if name.endswith(("_embeddings", "cls_token")):
                p.normal_(0.0, 0.5)
    return peer.eval()


def peer_logits(peer: TimesformerForVideoClassification, x: torch.Tensor) -> torch.Tensor:
    """The peer's logits for a tubelet clip (B, C, T, H, W). HF takes (B, T, C, H, W); its
    space-only model returns one prediction per frame (B*T rows), which tubelet averages."""
    with torch.no_grad():
        logits = peer(pixel_values=x.transpose(1, 2)).logits
    return logits.view(x.shape[0], -1, logits.shape[-1]).mean(1)


def clip(frames: int = 4, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, frames, height, width, generator=generator)


def imported(path, name: str = "timesformer_base", **kwargs) -> nn.Module:
    return create_model(
        name, checkpoint=str(path), checkpoint_format="transformers", **kwargs
    ).eval()


def test_timesformer_models_have_importers():
    assert "transformers" in list_formats()
    for name in ("timesformer_base", "timesformer_small"):
        assert name in CONFIG_READERS and name in CONVERTERS


# Input sizes beside the config's 4 x 32 x 32 that Hugging Face handles: its divided layer reads
# the patch grid's width and the frame count from the config, so only the height may change
# there; joint and space-only resize both embeddings for any size and frame count.
SIZES = {
    "divided_space_time": [(4, 32, 32), (4, 48, 32)],
    "joint_space_time": [(4, 32, 32), (4, 48, 40), (6, 32, 32), (2, 32, 32)],
    "space_only": [(4, 32, 32), (4, 40, 48), (3, 32, 32)],
}


@pytest.mark.parametrize("attention_type", sorted(HF_ATTENTION))
def test_imported_timesformer_reproduces_the_peer(attention_type, tmp_path):
    peer = randomised_peer(attention_type=attention_type)
    peer.save_pretrained(tmp_path)
    # The architecture comes from config.json, whichever variant name is asked for.
    model = imported(tmp_path, "timesformer_small")
    assert model.attention == HF_ATTENTION[attention_type]
    assert model.num_classes == 7 and model.num_features == 64 and len(model.blocks) == 2
    for frames, height, width in SIZES[attention_type]:
        x = clip(frames, height, width)
        with torch.no_grad():
            ours = model(x)
        theirs = peer_logits(peer, x)
        assert ours.shape == theirs.shape == (2, 7)
        assert (ours - theirs).abs().max().item() <= 1e-4, (frames, height, width)
        assert theirs.abs().max().item() > 0.1  # not a vanishing output that hides a wrong map


def test_divided_other_frame_counts_equal_a_peer_built_for_them(tmp_path):
    """HF's divided layer groups tokens by the config's frame count, so it cannot check another
    count directly. A peer built for 6 frames, whose time embedding is the nearest resampling of
    the 4-frame one, is what tubelet's 4-frame model must compute on 6 frames."""
    peer4 = randomised_peer()
    peer4.save_pretrained(tmp_path)
    model = imported(tmp_path)
    peer6 = TimesformerForVideoClassification(TimesformerConfig(**SMALL | {"num_frames": 6}))
    state = peer4.state_dict()
    key = "timesformer.embeddings.time_embeddings"
    state[key] = state[key][:, [0, 0, 1, 2, 2, 3]]  # nearest of 4 -> 6: floor(i * 4 / 6)
    peer6.load_state_dict(state)
    x = clip(frames=6)
    with torch.no_grad():
        ours = model(x)
    assert (ours - peer_logits(peer6.eval(), x)).abs().max().item() <= 1e-4


def test_key_map_names_tubelet_modules():
    layer = "timesformer.encoder.layer.3."
    assert timesformer_key(layer + "attention.attention.qkv.weight") == "blocks.3.attn.qkv.weight"
    assert timesformer_key(layer + "attention.output.dense.bias") == "blocks.3.attn.proj.bias"
    assert timesformer_key(layer + "output.dense.weight") == "blocks.3.mlp.fc2.weight"
    assert timesformer_key(layer + "temporal_attention.output.dense.weight") == (
        "blocks.3.temporal_attn.proj.weight"
    )
    assert timesformer_key(layer + "temporal_dense.bias") == "blocks.3.temporal_fc.bias"
    assert timesformer_key("timesformer.embeddings.time_embeddings") == "time_embed"
    assert timesformer_key("classifier.weight") == "fc.weight"
    assert timesformer_key("something.else") == "something.else"  # left for the strict load


def test_config_reader_maps_every_architecture_field():
    config = json.loads(TimesformerConfig(**SMALL, qkv_bias=False).to_json_string())
    config["id2label"] = {str(i): f"c{i}" for i in range(7)}
    assert CONFIG_READERS["timesformer_base"](config) == {
        "num_classes": 7, "width": 64, "depth": 2, "num_heads": 4, "mlp_dim": 128,
        "image_size": 32, "patch_size": 8, "num_frames": 4, "attention": "divided",
        "qkv_bias": False, "norm_eps": 1e-6, "in_channels": 3,
    }  # fmt: skip
    # Keys a config.json leaves out take TimesformerConfig's defaults (ViT-B/16, 8 x 224).
    defaults = CONFIG_READERS["timesformer_base"]({"model_type": "timesformer"})
    assert defaults["width"] == 768 and defaults["num_frames"] == 8 and defaults["num_classes"] == 2


def test_qkv_without_bias_imports(tmp_path):
    peer = randomised_peer(qkv_bias=False, num_hidden_layers=1)
    peer.save_pretrained(tmp_path)
    model = imported(tmp_path)
    assert model.blocks[0].attn.qkv.bias is None
    x = clip()
    with torch.no_grad():
        assert (model(x) - peer_logits(peer, x)).abs().max().item() <= 1e-4


def test_mismatched_checkpoints_raise_clear_errors(tmp_path):
    randomised_peer().save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())

    # An override that contradicts the weights: the strict load names the key and both shapes.
    with pytest.raises(ValueError, match=r"fc\.weight: checkpoint \(7, 64\) vs model \(5, 64\)"):
        imported(tmp_path, num_classes=5)
    # A config.json that describes more blocks than the weights hold.
    config_path.write_text(json.dumps(config | {"num_hidden_layers": 3}))
    with pytest.raises(ValueError, match=r"missing: blocks\.2\."):
        imported(tmp_path)
    # Weights of divided attention read as joint: the temporal layers are unexpected.
    config_path.write_text(json.dumps(config | {"attention_type": "joint_space_time"}))
    with pytest.raises(ValueError, match=r"unexpected: blocks\.0\.temporal_attn"):
        imported(tmp_path)
    # Another model's folder.
    config_path.write_text(json.dumps(config | {"model_type": "videomae"}))
    with pytest.raises(ValueError, match="'videomae' model, not a TimeSformer"):
        imported(tmp_path)
    config_path.write_text(json.dumps(config | {"attention_type": "axial"}))
    with pytest.raises(ValueError, match="attention_type='axial'"):
        imported(tmp_path)
    config_path.unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        imported(tmp_path)
    with pytest.raises(ValueError, match="no transformers importer for model 'r3d_18'"):
        create_model("r3d_18", checkpoint=str(tmp_path), checkpoint_format="transformers")
