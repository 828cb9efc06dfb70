"""Diffusion for video generation: noise schedule, DDPM training, DDIM sampling, classifier-free
guidance, EMA weights, and the metrics of generated clips.

Every frame of a clip is noised independently (the same `x_t` formula on every pixel) and the
denoiser predicts the noise of all frames jointly. Symbols (Ho et al. 2020, "DDPM"; Song et al.
2021, "DDIM"; Salimans & Ho 2022, "Progressive Distillation"; Ho & Salimans 2022, "Classifier-Free
Diffusion Guidance"):

| symbol          | code                  | meaning                                             |
|-----------------|-----------------------|-----------------------------------------------------|
| beta_t          | `betas[t]`            | variance of the noise added at step t               |
| alpha_bar_t     | `alphas_cumprod[t]`   | prod_{s<=t} (1 - beta_s)                            |
| x_0             | `x0`                  | a clean clip, pixels in [-1, 1]                     |
| eps             | `noise`               | standard normal noise                               |
| x_t             | `x_t`                 | sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   |
| v               | `velocity`            | sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0   |
| eta             | `eta`                 | DDIM stochasticity: 0 deterministic, 1 DDPM-like    |
| w               | `guidance`            | CFG scale: uncond + w (cond - uncond); 1 = off      |

The task (`GenerationTask`) follows the trainer's duty list: `loss`, `new_meter`,
`evaluate_batch`, and `after_step` (the EMA update after each optimizer step). It trains a
`DenoiserWithEMA`, which carries the EMA copy as a sub-module so that checkpoints and resuming
keep it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PREDICTIONS = ("epsilon", "v")
BETA_SCHEDULES = ("linear", "cosine")


def make_betas(
    schedule: str, num_steps: int = 1000, *, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Tensor:
    """The noise variances beta_1..beta_T, float32 (T,).

    "linear": evenly spaced from `beta_start` to `beta_end` (DDPM sec. 4). "cosine": alpha_bar(t) =
    cos^2(((t/T + s) / (1 + s)) pi/2) with s = 0.008 and each beta capped at 0.999 (Nichol & Dhariwal
    2021, eq. 17), which keeps more signal at small t for low-resolution images.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float32)
    if schedule == "cosine":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999)
            for i in range(num_steps)
        ]
        return torch.tensor(betas, dtype=torch.float32)
    raise ValueError(f"beta schedule must be one of {BETA_SCHEDULES}, not {schedule!r}")


class NoiseSchedule:
    """alpha_bar_t for t = 0..T-1 from `betas`, and the forward process built on it."""

    def __init__(self, betas: Tensor) -> None:
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor of values in (0, 1)")
        self.betas = betas.float()
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # (T,)

    @classmethod
    def create(cls, schedule: str = "cosine", num_steps: int = 1000) -> NoiseSchedule:
        """The schedule of `make_betas(schedule, num_steps)`."""
        return cls(make_betas(schedule, num_steps))

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    def _coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t) for timesteps (B,), shaped to broadcast on `like`."""
        ab = self.alphas_cumprod.to(like.device)[t].to(like.dtype)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return ab.sqrt().view(shape), (1 - ab).sqrt().view(shape)

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4)."""
        a, s = self._coefficients(t, x0)
        return a * x0 + s * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022, sec. 4)."""
        a, s = self._coefficients(t, x0)
        return a * noise - s * x0

    def target(self, prediction: str, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the denoiser learns to output: eps or v."""
        return noise if _check_prediction(prediction) == "epsilon" else self.velocity(x0, noise, t)


class DDIMStep(NamedTuple):
    """One DDIM step's result: x_{t-1} and the x_0 it was computed from."""

    prev_sample: Tensor
    pred_x0: Tensor


