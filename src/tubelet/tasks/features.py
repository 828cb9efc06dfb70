"""Action classification on cached feature sequences: the classification loss and metrics, with
batches of `features` (B, T, D), padding `mask` (B, T) and `label` (B,) instead of clips."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tubelet.tasks.classification import ClassificationMeter, ClassificationTask


def reverse_sequences(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence of (B, T, D) played backwards over its real (masked-in) features; padding,
    at the end of each row, stays where it is."""
    b, t = mask.shape
    lengths = mask.sum(1, keepdim=True)  # (B, 1)
    steps = torch.arange(t, device=mask.device).expand(b, t)  # (B, T)
    source = torch.where(steps < lengths, lengths - 1 - steps, steps)  # (B, T)
    return features.gather(1, source.unsqueeze(-1).expand_as(features))


@dataclass(frozen=True)
class FeatureClassificationTask(ClassificationTask):
    """Cross-entropy with label smoothing on `model(features, mask)`.

    With `reversal_pairs`, evaluation also scores each sequence played backwards. For per-frame
    features this equals the clip reversed in time; for clip features (windows of several frames)
    it reverses only the order of the windows, so set no pairs for those.
    """

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Mean loss of one training batch."""
        logits = model(batch["features"], batch["mask"])  # (B, K)
        return F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def evaluate_batch(
        self, model: nn.Module, batch: dict[str, Any], meter: ClassificationMeter
    ) -> None:
        """Add one batch of sequences (one view each) to `meter`."""
        feats, mask = batch["features"], batch["mask"]
        logits = model(feats, mask).float()[:, None]  # (B, 1, K)
        reversed_logits = None
        if meter.reversal_pairs:
            reversed_logits = model(reverse_sequences(feats, mask), mask).float()[:, None]
        meter.update(logits, batch["label"], reversed_logits)
