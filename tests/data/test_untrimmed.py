import json

import numpy as np
import pytest
import torch

from tubelet.data.features import FeatureStore, FeatureWriter
from tubelet.data.synthetic import CLASSES
from tubelet.data.untrimmed import (
    DetectionFeatureDataset,
    Segment,
    UntrimmedVideo,
    collate_detection,
    ensure_untrimmed_dataset,
    feature_grid,
    read_detection_annotations,
    render_untrimmed_video,
    write_detection_annotations,
)


def test_reads_thumos_style_json(tmp_path):
    path = tmp_path / "thumos14.json"
    path.write_text(json.dumps({"database": {
        "video_test_1": {"subset": "Test", "duration": 30.0, "fps": 30.0, "annotations": [
            {"label": "Shotput", "segment": [1.5, 4.0], "segment(frames)": [45, 120]},
            {"label": "CliffDiving", "segment": [10, 12.5]}]},
        "video_validation_1": {"subset": "Validation", "duration": 20.0, "annotations": []},
    }}))  # fmt: skip
    ann = read_detection_annotations(path)
    assert ann.classes == ("CliffDiving", "Shotput")
    assert [v.name for v in ann.subset("Test")] == ["video_test_1"]
    assert ann.videos["video_validation_1"].fps is None
    assert ann.ground_truth(["video_test_1"]) == [
        {"video": "video_test_1", "start": 1.5, "end": 4.0, "label": "Shotput"},
        {"video": "video_test_1", "start": 10.0, "end": 12.5, "label": "CliffDiving"},
    ]
    with pytest.raises(ValueError, match="subsets are"):
        ann.subset("training")


def test_round_trip_keeps_class_order(tmp_path):
    videos = [UntrimmedVideo("a", "training", 9.0, 4.0, (Segment(1.0, 2.0, "zeta"),)),
              UntrimmedVideo("b", "validation", 5.0, None, ())]  # fmt: skip
    path = write_detection_annotations(tmp_path / "a.json", videos, ["zeta", "alpha"], version="x")
    ann = read_detection_annotations(path)
    assert ann.classes == ("zeta", "alpha")
    assert list(ann.videos.values()) == videos


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        ("not json", ValueError, "not a readable JSON"),
        ('{"videos": {}}', ValueError, "no 'database'"),
        ('{"database": {"v": {"duration": 3, "annotations": []}}}', ValueError, "'v' is malformed"),
        ('{"database": {"v": {"subset": "s", "duration": 3, "annotations": '
         '[{"label": "x", "segment": [2, 1]}]}}}', ValueError, "ends before"),
        ('{"classes": ["y"], "database": {"v": {"subset": "s", "duration": 3, "annotations": '
         '[{"label": "x", "segment": [0, 1]}]}}}', ValueError, "not in its 'classes'"),
    ],
)  # fmt: skip
def test_bad_annotation_files_are_named(tmp_path, content, error, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(error, match=match):
        read_detection_annotations(path)
    with pytest.raises(FileNotFoundError, match="no annotation file"):
        read_detection_annotations(tmp_path / "missing.json")


def test_rendered_video_has_objects_exactly_inside_segments():
    frames, segments = render_untrimmed_video(5, duration=40, fps=4, size=32, overlap=0.5)
    assert frames.shape == (160, 32, 32, 3) and frames.dtype == np.uint8
    assert segments == sorted(segments) and len(segments) >= 3
    assert all(s.label in CLASSES for s in segments)
    assert all(0 < s.start < s.end <= 39.5 for s in segments)
    assert all(s.end - s.start >= 0.5 for s in segments)
    active = np.zeros(160, dtype=bool)
    for s in segments:
        active[round(s.start * 4) : round(s.end * 4)] = True
    # Background frames differ from each other by sensor noise only; an object changes many pixels.
    background = np.median(frames[~active].astype(np.float32), axis=0)
    change = np.abs(frames.astype(np.float32) - background).mean(axis=(1, 2, 3))
    assert change[~active].max() < 4.0
    assert np.median(change[active]) > 2 * change[~active].max()
    again, same = render_untrimmed_video(5, duration=40, fps=4, size=32, overlap=0.5)
    assert np.array_equal(frames, again) and segments == same


def test_some_instances_overlap_and_lengths_spread():
    lengths, overlaps = [], 0
    for seed in range(6):
        _, segments = render_untrimmed_video(seed, duration=60, fps=4, size=16)
        lengths += [s.end - s.start for s in segments]
        overlaps += sum(b.start < a.end for a, b in zip(segments, segments[1:], strict=False))
    assert overlaps >= 1
    assert min(lengths) < 1.0 and max(lengths) > 8.0


def test_ensure_writes_once_in_activitynet_layout(tmp_path):
    settings = {"train_videos": 2, "val_videos": 1, "min_duration": 8, "max_duration": 10,
                "size": 32}  # fmt: skip
    root = ensure_untrimmed_dataset(tmp_path / "set", **settings)
    ann = read_detection_annotations(root / "annotations.json")
    assert ann.classes == CLASSES
    assert [v.name for v in ann.subset("training")] == ["video_0000", "video_0001"]
    assert [v.name for v in ann.subset("validation")] == ["video_0002"]
    assert all((root / "videos" / f"{name}.mp4").is_file() for name in ann.videos)
    assert (root / "train.csv").read_text().count(".mp4") == 2
    stamp = (root / "dataset.json").stat().st_mtime_ns
    assert ensure_untrimmed_dataset(tmp_path / "set", **settings) == root
    assert (root / "dataset.json").stat().st_mtime_ns == stamp
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError):
        ensure_untrimmed_dataset(tmp_path / "other", **settings)


