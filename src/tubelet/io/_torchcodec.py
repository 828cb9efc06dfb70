"""torchcodec backend of `VideoReader`: its exact-seek decoder, with the FFmpeg it loads."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import torch

from tubelet.io.errors import VideoDecodeError


@functools.cache
def load_error() -> str | None:
    """Why torchcodec cannot be used here (it does not import or its FFmpeg libraries do not
    load), or None when it can. Checked once per process."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except (ImportError, OSError, RuntimeError) as error:
        return f"{type(error).__name__}: {error}"
    return None


class TorchcodecOpenError(Exception):
    """torchcodec could not open a file (the reader may retry it with PyAV)."""


class TorchcodecDecoder:
    """Frame-exact random access with torchcodec's `VideoDecoder(seek_mode="exact")`.

    Exact mode scans the packets once at open (no decoding) and seeks to the keyframe before each
    group of requested frames, so `get_frames_at` returns what a sequential decode yields.
    `header_num_frames` is the container's own frame count (None if it has none); when it differs
    from the scanned count the file is likely truncated, which the reader checks.
    """

    backend = "torchcodec"

    def __init__(self, path: Path, num_threads: int) -> None:
        from torchcodec.decoders import VideoDecoder

        self.path = path
        try:
            self._decoder: Any = VideoDecoder(
                str(path),
                seek_mode="exact",
                dimension_order="NHWC",
                num_ffmpeg_threads=num_threads,
                device="cpu",
            )
        # torchcodec raises RuntimeError, ValueError and others for files it cannot open.
        except Exception as error:
            raise TorchcodecOpenError(_first_line(error)) from None
        meta = self._decoder.metadata
        self.num_frames = int(meta.num_frames_from_content or 0)
        if self.num_frames == 0:
            raise TorchcodecOpenError("the scan found no video frames")
        self.header_num_frames: int | None = meta.num_frames_from_header
        self.width = int(meta.width)
        self.height = int(meta.height)
        self.duration = float(meta.end_stream_seconds - meta.begin_stream_seconds)
        self.fps = float(meta.average_fps or 0.0)

    def decode(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames at valid `indices` as (uint8 (N, H, W, 3), float64 (N,) pts in seconds)."""
        try:
            batch = self._decoder.get_frames_at(indices)
        except RuntimeError as error:
            raise VideoDecodeError(
                self.path,
                f"frames {sorted(set(indices))} of {self.num_frames} did not decode with "
                f"torchcodec ({_first_line(error)})",
            ) from None
        return batch.data.contiguous(), batch.pts_seconds.to(torch.float64)  # (N, H, W, 3), (N,)

    def close(self) -> None:
        """Release the decoder (torchcodec closes the file when it is freed)."""
        self._decoder = None


def _first_line(error: BaseException) -> str:
    """An exception's first message line, without the C++ source location torchcodec puts first."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return re.sub(r"^\w+, \S+:\d+, ", "", line)
