"""VideoReader: frame-exact random access, metadata, bad input, pickling, forked workers."""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tubelet.data.transforms import short_side_resize
from tubelet.io import VideoDecodeError, VideoReader
from tubelet.io._pyav import PyAVDecoder
from tubelet.io._torchcodec import load_error

VIDEO_NAMES = [
    "h264_bframes",
    "h264_all_keyframes",
    "h264_gop12",
    "h264_vfr_mkv",
    "hevc_mkv",
    "vp9_webm",
    "mpeg4_avi",
    "av1_mkv",
    "h264_mov",
]
TORCHCODEC = pytest.param(
    "torchcodec",
    marks=pytest.mark.skipif(load_error() is not None, reason=str(load_error())),
)
BACKENDS = ["pyav", TORCHCODEC]
PATTERNS = {
    "sorted": [0, 5, 11, 12, 30, 47],
    "unsorted": [30, 2, 47, 12, 0, 13],
    "repeated": [7, 7, 3, 7, 46, 3],
    "backwards": list(range(47, -1, -5)),
    "every_frame": list(range(48)),
}
HAS_FFMPEG = shutil.which("ffmpeg") is not None
FPS = 24  # frame rate of the sample videos (conftest.py)


def sequential_frames(path: Path) -> Iterator[av.VideoFrame]:
    """Every frame of the first video stream, decoded in order with PyAV.

    Packets the demuxer marks corrupt (a truncated file's cut-off last packet) are not decoded;
    packets the decoder rejects give no frame (as the ffmpeg program skips them).
    """
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.is_corrupt:
                continue
            try:
                yield from packet.decode()
            except av.InvalidDataError:
                continue


def sequential_decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame in order: uint8 (T, H, W, 3) by PyAV's own RGB conversion, and times (T,) in s."""
    frames = list(sequential_frames(path))
    images = [frame.to_ndarray(format="rgb24") for frame in frames]
    return np.stack(images), np.array([frame.time for frame in frames])


def rgb24_reference(path: Path, height: int, width: int) -> np.ndarray:
    """Every frame as `ffmpeg -pix_fmt rgb24` decodes it: uint8 (T, H, W, 3), display rotation
    applied. Where the program is not installed: PyAV's sequential decode through the filter the
    program appends for `-pix_fmt` (`format=rgb24`), which converts 10-bit, grey and odd sizes as
    it does (PyAV's own `to_ndarray` conversion differs there), without rotation."""
    if HAS_FFMPEG:
        command = ["ffmpeg", "-v", "quiet", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24"]
        command += ["-vsync", "passthrough", "-"]
        raw = subprocess.run(command, capture_output=True, check=True, timeout=60).stdout
        return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)
    images = []
    for frame in sequential_frames(path):
        graph = av.filter.Graph()
        source = graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=frame.time_base
        )
        graph.link_nodes(source, graph.add("format", "pix_fmts=rgb24"), graph.add("buffersink"))
        graph.configure()
        graph.vpush(frame)
        images.append(graph.vpull().to_ndarray())
    return np.stack(images)


