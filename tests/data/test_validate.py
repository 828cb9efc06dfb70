"""validate_dataset: every bad video of a data folder, with its reason, within a time bound."""

from __future__ import annotations

import csv
import os
import re
import time
from pathlib import Path

import av
import numpy as np
import pytest

from tubelet.data import validate
from tubelet.data.validate import run_checks, validate_dataset
from tubelet.io import write_video


def noise(num_frames: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(num_frames).integers(0, 256, (num_frames, size, size, 3), np.uint8)


def write_faststart(path: Path, num_frames: int) -> None:
    """An H.264 mp4 with its index (and so its frame count) before the media data."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8, options={"g": "4"})
        stream.width = stream.height = 32
        for image in noise(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_damaged(path: Path) -> int:
    """An all-keyframe mp4 whose middle packet is overwritten; returns that frame's index."""
    write_video(path, noise(10), fps=8, gop=1)
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    position, size = packets[5]
    data = bytearray(path.read_bytes())
    data[position : position + size] = np.random.default_rng(0).bytes(size)
    path.write_bytes(bytes(data))
    return 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders under train/ and val/: two sound videos and six bad ones."""
    root = tmp_path_factory.mktemp("validate")
    for folder in ("train/a", "train/b", "val/a", "val/b"):
        (root / folder).mkdir(parents=True)
    write_video(root / "train/a/good0.mp4", noise(6), fps=8)
    write_video(root / "val/b/good1.mp4", noise(7), fps=8)
    write_faststart(root / "full.mp4", 16)
    data = (root / "full.mp4").read_bytes()
    (root / "train/b/truncated.mp4").write_bytes(data[: len(data) * 3 // 5])
    write_damaged(root / "val/a/damaged.mp4")
    (root / "train/a/empty.mp4").write_bytes(b"")
    (root / "train/b/garbage.mp4").write_bytes(np.random.default_rng(1).bytes(2048))
    with av.open(str(root / "val/b/audio_only.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (root / "full.mp4").unlink()
    return root


EXPECTED = {
    "truncated.mp4": ("train", r"the container lists 16 frames but holds \d+ \(truncated"),
    "damaged.mp4": ("val", r"frames \[5\] of 10 do not decode"),
    "empty.mp4": ("train", "file is empty"),
    "garbage.mp4": ("train", "not a video container"),
    "audio_only.mp4": ("val", "no video stream"),
}


def test_every_bad_video_is_listed_with_its_reason(dataset, tmp_path):
    seen = []
    report = validate_dataset(dataset, workers=2, progress=lambda done, total: seen.append(done))
    assert report.checked == 7 and report.layout == "class-folders" and not report.ok
    found = {Path(p.path).name: p for p in report.problems}
    assert set(found) == set(EXPECTED)
    for name, (split, reason) in EXPECTED.items():
        assert found[name].splits == split
        assert re.search(reason, found[name].reason), (name, found[name].reason)
    assert sorted(seen) == list(range(1, 8))

    report.write_csv(tmp_path / "bad.csv")
    with open(tmp_path / "bad.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {Path(row["path"]).name for row in rows} == set(EXPECTED)
    assert all(row["reason"] and row["splits"] for row in rows)


def test_a_sound_folder_is_ok(dataset, tmp_path):
    root = tmp_path / "sound"
    (root / "a").mkdir(parents=True)
    for name in ("x.mp4", "y.mp4"):
        (root / "a" / name).write_bytes((dataset / "train/a/good0.mp4").read_bytes())
    report = validate_dataset(root, workers=1)
    assert report.ok and report.checked == 2


def _hang_or_crash(path: Path) -> str | None:
    if path.name == "hang.mp4":
        time.sleep(60)
    if path.name == "crash.mp4":
        os._exit(7)
    return None


def test_a_hanging_or_crashing_check_is_reported_not_waited_for(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "check_video", _hang_or_crash)  # forked children inherit it
    paths = [tmp_path / name for name in ("ok.mp4", "hang.mp4", "crash.mp4", "ok2.mp4")]
    start = time.monotonic()
    reasons = run_checks(paths, workers=2, timeout_s=1.0)
    assert time.monotonic() - start < 15
    assert reasons[0] is None and reasons[3] is None
    assert "not decoded within 1 s" in reasons[1]
    assert "exit code 7" in reasons[2]


def test_a_folder_without_videos_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="holds no videos"):
        validate_dataset(tmp_path)


@pytest.mark.parametrize(("workers", "timeout_s"), [(0, 1.0), (1, 0.0)])
def test_bad_settings_raise(dataset, workers, timeout_s):
    with pytest.raises(ValueError, match="workers|timeout_s"):
        validate_dataset(dataset, workers=workers, timeout_s=timeout_s)
