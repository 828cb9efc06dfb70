"""Hugging Face VideoMAE folders import into `vit_*_video` and `videomae_pretrain*` exactly."""

import json

import pytest
import torch
from peer_weights import randomise
from transformers import (
    VideoMAEConfig,
    VideoMAEForPreTraining,
    VideoMAEForVideoClassification,
)

from tubelet.convert.transformers import CONVERTERS
from tubelet.models import create_model
from tubelet.nn.masking import random_mask, tube_mask

SMALL = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
    "image_size": 32, "patch_size": 8, "tubelet_size": 2, "num_frames": 4,
    "decoder_hidden_size": 32, "decoder_num_hidden_layers": 2, "decoder_num_attention_heads": 2,
    "decoder_intermediate_size": 48,
}  # fmt: skip
GRID = (2, 4, 4)  # tubes of a (4, 32, 32) clip


def clip(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def saved_peer(cls, path, seed: int = 0, **config):
    torch.manual_seed(seed)
    peer = randomise(cls(VideoMAEConfig(**{**SMALL, **config})), seed)
    if hasattr(peer, "mask_token"):
        with torch.no_grad():
            peer.mask_token.normal_()  # not left at zero, so a wrong mapping shows
    peer.save_pretrained(path)
    return peer


def test_every_vit_video_and_pretrain_model_has_an_importer():
    assert {"vit_b_16_video", "vit_s_16_video", "vit_t_16_video"} <= set(CONVERTERS)
    assert {"videomae_pretrain", "videomae_pretrain_s", "videomae_pretrain_t"} <= set(CONVERTERS)


@pytest.mark.parametrize("name", ["vit_b_16_video", "vit_t_16_video"])
def test_classifier_reproduces_the_peer(name, tmp_path):
    peer = saved_peer(VideoMAEForVideoClassification, tmp_path, num_labels=7)
    # The architecture comes from config.json, whichever variant name is asked for.
    model = create_model(name, checkpoint=str(tmp_path), checkpoint_format="transformers").eval()
    assert model.num_classes == 7 and model.num_features == 64
    x = clip()
    with torch.no_grad():
        expected = peer(pixel_values=x.transpose(1, 2)).logits  # HF takes (B, T, C, H, W)
        got = model(x)
    assert (got - expected).abs().max() <= 1e-4


def test_masked_encoder_equals_the_peer_with_bool_masked_pos(tmp_path):
    # use_mean_pooling=False: the encoder ends with a LayerNorm, as in VideoMAE's pre-training.
    peer = saved_peer(VideoMAEForPreTraining, tmp_path, use_mean_pooling=False)
    model = create_model(
        "videomae_pretrain", checkpoint=str(tmp_path), checkpoint_format="transformers"
    ).eval()
    x = clip()
    mask = random_mask(2, GRID, 0.75, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = peer.videomae(x.transpose(1, 2), bool_masked_pos=mask).last_hidden_state
        got = model.encoder(x, mask)
    assert got.shape == (2, 8, 64)
    assert (got - expected).abs().max() <= 1e-4


@pytest.mark.parametrize(
    ("config", "masking"),
    [({}, "tube"), ({"use_mean_pooling": False, "norm_pix_loss": False}, "random")],
)
def test_pretraining_loss_and_pred_equal_the_peer(config, masking, tmp_path):
    peer = saved_peer(VideoMAEForPreTraining, tmp_path, **config)
    model = create_model(
        "videomae_pretrain", checkpoint=str(tmp_path), checkpoint_format="transformers"
    ).eval()
    assert model.encoder_to_decoder.out_features == 32
    x = clip()
    draw = tube_mask if masking == "tube" else random_mask
    mask = draw(2, GRID, 0.75, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = peer(pixel_values=x.transpose(1, 2), bool_masked_pos=mask)
        got = model(x, mask=mask)
    assert got.pred.shape == expected.logits.shape == (2, 24, 2 * 8 * 8 * 3)
    assert torch.equal(got.mask, mask)
    assert (got.pred - expected.logits).abs().max() <= 1e-4
    assert (got.loss - expected.loss).abs() <= 1e-4


def test_older_q_bias_v_bias_keys_import_too(tmp_path):
    peer = saved_peer(VideoMAEForVideoClassification, tmp_path / "new", num_labels=3)
    old = tmp_path / "old"  # a folder as older releases wrote it: q_bias / v_bias, .bin weights
    old.mkdir()
    (old / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    renamed = {
        k.replace("attention.query.bias", "attention.q_bias").replace(
            "attention.value.bias", "attention.v_bias"
        ): v
        for k, v in peer.state_dict().items()
    }
    assert any(k.endswith(".q_bias") for k in renamed)
    torch.save(renamed, old / "pytorch_model.bin")
    model = create_model("vit_s_16_video", checkpoint=str(old), checkpoint_format="transformers")
    x = clip(1)
    with torch.no_grad():
        assert (model.eval()(x) - peer(pixel_values=x.transpose(1, 2)).logits).abs().max() <= 1e-4


def test_mismatches_are_refused_with_their_names(tmp_path):
    saved_peer(VideoMAEForVideoClassification, tmp_path, num_labels=3)
    with pytest.raises(ValueError, match=r"(?s)missing:.*decoder_blocks.*unexpected:.*fc\.weight"):
        create_model(
            "videomae_pretrain", checkpoint=str(tmp_path), checkpoint_format="transformers"
        )
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "use_mean_pooling": False}))
    with pytest.raises(ValueError, match="use_mean_pooling"):
        create_model("vit_b_16_video", checkpoint=str(tmp_path), checkpoint_format="transformers")
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match="GELU"):
        create_model("vit_b_16_video", checkpoint=str(tmp_path), checkpoint_format="transformers")


def test_key_biases_of_transformers_5_17_folders_are_dropped_and_reported(tmp_path, caplog):
    # transformers 5.17 saved a key.bias in every attention layer; any value leaves softmax as is.
    from safetensors.torch import load_file, save_file

    from tubelet.convert import load_checkpoint

    peer = saved_peer(VideoMAEForVideoClassification, tmp_path, num_labels=3)
    state = load_file(str(tmp_path / "model.safetensors"))
    keys = [f"videomae.encoder.layer.{i}.attention.attention.key.bias" for i in range(2)]
    assert not set(keys) & set(state)
    state.update({k: torch.randn(64) for k in keys})  # not zeros: dropped whatever the value
    save_file(state, str(tmp_path / "model.safetensors"))
    with caplog.at_level("INFO", logger="tubelet.convert"):
        model = create_model(
            "vit_b_16_video", checkpoint=str(tmp_path), checkpoint_format="transformers"
        ).eval()
    assert "dropped 2" in caplog.text and "softmax" in caplog.text
    x = clip(1)
    with torch.no_grad():
        assert (model(x) - peer(pixel_values=x.transpose(1, 2)).logits).abs().max() <= 1e-4
    report = load_checkpoint(model, "vit_b_16_video", tmp_path, "transformers")
    assert set(report.dropped) == set(keys)
    assert report.loaded == len(model.state_dict())
    assert "key bias" in str(report)