@pytest.fixture(scope="session")
def reference(sample_videos) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Sequential decode of each sample video, by name."""
    return {name: sequential_decode(video.path) for name, video in sample_videos.items()}


def video_path(sample_videos, name: str) -> Path:
    if name not in sample_videos:
        pytest.skip(f"this PyAV build has no encoder for {name}")
    return sample_videos[name].path


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_get_frames_equals_sequential_decode(sample_videos, reference, name, backend, pattern):
    indices = PATTERNS[pattern]
    path = video_path(sample_videos, name)
    images, times = reference[name]
    with VideoReader(path, backend=backend) as reader:
        frames = reader.get_frames(indices)
    assert frames.data.dtype == torch.uint8 and frames.pts_s.dtype == torch.float64
    assert torch.equal(frames.data, torch.from_numpy(images[indices]))
    torch.testing.assert_close(frames.pts_s, torch.from_numpy(times[indices]), rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_every_frame_shows_its_index(sample_videos, frame_index, name, backend):
    with VideoReader(video_path(sample_videos, name), backend=backend) as reader:
        frames = reader.get_frames(range(reader.num_frames)).data.numpy()
    assert [frame_index(image) for image in frames] == list(range(len(frames)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_get_frames_equals_ffmpeg_program(sample_videos, name, backend):
    indices = PATTERNS["unsorted"] + PATTERNS["repeated"]
    with VideoReader(video_path(sample_videos, name), backend=backend) as reader:
        frames = reader.get_frames(indices)
        expected = rgb24_reference(reader.path, reader.height, reader.width)
    assert len(expected) == reader.num_frames
    assert torch.equal(frames.data, torch.from_numpy(expected[indices]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_metadata_describes_the_frames(sample_videos, name, backend):
    video = sample_videos.get(name) or pytest.skip(f"no encoder for {name}")
    with VideoReader(video.path, backend=backend) as reader:
        assert reader.backend == backend
        assert (reader.num_frames, reader.height, reader.width) == (video.num_frames, 48, 64)
        assert reader.duration == pytest.approx(video.duration, abs=2e-3)
        assert reader.fps == pytest.approx(video.num_frames / video.duration, rel=2e-3)
        pts_s = reader.get_frames(range(reader.num_frames)).pts_s
    # Matroska and WebM store milliseconds, so 1/24 s is rounded there.
    torch.testing.assert_close(
        pts_s, torch.tensor(video.pts_s, dtype=torch.float64), atol=6e-4, rtol=0
    )


def test_backends_agree_on_metadata(sample_videos):
    if load_error() is not None:
        pytest.skip(load_error())
    for video in sample_videos.values():
        with VideoReader(video.path, "pyav") as pyav, VideoReader(video.path, "torchcodec") as tc:
            for name in ("num_frames", "width", "height"):
                assert getattr(pyav, name) == getattr(tc, name), (video.path, name)
            assert pyav.fps == pytest.approx(tc.fps, rel=1e-9), video.path
            assert pyav.duration == pytest.approx(tc.duration, rel=1e-9), video.path


def test_auto_picks_torchcodec_when_it_loads(sample_videos):
    with VideoReader(sample_videos["h264_bframes"].path) as reader:
        assert reader.backend == ("torchcodec" if load_error() is None else "pyav")


def test_unknown_backend_names_the_choices(sample_videos):
    with pytest.raises(ValueError, match=r"'ffmpeg'.*'auto', 'torchcodec', 'pyav'"):
        VideoReader(sample_videos["h264_bframes"].path, backend="ffmpeg")


@pytest.mark.parametrize("num_threads", [-1, 1.5, True])
def test_bad_thread_count_raises(sample_videos, num_threads):
    with pytest.raises(ValueError, match="num_threads"):
        VideoReader(sample_videos["h264_bframes"].path, num_threads=num_threads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_decode_the_same_frames(sample_videos, reference, backend):
    with VideoReader(sample_videos["h264_gop12"].path, backend, num_threads=2) as reader:
        frames = reader.get_frames(PATTERNS["unsorted"])
    assert torch.equal(
        frames.data, torch.from_numpy(reference["h264_gop12"][0][PATTERNS["unsorted"]])
    )


BROKEN_REASONS = {
    "missing": "file does not exist",
    "empty": "file is empty",
    "random_bytes": "not a video container",
    "cut_before_index": "not a video container",
    "no_complete_frame": "truncated",
    "audio_only": "no video stream",
    "folder": "is a folder",
}


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("kind", BROKEN_REASONS)
def test_unreadable_input_raises_with_path_and_reason(broken_files, kind, backend):
    path = broken_files[kind]
    with pytest.raises(VideoDecodeError, match=BROKEN_REASONS[kind]) as raised:
        VideoReader(path, backend=backend)
    assert raised.value.path == str(path) and str(path) in str(raised.value)


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Run the block as user `nobody` when we are root, for whom file modes do not apply."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_file_without_read_permission_raises(sample_videos, backend):
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "locked.mp4"
        shutil.copy(sample_videos["h264_bframes"].path, path)
        path.chmod(0)
        with unprivileged(), pytest.raises(VideoDecodeError, match="no read permission"):
            VideoReader(path, backend=backend)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_truncated_file_opens_with_the_frames_that_decode(truncated_video, frame_index, backend):
    path, decodable = truncated_video
    with VideoReader(path, backend=backend) as reader:
        assert reader.backend == "pyav"
        assert reader.num_frames == decodable
        frames = reader.get_frames(list(range(decodable))[::-1]).data.numpy()[::-1]
    assert [frame_index(image) for image in frames] == list(range(decodable))
    assert np.array_equal(frames, sequential_decode(path)[0])
    if HAS_FFMPEG:
        assert np.array_equal(frames, rgb24_reference(path, 48, 64))


@pytest.mark.skipif(load_error() is not None, reason=str(load_error()))
def test_truncated_file_refused_by_torchcodec_alone(truncated_video):
    path, _ = truncated_video
    with pytest.raises(VideoDecodeError, match=r"truncated.*backend='auto' or 'pyav'"):
        VideoReader(path, backend="torchcodec")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [-1, 48, 1000])
def test_out_of_range_index_raises(sample_videos, backend, bad):
    reader = VideoReader(sample_videos["h264_gop12"].path, backend=backend)
    with reader, pytest.raises(IndexError, match=rf"frame index {bad} .*48 frames"):
        reader.get_frames([0, bad])


@pytest.mark.parametrize("indices", [[1.5], torch.tensor([0.0]), [True], [[1, 2]]])
def test_non_integer_indices_raise(sample_videos, indices):
    reader = VideoReader(sample_videos["h264_gop12"].path)
    with reader, pytest.raises(TypeError, match="integers"):
        reader.get_frames(indices)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_array_and_empty_indices(sample_videos, reference, backend):
    images = torch.from_numpy(reference["h264_gop12"][0])
    with VideoReader(sample_videos["h264_gop12"].path, backend=backend) as reader:
        assert torch.equal(reader.get_frames(torch.tensor([9, 2])).data, images[[9, 2]])
        assert torch.equal(reader.get_frames(np.array([9, 2])).data, images[[9, 2]])
        empty = reader.get_frames([])
    assert empty.data.shape == (0, 48, 64, 3) and empty.pts_s.shape == (0,)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_pickled_reader_reopens_where_it_is_used(sample_videos, reference, backend, tmp_path):
    path = tmp_path / "clip.mp4"
    shutil.copy(sample_videos["h264_gop12"].path, path)
    reader = VideoReader(path, backend=backend)
    copy = pickle.loads(pickle.dumps(reader))
    assert torch.equal(
        copy.get_frames([40, 3]).data, torch.from_numpy(reference["h264_gop12"][0][[40, 3]])
    )
    assert copy.backend == reader.backend

    unopened = pickle.loads(pickle.dumps(reader))  # opens on first use, not when unpickled
    path.unlink()
    with pytest.raises(VideoDecodeError, match="does not exist"):
        unopened.get_frames([0])
    reader.close()


class _FramesOf(Dataset):
    """Frame i of one reader that was opened in the parent process."""

    def __init__(self, reader: VideoReader) -> None:
        self.reader = reader

    def __len__(self) -> int:
        return self.reader.num_frames

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.reader.get_frames([index]).data[0]


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_forked_workers_reopen_and_decode_the_right_frames(
    sample_videos, reference, backend, num_threads
):
    reader = VideoReader(sample_videos["h264_gop12"].path, backend, num_threads)
    reader.get_frames([20])  # leave the parent's decoder mid-stream before forking
    loader = DataLoader(
        _FramesOf(reader),
        batch_size=6,
        num_workers=2,
        multiprocessing_context="fork",
        timeout=60,  # a worker stuck on the parent's decoder fails the test instead of hanging
    )
    frames = torch.cat(list(loader))
    assert torch.equal(frames, torch.from_numpy(reference["h264_gop12"][0]))
    assert torch.equal(reader.get_frames([21]).data[0], frames[21])  # the parent's still works
    reader.close()


def test_closed_reader_refuses_to_decode(sample_videos):
    with VideoReader(sample_videos["h264_gop12"].path) as reader:
        reader.get_frames([0])
    with pytest.raises(ValueError, match="closed"):
        reader.get_frames([0])


def _count_pyav_work(monkeypatch) -> dict[str, int]:
    """Count seeks and decoded frames of every PyAVDecoder from now on."""
    counts = {"seeks": 0, "frames": 0}
    seek, decode_forward = PyAVDecoder._seek, PyAVDecoder._decode_forward

    def counted_seek(self, *args):
        counts["seeks"] += 1
        return seek(self, *args)

    def counted_decode_forward(self, *args):
        for item in decode_forward(self, *args):
            counts["frames"] += 1
            yield item

    monkeypatch.setattr(PyAVDecoder, "_seek", counted_seek)
    monkeypatch.setattr(PyAVDecoder, "_decode_forward", counted_decode_forward)
    return counts


def keyframes(path: Path) -> list[int]:
    """Display-order indices of the keyframes of a video, from its packets."""
    with av.open(str(path)) as container:
        packets = sorted((p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size)
    return [i for i, (_, is_key) in enumerate(packets) if is_key]


@pytest.mark.parametrize(
    ("name", "pick", "seeks", "frames"),
    [
        ("h264_all_keyframes", lambda k: [k[40]], 1, 1),
        ("h264_gop12", lambda k: [k[-2] + 3], 1, 4),  # keyframe, then 3 more
        ("h264_gop12", lambda k: [k[2] + 1, k[2] + 5, k[2] + 3], 1, 6),  # one pass, one GOP
        ("h264_gop12", lambda k: [k[3] + 1, k[0] + 2], 2, 3 + 2),  # two GOPs, two seeks
    ],
)
def test_pyav_decodes_only_what_it_needs(sample_videos, monkeypatch, name, pick, seeks, frames):
    path = sample_videos[name].path
    indices = pick(keyframes(path))
    with VideoReader(path, backend="pyav") as reader:
        counts = _count_pyav_work(monkeypatch)
        reader.get_frames(indices)
    assert counts == {"seeks": seeks, "frames": frames}


@pytest.mark.parametrize("name", VIDEO_NAMES)
def test_pyav_seek_lands_on_each_keyframe(sample_videos, monkeypatch, name):
    path = video_path(sample_videos, name)
    with VideoReader(path, backend="pyav") as reader:
        counts = _count_pyav_work(monkeypatch)
        for key in keyframes(path)[::-1]:  # backwards: every one is a fresh seek
            reader.get_frames([key])
            assert counts == {"seeks": 1, "frames": 1}, key
            counts.update(seeks=0, frames=0)


def test_get_frames_at_picks_the_frame_shown_on_variable_frame_rate(sample_videos, reference):
    path = video_path(sample_videos, "h264_vfr_mkv")
    images, times = reference["h264_vfr_mkv"]  # pts steps of 30, 50, 41 ms
    mids = (times[:-1] + times[1:]) / 2
    just_before = times[1:] - 1e-4
    seconds = np.concatenate([times, mids, just_before, [times[0] - 1.0, times[-1] + 0.02]])
    expected = np.searchsorted(times, seconds, side="right") - 1  # last frame with pts <= t
    expected[seconds < times[0]] = 0  # before the first frame: the first frame
    for backend in ("pyav", TORCHCODEC.values[0]):
        if backend == "torchcodec" and load_error() is not None:
            continue
        with VideoReader(path, backend=backend) as reader:
            assert reader.start == pytest.approx(times[0])
            frames = reader.get_frames_at(torch.from_numpy(seconds[::-1].copy()))
        assert torch.equal(frames.data, torch.from_numpy(images[expected[::-1]])), backend
        torch.testing.assert_close(
            frames.pts_s, torch.from_numpy(times[expected[::-1]]), rtol=0, atol=1e-9
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_get_frames_at_past_the_end_names_the_duration(sample_videos, backend):
    with VideoReader(sample_videos["h264_gop12"].path, backend=backend) as reader:
        end = reader.start + reader.duration
        assert reader.get_frames_at([end - 1e-3]).pts_s.item() == pytest.approx(47 / FPS)
        with pytest.raises(IndexError, match=rf"past the end.*duration {reader.duration:.6g} s"):
            reader.get_frames_at([0.0, end])
        with pytest.raises(IndexError, match="nan s is past the end"):
            reader.get_frames_at([float("nan")])
        with pytest.raises(TypeError, match="seconds"):
            reader.get_frames_at(["1.0"])
        assert reader.get_frames_at([]).data.shape == (0, 48, 64, 3)


@pytest.mark.skipif(
    not HAS_FFMPEG, reason="compares with the ffmpeg program (apt-get install ffmpeg)"
)
def test_reference_without_the_ffmpeg_program_equals_it(format_videos, sample_videos):
    paths = [*format_videos.values(), *(video.path for video in sample_videos.values())]
    for path in paths:
        with VideoReader(path, backend="pyav") as reader:
            size = reader.height, reader.width
        expected = rgb24_reference(path, *size)
        with mock.patch.dict(globals(), HAS_FFMPEG=False):  # the fallback
            assert np.array_equal(rgb24_reference(path, *size), expected), path


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name", ["odd_size_yuv420", "odd_size_yuv444", "h264_10bit", "hevc_10bit", "grey"]
)
def test_pixel_formats_come_out_as_ffmpeg_rgb24(format_videos, name, backend):
    if name not in format_videos:
        pytest.skip(f"this PyAV build has no encoder for {name}")
    with VideoReader(format_videos[name], backend=backend) as reader:
        frames = reader.get_frames([5, 0, 7, 5]).data
        expected = rgb24_reference(reader.path, reader.height, reader.width)
    assert frames.dtype == torch.uint8 and frames.shape[1:] == expected.shape[1:]
    assert expected.shape[1:3] == ((47, 63) if "odd" in name or name == "grey" else (48, 64))
    assert torch.equal(frames, torch.from_numpy(expected[[5, 0, 7, 5]]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotation_metadata_is_applied(rotated_videos, degrees, backend):
    upright = sequential_decode(rotated_videos[degrees])[0]  # (T, 48, 64, 3) as coded
    shown = np.rot90(upright, degrees // 90, axes=(1, 2))  # counter-clockwise quarter turns
    with VideoReader(rotated_videos[degrees], backend=backend) as reader:
        assert (reader.height, reader.width) == shown.shape[1:3]
        frames = reader.get_frames([6, 1, 2]).data
    assert torch.equal(frames, torch.from_numpy(shown[[6, 1, 2]].copy()))
    if HAS_FFMPEG:  # the ffmpeg program rotates by the same metadata
        assert np.array_equal(shown, rgb24_reference(rotated_videos[degrees], *shown.shape[1:3]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_damaged_packet_names_the_missing_frame_and_the_rest_decode(damaged_video, backend):
    path, k, n = damaged_video
    images = sequential_decode(path)[0]  # the decoder drops the damaged packet's frame
    assert len(images) == n - 1
    if HAS_FFMPEG:
        assert np.array_equal(images, rgb24_reference(path, 48, 64))
    with VideoReader(path, backend=backend) as reader:
        assert reader.num_frames == n  # the packet is intact in the container
        others = [i for i in range(n) if i != k][::-1]
        assert torch.equal(reader.get_frames(others).data, torch.from_numpy(images[::-1].copy()))
        with pytest.raises(VideoDecodeError, match=rf"frames \[{k}\] of {n} did not decode"):
            reader.get_frames([0, k + 1, k, k - 1, k])
        assert torch.equal(reader.get_frames([k - 1]).data[0], torch.from_numpy(images[k - 1]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "short_side"), [("h264_gop12", 32), ("h264_bframes", 96)])
def test_short_side_resizes_in_the_decoder(sample_videos, reference, name, short_side, backend):
    indices = [30, 2, 47, 2]
    expected = short_side_resize(torch.from_numpy(reference[name][0][indices]), short_side)
    with VideoReader(sample_videos[name].path, backend, short_side=short_side) as reader:
        assert (reader.height, reader.width) == expected.shape[1:3]
        frames = reader.get_frames(indices).data
        copy = pickle.loads(pickle.dumps(reader))
    assert frames.shape == expected.shape
    difference = (frames.float() - expected.float()).abs()
    assert difference.mean() < 1 and torch.quantile(difference.flatten(), 0.99) < 8
    assert copy.short_side == short_side and copy.get_frames([2]).data.shape == frames[:1].shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_side_follows_rotation(rotated_videos, backend):
    with VideoReader(rotated_videos[90], backend=backend, short_side=24) as reader:
        assert reader.get_frames([0]).data.shape == (1, 32, 24, 3)  # displayed 48 wide, 64 high


@pytest.mark.parametrize("short_side", [0, 1.5, True, "32"])
def test_bad_short_side_raises(sample_videos, short_side):
    with pytest.raises(ValueError, match="short_side"):
        VideoReader(sample_videos["h264_gop12"].path, short_side=short_side)


# --- skipping non-reference frames (PyAV, H.264) ------------------------------------------------

BFRAME_FRAMES = 72
# Three B-frames between references everywhere (b-adapt=0), the middle one a reference
# (b-pyramid): half the frames are non-reference B-frames that a pass skips.
BFRAME_OPTIONS = {"bf": "3", "g": "24", "x264-params": "b-adapt=0:b-pyramid=normal:scenecut=0"}
BFRAME_KINDS = {
    "closed_gop_mp4": ("mp4", BFRAME_OPTIONS),
    "open_gop_mkv": ("mkv", {**BFRAME_OPTIONS, "x264-params": "b-adapt=0:open-gop=1:scenecut=0"}),
}


@pytest.fixture(scope="module")
def bframe_videos(tmp_path_factory) -> dict[str, Path]:
    """H.264 files full of non-reference B-frames: smooth moving content (which x264 codes with
    B-frames; every frame differs) and frame i's index in 8 binary blocks on the top rows."""
    folder = tmp_path_factory.mktemp("bframes")
    height, width = 48, 64  # the width `frame_index` reads
    y, x = np.mgrid[:height, :width]
    videos = {}
    for name, (suffix, options) in BFRAME_KINDS.items():
        videos[name] = folder / f"{name}.{suffix}"
        with av.open(str(videos[name]), mode="w") as container:
            stream = container.add_stream("libx264", rate=FPS, options=options)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            for i in range(BFRAME_FRAMES):
                image = np.zeros((height, width, 3), dtype=np.uint8)
                image[..., 0] = 128 + 100 * np.sin((x + 3 * i) / 9)  # (H, W) moving waves
                image[..., 1] = 128 + 100 * np.cos((y - 2 * i) / 7)
                image[..., 2] = (x + y + 5 * i) % 256
                image[:16] = 0
                for bit in range(8):
                    if i >> bit & 1:
                        image[:16, 8 * bit : 8 * bit + 8] = 255
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return videos


