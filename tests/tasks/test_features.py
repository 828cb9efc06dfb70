"""Classification on feature sequences: loss on (features, mask), reversal of padded sequences."""

import torch

from tubelet.models import create_model
from tubelet.tasks.features import FeatureClassificationTask, reverse_sequences


def test_reverse_sequences_keeps_padding_in_place():
    feats = torch.arange(10.0).view(2, 5, 1)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    out = reverse_sequences(feats, mask)
    assert out[..., 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]


def test_loss_and_evaluation_with_reversal_pairs():
    torch.manual_seed(0)
    model = create_model("frame_mean", in_dim=3, num_classes=2).eval()
    task = FeatureClassificationTask(2, label_smoothing=0.0, reversal_pairs=((0, 1),))
    batch = {
        "features": torch.randn(4, 5, 3),
        "mask": torch.tensor(
            [[True] * 5, [True] * 3 + [False] * 2, [True] * 5, [True] * 4 + [False]]
        ),
        "label": torch.tensor([0, 1, 1, 0]),
    }
    logits = model(batch["features"], batch["mask"])
    expected = torch.nn.functional.cross_entropy(logits, batch["label"])
    torch.testing.assert_close(task.loss(model, batch), expected)
    meter = task.new_meter()
    task.evaluate_batch(model, batch, meter)
    metrics = meter.compute()
    assert metrics["num_videos"] == 4
    hits = (logits.argmax(1) == batch["label"]).float().mean().item()
    assert metrics["top1"] == hits
    # Mean pooling gives a reversed sequence the same logits: exactly half the reversal checks pass.
    assert metrics["reversal_acc"] == 0.5
