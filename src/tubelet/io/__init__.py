"""Bytes to frames: decoding with frame-exact random access, metadata, and writing mp4/gif.

Frames are `uint8 (T, H, W, 3)` tensors; unreadable input raises `VideoDecodeError`.
"""

from tubelet.io.errors import VideoDecodeError
from tubelet.io.reader import VideoReader
from tubelet.io.writer import write_video

__all__ = ["VideoDecodeError", "VideoReader", "write_video"]
