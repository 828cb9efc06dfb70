"""write_video: mp4 and gif round trips, encoder options, and refusal of bad input."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tubelet.io import write_video


def smooth_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3) gradients that drift over time: easy for an encoder to keep."""
    t = np.arange(num_frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    red = (x * 3 + t * 6) % 256 + 0 * y
    green = y * 4 + 0 * (x + t)
    blue = (x + y + t * 9) % 256
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def read_back(path: Path) -> tuple[np.ndarray, list[bool], float]:
    """Decoded frames uint8 (T, H, W, 3), each packet's keyframe flag, and the average rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keys = [p.is_keyframe for p in container.demux(stream) if p.size]
        container.seek(0)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, keys, float(stream.average_rate)


def test_mp4_round_trip_keeps_count_size_rate_and_content(tmp_path):
    frames = smooth_frames(12)
    path = write_video(tmp_path / "clip.mp4", frames, fps=12)
    decoded, _, rate = read_back(path)
    assert path == tmp_path / "clip.mp4"
    assert decoded.shape == frames.shape and rate == 12
    assert np.abs(decoded.astype(int) - frames).mean() < 6  # H.264 at crf 18, 4:2:0 chroma


def test_mp4_accepts_a_tensor_and_makes_folders(tmp_path):
    path = write_video(tmp_path / "new" / "clip.mp4", torch.from_numpy(smooth_frames(3)), fps=25)
    assert read_back(path)[0].shape == (3, 48, 64, 3)


def test_mp4_gop_sets_the_keyframe_interval(tmp_path):
    frames = smooth_frames(10)
    _, every, _ = read_back(write_video(tmp_path / "g1.mp4", frames, fps=10, gop=1, bframes=0))
    _, first, _ = read_back(write_video(tmp_path / "g50.mp4", frames, fps=10, gop=50))
    assert all(every) and len(every) == 10
    assert first[0] and not any(first[1:])


def test_mp4_pads_odd_sizes_by_one_pixel(tmp_path):
    frames = smooth_frames(4, height=47, width=63)
    decoded, _, _ = read_back(write_video(tmp_path / "odd.mp4", frames, fps=8))
    assert decoded.shape == (4, 48, 64, 3)
    assert np.abs(decoded[:, :47, :63].astype(int) - frames).mean() < 6


def test_gif_round_trip_keeps_count_size_and_colours(tmp_path):
    frames = np.zeros((4, 16, 24, 3), dtype=np.uint8)
    frames[1, ..., 0] = 255  # red
    frames[2, ..., 1] = 255  # green
    frames[3] = 255  # white
    decoded, _, rate = read_back(write_video(tmp_path / "clip.gif", frames, fps=5))
    assert decoded.shape == frames.shape and rate == 5
    # The gif palette has 3-3-2 bits per channel and is dithered: compare each frame's mean colour.
    mean_colours = decoded.reshape(4, -1, 3).mean(axis=1)  # (T, 3)
    np.testing.assert_allclose(mean_colours, frames[:, 0, 0], atol=8)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), "uint8 frames of shape"),
        (np.zeros((2, 8, 8), dtype=np.uint8), "uint8 frames of shape"),
        (np.zeros((2, 8, 8, 4), dtype=np.uint8), "uint8 frames of shape"),
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), "no frames"),
    ],
)
def test_bad_frames_raise(tmp_path, frames, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "bad.mp4", frames, fps=10)
    assert not (tmp_path / "bad.mp4").exists()


def test_unknown_suffix_raises(tmp_path):
    with pytest.raises(ValueError, match=r"\.mp4 or \.gif, not '\.avi'"):
        write_video(tmp_path / "clip.avi", smooth_frames(2), fps=10)
