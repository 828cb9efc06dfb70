import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tubelet.tasks.classification import ClassificationMeter, ClassificationTask


def test_loss_is_label_smoothed_cross_entropy():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 5))
    batch = {"video": torch.randn(6, 3, 2, 4, 4), "label": torch.tensor([0, 1, 2, 3, 4, 0])}
    task = ClassificationTask(5, label_smoothing=0.2)
    expected = F.cross_entropy(model(batch["video"]), batch["label"], label_smoothing=0.2)
    torch.testing.assert_close(task.loss(model, batch), expected)


def test_meter_clip_video_top1_top5_per_class_and_confusion():
    meter = ClassificationMeter(num_classes=3)
    # Video 0 (label 0): views vote 0 then 1, mean favours 0. Video 1 (label 2): both views say 1.
    logits = torch.tensor(
        [
            [[5.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            [[0.0, 3.0, 1.0], [0.0, 3.0, 2.0]],
        ]
    )
    meter.update(logits, torch.tensor([0, 2]))
    meter.update(torch.tensor([[[0.0, 0.0, 9.0], [0.0, 0.0, 9.0]]]), torch.tensor([2]))
    m = meter.compute()
    assert m["top1"] == pytest.approx(2 / 3)
    assert m["clip_top1"] == pytest.approx(3 / 6)
    assert m["top5"] == 1.0  # top-k is capped at the number of classes
    assert m["per_class_top1"] == [1.0, None, 0.5]
    assert m["confusion"] == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    assert m["num_videos"] == 3
    assert "reversal_acc" not in m


def test_meter_without_results_says_why():
    with pytest.raises(ValueError, match="unreadable or skipped"):
        ClassificationMeter(num_classes=2).compute()


class FrameAverage(nn.Module):
    """Per-frame linear classifier averaged over time: blind to frame order."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):  # (B, C, T, H, W)
        return self.fc(x.mean((3, 4)).transpose(1, 2)).mean(1)


class Trend(nn.Module):
    """Says class 0 when brightness rises over time, 1 when it falls (classes 2, 3 never)."""

    def forward(self, x):
        slope = x[:, :, -1].mean((1, 2, 3)) - x[:, :, 0].mean((1, 2, 3))
        return torch.stack([slope, -slope, torch.zeros_like(slope), torch.zeros_like(slope)], 1)


def _brightening_batch(n):
    ramp = torch.linspace(0, 1, 4).view(1, 1, 4, 1, 1)
    video = ramp + 0.1 * torch.randn(n, 3, 4, 2, 2)  # (B, C, T, H, W), brightens
    labels = torch.zeros(n, dtype=torch.long)
    video = torch.where(torch.arange(n).view(n, 1, 1, 1, 1) % 2 == 1, video.flip(2), video)
    labels[1::2] = 1
    return {"video": video.unsqueeze(1), "label": labels}  # one view each


@pytest.mark.parametrize(("model", "expected"), [(FrameAverage(), 0.5), (Trend(), 1.0)])
def test_reversal_accuracy_is_chance_for_order_blind_models(model, expected):
    torch.manual_seed(0)
    task = ClassificationTask(4, reversal_pairs=((0, 1),))
    meter = task.new_meter()
    with torch.no_grad():
        task.evaluate_batch(model, _brightening_batch(16), meter)
    assert meter.compute()["reversal_acc"] == pytest.approx(expected)