class DDIMSampler:
    """DDIM (Song et al. 2021) over `num_steps` of the schedule's timesteps.

    Timesteps are spaced as `t_i = i * (T // num_steps)` for i = num_steps-1 .. 0 (the "leading"
    spacing); the step after t = 0 uses alpha_bar = 1 (a clean sample). `clip_sample` clamps the
    predicted x_0 to [-1, 1], the data range, before the update.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int,
        *,
        prediction: str = "epsilon",
        eta: float = 0.0,
        clip_sample: bool = True,
    ) -> None:
        if not 1 <= num_steps <= schedule.num_steps:
            raise ValueError(
                f"sampling steps must be between 1 and the schedule's {schedule.num_steps}, "
                f"got {num_steps}"
            )
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.schedule = schedule
        self.prediction = _check_prediction(prediction)
        self.eta = eta
        self.clip_sample = clip_sample
        self.stride = schedule.num_steps // num_steps
        self.timesteps = [i * self.stride for i in reversed(range(num_steps))]

    def step(
        self, model_output: Tensor, t: int, x_t: Tensor, noise: Tensor | None = None
    ) -> DDIMStep:
        """x_{t-1} from x_t and the denoiser's output at t (Song et al. 2021, eq. 12).

        1. x_0 and eps from the output: eps-prediction x_0 = (x_t - sqrt(1-ab_t) eps) / sqrt(ab_t);
           v-prediction x_0 = sqrt(ab_t) x_t - sqrt(1-ab_t) v, eps = sqrt(ab_t) v + sqrt(1-ab_t) x_t.
        2. sigma_t = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)  (eq. 16).
        3. x_prev = sqrt(ab_prev) x_0 + sqrt(1 - ab_prev - sigma_t^2) eps + sigma_t z, with z =
           `noise` (required when eta > 0).
        """
        ab = self.schedule.alphas_cumprod
        ab_t = ab[t]
        prev = t - self.stride
        ab_prev = ab[prev] if prev >= 0 else torch.tensor(1.0)
        if self.prediction == "epsilon":
            eps = model_output
            x0 = (x_t - (1 - ab_t) ** 0.5 * eps) / ab_t**0.5
        else:
            x0 = ab_t**0.5 * x_t - (1 - ab_t) ** 0.5 * model_output
            eps = ab_t**0.5 * model_output + (1 - ab_t) ** 0.5 * x_t
        if self.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)
        variance = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
        sigma = self.eta * variance**0.5
        x_prev = ab_prev**0.5 * x0 + (1 - ab_prev - sigma**2) ** 0.5 * eps
        if self.eta > 0:
            if noise is None:
                raise ValueError("a DDIM step with eta > 0 needs `noise` (z in eq. 12)")
            x_prev = x_prev + sigma * noise
        return DDIMStep(x_prev, x0)


def guided_output(
    denoiser: nn.Module,
    x_t: Tensor,
    t: Tensor,
    class_labels: Tensor | None,
    null_label: int | None,
    guidance: float,
) -> Tensor:
    """The denoiser's output with classifier-free guidance (Ho & Salimans 2022, eq. 6):
    uncond + w (cond - uncond), the two halves from one batched call; `guidance` = 1 or no labels
    gives the plain conditional output."""
    if class_labels is None or guidance == 1.0 or null_label is None:
        return denoiser(x_t, t, class_labels)
    null = torch.full_like(class_labels, null_label)
    both = denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([class_labels, null]))
    cond, uncond = both.chunk(2)
    return uncond + guidance * (cond - uncond)


@torch.no_grad()
def sample(
    denoiser: nn.Module,
    sampler: DDIMSampler,
    shape: tuple[int, ...],
    *,
    class_labels: Tensor | None = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Draw clips of `shape` (B, C, T, H, W) from pure noise with DDIM; returns x_0 in [-1, 1].

    `class_labels` (B,) condition the model (its null class, `denoiser.num_classes`, is the
    unconditional half of guidance); `on_step(done, total)` reports progress.
    """
    device = next(denoiser.parameters()).device
    x = torch.randn(shape, generator=generator).to(device)
    labels = class_labels.to(device) if class_labels is not None else None
    null_label = getattr(denoiser, "num_classes", None)
    total = len(sampler.timesteps)
    for i, t in enumerate(sampler.timesteps):
        tt = torch.full((shape[0],), t, device=device, dtype=torch.long)
        out = guided_output(denoiser, x, tt, labels, null_label, guidance).float()
        noise = torch.randn(shape, generator=generator).to(device) if sampler.eta > 0 else None
        x = sampler.step(out, t, x, noise).prev_sample
        if on_step is not None:
            on_step(i + 1, total)
    return x.clamp(-1.0, 1.0)


class EMA(nn.Module):
    """An exponential moving average of a model's weights, kept as a module so checkpoints carry it.

    After update n the decay is min(`decay`, (1 + n) / (10 + n)), so early averages are not
    dominated by the random initial weights (the warm-up of TensorFlow's ExponentialMovingAverage
    `num_updates` and of the DDPM code). Buffers (normalisation statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights."""
        self.num_updates += 1
        n = int(self.num_updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        for avg, p in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1 - decay)
        for avg, b in zip(self.model.buffers(), model.buffers(), strict=True):
            avg.copy_(b)


