"""PyAV backend of `VideoReader`: a packet index for frame-exact seeking, then decode forward."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import torch

from tubelet.io._size import short_side_size
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
    those before the first keyframe. `num_frames` therefore counts the frames of intact packets;
    data damaged inside a packet shows only when it is decoded (below).

    Decoding seeks to the keyframe at or before the first wanted frame and decodes forward,
    collecting every wanted frame it passes, so frames in one GOP cost one pass. On H.264 the pass
    also skips the non-reference frames it does not return (`skip_frame` NONREF for their
    packets): no frame is predicted from them, so every returned frame is still byte-equal to a
    sequential decode, while a sparse read decodes only the reference frames of its GOPs (about
    half with B-frames; see `_decode_forward`). A packet the decoder rejects (damaged data) gives
    no frame; asking for its frame raises VideoDecodeError naming every requested index that did
    not decode, while the other frames still decode.

    Opening also decodes the first frame: PyAV reports the stream's display rotation only on
    decoded frames, and `width` / `height` are those of the frames returned (rotated, and resized
    to `short_side` when given).
    """

    backend = "pyav"

    def __init__(self, path: Path, num_threads: int, short_side: int | None = None) -> None:
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
            self._rgb = self._converter(short_side)
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
        # H.264 marks every picture that no other picture is predicted from (nal_ref_idc 0, ITU-T
        # H.264 7.4.1), which FFmpeg's NONREF skips. Other codecs' NONREF is not that safe: an HEVC
        # "sub-layer non-reference" picture may still be a reference for higher temporal layers.
        self._skips_nonref = stream.codec_context.name == "h264"
        # AVI keeps no presentation times: its demuxer numbers packets in decode order, so with
        # B-frames a packet's "pts" does not say which frame it shows, and seeking by it lands on
        # other frames (H.264: frames 5, 32, 62 for 7, 33, 64). Such files decode from the start,
        # frames numbered in the order they come out, as the ffmpeg program numbers them.
        self._in_order = self._container.format.name == "avi" and bool(
            stream.codec_context.has_b_frames
        )
        frames = stream.frames  # the container's own count; 0 when it keeps none
        self.header_num_frames: int | None = frames if frames > 0 else None

    def _build_index(self) -> None:
        """Read every packet of the stream (no decoding) into frame and keyframe tables."""
        packets: list[_Packet] = []  # decode order
        every_pts = True  # every packet has a pts of its own (not its dts)
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_corrupt:
                    continue
                every_pts &= packet.pts is not None
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
        # Skipped frames never come out, so the frames that do must be named by their own pts.
        self._skips_nonref &= every_pts and len(self._index_of) == len(frame_pts)
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
        self.start = float(self.pts_s[0])
        end = int((frame_pts + durations).max())  # last frame's end, in time_base units
        self.duration = float((end - int(frame_pts[0])) * time_base)
        average_rate = self._stream.average_rate
        if self.duration > 0:
            self.fps = self.num_frames / self.duration
        else:
            self.fps = float(average_rate) if average_rate else 0.0

    def _converter(self, short_side: int | None) -> _RGBConverter:
        """The RGB converter for this stream, set up from its first frame (rotation, size)."""
        _, frames = self._seek(0)
        first = next(frames, None)
        if first is None:
            raise VideoDecodeError(self.path, "none of its frames decodes (the file is corrupt)")
        frame = first[1]
        turns = round(frame.rotation / 90) % 4  # counter-clockwise quarter turns for display
        coded = (frame.height, frame.width)
        self.source_pixels = frame.height * frame.width  # before any resize
        shown = coded[::-1] if turns % 2 else coded  # (H, W) as displayed
        if short_side is None:
            self.height, self.width = shown
            return _RGBConverter(None, turns)
        self.height, self.width = short_side_size(shown, short_side)
        scaled = (self.width, self.height) if turns % 2 == 0 else (self.height, self.width)
        return _RGBConverter(scaled, turns)

    def decode(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames at valid `indices` as (uint8 (N, H, W, 3), float64 (N,) pts in seconds).

        Raises VideoDecodeError naming every requested index whose frame did not decode.
        """
        try:
            return self._decode(indices)
        except _UnindexedFrame:
            self._skips_nonref = False  # a frame lost its pts: decode every frame, as ever
            return self._decode(indices)

    def _decode(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._in_order:
            return self._decode_in_order(indices)
        wanted = set(indices)
        # The packets whose frames must decode when non-reference frames are skipped.
        keep = {int(self._frame_pts[i]) for i in wanted} if self._skips_nonref else None
        got: dict[int, np.ndarray] = {}
        frames: Iterator[tuple[int, av.VideoFrame]] | None = None
        floor, last = 0, -1  # first frame index this pass may return; last index it produced
        for target in sorted(wanted):
            if target in got:
                continue
            # Keep decoding the current pass when a seek would not skip anything.
            if frames is None or not (self._key_start[self._key_of[target]] <= last + 1 <= target):
                floor, frames = self._seek(target, keep)
            for index, frame in frames:
                last = index
                if index >= floor and index in wanted and index not in got:
                    got[index] = self._rgb(frame)  # (H, W, 3)
                if index >= target:
                    break
            else:
                frames = None  # end of stream: the next target needs a new seek
        return self._collect(indices, got)

    def _collect(
        self, indices: list[int], got: dict[int, np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded frames `got` in the order of `indices`, with their pts; VideoDecodeError
        naming every requested index that did not decode."""
        missing = sorted(set(indices) - set(got))
        if missing:
            raise VideoDecodeError(
                self.path,
                f"frames {missing} of {self.num_frames} did not decode (the file is corrupt "
                "there); the other frames decode",
            )
        data = torch.from_numpy(np.stack([got[i] for i in indices]))  # (N, H, W, 3)
        return data, self.pts_s[indices]

    def _decode_in_order(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames at `indices` of a file without presentation times (`_in_order`): decode from the
        first frame to the last wanted one, frame i being the i-th that comes out."""
        wanted, got = set(indices), {}
        for index, frame in self._frames_in_order(max(wanted)):
            if index in wanted:
                got[index] = self._rgb(frame)  # (H, W, 3)
        return self._collect(indices, got)

    def _frames_in_order(self, last: int | None = None) -> Iterator[tuple[int, av.VideoFrame]]:
        """(i, the i-th frame the decoder returns) from the file's start, up to frame `last`."""
        try:
            self._container.seek(self._key_pts[0], stream=self._stream, backward=True)
        except av.FFmpegError as error:
            raise VideoDecodeError(
                self.path, f"seeking to its start failed (FFmpeg: {error.strerror})"
            ) from None
        self._stream.codec_context.skip_frame = "DEFAULT"
        index = -1
        for packet in self._container.demux(self._stream):
            if packet.is_corrupt:
                continue
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                continue  # a damaged packet: skip it, as the ffmpeg program does
            for frame in decoded:
                index += 1
                yield index, frame
                if last is not None and index >= last:
                    return

    def decode_at(self, seconds: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame shown at each time in [start, start + duration): the last whose pts <= t."""
        # pts_s is ascending; side="right" picks the last frame at or before t.
        indices = np.searchsorted(self.pts_s.numpy(), np.array(seconds), side="right") - 1
        return self.decode(np.clip(indices, 0, None).tolist())

    def scan(self) -> list[int]:
        """Decode every frame once, in order, without converting it: the indices that decode."""
        if self._in_order:
            return [index for index, _ in self._frames_in_order()]
        floor, frames = self._seek(0)
        return sorted({index for index, _ in frames if index >= floor})

    def _seek(
        self, target: int, keep: set[int] | None = None
    ) -> tuple[int, Iterator[tuple[int, av.VideoFrame]]]:
        """Start a pass at the keyframe before `target`: (first frame index it yields, frames).
        `keep` is passed on to `_decode_forward`.

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
            frames = self._decode_forward(start, keep)
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

    def _decode_forward(
        self, start: int, keep: set[int] | None = None
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decode from the current position to the end: (frame index, frame) in display order.

        With `keep` (pts), the decoder skips the non-reference frames of packets whose pts is not
        in it, keyframes aside: they do not come out, and the frames that do are named by pts.
        The choice is made per packet before it is sent, so B-frame reordering and frame threads
        (which only delay output) cannot make it skip a kept frame. A frame whose pts is not in
        the index could not be named then: it raises `_UnindexedFrame`.
        """
        context = self._stream.codec_context
        context.skip_frame = skip = "DEFAULT"  # a pass may follow one that skipped
        last = start - 1
        for packet in self._container.demux(self._stream):
            if packet.is_corrupt:
                continue  # partial data: its frame is not in the index
            if keep is not None:
                wanted = packet.is_keyframe or packet.pts in keep
                if skip != (mode := "DEFAULT" if wanted else "NONREF"):
                    context.skip_frame = skip = mode
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                continue  # a damaged packet: skip it, as the ffmpeg program does
            for frame in decoded:
                index = self._index_of.get(frame.pts)  # the first frame shown at that pts
                if index is None and keep is not None:
                    raise _UnindexedFrame
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


class _UnindexedFrame(Exception):
    """A pass that skips frames got a frame without an indexed pts: it cannot tell its index."""


class _RGBConverter:
    """Decoded frame -> uint8 (H, W, 3) RGB, as the ffmpeg program converts it.

    Conversion runs through an FFmpeg filter graph (`scale` + `format=rgb24`), which honours the
    frame's colour space and range and converts 10-bit, grey and odd-sized frames exactly as
    `ffmpeg -pix_fmt rgb24` does (PyAV's `VideoReformatter` differs on those by up to 50 levels).
    `scaled` = (width, height) then resizes the RGB frame with swscale (bilinear; downscaling
    widens the filter, so it is antialiased), as torchcodec's `Resize` does: within 1 level on
    average of `short_side_resize` on the full frame (resizing YUV before converting is up to
    10x further off). Last, `turns` counter-clockwise quarter turns are applied.
    The graph runs on one thread: freeing a threaded graph in a forked child waits forever.
    """

    def __init__(self, scaled: tuple[int, int] | None, turns: int) -> None:
        self._scaled = scaled
        self._turns = turns
        self._graph: av.filter.Graph | None = None
        self._input: tuple[int, int, str] | None = None  # (width, height, format) it was built for

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        key = (frame.width, frame.height, frame.format.name)
        if self._graph is None or key != self._input:  # first frame, or the stream changed size
            self._graph, self._input = self._build(frame), key
        self._graph.vpush(frame)
        rgb = self._graph.vpull().to_ndarray()  # (H, W, 3) as coded
        return np.ascontiguousarray(np.rot90(rgb, self._turns)) if self._turns else rgb

    def _build(self, frame: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        graph.threads = 1
        source = graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=frame.time_base
        )
        steps = [graph.add("format", "pix_fmts=rgb24")]
        if self._scaled is not None:  # RGB -> RGB, as torchcodec resizes
            width, height = self._scaled
            steps += [
                graph.add("scale", f"w={width}:h={height}:flags=bilinear"),
                graph.add("format", "pix_fmts=rgb24"),
            ]
        graph.link_nodes(source, *steps, graph.add("buffersink"))
        graph.configure()
        return graph
