"""The pre-training job's data (any folder of videos) and its reconstruction picture."""

import pytest
import torch

from tubelet.data.annotations import EmptySplitError
from tubelet.io import write_video
from tubelet.jobs.pretrain import reconstruction_rows, unlabeled_records
from tubelet.models import create_model


def test_any_folder_of_videos_is_read_without_labels(tmp_path, tiny_dataset):
    frames = torch.zeros(4, 16, 16, 3, dtype=torch.uint8).numpy()
    for i in range(6):
        write_video(tmp_path / "clips" / f"nested{i % 2}" / f"v{i}.mp4", frames, fps=4)
    train, val = unlabeled_records(tmp_path, "train"), unlabeled_records(tmp_path, "val")
    assert len(train) == 5 and len(val) == 1  # every fifth video held out
    assert len(unlabeled_records(tiny_dataset, "train")) == 20  # a labelled layout: its own split
    with pytest.raises(EmptySplitError, match="no val videos"):
        unlabeled_records(tmp_path / "clips" / "nested0", "val")


def test_reconstruction_rows_show_original_masked_and_rebuilt_frames():
    torch.manual_seed(0)
    model = create_model("videomae_pretrain_t", head_dim=8, depth=1, decoder_depth=1, patch_size=8)
    clips = torch.randn(2, 3, 4, 16, 16)
    rows = reconstruction_rows(model, clips)
    assert rows.shape == (2 * 3 * 4, 3, 16, 16)
    torch.testing.assert_close(rows[:4], model.pixels(clips)[0].transpose(0, 1).clamp(0, 1))
    assert (rows[4:8] == 0.5).any()  # masked tubes drawn grey