def reference_frames(path: Path) -> set[int]:
    """Display indices of the frames a plain PyAV decode with skip_frame NONREF still yields."""
    with av.open(str(path)) as container:
        packets = sorted(p.pts for p in container.demux(video=0) if p.size)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        return {packets.index(frame.pts) for frame in container.decode(stream)}


SKIP_PATTERNS = {
    "sparse": [5, 29, 53, 70],
    "unsorted": [53, 6, 31, 7, 70, 1],
    "repeated": [9, 9, 2, 9, 66, 2],
    "backwards": list(range(71, -1, -7)),
}


@pytest.mark.parametrize("num_threads", [1, 3])
@pytest.mark.parametrize("name", BFRAME_KINDS)
def test_pyav_skipping_keeps_frames_equal_to_sequential_decode(
    bframe_videos, frame_index, name, num_threads
):
    path = bframe_videos[name]
    images = sequential_decode(path)[0]
    assert [frame_index(image) for image in images] == list(range(BFRAME_FRAMES))
    non_reference = set(range(BFRAME_FRAMES)) - reference_frames(path)
    assert len(non_reference) >= BFRAME_FRAMES // 3  # the file tests what it should
    decoder = PyAVDecoder(path, num_threads)
    assert decoder._skips_nonref
    patterns = [*SKIP_PATTERNS.values(), *([i] for i in range(BFRAME_FRAMES))]
    patterns += [[i, i + 1] for i in range(BFRAME_FRAMES - 1)]  # each frame after its neighbour
    for indices in patterns:
        frames = decoder.decode(indices)[0].numpy()
        assert np.array_equal(frames, images[indices]), indices
    decoder.close()


