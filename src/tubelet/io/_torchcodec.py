"""torchcodec backend of `VideoReader`: its exact-seek decoder, with the FFmpeg it loads."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import torch

from tubelet.io._size import resize_frames, short_side_size
from tubelet.io.errors import VideoDecodeError

# What makes torchcodec load, named in every message that says it does not.
FFMPEG_FIX = (
    "install FFmpeg (`apt-get install ffmpeg`, `brew install ffmpeg` or `conda install ffmpeg`)"
)
# What a torchcodec built without CUDA says when asked for a CUDA device.
_NO_CUDA = re.compile(
    r"Unsupported device|No device interface|not (built|compiled) with CUDA", re.I
)


@functools.cache
def load_error() -> str | None:
    """Why torchcodec cannot be used here, in one line that names the fix, or None when it can.

    Recent torchcodec imports without FFmpeg and loads FFmpeg's libraries on first use, so the
    import alone proves nothing: this loads them too. Checked once per process.
    """
    try:
        import torchcodec
    except ImportError as error:
        return f"torchcodec does not import ({error}): `pip install torchcodec`"
    except (OSError, RuntimeError):  # older torchcodec loads FFmpeg when it is imported
        return f"torchcodec cannot load FFmpeg's shared libraries: {FFMPEG_FIX}"
    try:
        from torchcodec._core import ops
        from torchcodec.decoders import VideoDecoder  # noqa: F401

        load = getattr(ops, "load_core_libraries", None)  # absent where the import loads them
        if load is not None:
            load()
    except (ImportError, OSError, RuntimeError):
        version = getattr(torchcodec, "__version__", "?")
        return f"torchcodec {version} cannot load FFmpeg's shared libraries: {FFMPEG_FIX}"
    return None


class TorchcodecOpenError(Exception):
    """torchcodec could not open a file (the reader may retry it with PyAV)."""


class TorchcodecDecoder:
    """Frame-exact random access with torchcodec's `VideoDecoder(seek_mode="exact")`.

    Exact mode scans the packets once at open (no decoding) and seeks to the keyframe before each
    group of requested frames, so `get_frames_at` returns what a sequential decode yields.
    `header_num_frames` is the container's own frame count (None if it has none); when it differs
    from the scanned count the file is likely truncated, which the reader checks.

    torchcodec applies the display rotation itself and reports the displayed width and height.
    `short_side` resizes in the decoder (torchcodec's `Resize`: bilinear, antialiased); the size it
    needs comes from a header-only open (`seek_mode="approximate"`), which does not scan.

    `device="cuda"` (or "cuda:N") decodes on that GPU with NVDEC (torchcodec falls back to its CPU
    decoder for a codec NVDEC lacks) and returns frames there. torchcodec's decoder transforms run
    on the CPU only, so on a GPU `short_side` resizes the decoded frames there (`resize_frames`).
    A torchcodec built without CUDA raises ValueError naming the fix.
    """

    backend = "torchcodec"

    def __init__(
        self, path: Path, num_threads: int, short_side: int | None = None, device: str = "cpu"
    ) -> None:
        self.path = path
        self.device = device
        transforms = []
        if short_side is not None and device == "cpu":
            from torchcodec.transforms import Resize

            header = self._open("approximate", num_threads, []).metadata
            size = short_side_size((int(header.height), int(header.width)), short_side)
            if size != (header.height, header.width):
                transforms.append(Resize(size))
        self._decoder = self._open("exact", num_threads, transforms)
        meta = self._decoder.metadata
        self.source_pixels = int(meta.height or 0) * int(meta.width or 0)  # before any resize
        self.num_frames = int(meta.num_frames_from_content or 0)
        if self.num_frames == 0:
            raise TorchcodecOpenError("the scan found no video frames")
        self.header_num_frames: int | None = meta.num_frames_from_header
        self.codec: str = str(meta.codec or "")  # FFmpeg's name: "h264", "mpeg4", ...
        self.height, self.width = transforms[0].size if transforms else (meta.height, meta.width)
        # On a GPU: the size the decoded frames are resized to there, None to keep them.
        self._resize: tuple[int, int] | None = None
        if short_side is not None and device != "cpu":
            self._resize = short_side_size((int(meta.height), int(meta.width)), short_side)
            self.height, self.width = self._resize
        self.start = float(meta.begin_stream_seconds)
        self.duration = float(meta.end_stream_seconds - meta.begin_stream_seconds)
        self.fps = float(meta.average_fps or 0.0)

    def _open(self, seek_mode: str, num_threads: int, transforms: list[Any]) -> Any:
        from torchcodec.decoders import VideoDecoder

        try:
            return VideoDecoder(
                str(self.path),
                seek_mode=seek_mode,
                dimension_order="NHWC",
                num_ffmpeg_threads=num_threads,
                device=self.device,
                transforms=transforms,
            )
        # torchcodec raises RuntimeError, ValueError and others for files it cannot open.
        except Exception as error:
            if self.device != "cpu" and _NO_CUDA.search(str(error)):
                raise ValueError(cuda_build_fix(_first_line(error))) from None
            raise TorchcodecOpenError(_first_line(error)) from None

    def decode(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames at valid `indices` as (uint8 (N, H, W, 3), float64 (N,) pts in seconds).

        Raises VideoDecodeError naming every requested index whose frame did not decode.
        """
        try:
            batch = self._decoder.get_frames_at(indices)
        except RuntimeError as error:
            what = "frames {} of " + str(self.num_frames)
            raise self._missing(self._decoder.get_frames_at, indices, what, error) from None
        return self._frames(batch.data), batch.pts_seconds.to("cpu", torch.float64)

    def decode_at(self, seconds: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame shown at each time in [start, start + duration): the last whose pts <= t."""
        # Exact mode looks each time up in the scanned pts table: the last frame at or before t.
        try:
            batch = self._decoder.get_frames_played_at(seconds)
        except RuntimeError as error:
            what = "the frames shown at seconds {}"
            raise self._missing(self._decoder.get_frames_played_at, seconds, what, error) from None
        return self._frames(batch.data), batch.pts_seconds.to("cpu", torch.float64)

    def _frames(self, data: torch.Tensor) -> torch.Tensor:
        """torchcodec's uint8 (N, H, W, 3) frames, resized on the GPU when asked, contiguous."""
        return (resize_frames(data, self._resize) if self._resize else data).contiguous()

    def _missing(self, get: Any, keys: list[Any], what: str, error: Exception) -> VideoDecodeError:
        """The error for a failed batch: retries each key alone to name those that fail.
        `what` formats the failed keys ("frames {} of 48")."""
        failed = []
        for key in sorted(set(keys)):
            try:
                get([key])
            except RuntimeError:
                failed.append(key)
        return VideoDecodeError(
            self.path,
            f"{what.format(failed or sorted(set(keys)))} did not decode with torchcodec (the "
            f"file is corrupt there; the other frames decode; {_first_line(error)})",
        )

    def close(self) -> None:
        """Release the decoder (torchcodec closes the file when it is freed)."""
        self._decoder = None


def cuda_build_fix(reason: str) -> str:
    """Why this torchcodec cannot decode on a GPU, with the fix."""
    import torchcodec

    version = getattr(torchcodec, "__version__", "?")
    cuda = torch.version.cuda
    build = "the CUDA build that matches torch's CUDA"
    if cuda:  # e.g. "12.8" -> the cu128 wheels
        index = f"https://download.pytorch.org/whl/cu{cuda.replace('.', '')}"
        build = f"the build for torch's CUDA {cuda} (`pip install torchcodec --index-url {index}`)"
    return (
        f"device='cuda' needs a torchcodec built with CUDA; torchcodec {version} here is not "
        f"({reason}): install {build}, or use device='cpu'"
    )


def _first_line(error: BaseException) -> str:
    """An exception's first message line, without the C++ source location torchcodec puts first."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return re.sub(r"^\w+, \S+:\d+, ", "", line)
