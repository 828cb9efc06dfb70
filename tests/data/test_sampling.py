"""Properties of the frame-index samplers, checked over many random videos."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tubelet.data.sampling import (
    ClipIndices,
    dense_indices,
    sample_clip,
    temporal_views,
    uniform_indices,
)

CASES = 200


def random_cases(seed: int, max_frames: int = 300, max_len: int = 32):
    """(num_frames, fps, length, stride) tuples, including videos shorter than the clip."""
    rng = np.random.default_rng(seed)
    for _ in range(CASES):
        yield (
            int(rng.integers(1, max_frames)),
            float(rng.choice([1.0, 12.5, 24.0, 29.97, 60.0])),
            int(rng.integers(1, max_len)),
            int(rng.integers(1, 5)),
        )


def check_clip(clip: ClipIndices, num_frames: int, fps: float, length: int) -> np.ndarray:
    """Indices in range, sorted, `length` of them, and times that match; returns the indices."""
    indices = np.array(clip.indices)
    assert isinstance(clip, ClipIndices)
    assert all(type(i) is int for i in clip.indices)
    assert len(indices) == length
    assert indices.min() >= 0 and indices.max() < num_frames
    assert np.all(np.diff(indices) >= 0)
    assert clip.start_s == pytest.approx(indices[0] / fps)
    assert clip.end_s == pytest.approx((indices[-1] + 1) / fps)
    return indices


def segment_bounds(num_frames: int, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last frame that overlap each segment [k*N/S, (k+1)*N/S)."""
    k = np.arange(num_segments)
    first = (k * num_frames) // num_segments
    last = -((-(k + 1) * num_frames) // num_segments) - 1  # ceil((k+1)*N/S) - 1
    return first, last


def exact_floor(x: Fraction) -> int:
    return x.numerator // x.denominator


# --- uniform (TSN) --------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
def test_uniform_indices_fall_in_their_segments(train):
    rng = np.random.default_rng(1)
    for num_frames, fps, segments, _ in random_cases(seed=0):
        clip = uniform_indices(num_frames, fps, segments, train=train, rng=rng)
        indices = check_clip(clip, num_frames, fps, segments)
        first, last = segment_bounds(num_frames, segments)
        assert np.all(indices >= first) and np.all(indices <= last)


def test_uniform_eval_takes_segment_centres():
    for num_frames, fps, segments, _ in random_cases(seed=2):
        clip = uniform_indices(num_frames, fps, segments, train=False)
        expected = [
            exact_floor((k + Fraction(1, 2)) * Fraction(num_frames, segments))
            for k in range(segments)
        ]
        assert list(clip.indices) == expected


def test_uniform_known_values():
    assert uniform_indices(10, 10.0, 5, train=False).indices == (1, 3, 5, 7, 9)
    clip = uniform_indices(3, 1.0, 4, train=False)
    assert clip.indices == (0, 1, 1, 2)
    assert (clip.start_s, clip.end_s) == (0.0, 3.0)


@pytest.mark.parametrize("train", [True, False])
def test_uniform_short_video_repeats_and_covers_every_frame(train):
    rng = np.random.default_rng(3)
    for num_frames in range(1, 16):
        for segments in range(num_frames, 33):
            clip = uniform_indices(num_frames, 25.0, segments, train=train, rng=rng)
            check_clip(clip, num_frames, 25.0, segments)
            assert set(clip.indices) == set(range(num_frames))


def test_uniform_train_reaches_every_frame_of_a_segment():
    rng = np.random.default_rng(4)
    seen = np.array([uniform_indices(12, 30.0, 3, train=True, rng=rng).indices for _ in range(300)])
    for k in range(3):
        assert set(seen[:, k]) == set(range(4 * k, 4 * k + 4))


# --- dense ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
def test_dense_indices_are_consecutive_at_stride(train):
    rng = np.random.default_rng(5)
    for num_frames, fps, clip_len, stride in random_cases(seed=6, max_len=20):
        clip = dense_indices(num_frames, fps, clip_len, stride, train=train, rng=rng)
        indices = check_clip(clip, num_frames, fps, clip_len)
        span = (clip_len - 1) * stride + 1
        if num_frames >= span:
            assert np.all(np.diff(indices) == stride)
            assert indices[-1] - indices[0] + 1 == span
            if not train:
                assert indices[0] == (num_frames - span) // 2
        else:
            expected = np.minimum(np.arange(clip_len) * stride, num_frames - 1)
            np.testing.assert_array_equal(indices, expected)


def test_dense_eval_is_centred():
    assert dense_indices(10, 5.0, 4, 2, train=False).indices == (1, 3, 5, 7)
    assert dense_indices(11, 5.0, 4, 2, train=False).indices == (2, 4, 6, 8)


def test_dense_short_video_repeats_the_last_frame():
    clip = dense_indices(5, 10.0, 4, 2, train=True, rng=np.random.default_rng(0))
    assert clip.indices == (0, 2, 4, 4)
    assert (clip.start_s, clip.end_s) == (0.0, 0.5)


def test_dense_train_starts_anywhere_the_clip_fits():
    rng = np.random.default_rng(7)
    starts = {dense_indices(20, 30.0, 4, 3, train=True, rng=rng).indices[0] for _ in range(400)}
    assert starts == set(range(20 - 10 + 1))


# --- shared behaviour -----------------------------------------------------------------------------


@pytest.mark.parametrize("sampling", ["uniform", "dense"])
def test_same_seed_gives_same_indices(sampling):
    for num_frames, fps, clip_len, stride in random_cases(seed=8):
        kwargs = dict(sampling=sampling, clip_len=clip_len, stride=stride, train=True)
        a = sample_clip(num_frames, fps, rng=np.random.default_rng(num_frames), **kwargs)
        b = sample_clip(num_frames, fps, rng=np.random.default_rng(num_frames), **kwargs)
        assert a == b


@pytest.mark.parametrize("sampling", ["uniform", "dense"])
def test_train_sampling_varies_with_the_rng(sampling):
    clips = {
        sample_clip(100, 25.0, sampling=sampling, clip_len=8, train=True, rng=rng).indices
        for rng in (np.random.default_rng(seed) for seed in range(20))
    }
    assert len(clips) > 10


def test_sample_clip_dispatches():
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    assert sample_clip(
        90, 30.0, sampling="uniform", clip_len=8, train=True, rng=rng_a
    ) == uniform_indices(90, 30.0, 8, train=True, rng=rng_b)
    assert sample_clip(90, 30.0, sampling="dense", clip_len=8, stride=3, train=False) == (
        dense_indices(90, 30.0, 8, 3, train=False)
    )


@pytest.mark.parametrize("sampler", [uniform_indices, dense_indices])
def test_train_needs_an_rng(sampler):
    with pytest.raises(ValueError, match="rng"):
        sampler(50, 25.0, 8, train=True)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: uniform_indices(0, 25.0, 8, train=False), "num_frames"),
        (lambda: uniform_indices(10, 0.0, 8, train=False), "fps"),
        (lambda: uniform_indices(10, float("nan"), 8, train=False), "fps"),
        (lambda: uniform_indices(10, 25.0, 0, train=False), "num_segments"),
        (lambda: dense_indices(10, 25.0, 0, train=False), "clip_len"),
        (lambda: dense_indices(10, 25.0, 4, 0, train=False), "stride"),
        (lambda: dense_indices(10, -1.0, 4, train=False), "fps"),
        (lambda: temporal_views(10, 25.0, 0, sampling="dense", clip_len=4), "num_clips"),
        (lambda: temporal_views(10, 25.0, 2, sampling="dense", clip_len=4, stride=0), "stride"),
        (lambda: sample_clip(10, 25.0, sampling="uniform", clip_len=0, train=False), "clip_len"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call", [sample_clip, temporal_views])
def test_unknown_sampling_names_the_choices(call):
    kwargs = dict(sampling="random", clip_len=4)
    with pytest.raises(ValueError, match="uniform.*dense"):
        if call is sample_clip:
            call(10, 25.0, train=False, **kwargs)
        else:
            call(10, 25.0, 2, **kwargs)


# --- evaluation views -----------------------------------------------------------------------------


def test_dense_views_cover_the_video_evenly():
    rng = np.random.default_rng(10)
    for num_frames, fps, clip_len, stride in random_cases(seed=11, max_len=16):
        num_clips = int(rng.integers(1, 8))
        views = temporal_views(
            num_frames, fps, num_clips, sampling="dense", clip_len=clip_len, stride=stride
        )
        assert len(views) == num_clips
        for view in views:
            check_clip(view, num_frames, fps, clip_len)
        span = (clip_len - 1) * stride + 1
        starts = np.array([view.indices[0] for view in views])
        centred = dense_indices(num_frames, fps, clip_len, stride, train=False)
        if num_frames < span:
            assert all(view == centred for view in views)
        elif num_clips == 1:
            assert views[0] == centred
        else:
            assert starts[0] == 0 and views[-1].indices[-1] == num_frames - 1
            gaps = np.diff(starts)
            assert gaps.min() >= 0 and gaps.max() - gaps.min() <= 1  # evenly spaced


def test_uniform_views_use_fixed_offsets_inside_the_segments():
    rng = np.random.default_rng(12)
    for num_frames, fps, segments, _ in random_cases(seed=13):
        num_clips = int(rng.integers(1, 6))
        views = temporal_views(num_frames, fps, num_clips, sampling="uniform", clip_len=segments)
        assert len(views) == num_clips
        first, last = segment_bounds(num_frames, segments)
        for v, view in enumerate(views):
            indices = check_clip(view, num_frames, fps, segments)
            assert np.all(indices >= first) and np.all(indices <= last)
            offset = Fraction(2 * v + 1, 2 * num_clips)
            expected = [
                exact_floor((k + offset) * Fraction(num_frames, segments)) for k in range(segments)
            ]
            assert list(view.indices) == expected
        if num_clips == 1:
            assert views[0] == uniform_indices(num_frames, fps, segments, train=False)


def test_uniform_views_differ_when_segments_are_long():
    views = temporal_views(120, 30.0, 3, sampling="uniform", clip_len=4)
    assert [view.indices for view in views] == [
        (5, 35, 65, 95),
        (15, 45, 75, 105),
        (25, 55, 85, 115),
    ]


@pytest.mark.parametrize("sampling", ["uniform", "dense"])
def test_views_are_deterministic(sampling):
    a = temporal_views(77, 24.0, 5, sampling=sampling, clip_len=8, stride=2)
    b = temporal_views(77, 24.0, 5, sampling=sampling, clip_len=8, stride=2)
    assert a == b


def test_dense_views_known_values():
    views = temporal_views(20, 10.0, 3, sampling="dense", clip_len=4, stride=2)
    assert [view.indices for view in views] == [(0, 2, 4, 6), (7, 9, 11, 13), (13, 15, 17, 19)]
    assert views[-1].end_s == 2.0
