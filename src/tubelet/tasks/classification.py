"""Action classification: loss, the training step, and clip-, video- and reversal-level metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ClassificationTask:
    """Cross-entropy with label smoothing on clips (B, C, T, H, W) and integer labels (B,)."""

    num_classes: int
    label_smoothing: float = 0.1
    reversal_pairs: tuple[tuple[int, int], ...] = ()

    def new_meter(self) -> ClassificationMeter:
        """An empty accumulator for one evaluation pass."""
        return ClassificationMeter(self.num_classes, self.reversal_pairs)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Mean loss of one training batch."""
        logits = model(batch["video"])  # (B, K)
        return F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def evaluate_batch(
        self, model: nn.Module, batch: dict[str, Any], meter: ClassificationMeter
    ) -> None:
        """Add one evaluation batch of views (B, V, C, T, H, W) to `meter`.

        With reversal pairs, the clips are also run reversed in time, to measure how well the model
        tells an action from its time reversal.
        """
        views = batch["video"]
        b, v = views.shape[:2]
        logits = model(views.flatten(0, 1)).float().view(b, v, -1)  # (B, V, K)
        reversed_logits = None
        if meter.reversal_pairs:
            reversed_logits = model(views.flatten(0, 1).flip(2)).float().view(b, v, -1)
        meter.update(logits, batch["label"], reversed_logits)


@dataclass
class ClassificationMeter:
    """Accumulates evaluation results.

    Clip-level accuracy scores every view alone; video-level accuracy scores the mean of the views'
    softmax. Reversal accuracy, for classes in `reversal_pairs` (a, b): the video-level prediction
    restricted to {a, b} must name the true class for the clip as recorded and its partner for the clip
    reversed in time; a model that only sees the set of frames (a per-frame average) scores 50% by
    construction, since both directions give it the same frames.
    """

    num_classes: int
    reversal_pairs: Sequence[tuple[int, int]] = ()
    _clip_correct: list[torch.Tensor] = field(default_factory=list)
    _video_probs: list[torch.Tensor] = field(default_factory=list)
    _labels: list[torch.Tensor] = field(default_factory=list)
    _reversal_correct: list[torch.Tensor] = field(default_factory=list)

    def update(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        reversed_logits: torch.Tensor | None = None,
    ) -> None:
        """Add view logits (B, V, K), labels (B,) and optionally the reversed clips' logits (B, V, K)."""
        labels = labels.cpu()
        logits = logits.cpu()
        self._clip_correct.append((logits.argmax(-1) == labels[:, None]).flatten())  # (B*V,)
        probs = logits.softmax(-1).mean(1)  # (B, K)
        self._video_probs.append(probs)
        self._labels.append(labels)
        if reversed_logits is not None and self.reversal_pairs:
            reversed_probs = reversed_logits.cpu().softmax(-1).mean(1)  # (B, K)
            self._reversal_correct.append(
                _reversal_hits(probs, reversed_probs, labels, self._partner)
            )

    def merge(self, other: ClassificationMeter) -> None:
        """Add the results of `other` (another process's share of the videos) to this meter."""
        if (other.num_classes, list(other.reversal_pairs)) != (
            self.num_classes,
            list(self.reversal_pairs),
        ):
            raise ValueError("cannot merge meters of different classes or reversal pairs")
        self._clip_correct += other._clip_correct
        self._video_probs += other._video_probs
        self._labels += other._labels
        self._reversal_correct += other._reversal_correct

    @property
    def _partner(self) -> dict[int, int]:
        partner = {}
        for a, b in self.reversal_pairs:
            partner[a], partner[b] = b, a
        return partner

    def compute(self) -> dict[str, Any]:
        """Top-1/top-5 (video level), clip top-1, per-class accuracy, confusion matrix, reversal acc."""
        if not self._labels:
            raise ValueError(
                "no evaluation results: every validation video was unreadable or skipped"
            )
        probs = torch.cat(self._video_probs)  # (N, K)
        labels = torch.cat(self._labels)  # (N,)
        k = min(5, self.num_classes)
        top5 = (probs.topk(k, dim=-1).indices == labels[:, None]).any(-1)
        predicted = probs.argmax(-1)
        confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
        per_class = confusion.diag() / confusion.sum(1).clamp(min=1)
        result: dict[str, Any] = {
            "top1": (predicted == labels).float().mean().item(),
            "top5": top5.float().mean().item(),
            "clip_top1": torch.cat(self._clip_correct).float().mean().item(),
            "per_class_top1": [
                round(acc, 4) if n else None
                for acc, n in zip(per_class.tolist(), confusion.sum(1).tolist(), strict=True)
            ],
            "confusion": confusion.tolist(),
            "num_videos": len(labels),
        }
        if self._reversal_correct:
            hits = torch.cat(self._reversal_correct)
            result["reversal_acc"] = hits.float().mean().item() if len(hits) else None
        return result


def _reversal_hits(
    probs: torch.Tensor, reversed_probs: torch.Tensor, labels: torch.Tensor, partner: dict[int, int]
) -> torch.Tensor:
    """For each video whose class has a reversal partner: two booleans (as recorded, reversed)."""
    hits = []
    for p, rp, y in zip(probs, reversed_probs, labels.tolist(), strict=True):
        if y in partner:
            other = partner[y]
            hits += [bool(p[y] > p[other]), bool(rp[other] > rp[y])]
    return torch.tensor(hits, dtype=torch.bool)
