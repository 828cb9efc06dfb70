"""Masked video pre-training task: labels ignored, reproducible evaluation masks, mergeable meter."""

import pytest
import torch

from tubelet.models import create_model
from tubelet.tasks.masked_video import MaskedVideoTask, ReconstructionMeter


def tiny():
    torch.manual_seed(0)
    return create_model(
        "videomae_pretrain_t", head_dim=8, depth=1, decoder_depth=1, patch_size=8, mask_ratio=0.75
    ).eval()


def test_loss_ignores_labels_and_evaluation_is_reproducible():
    model, task = tiny(), MaskedVideoTask(seed=3)
    video = torch.randn(2, 3, 4, 16, 16)
    loss = task.loss(model, {"video": video, "label": None})
    assert loss.ndim == 0 and torch.isfinite(loss)
    batch = {"video": video[:, None]}  # (B, V=1, C, T, H, W) as evaluation loaders give
    results = []
    for _ in range(2):
        meter = task.new_meter()
        task.evaluate_batch(model, batch, meter)
        task.evaluate_batch(model, batch, meter)
        results.append(meter.compute())
    assert results[0] == results[1]  # the same masks in every evaluation pass
    assert results[0]["num_clips"] == 4


def test_meter_weights_batches_by_clips_and_merges():
    a, b = ReconstructionMeter(), ReconstructionMeter()
    a.update(1.0, 3)
    b.update(2.0, 1)
    a.merge(b)
    assert a.compute() == {"loss": pytest.approx(1.25), "num_clips": 4}
    with pytest.raises(ValueError, match="unreadable"):
        ReconstructionMeter().compute()
