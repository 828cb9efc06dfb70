"""Masked video pre-training (VideoMAE): the reconstruction loss, with labels ignored.

The model is a `tubelet.models.videomae.VideoMAEPretrain` (or anything with its duties:
`model(clip, mask=None) -> output with .loss`, drawing its own mask when none is given, and
`draw_mask(clip, generator)`). Training draws new masks at every step; evaluation draws the masks of
its n-th batch from a generator seeded with (seed, n), so every evaluation pass scores the same
clips with the same masks and the validation loss of two epochs can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class MaskedVideoTask:
    """Reconstruction loss on clips (B, C, T, H, W); batches' labels are not used."""

    seed: int = 0

    def new_meter(self) -> ReconstructionMeter:
        """An empty accumulator for one evaluation pass."""
        return ReconstructionMeter()

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Mean reconstruction loss of one training batch (the model draws the masks)."""
        return model(batch["video"]).loss

    @torch.no_grad()
    def evaluate_batch(
        self, model: nn.Module, batch: dict[str, Any], meter: ReconstructionMeter
    ) -> None:
        """Add one evaluation batch of views (B, V, C, T, H, W) to `meter`, each view masked."""
        clips = batch["video"].flatten(0, 1)  # (B*V, C, T, H, W)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + meter.batches)
        mask = getattr(model, "module", model).draw_mask(clips, generator=generator)
        meter.update(model(clips, mask=mask).loss.float().item(), len(clips))


@dataclass
class ReconstructionMeter:
    """Mean reconstruction loss over the clips of an evaluation pass."""

    total: float = 0.0
    clips: int = 0
    batches: int = 0

    def update(self, loss: float, clips: int) -> None:
        """Add a batch's mean loss over `clips` clips."""
        self.total += loss * clips
        self.clips += clips
        self.batches += 1

    def merge(self, other: ReconstructionMeter) -> None:
        """Add another process's results (a disjoint share of the clips)."""
        self.total += other.total
        self.clips += other.clips
        self.batches += other.batches

    def compute(self) -> dict[str, Any]:
        """{"loss": mean over clips, "num_clips": how many}."""
        if not self.clips:
            raise ValueError("no evaluation results: every validation video was unreadable")
        return {"loss": self.total / self.clips, "num_clips": self.clips}
