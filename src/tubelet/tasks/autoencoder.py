"""Training a video VAE (`wan_vae`): reconstruction plus a small KL term.

loss = |x - D(z)|_1 + beta KL(q(z|x) || N(0, I)) / (pixels per clip), z ~ q(z|x) (Kingma & Welling
2014, with the L1 reconstruction of latent diffusion's autoencoders; Wan's VAE also adds
perceptual and adversarial terms, left out here). A small beta keeps the latents close to a
Gaussian so a diffusion model can model them, without blurring the reconstructions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tubelet.tasks.generation import GenerationMeter


@dataclass
class AutoencoderTask:
    """The trainer's duties for a VAE whose `forward(x, sample=...)` returns (reconstruction,
    posterior with `kl()`). Validation scores the mean L1 reconstruction error of the posterior
    mean per clip (pixels in [-1, 1])."""

    kl_weight: float = 1e-3

    def __post_init__(self) -> None:
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")

    def new_meter(self) -> GenerationMeter:
        return GenerationMeter()

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        x = batch["video"]  # (B, C, T, H, W)
        recon, posterior = model(x)
        per_pixel_kl = posterior.kl().mean() / x[0].numel()
        return F.l1_loss(recon.float(), x.float()) + self.kl_weight * per_pixel_kl

    @torch.no_grad()
    def evaluate_batch(
        self, model: nn.Module, batch: dict[str, Any], meter: GenerationMeter
    ) -> None:
        x = batch["video"][:, 0] if batch["video"].ndim == 6 else batch["video"]
        recon, _ = model(x, sample=False)
        meter.update((recon.float() - x.float()).abs().flatten(1).mean(1))
