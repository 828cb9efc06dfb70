"""Whole-file checks: decode every frame of a video once and compare with what it claims."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tubelet.io._pyav import PyAVDecoder
from tubelet.io.reader import _check_file


@dataclass(frozen=True)
class VideoScan:
    """What a full decode of one video found.

    `header_frames` is the container's own frame count (None when it keeps none); `indexed_frames`
    the frames its intact packets promise (`VideoReader.num_frames`); `missing` the indices among
    those whose frame did not decode (damage inside a packet).
    """

    path: str
    header_frames: int | None
    indexed_frames: int
    missing: tuple[int, ...]
    width: int
    height: int
    duration: float

    @property
    def decoded_frames(self) -> int:
        """Frames that decode."""
        return self.indexed_frames - len(self.missing)

    def problems(self) -> list[str]:
        """Why this video is suspicious, one reason per finding; empty when it is sound."""
        found = []
        if self.missing:
            shown = list(self.missing[:10])
            more = f" and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
            found.append(
                f"frames {shown}{more} of {self.indexed_frames} do not decode (corrupt there)"
            )
        if self.header_frames is not None and self.header_frames != self.indexed_frames:
            found.append(
                f"the container lists {self.header_frames} frames but holds {self.indexed_frames}"
                " (truncated or damaged)"
            )
        return found


def scan_video(path: str | Path) -> VideoScan:
    """Decode every frame of `path` once, in order, without colour conversion (PyAV, one thread).

    Raises VideoDecodeError (path and reason) for what `VideoReader` cannot open: missing,
    empty, unreadable, not a video, no video stream, no decodable frame.
    """
    path = Path(path)
    _check_file(path)
    decoder = PyAVDecoder(path, num_threads=1)
    try:
        decoded = set(decoder.scan())
    finally:
        decoder.close()
    missing = tuple(i for i in range(decoder.num_frames) if i not in decoded)
    return VideoScan(
        str(path), decoder.header_num_frames, decoder.num_frames, missing, decoder.width,
        decoder.height, decoder.duration,
    )  # fmt: skip
