"""Bytes to frames: decoding with frame-exact random access, metadata, and writing mp4/gif.

Frames are `uint8 (T, H, W, 3)` tensors; unreadable input raises `VideoDecodeError`.
`torchcodec_error()` says why torchcodec cannot decode here (None when it can; then
`backend="auto"` uses it).
"""

from tubelet.io._torchcodec import load_error as torchcodec_error
from tubelet.io.errors import VideoDecodeError
from tubelet.io.reader import Frames, VideoReader
from tubelet.io.scan import VideoScan, scan_video
from tubelet.io.threads import thread_budget
from tubelet.io.writer import write_video

__all__ = [
    "Frames",
    "VideoDecodeError",
    "VideoReader",
    "VideoScan",
    "scan_video",
    "thread_budget",
    "torchcodec_error",
    "write_video",
]
