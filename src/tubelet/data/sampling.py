"""Frame-index sampling: pure functions from `(num_frames, fps, ...)` to the frame indices of a clip.

Two families, both returning `ClipIndices` (indices in temporal order plus their time span):

- "uniform" (TSN, Wang et al. 2016, sec. 3.2): split the video into `num_segments` equal segments and
  take one frame from each, so a clip always spans the whole video whatever its length.
- "dense": `clip_len` consecutive frames `stride` apart, so a clip spans a fixed stretch of time.

Segments are real intervals `[k*N/S, (k+1)*N/S)` of the video's `N` frames; frame `j` fills `[j, j+1)`.
A point drawn in a segment selects the frame under it. All index arithmetic is done on integers so
that segment bounds and centres are exact.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

SAMPLINGS = ("uniform", "dense")


class ClipIndices(NamedTuple):
    """The frames of one clip: `indices` in temporal order, each in `[0, num_frames)`;
    `start_s` is the time of the first sampled frame, `end_s` the end of the last one."""

    indices: tuple[int, ...]
    start_s: float
    end_s: float


def uniform_indices(
    num_frames: int,
    fps: float,
    num_segments: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
) -> ClipIndices:
    """TSN sampling: one frame from each of `num_segments` equal segments of the video.

    Training draws a random point in every segment (`rng` required); evaluation takes every segment's
    centre. With fewer frames than segments, indices repeat: training then shifts all segments by
    one shared random offset (independent offsets could skip a frame), so the indices stay sorted
    and every frame of the video appears at least once.
    """
    _check_video(num_frames, fps)
    _check_positive("num_segments", num_segments)
    n, s = num_frames, num_segments
    segment = np.arange(s, dtype=np.int64)  # (S,)
    if train:
        generator = _require_rng(rng)
        # A point (k + a/N) * N/S in segment k, scaled by S: k*N + a with a uniform in [0, N).
        # Drawing a on integers gives each frame the probability of its overlap with the segment.
        # Short videos share one offset: the points are then < 1 frame apart and miss no frame.
        size = s if n >= s else 1
        offset = generator.integers(0, n, size=size)  # (S,) or (1,), broadcast over segments
        indices = (segment * n + offset) // s
    else:
        indices = ((2 * segment + 1) * n) // (2 * s)  # floor((k + 1/2) * N/S), the centres
    return _clip(indices, fps)


def dense_indices(
    num_frames: int,
    fps: float,
    clip_len: int,
    stride: int = 1,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
) -> ClipIndices:
    """`clip_len` frames `stride` apart, from a random start (training, `rng` required) or centred in
    the video (evaluation).

    A video shorter than the span `(clip_len - 1) * stride + 1` starts at frame 0 and repeats its last
    frame for the indices past its end, so the clip still has `clip_len` frames.
    """
    _check_video(num_frames, fps)
    _check_positive("clip_len", clip_len)
    _check_positive("stride", stride)
    slack = num_frames - _span(clip_len, stride)  # how far the start can move
    if train:
        generator = _require_rng(rng)
        start = int(generator.integers(0, slack + 1)) if slack > 0 else 0
    else:
        start = max(slack, 0) // 2
    return _clip(_dense(start, num_frames, clip_len, stride), fps)


def temporal_views(
    num_frames: int,
    fps: float,
    num_clips: int,
    *,
    sampling: str,
    clip_len: int,
    stride: int = 1,
) -> list[ClipIndices]:
    """`num_clips` deterministic evaluation views of a video.

    "dense": clips whose starts are evenly spaced, the first starting at frame 0 and the last ending at
    the last frame; one clip is the centred clip. "uniform": TSN samplings of `clip_len` segments whose
    points sit at the fixed fraction `(k + 1/2) / num_clips` of every segment for view k; one view is
    the segment centres, as `uniform_indices(train=False)`. `stride` is used by "dense" only.
    """
    _check_sampling(sampling)
    _check_video(num_frames, fps)
    _check_positive("num_clips", num_clips)
    _check_positive("clip_len", clip_len)
    _check_positive("stride", stride)
    if sampling == "uniform":
        n, s, c = num_frames, clip_len, num_clips
        segment = np.arange(s, dtype=np.int64)  # (S,)
        # floor((k + (v + 1/2) / C) * N/S) for view v, in integers.
        return [_clip(((2 * (segment * c + v) + 1) * n) // (2 * s * c), fps) for v in range(c)]
    slack = num_frames - _span(clip_len, stride)
    if slack <= 0 or num_clips == 1:
        starts = [max(slack, 0) // 2] * num_clips
    else:
        # round(v * slack / (C - 1)), half up, in integers: first start 0, last start `slack`.
        starts = [
            (2 * v * slack + num_clips - 1) // (2 * (num_clips - 1)) for v in range(num_clips)
        ]
    return [_clip(_dense(start, num_frames, clip_len, stride), fps) for start in starts]


def sample_clip(
    num_frames: int,
    fps: float,
    *,
    sampling: str,
    clip_len: int,
    stride: int = 1,
    train: bool,
    rng: np.random.Generator | None = None,
) -> ClipIndices:
    """One clip of `clip_len` frames by `sampling`: "uniform" (`clip_len` TSN segments; `stride` is
    not used) or "dense" (`clip_len` frames `stride` apart)."""
    _check_sampling(sampling)
    _check_positive("clip_len", clip_len)
    if sampling == "uniform":
        return uniform_indices(num_frames, fps, clip_len, train=train, rng=rng)
    return dense_indices(num_frames, fps, clip_len, stride, train=train, rng=rng)


def _span(clip_len: int, stride: int) -> int:
    """Frames covered by `clip_len` frames `stride` apart, first to last inclusive."""
    return (clip_len - 1) * stride + 1


def _dense(start: int, num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    """`start + stride * i` for i < clip_len, clamped to the last frame."""
    return np.minimum(start + stride * np.arange(clip_len, dtype=np.int64), num_frames - 1)


def _clip(indices: np.ndarray, fps: float) -> ClipIndices:
    as_ints = tuple(int(i) for i in indices)
    return ClipIndices(as_ints, as_ints[0] / fps, (as_ints[-1] + 1) / fps)


def _check_video(num_frames: int, fps: float) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}: the video has no frames")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a finite number > 0, got {fps}")


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _check_sampling(sampling: str) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")


def _require_rng(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is None:
        raise ValueError("train=True samples at random: pass rng=np.random.default_rng(seed)")
    return rng
