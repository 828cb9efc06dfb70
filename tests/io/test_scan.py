"""scan_video: a full decode that finds damaged frames and containers that over-promise."""

from __future__ import annotations

import pytest

from tubelet.io import VideoDecodeError, scan_video


def test_sound_videos_have_no_problems(sample_videos):
    for video in sample_videos.values():
        scan = scan_video(video.path)
        assert scan.problems() == [], video.path
        assert scan.indexed_frames == scan.decoded_frames == video.num_frames
        assert (scan.height, scan.width) == (48, 64)


def test_damaged_frame_is_missing(damaged_video):
    path, k, n = damaged_video
    scan = scan_video(path)
    assert scan.missing == (k,) and scan.header_frames == n and scan.decoded_frames == n - 1
    assert scan.problems() == [f"frames [{k}] of {n} do not decode (corrupt there)"]


def test_truncated_file_disagrees_with_its_container(truncated_video):
    path, decodable = truncated_video
    scan = scan_video(path)
    assert scan.header_frames == 48 and scan.indexed_frames == decodable
    assert scan.problems() == [
        f"the container lists 48 frames but holds {decodable} (truncated or damaged)"
    ]


@pytest.mark.parametrize("kind", ["missing", "empty", "random_bytes", "audio_only"])
def test_unreadable_files_raise(broken_files, kind):
    with pytest.raises(VideoDecodeError) as raised:
        scan_video(broken_files[kind])
    assert raised.value.path == str(broken_files[kind])
