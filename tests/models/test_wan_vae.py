"""The Wan 2.1 causal VAE: shapes, causality, the chunked path equal to the whole-clip path,
latent statistics and checkpointing (parity with diffusers: tests/convert/test_diffusers.py)."""

import pytest
import torch

from tubelet.models import create_model, model_kind
from tubelet.models.wan_vae import WAN21_LATENTS_MEAN, WanVAE

SMALL = {"width": 8, "z_dim": 4, "dim_mult": (1, 2, 2), "num_res_blocks": 1,
         "temporal_downsample": (True, True)}  # fmt: skip


def small(**kwargs) -> WanVAE:
    torch.manual_seed(0)
    return WanVAE(**{**SMALL, **kwargs}).eval()


def clip(frames=9, size=16, seed=0):
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def test_registered_with_the_published_latent_statistics():
    assert model_kind("wan_vae") == "autoencoder"
    vae = create_model("wan_vae", width=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1)
    assert vae.latents_mean == WAN21_LATENTS_MEAN and vae.time_factor == 4
    assert vae.space_factor == 8


def test_latent_and_reconstruction_shapes():
    vae = small()
    with torch.no_grad():
        post = vae.encode(clip())
        assert post.mean.shape == (2, 4, 3, 4, 4) == post.logvar.shape
        assert vae.latent_shape(9, 16, 16) == (3, 4, 4)
        out = vae.decode(post.mean)
    assert out.shape == (2, 3, 9, 16, 16) and out.abs().max() <= 1.0


@pytest.mark.parametrize("frames", [1, 5, 13])
def test_chunked_path_equals_the_whole_clip(frames):
    vae = small(attn_scales=(1.0,))
    x = clip(frames)
    with torch.no_grad():
        whole = vae.encode(x, chunked=False)
        chunked = vae.encode(x, chunked=True)
        assert torch.allclose(whole.mean, chunked.mean, atol=1e-5)
        z = whole.mean
        assert torch.allclose(vae.decode(z, chunked=False), vae.decode(z, chunked=True), atol=1e-5)


def test_encoder_is_causal():
    vae = small()
    x = clip(9)
    y = x.clone()
    y[:, :, 5:] = torch.randn_like(y[:, :, 5:])  # change frames 5..8: latent frame 2 only
    with torch.no_grad():
        a, b = vae.encode(x).mean, vae.encode(y).mean
    assert torch.allclose(a[:, :, :2], b[:, :, :2], atol=1e-6)
    assert not torch.allclose(a[:, :, 2], b[:, :, 2], atol=1e-3)


def test_refuses_frame_counts_the_time_compression_cannot_take():
    with pytest.raises(ValueError, match="1 \\+ k\\*4 frames"):
        small().encode(clip(8))


def test_latent_normalisation_round_trips():
    vae = small(latents_mean=(0.5, -1.0, 2.0, 0.0), latents_std=(2.0, 1.0, 0.5, 3.0))
    z = torch.randn(1, 4, 2, 3, 3)
    assert torch.allclose(vae.denormalize_latents(vae.normalize_latents(z)), z, atol=1e-6)


@pytest.mark.parametrize("level", [True, "selective"])
def test_checkpointing_keeps_output_and_gradients(level):
    vae = small().train()
    x = clip(5)
    torch.manual_seed(1)
    plain = vae(x, sample=False).reconstruction
    plain.square().mean().backward()
    grads = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad()
    vae.set_grad_checkpointing(level)
    again = vae(x, sample=False).reconstruction
    again.square().mean().backward()
    assert torch.allclose(plain, again, atol=1e-6)
    for g, p in zip(grads, vae.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_kl_is_zero_for_the_prior():
    from tubelet.models.wan_vae import Posterior

    post = Posterior(torch.zeros(2, 4, 1, 2, 2), torch.zeros(2, 4, 1, 2, 2))
    assert torch.equal(post.kl(), torch.zeros(2))
