"""Flow matching: the Euler sampler equals diffusers' FlowMatchEulerDiscreteScheduler, the
objective's target, guidance, text-embedding conditioning, and training that lowers the loss."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import save_file

from tubelet.models import create_model
from tubelet.tasks.flow_matching import (
    ClassLabels,
    FlowMatchEulerSampler,
    FlowMatchingTask,
    TextEmbeddings,
    guided_velocity,
    noisy,
    sample_flow,
    sample_sigmas,
    shift_sigmas,
)
from tubelet.tasks.generation import DenoiserWithEMA


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_euler_sampler_equals_diffusers(shift, steps):
    peer = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    peer.set_timesteps(steps)
    ours = FlowMatchEulerSampler(steps, shift=shift)
    assert torch.allclose(ours.sigmas, peer.sigmas, atol=1e-6)
    assert torch.allclose(ours.timesteps, peer.timesteps, atol=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 5, 5, generator=g)
    ref = x.clone()
    for i, t in enumerate(peer.timesteps):
        v = torch.randn(x.shape, generator=g)
        x = ours.step(v, i, x)
        ref = peer.step(v, t, ref).prev_sample
    assert (x - ref).abs().max() <= 1e-5


def test_objective_path_and_target():
    x0, noise = torch.randn(3, 2, 1, 2, 2), torch.randn(3, 2, 1, 2, 2)
    sigmas = torch.tensor([0.0, 0.5, 1.0])
    x = noisy(x0, noise, sigmas)
    assert torch.equal(x[0], x0[0]) and torch.equal(x[2], noise[2])
    # The velocity eps - x0 is the derivative of the path in sigma.
    eps = 1e-3
    d = (noisy(x0, noise, sigmas + eps) - noisy(x0, noise, sigmas)) / eps
    assert torch.allclose(d, noise - x0, atol=1e-3)


def test_timestep_sampling_and_shift():
    g = torch.Generator().manual_seed(0)
    for sampling in ("uniform", "logit_normal"):
        s = sample_sigmas(4000, sampling=sampling, shift=3.0, generator=g)
        assert s.min() > 0 and s.max() < 1
        assert s.mean() > 0.6  # the shift moves mass towards pure noise
    assert torch.allclose(shift_sigmas(torch.tensor([0.0, 1.0]), 5.0), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="timestep sampling"):
        sample_sigmas(2, sampling="cosine")


def test_exact_velocity_recovers_the_data_and_guidance_mixes():
    target = torch.randn(1, 2, 1, 3, 3)

    class Exact(torch.nn.Module):
        """The true velocity field of a one-clip data set: (x - x0) / sigma."""

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t, class_labels=None):
            sigma = (t / 1000).view(-1, 1, 1, 1, 1)
            return (x - target) / sigma

    out = sample_flow(Exact(), FlowMatchEulerSampler(10, shift=3.0), (2, 2, 1, 3, 3),
                      ClassLabels(2), torch.tensor([0, 1]), guidance=2.0)  # fmt: skip
    assert torch.allclose(out, target.expand(2, -1, -1, -1, -1), atol=1e-5)

    class ByLabel(torch.nn.Module):
        def forward(self, x, t, class_labels=None):
            return class_labels.float().view(-1, 1, 1, 1, 1).expand_as(x)

    v = guided_velocity(ByLabel(), torch.zeros(1, 1, 1, 1, 1), torch.ones(1), ClassLabels(4),
                        torch.tensor([1]), 3.0)  # fmt: skip
    assert v.item() == pytest.approx(4 + 3 * (1 - 4))  # null class 4


def test_text_embeddings_from_files_pad_and_null(tmp_path):
    save_file({"context": torch.ones(2, 6)}, str(tmp_path / "a.safetensors"))
    save_file({"context": torch.full((3, 6), 2.0)}, str(tmp_path / "b.safetensors"))
    cond = TextEmbeddings.from_files([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert cond.table.shape == (2, 3, 6) and cond.table[0, 2].abs().sum() == 0
    out = cond(torch.tensor([1, 0]), torch.tensor([False, True]))["context"]
    assert torch.equal(out[0], torch.full((3, 6), 2.0)) and out[1].abs().sum() == 0
    cond.save(tmp_path / "table.safetensors")
    assert torch.equal(TextEmbeddings.load(tmp_path / "table.safetensors").table, cond.table)
    save_file({"other": torch.ones(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="'context'"):
        TextEmbeddings.from_files([tmp_path / "bad.safetensors"])


def test_training_a_small_dit_on_latents_lowers_the_loss():
    torch.manual_seed(0)
    vae = create_model("wan_vae", width=4, z_dim=4, dim_mult=(1, 2), num_res_blocks=1,
                       temporal_downsample=(False,), latents_mean=None, latents_std=None)  # fmt: skip
    dit = create_model("wan_dit", in_channels=4, width=32, num_heads=2, ffn_dim=64, num_layers=2,
                       text_dim=8, freq_dim=16)  # fmt: skip
    model = DenoiserWithEMA(dit, 0.9)
    task = FlowMatchingTask(TextEmbeddings.stand_in(3, 8), autoencoder=vae, cond_drop=0.0)
    batch = {"video": torch.rand(3, 3, 2, 8, 8) * 2 - 1, "label": torch.tensor([0, 1, 2])}
    opt = torch.optim.AdamW(dit.parameters(), lr=3e-3)
    torch.manual_seed(1)
    losses = []
    for _ in range(40):
        loss = task.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        task.after_step(model)
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert not any(p.requires_grad for p in vae.parameters())
