"""Schedulers against diffusers on the same betas; guidance, EMA, the task's loss and the metrics."""

import copy

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from tubelet.tasks.generation import (
    EMA,
    DDIMSampler,
    DenoiserWithEMA,
    GenerationTask,
    NoiseSchedule,
    frame_difference,
    frechet_distance,
    guided_output,
    make_betas,
    sample,
)


def tensors(*shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_betas_equal_diffusers_schedules(kind):
    name = {"linear": "linear", "cosine": "squaredcos_cap_v2"}[kind]
    peer = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name)
    torch.testing.assert_close(make_betas(kind, 1000), peer.betas, rtol=0, atol=1e-7)
    torch.testing.assert_close(
        NoiseSchedule(make_betas(kind)).alphas_cumprod, peer.alphas_cumprod, rtol=0, atol=1e-6
    )


def test_add_noise_and_velocity_equal_diffusers():
    schedule = NoiseSchedule.create("cosine")
    peer = DDPMScheduler(trained_betas=schedule.betas.numpy(), prediction_type="v_prediction")
    x0, noise = tensors(4, 3, 2, 5, 5), tensors(4, 3, 2, 5, 5, seed=1)
    t = torch.tensor([0, 17, 500, 999])
    torch.testing.assert_close(
        schedule.add_noise(x0, noise, t), peer.add_noise(x0, noise, t), rtol=0, atol=1e-5
    )
    v = schedule.velocity(x0, noise, t)
    torch.testing.assert_close(v, peer.get_velocity(x0, noise, t), rtol=0, atol=1e-5)
    assert torch.equal(schedule.target("v", x0, noise, t), v)
    assert torch.equal(schedule.target("epsilon", x0, noise, t), noise)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("clip", [False, True])
def test_ddim_steps_equal_diffusers(prediction, eta, clip):
    schedule = NoiseSchedule.create("linear")
    ours = DDIMSampler(schedule, 20, prediction=prediction, eta=eta, clip_sample=clip)
    peer = DDIMScheduler(
        trained_betas=schedule.betas.numpy(), clip_sample=clip,
        prediction_type={"epsilon": "epsilon", "v": "v_prediction"}[prediction],
    )  # fmt: skip
    peer.set_timesteps(20)
    assert ours.timesteps == peer.timesteps.tolist()
    x = tensors(2, 3, 4, 6, 6)
    for i, t in enumerate(ours.timesteps):
        out = torch.tanh(x) + 0.1 * tensors(*x.shape, seed=i + 10)  # a stand-in model output
        noise = tensors(*x.shape, seed=i + 100)
        mine = ours.step(out, t, x, noise)
        theirs = peer.step(out, t, x, eta=eta, variance_noise=noise)
        torch.testing.assert_close(mine.prev_sample, theirs.prev_sample, rtol=0, atol=1e-5)
        torch.testing.assert_close(mine.pred_x0, theirs.pred_original_sample, rtol=0, atol=1e-5)
        x = theirs.prev_sample


def test_ddim_rejects_bad_settings():
    schedule = NoiseSchedule.create("linear", 100)
    with pytest.raises(ValueError, match="between 1 and"):
        DDIMSampler(schedule, 101)
    with pytest.raises(ValueError, match="prediction"):
        DDIMSampler(schedule, 10, prediction="x0")
    with pytest.raises(ValueError, match="needs `noise`"):
        DDIMSampler(schedule, 10, eta=1.0).step(torch.zeros(1), 90, torch.zeros(1))
    with pytest.raises(ValueError, match="beta schedule"):
        make_betas("quadratic")


