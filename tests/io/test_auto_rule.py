"""`backend="auto"`: the measured rule (`auto_backend`) branch by branch, and the backend it opens
for every kind of file (benchmarks/decoder_rule.py measures the rule)."""

from __future__ import annotations

import pytest

from tubelet.io import VideoReader
from tubelet.io._torchcodec import load_error
from tubelet.io.reader import auto_backend
from tubelet.io.scan import scan_video

KINDS = ["h264_bframes", "h264_all_keyframes", "h264_gop12", "h264_vfr_mkv", "hevc_mkv"]
KINDS += ["vp9_webm", "mpeg4_avi", "av1_mkv", "h264_mov"]


@pytest.mark.parametrize(
    ("resized", "loads", "expected"),
    [
        (True, True, "pyav"),  # resized in the decoder: PyAV, whatever the codec
        (False, True, "torchcodec"),  # full frames: torchcodec
        (True, False, "pyav"),  # no torchcodec here: PyAV decodes everything
        (False, False, "pyav"),
    ],
)
def test_rule(resized, loads, expected):
    assert auto_backend(resized=resized, torchcodec_loads=loads) == expected


@pytest.mark.parametrize("name", KINDS)
def test_auto_opens_the_backend_the_rule_picks(sample_videos, name):
    if name not in sample_videos:
        pytest.skip(f"this PyAV build has no encoder for {name}")
    path, loads = sample_videos[name].path, load_error() is None
    with VideoReader(path, "auto", short_side=32) as resized:
        assert resized.backend == auto_backend(resized=True, torchcodec_loads=loads) == "pyav"
        with VideoReader(path, "pyav", short_side=32) as pyav:
            assert resized.get_frames([5, 0]).data.equal(pyav.get_frames([5, 0]).data)
    with VideoReader(path, "auto") as full:  # MPEG-4 part 2: PyAV (TORCHCODEC_MISSEEKS)
        rule = auto_backend(resized=False, torchcodec_loads=loads)
        assert full.backend == ("pyav" if name == "mpeg4_avi" else rule)
        assert rule == ("torchcodec" if loads else "pyav")


def test_auto_without_torchcodec_opens_pyav(sample_videos, monkeypatch):
    monkeypatch.setattr("tubelet.io.reader.load_error", lambda: "torchcodec does not import")
    with VideoReader(sample_videos["h264_gop12"].path) as reader:
        assert reader.backend == "pyav"


@pytest.mark.parametrize("video", ["mpeg4", "bf2_g12", "bf3_g250", "bf2_g30"])
def test_auto_reads_b_frames_in_avi_frame_exactly_with_pyav(
    video, mpeg4_bframes_avi, h264_bframes_avis, frame_index
):
    path = mpeg4_bframes_avi if video == "mpeg4" else h264_bframes_avis[video]
    indices = [5, 20, 40, 13, 47, 0]
    for short_side in (None, 24):
        with VideoReader(path, short_side=short_side) as reader:
            assert reader.backend == "pyav" and reader.num_frames == 48
            frames = reader.get_frames(indices).data.numpy()
        if short_side is None:
            assert [frame_index(image) for image in frames] == indices
    scan = scan_video(path)
    assert scan.indexed_frames == 48 and scan.missing == ()