@pytest.mark.parametrize("name", BFRAME_KINDS)
def test_pyav_skips_the_non_reference_frames_it_does_not_return(bframe_videos, monkeypatch, name):
    path = bframe_videos[name]
    references = reference_frames(path)
    key = keyframes(path)[1]
    with VideoReader(path, backend="pyav") as reader:
        counts = _count_pyav_work(monkeypatch)
        for target in range(key + 1, key + 9):
            reader.get_frames([target])
            # The pass starts at `key` and stops at `target`: its reference frames, and it.
            decoded = len({i for i in references if key <= i < target} | {target})
            assert counts == {"seeks": 1, "frames": decoded}, target
            assert decoded < target - key + 1 or target - key < 2
            counts.update(seeks=0, frames=0)


def test_pyav_decodes_every_frame_when_a_skipping_pass_meets_an_unindexed_frame(bframe_videos):
    path = bframe_videos["closed_gop_mp4"]
    images = sequential_decode(path)[0]
    decoder = PyAVDecoder(path, 1)
    del decoder._index_of[int(decoder._frame_pts[12])]  # as if frame 12 came out without its pts
    frames = decoder.decode([14, 3])[0].numpy()
    assert not decoder._skips_nonref  # the pass could not name frame 12: it decoded all frames
    assert np.array_equal(frames, images[[14, 3]])
    decoder.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_over_the_pixel_ceiling_are_refused_before_decoding(sample_videos, backend):
    video = next(iter(sample_videos.values()))
    with VideoReader(video.path, backend=backend) as reader:
        pixels = reader.width * reader.height
    over = rf"frames have {pixels:,} pixels, over the ceiling of {pixels - 1:,} .*--max-pixels 0"
    with pytest.raises(VideoDecodeError, match=over):
        VideoReader(video.path, backend=backend, max_pixels=pixels - 1)
    # The ceiling is on the frames as coded, whatever the reader resizes them to; None lifts it.
    with pytest.raises(VideoDecodeError, match="over the ceiling"):
        VideoReader(video.path, backend=backend, short_side=8, max_pixels=pixels - 1)
    with VideoReader(video.path, backend=backend, short_side=8, max_pixels=None) as reader:
        assert reader.get_frames([0]).data.shape[1:3] == (8, 8 * reader.width // reader.height)
    restored = pickle.loads(pickle.dumps(VideoReader(video.path, max_pixels=pixels)))
    assert restored.max_pixels == pixels  # DataLoader workers keep the ceiling