class DenoiserWithEMA(nn.Module):
    """The trained denoiser and its EMA copy; calling it calls the denoiser.

    The state dict holds `denoiser.*` (trained weights) and `ema.model.*` (the average that
    sampling uses), so the trainer's checkpoints and resume keep both.
    """

    def __init__(self, denoiser: nn.Module, ema_decay: float = 0.999) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.ema = EMA(denoiser, ema_decay)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.denoiser, "num_classes", None)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.denoiser(*args, **kwargs)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in the trained denoiser (the EMA copy never runs backward)."""
        self.denoiser.set_grad_checkpointing(enable)

    def train(self, mode: bool = True) -> DenoiserWithEMA:
        super().train(mode)
        self.ema.model.eval()  # the average never uses dropout
        return self


@dataclass
class GenerationMeter:
    """Mean validation loss over evaluated clips (per-clip losses added with `math.fsum`, so the
    merged meters of several processes give one meter's mean exactly)."""

    _losses: list[float] = field(default_factory=list)

    def update(self, losses: Tensor) -> None:
        """Add per-clip losses (B,)."""
        self._losses += losses.double().tolist()

    def merge(self, other: GenerationMeter) -> None:
        """Add another process's results (a disjoint share of the clips)."""
        self._losses += other._losses

    def compute(self) -> dict[str, Any]:
        if not self._losses:
            raise ValueError("no evaluation results: every validation video was unreadable")
        return {
            "loss": math.fsum(self._losses) / len(self._losses),
            "num_videos": len(self._losses),
        }


@dataclass
class GenerationTask:
    """DDPM training of a class-conditional denoiser on clips (B, C, T, H, W) in [-1, 1].

    Each clip gets a uniform timestep t and noise eps; the loss is the MSE between the denoiser's
    output on x_t and the target of `prediction` ("epsilon" or "v"). With probability `cond_drop`
    a clip's label is replaced by the null class, which trains the unconditional model that
    classifier-free guidance needs. Validation uses timesteps and noise fixed by the clip's index,
    and the EMA weights when the model has them, so epochs compare.
    """

    schedule: NoiseSchedule = field(default_factory=NoiseSchedule.create)
    prediction: str = "v"
    cond_drop: float = 0.1

    def __post_init__(self) -> None:
        _check_prediction(self.prediction)
        if not 0 <= self.cond_drop <= 1:
            raise ValueError(f"cond_drop must be in [0, 1], got {self.cond_drop}")

    def new_meter(self) -> GenerationMeter:
        return GenerationMeter()

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        """Mean diffusion loss of one training batch."""
        x0 = batch["video"]  # (B, C, T, H, W)
        b = x0.shape[0]
        t = torch.randint(0, self.schedule.num_steps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        labels = self._labels(model, batch, drop=True)
        out = model(self.schedule.add_noise(x0, noise, t), t, labels)
        return F.mse_loss(out.float(), self.schedule.target(self.prediction, x0, noise, t).float())

    @torch.no_grad()
    def evaluate_batch(
        self, model: nn.Module, batch: dict[str, Any], meter: GenerationMeter
    ) -> None:
        """Add the per-clip loss of one evaluation batch (B, 1, C, T, H, W) to `meter`."""
        x0 = batch["video"][:, 0] if batch["video"].ndim == 6 else batch["video"]
        generator = torch.Generator().manual_seed(int(batch["index"][0]))
        t = torch.randint(0, self.schedule.num_steps, (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        t, noise = t.to(x0.device), noise.to(x0.device, x0.dtype)
        net = model.ema.model if isinstance(model, DenoiserWithEMA) else model
        out = net(self.schedule.add_noise(x0, noise, t), t, self._labels(model, batch, drop=False))
        target = self.schedule.target(self.prediction, x0, noise, t)
        meter.update((out.float() - target.float()).pow(2).flatten(1).mean(1))

    def after_step(self, model: nn.Module) -> None:
        """Called by the trainer after each optimizer step: update the EMA weights."""
        if isinstance(model, DenoiserWithEMA):
            model.ema.update(model.denoiser)

    def _labels(self, model: nn.Module, batch: dict[str, Any], *, drop: bool) -> Tensor | None:
        num_classes = getattr(getattr(model, "module", model), "num_classes", None)  # DDP: .module
        if num_classes is None:
            return None
        labels = batch["label"]
        if drop and self.cond_drop > 0:
            dropped = torch.rand(labels.shape, device=labels.device) < self.cond_drop
            labels = labels.masked_fill(dropped, num_classes)
        return labels


# -- metrics of generated clips --------------------------------------------------------------------
def frame_difference(clips: Tensor) -> Tensor:
    """Temporal consistency: the mean absolute change between consecutive frames of each clip.

    `clips` (B, C, T, H, W) with pixels in [0, 1] -> (B,). Lower is steadier; a still clip scores 0,
    so compare with the same number on real clips rather than minimising it.
    """
    if clips.ndim != 5 or clips.shape[2] < 2:
        raise ValueError(
            f"frame_difference needs clips (B, C, T>=2, H, W), got {tuple(clips.shape)}"
        )
    return (clips[:, :, 1:] - clips[:, :, :-1]).abs().flatten(1).mean(1)


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D) and (M, D):
    |mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2)) (Heusel et al. 2017, eq. 6, as in FID/FVD).

    tr((S_r S_f)^(1/2)) is the sum of the square roots of the eigenvalues of
    S_r^(1/2) S_f S_r^(1/2), a symmetric matrix, so only symmetric eigendecompositions are needed
    (float64).
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"features must be (N, D) and (M, D), got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("the Frechet distance needs at least 2 samples in each set")
    real, fake = real.double(), fake.double()
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = torch.cov(real.T), torch.cov(fake.T)
    sqrt_r = _psd_sqrt(cov_r)
    middle = sqrt_r @ cov_f @ sqrt_r
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_r - mu_f).pow(2).sum() + cov_r.trace() + cov_f.trace() - 2 * trace_sqrt
    return float(value.clamp(min=0))


def _psd_sqrt(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def _check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, not {prediction!r}")
    return prediction
