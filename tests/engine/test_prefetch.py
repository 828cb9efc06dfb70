"""Batches to the device one step ahead (on the CPU: in place), prepared there."""

import torch

from tubelet.engine.prefetch import DeviceBatches, has_clips


def test_batches_arrive_prepared_with_their_wait_and_empty_ones_untouched():
    loader = [
        {"video": torch.ones(2, 3, dtype=torch.uint8), "label": torch.tensor([0, 1])},
        {"video": None, "bad_files": [("a.mp4", "empty")]},
        {"video": torch.zeros(1, 3, dtype=torch.uint8), "label": torch.tensor([1])},
    ]
    prepared = []

    def prepare(batch):
        prepared.append(batch["label"].tolist())
        return {**batch, "video": batch["video"].float() * 2}

    batches = DeviceBatches(loader, torch.device("cpu"), prepare)
    assert len(batches) == 3
    out = list(batches)
    assert [has_clips(b) for b, _ in out] == [True, False, True]
    assert prepared == [[0, 1], [1]]
    assert torch.equal(out[0][0]["video"], torch.full((2, 3), 2.0))
    assert out[1][0] is loader[1]
    assert all(isinstance(waited, float) and waited >= 0 for _, waited in out)