class Recorder(nn.Module):
    """A denoiser whose output is its class label broadcast over the clip."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, x, t, labels=None):
        self.calls.append(labels)
        return self.weight * labels.float().view(-1, 1, 1, 1, 1).expand_as(x)


def test_guidance_combines_conditional_and_null_outputs_in_one_call():
    model = Recorder()
    x, t, labels = torch.zeros(2, 1, 2, 2, 2), torch.tensor([5, 5]), torch.tensor([0, 2])
    out = guided_output(model, x, t, labels, null_label=3, guidance=2.5)
    assert len(model.calls) == 1 and model.calls[0].tolist() == [0, 2, 3, 3]
    # uncond + w (cond - uncond) = 3 + 2.5 (label - 3)
    assert out[:, 0, 0, 0, 0].tolist() == [3 + 2.5 * -3, 3 + 2.5 * -1]
    assert torch.equal(guided_output(model, x, t, labels, 3, 1.0), model(x, t, labels))


def test_sample_is_seeded_and_in_range():
    model = Recorder()
    sampler = DDIMSampler(NoiseSchedule.create("cosine", 100), 5, eta=1.0)
    runs = [
        sample(
            model,
            sampler,
            (2, 1, 2, 4, 4),
            class_labels=torch.tensor([0, 1]),
            guidance=2.0,
            generator=torch.Generator().manual_seed(3),
        )  # fmt: skip
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    assert runs[0].abs().max() <= 1


def test_ema_follows_the_documented_average():
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.9)
    start = copy.deepcopy(model.weight.detach())
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # n = 1: decay min(0.9, 2/11)
    d = 2 / 11
    torch.testing.assert_close(ema.model.weight, d * start + (1 - d) * model.weight)
    assert not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


def test_task_loss_trains_a_tiny_denoiser_and_after_step_moves_the_ema():
    torch.manual_seed(0)
    from tubelet.models import create_model

    denoiser = create_model(
        "video_unet", num_classes=3, width=8, channel_mults=(1,), attention_levels=(True,),
        num_heads=2,
    )  # fmt: skip
    model = DenoiserWithEMA(denoiser, ema_decay=0.5)
    task = GenerationTask(NoiseSchedule.create("cosine", 100), "epsilon", cond_drop=0.5)
    batch = {"video": tensors(4, 3, 2, 8, 8).clamp(-1, 1), "label": torch.tensor([0, 1, 2, 0])}
    optim = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    torch.manual_seed(1)
    first = task.loss(model, batch)
    losses = []
    for _ in range(30):
        torch.manual_seed(1)  # the same t and noise every step: a fixed objective
        loss = task.loss(model, batch)
        loss.backward()
        optim.step()
        optim.zero_grad()
        task.after_step(model)
        losses.append(loss.item())
    assert losses[-1] < 0.7 * first.item()
    assert int(model.ema.num_updates) == 30
    assert not torch.equal(model.ema.model.conv_in.weight, denoiser.conv_in.weight)
    meter = task.new_meter()
    eval_batch = {**batch, "video": batch["video"][:, None], "index": torch.arange(4)}
    task.evaluate_batch(model, eval_batch, meter)
    again = task.new_meter()
    task.evaluate_batch(model, eval_batch, again)
    assert meter.compute() == again.compute()  # fixed timesteps and noise
    assert meter.compute()["num_videos"] == 4


def test_frame_difference_by_hand():
    clips = torch.zeros(2, 3, 3, 2, 2)
    clips[0, :, 1] = 0.5  # 0 -> 0.5 -> 0: mean change 0.5
    clips[1, :, 2] = 1.0  # 0 -> 0 -> 1: mean change 0.5 over two steps
    torch.testing.assert_close(frame_difference(clips), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="T>=2"):
        frame_difference(clips[:, :, :1])


def test_frechet_distance_equals_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.normal(0, 1, (4000, 3)) * [1, 2, 3])
    b = torch.from_numpy(rng.normal(1, 1, (3000, 3)) * [2, 2, 1])
    # Sample moments, then the 1-D formula per axis (diagonal up to sampling noise).
    mu_a, mu_b = a.mean(0), b.mean(0)
    va, vb = a.var(0), b.var(0)
    expected = ((mu_a - mu_b) ** 2).sum() + (va + vb - 2 * (va * vb).sqrt()).sum()
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # A general case: symmetric in its arguments.
    c, d = torch.randn(50, 4), torch.randn(60, 4) @ torch.randn(4, 4)
    assert frechet_distance(c, d) == pytest.approx(frechet_distance(d, c), rel=1e-6)
    with pytest.raises(ValueError, match="features"):
        frechet_distance(c, d[:, :3])


class Oracle(nn.Module):
    """The exact denoiser of a data set holding one clip `x0`: its eps or v for any x_t."""

    def __init__(self, x0, schedule, prediction):
        super().__init__()
        self.x0, self.schedule, self.prediction = x0, schedule, prediction
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t, labels=None):
        ab = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        eps = (x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt()
        return self.schedule.target(self.prediction, self.x0.expand_as(x_t), eps, t)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sampling_with_the_exact_denoiser_returns_the_data(prediction, eta):
    schedule = NoiseSchedule.create("cosine")
    x0 = tensors(1, 3, 4, 4, 4).clamp(-1, 1)
    sampler = DDIMSampler(schedule, 10, prediction=prediction, eta=eta)
    out = sample(
        Oracle(x0, schedule, prediction), sampler, (2, 3, 4, 4, 4),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    torch.testing.assert_close(out, x0.expand_as(out), rtol=0, atol=1e-4)
