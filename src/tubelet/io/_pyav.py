"""PyAV backend of `VideoReader`: a packet index for frame-exact seeking, then decode forward."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from tubelet.io.errors import VideoDecodeError


class _Packet(NamedTuple):
    """What the index keeps of one packet; tuples sort by presentation time first."""

    pts: int
    duration: int
    keyframe: bool
    discard: bool


class PyAVDecoder:
    """Frame-exact random access to the best video stream of a file, with PyAV.

    Opening reads the stream's packets (without decoding them) into an index: their presentation
    timestamps, sorted, give frame i its pts, and the keyframe flags say where decoding may start.
    Packets that cannot give a frame of their own are left out of the index: those the demuxer
    marks corrupt (the cut-off tail of a truncated file; they are never sent to the decoder),
    those marked discard (hidden by an edit list; the decoder still gets them as references), and
    those before the first keyframe. `num_frames` therefore counts frames that decode.

    Decoding seeks to the keyframe at or before the first wanted frame and decodes forward,
    collecting every wanted frame it passes, so frames in one GOP cost one pass.
    """

    backend = "pyav"

    def __init__(self, path: Path, num_threads: int) -> None:
        self.path = path
        try:
            self._container = av.open(str(path))
        except av.FFmpegError as error:
            raise VideoDecodeError(
                path,
                "not a video container FFmpeg can read, or cut off before its index "
                f"(FFmpeg: {error.strerror})",
            ) from None
        try:
            self._open_stream(num_threads)
            self._build_index()
        except BaseException:
            self._container.close()
            raise

    def _open_stream(self, num_threads: int) -> None:
        stream = self._container.streams.best("video")
        if stream is None:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            raise VideoDecodeError(
                self.path, f"no video stream (streams found: {', '.join(kinds)})"
            )
        if stream.codec_context is None:
            raise VideoDecodeError(self.path, f"no decoder for its video codec {stream.codec.name}")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = num_threads
        self._stream = stream
        # One reformatter keeps its swscale context between frames: 3x faster than to_ndarray's.
        # It converts with one thread: freeing a threaded one in a forked child waits forever.
        self._rgb = VideoReformatter()
        self.width = stream.codec_context.width
        self.height = stream.codec_context.height

    def _build_index(self) -> None:
        """Read every packet of the stream (no decoding) into frame and keyframe tables."""
        packets: list[_Packet] = []  # decode order
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_corrupt:
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:
                    raise VideoDecodeError(
                        self.path,
                        "its video packets carry no timestamps, so frames cannot be indexed; "
                        "remux it first (ffmpeg -i IN -c copy OUT.mkv)",
                    )
                packets.append(
                    _Packet(pts, packet.duration or 0, packet.is_keyframe, packet.is_discard)
                )
        except av.FFmpegError:
            pass  # a damaged or cut-off file: keep the packets read before the damage
        first_key = next((i for i, p in enumerate(packets) if p.keyframe), 0)
        usable = packets[first_key:]  # nothing before the first keyframe can decode
        keys = sorted({*usable[:1], *(p for p in usable if p.keyframe)})  # display order
        frames = sorted(p for p in usable if not p.discard and p.pts >= keys[0].pts) if keys else []
        if not frames:
            raise VideoDecodeError(
                self.path, "no decodable video frames (the file is truncated or corrupt)"
            )
        frame_pts = np.array([p.pts for p in frames], dtype=np.int64)  # (N,) ascending
        key_pts = np.array([p.pts for p in keys], dtype=np.int64)  # (K,) ascending
        self._frame_pts = frame_pts
        self._index_of: dict[int, int] = {}
        for i, pts in enumerate(frame_pts.tolist()):
            self._index_of.setdefault(pts, i)
        self._key_pts = key_pts.tolist()
        # A frame decodes from the last keyframe shown at or before it; a pass started at keyframe
        # k yields frames from index _key_start[k] on.
        self._key_of = np.clip(np.searchsorted(key_pts, frame_pts, side="right") - 1, 0, None)
        self._key_start = np.searchsorted(frame_pts, key_pts, side="left")

        time_base = self._stream.time_base
        durations = np.array([p.duration for p in frames], dtype=np.int64)
        steps = np.diff(frame_pts)
        durations[durations <= 0] = int(np.median(steps[steps > 0])) if (steps > 0).any() else 0
        self.num_frames = len(frames)
        # pts * num / den rounds once, like PyAV's frame.time (an exact Fraction made float).
        self.pts_s = torch.from_numpy(frame_pts * time_base.numerator / time_base.denominator)
        end = int((frame_pts + durations).max())  # last frame's end, in time_base units
        self.duration = float((end - int(frame_pts[0])) * time_base)
        average_rate = self._stream.average_rate
        if self.duration > 0:
            self.fps = self.num_frames / self.duration
        else:
            self.fps = float(average_rate) if average_rate else 0.0

    def decode(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames at valid `indices` as (uint8 (N, H, W, 3), float64 (N,) pts in seconds)."""
        wanted = set(indices)
        got: dict[int, np.ndarray] = {}
        frames: Iterator[tuple[int, av.VideoFrame]] | None = None
        floor, last = 0, -1  # first frame index this pass may return; last index it produced
        for target in sorted(wanted):
            if target in got:
                continue
            # Keep decoding the current pass when a seek would not skip anything.
            if frames is None or not (self._key_start[self._key_of[target]] <= last + 1 <= target):
                floor, frames = self._seek(target)
            for index, frame in frames:
                last = index
                if index >= floor and index in wanted and index not in got:
                    rgb = self._rgb.reformat(frame, format="rgb24", threads=1)
                    got[index] = rgb.to_ndarray()  # (H, W, 3)
                if index >= target:
                    break
            else:
                frames = None  # end of stream: the next target needs a new seek
            if target not in got:
                raise VideoDecodeError(
                    self.path,
                    f"frame {target} of {self.num_frames} did not decode (the file is corrupt)",
                )
        data = torch.from_numpy(np.stack([got[i] for i in indices]))  # (N, H, W, 3)
        return data, self.pts_s[indices]

    def _seek(self, target: int) -> tuple[int, Iterator[tuple[int, av.VideoFrame]]]:
        """Start a pass at the keyframe before `target`: (first frame index it yields, frames).

        If the demuxer lands after `target` (its seek table disagrees with the packets), step back
        one keyframe at a time, down to the first.
        """
        key = int(self._key_of[target])
        while True:
            try:
                # A keyframe's pts lands on it in pts-keyed (Matroska) and dts-keyed (MP4, AVI)
                # seek tables alike; an index that disagrees is caught below.
                self._container.seek(
                    self._key_pts[key], stream=self._stream, backward=True, any_frame=False
                )
            except av.FFmpegError as error:
                raise VideoDecodeError(
                    self.path, f"seeking to frame {target} failed (FFmpeg: {error.strerror})"
                ) from None
            start = int(self._key_start[key])
            frames = self._decode_forward(start)
            first = next(frames, None)
            if first is None:
                return start, iter(())
            if first[0] <= target:
                return start, itertools.chain([first], frames)
            if key == 0:
                raise VideoDecodeError(
                    self.path, f"no keyframe to decode frame {target} from (the file is corrupt)"
                )
            key -= 1

    def _decode_forward(self, start: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decode from the current position to the end: (frame index, frame) in display order."""
        last = start - 1
        for packet in self._container.demux(self._stream):
            if packet.is_corrupt:
                continue  # partial data: its frame is not in the index
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                continue  # a damaged packet: skip it, as the ffmpeg program does
            for frame in decoded:
                index = self._index_of.get(frame.pts)  # the first frame shown at that pts
                if index is None or (
                    index <= last < len(self._frame_pts) - 1
                    and self._frame_pts[last + 1] == frame.pts
                ):
                    index = last + 1  # no pts, or the next of frames sharing one pts
                last = index
                yield last, frame

    def close(self) -> None:
        """Close the file."""
        self._container.close()