def test_feature_grid():
    assert feature_grid(torch.tensor([0.5, 1.0, 1.5])) == (0.5, 0.5)
    assert feature_grid(torch.tensor([2.0])) == (2.0, 0.0)
    with pytest.raises(ValueError, match="evenly spaced"):
        feature_grid(torch.tensor([0.0, 1.0, 3.0]))


@pytest.fixture
def store_and_annotations(tmp_path):
    meta = {"level": "clip", "dim": 3, "window": 4, "stride": 2}
    with FeatureWriter(tmp_path / "feats", meta) as writer:
        for name, n in (("a", 20), ("b", 12)):
            times = 0.25 + 0.5 * torch.arange(n, dtype=torch.float64)
            feats = torch.arange(n * 3, dtype=torch.float32).view(n, 3)
            writer.add(f"videos/{name}.mp4", feats, times, torch.arange(n) * 2, fps=4.0,
                       num_frames=2 * n + 2)  # fmt: skip
    videos = [
        UntrimmedVideo("a", "training", 10.5, 4.0, (Segment(1.25, 3.25, "x"), Segment(8.0, 9.0, "y"))),
        UntrimmedVideo("b", "validation", 6.5, 4.0, (Segment(0.25, 1.25, "y"),)),
    ]  # fmt: skip
    path = write_detection_annotations(tmp_path / "ann.json", videos, ["x", "y"])
    return FeatureStore(tmp_path / "feats"), read_detection_annotations(path)


def test_feature_dataset_converts_seconds_to_steps(store_and_annotations):
    store, ann = store_and_annotations
    data = DetectionFeatureDataset(store, ann, ["a", "b"])
    item = data[0]
    assert item["features"].shape == (20, 3)
    assert item["offset_s"] == 0.25 and item["step_s"] == 0.5 and item["duration_s"] == 10.5
    assert item["segments"].tolist() == [[2.0, 6.0], [15.5, 17.5]]
    assert item["labels"].tolist() == [0, 1]
    batch = collate_detection([data[0], data[1]], multiple=8)
    assert batch["features"].shape == (2, 3, 24)
    assert batch["mask"].sum(1).tolist() == [20, 12]
    assert batch["labels"].tolist() == [[0, 1], [1, -1]]
    assert torch.equal(batch["features"][1, :, :12], data[1]["features"].T)
    assert (batch["features"][1, :, 12:] == 0).all()


def test_feature_dataset_random_crops_and_errors(store_and_annotations):
    store, ann = store_and_annotations
    data = DetectionFeatureDataset(store, ann, ["a"], max_len=8, train=True, seed=1)
    for epoch in range(5):
        data.set_epoch(epoch)
        item = data[0]
        assert item["features"].shape == (8, 3)
        start = int(item["features"][0, 0].item()) // 3  # the features count up: 3 per step
        assert item["offset_s"] == pytest.approx(0.25 + 0.5 * start)
        assert ((item["segments"] >= 0) & (item["segments"] <= 8)).all()
    with pytest.raises(ValueError, match="no features"):
        DetectionFeatureDataset(store, ann, ["c"])
