"""Flow matching (rectified flow) for video generation: the training objective, Wan's timestep
sampling, an Euler sampler equal to diffusers' `FlowMatchEulerDiscreteScheduler`, classifier-free
guidance, and conditioning on classes or on precomputed text embeddings.

A clip (or its VAE latents) x_0 and Gaussian noise eps are joined by a straight line; the model
learns the constant velocity along it (Liu et al. 2023, "Flow Straight and Fast"; Lipman et al.
2023, "Flow Matching"; Esser et al. 2024, "Scaling Rectified Flow Transformers" (SD3)):

| symbol   | code            | meaning                                                        |
|----------|-----------------|----------------------------------------------------------------|
| sigma    | `sigmas`        | noise level in [0, 1]; 1 is pure noise                         |
| x_sigma  | `x_t`           | (1 - sigma) x_0 + sigma eps  (SD3 eq. 11 with a = 1 - t, b = t)|
| v        | `velocity`      | eps - x_0, d x_sigma / d sigma: the training target            |
| s        | `shift`         | sigma -> s sigma / (1 + (s - 1) sigma) (SD3 eq. 23; Wan: 3-5)  |
| t        | `timesteps`     | 1000 sigma, what the denoiser is told                          |
| w        | `guidance`      | CFG: v_uncond + w (v_cond - v_uncond); 1 = off                 |

The shift keeps the path but spends more steps near pure noise, which larger frames and longer
clips need (their noise hides less at a given sigma). Training draws sigma per clip as `uniform`
or `logit_normal` (sigmoid of N(0, 1), SD3 sec. 3.1, eq. 19: more weight on the middle of the
path), then applies the shift. Sampling integrates
dx/dsigma = v from sigma = 1 to 0 with Euler steps on the shifted schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tubelet.tasks.generation import DenoiserWithEMA, GenerationMeter

TIMESTEP_SAMPLING = ("uniform", "logit_normal")


def shift_sigmas(sigmas: Tensor, shift: float) -> Tensor:
    """s sigma / (1 + (s - 1) sigma): the same path, walked with more steps near pure noise."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_sigmas(
    n: int,
    *,
    sampling: str = "logit_normal",
    shift: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training noise levels (n,) float32: u ~ U(0, 1) or sigmoid(N(0, 1)), then shifted."""
    if sampling == "uniform":
        u = torch.rand(n, generator=generator)
    elif sampling == "logit_normal":
        u = torch.sigmoid(torch.randn(n, generator=generator))
    else:
        raise ValueError(f"timestep sampling must be one of {TIMESTEP_SAMPLING}, not {sampling!r}")
    return shift_sigmas(u, shift)


def noisy(x0: Tensor, noise: Tensor, sigmas: Tensor) -> Tensor:
    """x_sigma = (1 - sigma) x_0 + sigma eps, sigmas (B,) broadcast over the clip."""
    s = sigmas.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


class FlowMatchEulerSampler:
    """Euler steps on the shifted noise levels of `FlowMatchEulerDiscreteScheduler(
    num_train_timesteps, shift)` after `set_timesteps(num_steps)`.

    That scheduler spaces t linearly from 1000 sigma_max to 1000 sigma_min of its *shifted*
    training schedule (sigma_min = shift(1 / num_train_timesteps)), shifts t / 1000 once more, and
    appends sigma = 0; the same numbers are computed here. `timesteps[i]` is what the model is
    told at step i; `step` moves x from sigmas[i] to sigmas[i + 1].
    """

    def __init__(self, num_steps: int, *, shift: float = 1.0, num_train_timesteps: int = 1000):
        if num_steps < 1:
            raise ValueError(f"sampling steps must be >= 1, got {num_steps}")
        if shift <= 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        n = num_train_timesteps
        sigma_min = float(shift_sigmas(torch.tensor(1.0 / n, dtype=torch.float64), shift))
        t = torch.linspace(float(n), n * sigma_min, num_steps, dtype=torch.float64)
        sigmas = shift_sigmas(t / n, shift).float()
        self.sigmas = torch.cat([sigmas, torch.zeros(1)])  # (num_steps + 1,)
        self.timesteps = sigmas * n  # (num_steps,)

    def step(self, velocity: Tensor, i: int, x: Tensor) -> Tensor:
        """x_{sigma_{i+1}} = x_{sigma_i} + (sigma_{i+1} - sigma_i) v (one Euler step, in float32)."""
        dt = self.sigmas[i + 1] - self.sigmas[i]
        return (x.float() + dt * velocity.float()).to(velocity.dtype)


class Conditioner(Protocol):
    """What the denoiser is given for class labels: `__call__(labels, drop)` returns its keyword
    arguments, with the unconditional ("null") input for the rows where `drop` (B,) is True.

    `ClassLabels` gives `class_labels` (the null class is index `num_classes`, as `video_unet`
    has); `TextEmbeddings` gives `context`, one precomputed text embedding per class (the
    null one all zeros).
    """

    def __call__(self, labels: Tensor, drop: Tensor | None = None) -> dict[str, Tensor]: ...


@dataclass
class ClassLabels:
    """Class labels for a class-conditional denoiser (`video_unet`); null = `num_classes`."""

    num_classes: int

    def __call__(self, labels: Tensor, drop: Tensor | None = None) -> dict[str, Tensor]:
        if drop is not None:
            labels = labels.masked_fill(drop, self.num_classes)
        return {"class_labels": labels}


class TextEmbeddings:
    """One text embedding (L, D) per class, zero-padded to a common L; the null one is zeros.

    Wan feeds its UMT5 embeddings zero-padded to 512 tokens without a mask (the padding is
    attended to), so no mask is passed here either. `table` (K, L, D).
    """

    def __init__(self, table: Tensor) -> None:
        if table.ndim != 3:
            raise ValueError(
                f"text embeddings must be (classes, tokens, dim), got {tuple(table.shape)}"
            )
        self.table = table.float()

    @property
    def text_dim(self) -> int:
        return self.table.shape[2]

    def __call__(self, labels: Tensor, drop: Tensor | None = None) -> dict[str, Tensor]:
        context = self.table.to(labels.device)[labels]  # (B, L, D)
        if drop is not None:
            context = context.masked_fill(drop[:, None, None], 0.0)
        return {"context": context}

    @classmethod
    def stand_in(
        cls, num_classes: int, text_dim: int, *, tokens: int = 1, seed: int = 0
    ) -> TextEmbeddings:
        """A fixed random embedding N(0, 1) per class: the class as a stand-in for a prompt."""
        g = torch.Generator().manual_seed(seed)
        return cls(torch.randn(num_classes, tokens, text_dim, generator=g))

    @classmethod
    def from_files(cls, paths: Sequence[str | Path]) -> TextEmbeddings:
        """One safetensors file per class, each holding "context" (L, D) (see docs/generation.md
        for making them with transformers' UMT5 encoder), zero-padded to the longest."""
        embeddings = [read_text_embedding(p) for p in paths]
        dims = {e.shape[1] for e in embeddings}
        if len(dims) != 1:
            raise ValueError(f"text embeddings of different widths {sorted(dims)} in {list(paths)}")
        length = max(e.shape[0] for e in embeddings)
        return cls(torch.stack([F.pad(e, (0, 0, 0, length - e.shape[0])) for e in embeddings]))

    def save(self, path: str | Path) -> None:
        save_file({"table": self.table.contiguous()}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> TextEmbeddings:
        return cls(load_file(str(path))["table"])


def read_text_embedding(path: str | Path) -> Tensor:
    """The "context" tensor (L, D) of a prompt's safetensors file, float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text embedding {path} does not exist")
    tensors = load_file(str(path))
    if "context" not in tensors or tensors["context"].ndim != 2:
        raise ValueError(
            f"{path} must hold a 'context' tensor (tokens, dim); it has {sorted(tensors)}"
        )
    return tensors["context"].float()


def guided_velocity(
    denoiser: nn.Module,
    x: Tensor,
    t: Tensor,
    conditioner: Conditioner,
    labels: Tensor,
    guidance: float,
) -> Tensor:
    """v_uncond + w (v_cond - v_uncond) (Ho & Salimans 2022, eq. 6), both from one batched call;
    w = 1 is the plain conditional velocity."""
    if guidance == 1.0:
        return denoiser(x, t, **conditioner(labels))
    b = len(labels)
    both = torch.cat([labels, labels])
    drop = torch.arange(2 * b, device=labels.device) >= b
    v_cond, v_uncond = denoiser(
        torch.cat([x, x]), torch.cat([t, t]), **conditioner(both, drop)
    ).chunk(2)
    return v_uncond + guidance * (v_cond - v_uncond)


@torch.no_grad()
def sample_flow(
    denoiser: nn.Module,
    sampler: FlowMatchEulerSampler,
    shape: tuple[int, ...],
    conditioner: Conditioner,
    labels: Tensor,
    *,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Tensor:
    """x_0 of `shape` (B, C, T, H, W) from pure noise, Euler-integrated with guidance."""
    device = next(denoiser.parameters()).device
    x = torch.randn(shape, generator=generator).to(device)
    labels = labels.to(device)
    for i, t in enumerate(sampler.timesteps.tolist()):
        tt = torch.full((shape[0],), t, device=device)
        v = guided_velocity(denoiser, x, tt, conditioner, labels, guidance).float()
        x = sampler.step(v, i, x)
        if on_step is not None:
            on_step(i + 1, len(sampler.timesteps))
    return x


@dataclass
class FlowMatchingTask:
    """Rectified-flow training of a denoiser on clips, or on their latents when `autoencoder`
    (a frozen VAE with `encode` and `normalize_latents`, such as `wan_vae`) is given.

    The loss is the MSE between the model's output at (x_sigma, 1000 sigma) and v = eps - x_0.
    With probability `cond_drop` a clip gets the null condition (for classifier-free guidance).
    Validation fixes sigma and the noise by the clip's index and uses the EMA weights, so epochs
    compare.
    """

    conditioner: Conditioner
    sampling: str = "logit_normal"
    shift: float = 1.0
    cond_drop: float = 0.1
    autoencoder: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.sampling not in TIMESTEP_SAMPLING:
            raise ValueError(
                f"timestep sampling must be one of {TIMESTEP_SAMPLING}, not {self.sampling!r}"
            )
        if not 0 <= self.cond_drop <= 1:
            raise ValueError(f"cond_drop must be in [0, 1], got {self.cond_drop}")
        if self.autoencoder is not None:
            self.autoencoder.eval().requires_grad_(False)

    def new_meter(self) -> GenerationMeter:
        return GenerationMeter()

    @torch.no_grad()
    def latents(self, video: Tensor) -> Tensor:
        """What the denoiser models: the clips, or their normalised latent means."""
        if self.autoencoder is None:
            return video
        vae = self.autoencoder.to(video.device)
        return vae.normalize_latents(vae.encode(video.float(), chunked=False).mean)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        x0 = self.latents(batch["video"])  # (B, C, T, H, W)
        b = x0.shape[0]
        sigmas = sample_sigmas(b, sampling=self.sampling, shift=self.shift).to(x0.device)
        noise = torch.randn_like(x0)
        drop = torch.rand(b, device=x0.device) < self.cond_drop
        cond = self.conditioner(batch["label"], drop)
        out = model(noisy(x0, noise, sigmas), sigmas * 1000, **cond)
        return F.mse_loss(out.float(), (noise - x0).float())

    @torch.no_grad()
    def evaluate_batch(
        self, model: nn.Module, batch: dict[str, Any], meter: GenerationMeter
    ) -> None:
        video = batch["video"][:, 0] if batch["video"].ndim == 6 else batch["video"]
        x0 = self.latents(video)
        generator = torch.Generator().manual_seed(int(batch["index"][0]))
        sigmas = sample_sigmas(
            x0.shape[0], sampling=self.sampling, shift=self.shift, generator=generator
        )
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        sigmas = sigmas.to(x0.device)
        net = model.ema.model if isinstance(model, DenoiserWithEMA) else model
        out = net(noisy(x0, noise, sigmas), sigmas * 1000, **self.conditioner(batch["label"]))
        meter.update((out.float() - (noise - x0).float()).pow(2).flatten(1).mean(1))

    def after_step(self, model: nn.Module) -> None:
        """Called by the trainer after each optimizer step: update the EMA weights."""
        if isinstance(model, DenoiserWithEMA):
            model.ema.update(model.denoiser)
