"""Errors raised by `tubelet.io`."""

from __future__ import annotations

from pathlib import Path


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded. Carries the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video {self.path}: {reason}")
