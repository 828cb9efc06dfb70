"""diffusers folders import into `wan_vae` and `wan_dit` exactly (random weights, small configs)."""

import json

import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from tubelet.convert import list_formats
from tubelet.convert.diffusers import wan_dit_config
from tubelet.models import create_model

VAE = {"base_dim": 8, "z_dim": 4, "dim_mult": [1, 2, 2], "num_res_blocks": 1,
       "temperal_downsample": [True, True], "attn_scales": [], "latents_mean": [0.1] * 4,
       "latents_std": [2.0] * 4}  # fmt: skip
DIT = {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12,
       "in_channels": 4, "out_channels": 4, "text_dim": 24, "freq_dim": 16, "ffn_dim": 40,
       "num_layers": 2, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
       "eps": 1e-6}  # fmt: skip


def randomise(peer: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (norm scales near 1), so no wrong mapping hides behind ones/zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peer.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_scale = name.endswith(("gamma", "norm_q.weight", "norm_k.weight", "norm2.weight"))
            p.copy_(1 + 0.2 * noise if is_scale else 0.2 * noise)
    return peer.eval()


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    torch.manual_seed(0)
    peer = randomise(AutoencoderKLWan(**VAE))
    folder = tmp_path_factory.mktemp("wan_vae")
    peer.save_pretrained(folder)
    return folder, peer


def test_diffusers_format_is_registered():
    assert "diffusers" in list_formats()


@pytest.mark.parametrize("frames", [1, 9])
def test_wan_vae_latents_and_reconstructions_equal_diffusers(vae_folder, frames):
    folder, peer = vae_folder
    ours = create_model("wan_vae", checkpoint=str(folder), checkpoint_format="diffusers").eval()
    assert ours.latents_mean == (0.1,) * 4 and ours.latents_std == (2.0,) * 4
    x = torch.rand(2, 3, frames, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        theirs = peer.encode(x).latent_dist
        for chunked in (True, False):
            post = ours.encode(x, chunked=chunked)
            assert (post.mean - theirs.mean).abs().max() <= 1e-4
            assert (post.logvar - theirs.logvar).abs().max() <= 1e-4
        z = theirs.mean
        expected = peer.decode(z).sample
        for chunked in (True, False):
            assert (ours.decode(z, chunked=chunked) - expected).abs().max() <= 1e-4


def test_wan22_vae_is_refused_by_name(vae_folder, tmp_path):
    folder, _ = vae_folder
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "is_residual": True}))
    with pytest.raises(ValueError, match="Wan 2.2"):
        create_model("wan_vae", checkpoint=str(tmp_path), checkpoint_format="diffusers")


@pytest.mark.parametrize("grid", [(3, 8, 8), (2, 6, 10)])
def test_wan_dit_equals_diffusers(tmp_path, grid):
    torch.manual_seed(0)
    peer = randomise(WanTransformer3DModel(**DIT))
    peer.save_pretrained(tmp_path)
    ours = create_model("wan_dit", checkpoint=str(tmp_path), checkpoint_format="diffusers").eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, *grid, generator=g)
    t = torch.tensor([999.0, 137.5])
    text = torch.randn(2, 5, 24, generator=g)
    with torch.no_grad():
        expected = peer(x, t, text).sample
        got = ours(x, t, text)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4 * max(1.0, expected.abs().max().item())


def test_published_wan21_configs_give_the_registered_variants():
    base = {"patch_size": [1, 2, 2], "attention_head_dim": 128, "in_channels": 16,
            "out_channels": 16, "text_dim": 4096, "freq_dim": 256, "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None,
            "added_kv_proj_dim": None, "rope_max_seq_len": 1024}  # fmt: skip
    small = wan_dit_config({**base, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30})
    large = wan_dit_config({**base, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40})
    with torch.device("meta"):
        for name, args, params in (
            ("wan2_1_t2v_1_3b", small, 1.42e9),
            ("wan2_1_t2v_14b", large, 1.43e10),
        ):
            registered = create_model(name)
            from_config = create_model("wan_dit", **args)
            count = sum(p.numel() for p in registered.parameters())
            assert count == sum(p.numel() for p in from_config.parameters())
            assert abs(count - params) / params < 0.01, count


def test_image_to_video_transformer_is_refused_by_name():
    with pytest.raises(ValueError, match="image conditioning"):
        wan_dit_config({"image_dim": 1280, "added_kv_proj_dim": 5120})
