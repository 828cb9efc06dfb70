"""Videos for the io tests, written once per session with PyAV. Frame i shows its own index.

The top 16 rows of frame i hold 8 blocks of 8x16 pixels, block b white when bit b of i is set
(`frame_index` reads it back through any codec); the rows below are seeded noise, so files are big
enough to cut in the middle of a packet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

HEIGHT, WIDTH, NUM_FRAMES, FPS = 48, 64, 48, 24
VFR_STEPS_MS = (30, 50, 41)  # frame i lasts VFR_STEPS_MS[i % 3] milliseconds
AV1_ENCODER = next((e for e in ("libsvtav1", "libaom-av1") if e in av.codecs_available), "none")

# name -> (suffix, encoder, encoder options, variable frame rate)
VIDEO_KINDS: dict[str, tuple[str, str, dict[str, str], bool]] = {
    "h264_bframes": ("mp4", "libx264", {"bf": "2", "g": "250"}, False),
    "h264_all_keyframes": ("mp4", "libx264", {"g": "1"}, False),
    "h264_gop12": ("mp4", "libx264", {"bf": "2", "g": "12"}, False),
    "h264_vfr_mkv": ("mkv", "libx264", {"bf": "2", "g": "12"}, True),
    "hevc_mkv": ("mkv", "libx265", {"x265-params": "log-level=none:keyint=12"}, False),
    "vp9_webm": ("webm", "libvpx-vp9", {"g": "12"}, False),
    "mpeg4_avi": ("avi", "mpeg4", {"g": "12"}, False),
    "av1_mkv": ("mkv", AV1_ENCODER, {"g": "12"}, False),
    "h264_mov": ("mov", "libx264", {"bf": "2", "g": "12"}, False),
}

# Pixel formats and sizes that need more than a plain YUV 4:2:0 -> RGB conversion:
# name -> (suffix, encoder, pixel format, width, height, encoder options).
FORMAT_KINDS: dict[str, tuple[str, str, str, int, int, dict[str, str]]] = {
    "odd_size_yuv420": ("avi", "mpeg4", "yuv420p", 63, 47, {}),
    "odd_size_yuv444": ("mp4", "libx264", "yuv444p", 63, 47, {}),
    "h264_10bit": ("mp4", "libx264", "yuv420p10le", 64, 48, {}),
    "hevc_10bit": ("mkv", "libx265", "yuv420p10le", 64, 48, {"x265-params": "log-level=none"}),
    "grey": ("mkv", "ffv1", "gray", 63, 47, {}),
}


@dataclass(frozen=True)
class SampleVideo:
    """A written video and what a reader must report for it."""

    path: Path
    num_frames: int
    pts_s: tuple[float, ...]  # presentation time of each frame, as written
    duration: float  # first frame's start to last frame's end, seconds


def coded_frames(num_frames: int) -> np.ndarray:
    """uint8 (T, H, W, 3) frames; frame i shows i in binary blocks on its top rows."""
    frames = np.zeros((num_frames, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for i in range(num_frames):
        for bit in range(8):
            if i >> bit & 1:
                frames[i, :16, 8 * bit : 8 * bit + 8] = 255
        frames[i, 16:] = np.random.default_rng(i).integers(0, 256, (HEIGHT - 16, WIDTH, 3))
    return frames


def read_index(image: np.ndarray) -> int:
    """The index that `coded_frames` drew into a decoded uint8 (H, W, 3) frame."""
    blocks = image[:16].reshape(16, 8, 8, 3).mean(axis=(0, 2, 3))  # (8,) mean of each block
    return sum(1 << bit for bit, level in enumerate(blocks) if level > 128)


@pytest.fixture(scope="session")
def frame_index() -> Callable[[np.ndarray], int]:
    """`read_index`, for tests (conftest modules are not imported by name)."""
    return read_index


def encode(
    path: Path, encoder: str, options: dict[str, str], *, vfr: bool = False
) -> tuple[tuple[float, ...], float]:
    """Write `coded_frames(NUM_FRAMES)` to `path`; return each frame's pts and the duration (s)."""
    times = []
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(encoder, rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.thread_count = 1  # same bytes on every machine
        if vfr:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i, image in enumerate(coded_frames(NUM_FRAMES)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if vfr:
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                times.append(pts / 1000)
                pts += VFR_STEPS_MS[i % 3]
            else:
                times.append(i / FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    duration = (
        sum(VFR_STEPS_MS[i % 3] for i in range(NUM_FRAMES)) / 1000 if vfr else NUM_FRAMES / FPS
    )
    return tuple(times), duration


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SampleVideo]:
    """Every kind in VIDEO_KINDS whose encoder this PyAV build has."""
    folder = tmp_path_factory.mktemp("videos")
    videos = {}
    for name, (suffix, encoder, options, vfr) in VIDEO_KINDS.items():
        if encoder not in av.codecs_available:
            continue
        path = folder / f"{name}.{suffix}"
        videos[name] = SampleVideo(path, NUM_FRAMES, *encode(path, encoder, options, vfr=vfr))
    return videos


@pytest.fixture(scope="session")
def h264_bframes_avis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """H.264 with B-frames in AVI, whose demuxer numbers packets in decode order, by
    "bf{B-frames}_g{keyframe interval}": torchcodec's exact seeks land two frames early, and
    seeks by those numbers land on other frames."""
    folder = tmp_path_factory.mktemp("h264_bframes")
    paths = {}
    for bframes, gop in (("2", "12"), ("3", "250"), ("2", "30")):
        paths[f"bf{bframes}_g{gop}"] = path = folder / f"h264_bf{bframes}_g{gop}.avi"
        encode(path, "libx264", {"bf": bframes, "g": gop})
    return paths


@pytest.fixture(scope="session")
def mpeg4_bframes_avi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MPEG-4 part 2 with B-frames in AVI: packets carry no presentation times, so a reader must
    reorder frames itself (torchcodec's exact seeks land a frame or two early here)."""
    path = tmp_path_factory.mktemp("mpeg4_bframes") / "mpeg4_bframes.avi"
    encode(path, "mpeg4", {"bf": "2", "g": "12"})
    return path


def encode_noise(
    path: Path,
    encoder: str,
    options: dict[str, str],
    *,
    pix_fmt: str = "yuv420p",
    width: int = WIDTH,
    height: int = HEIGHT,
    num_frames: int = 8,
    rotation: int = 0,
) -> None:
    """Write `num_frames` frames of seeded RGB noise; `rotation` sets the display rotation."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(encoder, rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.thread_count = 1
        if rotation:
            stream.set_display_rotation(rotation)  # counter-clockwise degrees
        for i in range(num_frames):
            image = np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="session")
def format_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every kind in FORMAT_KINDS whose encoder this PyAV build has."""
    folder = tmp_path_factory.mktemp("formats")
    videos = {}
    for name, (suffix, encoder, pix_fmt, width, height, options) in FORMAT_KINDS.items():
        if encoder in av.codecs_available:
            videos[name] = folder / f"{name}.{suffix}"
            encode_noise(
                videos[name], encoder, options, pix_fmt=pix_fmt, width=width, height=height
            )
    return videos


@pytest.fixture(scope="session")
def rotated_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """64x48 H.264 mp4 files whose display matrix turns them 90, 180 or 270 degrees
    counter-clockwise (and one without rotation, under 0)."""
    folder = tmp_path_factory.mktemp("rotated")
    videos = {}
    for degrees in (0, 90, 180, 270):
        videos[degrees] = folder / f"rotated_{degrees}.mp4"
        encode_noise(videos[degrees], "libx264", {"g": "4"}, rotation=degrees)
    return videos


@pytest.fixture(scope="session")
def damaged_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """An all-keyframe H.264 mp4 whose middle packet is overwritten with random bytes.

    Returns (path, k, n): frame k of n frames does not decode; every other frame does.
    """
    folder = tmp_path_factory.mktemp("damaged")
    encode_noise(folder / "clean.mp4", "libx264", {"g": "1"}, num_frames=16)
    with av.open(str(folder / "clean.mp4")) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    k = len(packets) // 2  # all keyframes, no B-frames: decode order is display order
    position, size = packets[k]
    data = bytearray((folder / "clean.mp4").read_bytes())
    data[position : position + size] = np.random.default_rng(0).bytes(size)
    path = folder / "damaged.mp4"
    path.write_bytes(bytes(data))
    return path, k, len(packets)


@pytest.fixture(scope="session")
def truncated_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """An H.264 mp4 (B-frames, index up front) cut in the middle of a P-frame's packet.

    Returns (path, k). The cut packet is the k-th in the file and is shown after all k before it;
    the B-frames shown before it follow it in the file and are lost, so frames 0..k-1 decode.
    """
    folder = tmp_path_factory.mktemp("truncated")
    encode(folder / "raw.mp4", "libx264", {"bf": "2", "g": "250"})
    _faststart(folder / "raw.mp4", folder / "full.mp4")
    with av.open(str(folder / "full.mp4")) as container:
        packets = [(p.pos, p.size, p.pts) for p in container.demux(video=0) if p.size]
    k = len(packets) // 2
    while packets[k][2] < max(pts for _, _, pts in packets[:k]):
        k += 1  # a B-frame: shown before a packet ahead of it
    position, size, _ = packets[k]
    path = folder / "truncated.mp4"
    path.write_bytes((folder / "full.mp4").read_bytes()[: position + size // 2])
    return path, k


@pytest.fixture(scope="session")
def broken_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Unreadable inputs by name: each must raise VideoDecodeError."""
    folder = tmp_path_factory.mktemp("broken")
    files = {name: folder / f"{name}.mp4" for name in ("missing", "empty", "random_bytes")}
    files["empty"].write_bytes(b"")
    files["random_bytes"].write_bytes(np.random.default_rng(0).bytes(4096))

    encode(folder / "raw.mp4", "libx264", {"bf": "2", "g": "250"})
    data = (folder / "raw.mp4").read_bytes()  # index (moov) at the end: a cut loses it
    files["cut_before_index"] = folder / "cut_before_index.mp4"
    files["cut_before_index"].write_bytes(data[: len(data) // 3])

    _faststart(folder / "raw.mp4", folder / "faststart.mp4")
    data = (folder / "faststart.mp4").read_bytes()
    files["no_complete_frame"] = folder / "no_complete_frame.mp4"  # index intact, no whole packet
    files["no_complete_frame"].write_bytes(data[: _box_offset(data, b"mdat") + 8 + 16])

    files["audio_only"] = folder / "audio_only.m4a"
    with av.open(str(files["audio_only"]), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            samples = np.zeros((1, 1024), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    files["folder"] = folder / "folder.mp4"
    files["folder"].mkdir()
    return files


def _faststart(source: Path, target: Path) -> None:
    """Copy an mp4 with its index (moov) moved before the media data."""
    with (
        av.open(str(source)) as src,
        av.open(str(target), "w", options={"movflags": "faststart"}) as dst,
    ):
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)


def _box_offset(data: bytes, kind: bytes) -> int:
    """Byte offset of the first top-level mp4 box of type `kind`."""
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        if data[offset + 4 : offset + 8] == kind:
            return offset
        offset += size
    raise ValueError(f"no {kind!r} box")
