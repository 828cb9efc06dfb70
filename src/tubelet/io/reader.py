"""`VideoReader`: frame-exact random access to the frames of a video file.

Two backends decode with FFmpeg: torchcodec (when it imports and its FFmpeg libraries load) and
PyAV (always). Both index the stream's packets once at open, without decoding, then seek to the
keyframe before each group of requested frames and decode forward only as far as needed, so
`get_frames` returns exactly the frames a plain sequential decode yields at those indices, and
`get_frames_at` the frame shown at each time (exact on variable-frame-rate video too).

Frames come out as RGB uint8 (T, H, W, 3) whatever the pixel format (10-bit, grey, odd sizes),
equal to `ffmpeg -pix_fmt rgb24`, turned upright by the stream's display rotation, and optionally
resized in the decoder to a short side (`short_side=`).

A pixel ceiling bounds what one frame may cost to decode: a video whose frames have more than
`max_pixels` pixels (default `MAX_PIXELS`, 36 megapixels: 8K's 8192x4320 fits) is refused with a
`VideoDecodeError` when opened, before any frame is decoded whole (a 20 KB file can hold 8000x8000
frames); `max_pixels=None` lifts it (`--max-pixels 0` on the command line).

`num_frames` counts the frames the stream's packets promise (the demuxer's intact packets; see
the backends). A packet whose data is damaged inside is found only when decoded: `get_frames`
then raises `VideoDecodeError` naming every requested index that did not decode, and the other
frames still decode. `tubelet data validate` decodes whole files to list such damage up front.

`backend="auto"` picks by `auto_backend`, a rule measured on clips decoded as the training loader
decodes them (benchmarks/decoder_rule.py; docs/experiments/2026-12-05-decoder-auto-rule.md):
PyAV when frames are resized in the decoder (`short_side`, as `VideoDataset` always asks), where
it was never slower on average for any codec, torchcodec when full frames are decoded; torchcodec
on a GPU (`device`). When torchcodec is picked, PyAV still opens MPEG-4 part 2 and AVI files
(which torchcodec can seek wrongly: `TORCHCODEC_MISSEEKS`), the files torchcodec cannot open, and
those whose header and packets disagree on the frame count. Those are mostly truncated files,
whose cut-off last packet torchcodec counts as a frame but PyAV's index leaves out, so
`num_frames` counts frames that decode.
"""

from __future__ import annotations

import numbers
import operator
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from tubelet.io._pyav import PyAVDecoder
from tubelet.io._torchcodec import TorchcodecDecoder, TorchcodecOpenError, load_error
from tubelet.io.errors import VideoDecodeError

BACKENDS = ("auto", "torchcodec", "pyav")
MAX_PIXELS = 36_000_000  # per frame; 8K (8192x4320 = 35.4 M) fits
# Codecs whose frames torchcodec 0.17's exact seeks can get wrong, so `auto` reads them with PyAV:
# MPEG-4 part 2 with B-frames in AVI (packets without presentation times) comes back a frame
# early on random access (frame 4 for 5); PyAV's index returns the right frames.
TORCHCODEC_MISSEEKS = frozenset({"mpeg4"})
# The same in any codec with B-frames in AVI (H.264: frames 3, 28, 72 for 5, 30, 74): `auto` reads
# every AVI file with PyAV. AVI is told by its name, which costs no open.
TORCHCODEC_MISSEEKS_IN = frozenset({".avi"})

# Decoders a forked child inherited, kept but never used: freeing one that runs FFmpeg threads
# (num_threads != 1) would wait forever for threads that fork did not copy.
_INHERITED: list[object] = []


class Frames(NamedTuple):
    """Decoded frames, in the order they were asked for."""

    data: torch.Tensor  # uint8 (T, H, W, 3), RGB, on the reader's device
    pts_s: torch.Tensor  # float64 (T,) on the CPU, presentation time in seconds of each frame


class _Info(NamedTuple):
    """A reader's metadata, kept after the decoder is closed."""

    backend: str
    num_frames: int
    fps: float
    start: float
    duration: float
    width: int
    height: int


class _Decoder(Protocol):
    """What a backend provides: metadata of the frames that decode, and decoding by index."""

    backend: str
    num_frames: int
    fps: float
    start: float
    duration: float
    width: int
    height: int
    source_pixels: int  # pixels of a frame as coded, before any resize

    def decode(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode_at(self, seconds: list[float]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def close(self) -> None: ...


class VideoReader:
    """Random access to the frames of one video file.

    Opening checks the file and indexes its best video stream; unreadable input (missing, empty,
    unreadable, not a video, no video stream, nothing decodable) raises `VideoDecodeError` naming
    the path and the reason. `num_frames`, `fps` (average), `start` (first frame's time),
    `duration` (seconds, first frame's start to last frame's end), `width` and `height` describe
    the frames returned, not the container's claims. `backend` is the backend in use.

    `num_threads` is FFmpeg's decoding thread count (`thread_budget` picks one that fits the
    DataLoader workers). `short_side` resizes every frame in the decoder so its short side is
    that many pixels (long side floor(long * S / short), as `short_side_resize` computes it;
    bilinear, antialiased) before it is copied out, which is cheaper than resizing full frames.

    `device="cuda"` (or "cuda:N") decodes on the GPU with torchcodec (NVDEC) and returns `data`
    there, in the same uint8 (T, H, W, 3) layout; `short_side` then resizes on the GPU (bilinear,
    antialiased), and pixels differ from the CPU decoders' by NVDEC's own colour conversion.
    PyAV decodes on the CPU only. No usable GPU, or a torchcodec without CUDA, raises ValueError.
    Use it where frames go to the GPU anyway, from the process that owns the GPU (CUDA does not
    survive `fork`: DataLoader workers would need the "spawn" start method).

    A reader pickles to its path, backend choice and settings and reopens lazily where it is
    unpickled; a copy inherited through `fork` also reopens, so DataLoader workers never share a
    decoder or a file offset.
    """

    def __init__(
        self,
        path: str | Path,
        backend: str = "auto",
        num_threads: int = 1,
        *,
        short_side: int | None = None,
        max_pixels: int | None = MAX_PIXELS,
        device: str = "cpu",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
        device = check_device(device, backend)
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
            raise ValueError(
                f"num_threads must be an int >= 0 (0 lets FFmpeg choose), got {num_threads!r}"
            )
        if short_side is not None and (
            isinstance(short_side, bool) or not isinstance(short_side, int) or short_side < 1
        ):
            raise ValueError(f"short_side must be None or an int >= 1, got {short_side!r}")
        self.path = Path(path)
        self.num_threads = num_threads
        self.short_side = short_side
        self.max_pixels = max_pixels
        self.device = device
        self._requested = backend
        self._decoder: _Decoder | None = None
        self._pid = -1  # process that opened _decoder
        self._closed = False
        self._info: _Info | None = None  # kept after close
        self._live()

    @property
    def backend(self) -> str:
        """The backend actually used: "torchcodec" or "pyav"."""
        return self._metadata().backend

    @property
    def num_frames(self) -> int:
        """Number of frames that decode."""
        return self._metadata().num_frames

    @property
    def fps(self) -> float:
        """Average frame rate: num_frames / duration."""
        return self._metadata().fps

    @property
    def start(self) -> float:
        """Presentation time of the first frame, in seconds (the clock of `Frames.pts_s`)."""
        return self._metadata().start

    @property
    def duration(self) -> float:
        """Seconds from the first frame's start to the last frame's end."""
        return self._metadata().duration

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self._metadata().width

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self._metadata().height

    def get_frames(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> Frames:
        """Frames at `indices` (any order, repeats allowed): uint8 (T, H, W, 3) and pts (T,).

        Raises IndexError for an index outside [0, num_frames) and VideoDecodeError when a frame
        the index promised does not decode.
        """
        decoder = self._live()
        wanted = self._check_indices(indices, decoder.num_frames)
        if not wanted:
            empty = torch.empty(
                (0, decoder.height, decoder.width, 3), dtype=torch.uint8, device=self.device
            )
            return Frames(empty, torch.empty(0, dtype=torch.float64))
        data, pts_s = decoder.decode(wanted)
        return Frames(data, pts_s)

    def get_frames_at(self, seconds: Sequence[float] | torch.Tensor | np.ndarray) -> Frames:
        """The frame shown at each time (any order, repeats allowed): uint8 (T, H, W, 3), pts (T,).

        Times are on the clock of `Frames.pts_s` (the first frame shows at `start`). The frame
        shown at t is the last frame whose pts <= t, so variable-frame-rate video is sampled by
        what a player shows; a time before the first frame gives the first frame. Raises
        IndexError for a time at or past the end (`start + duration`) and VideoDecodeError when
        a frame does not decode.
        """
        decoder = self._live()
        times = self._check_times(seconds, decoder.start, decoder.duration)
        if not times:
            empty = torch.empty(
                (0, decoder.height, decoder.width, 3), dtype=torch.uint8, device=self.device
            )
            return Frames(empty, torch.empty(0, dtype=torch.float64))
        data, pts_s = decoder.decode_at(times)
        return Frames(data, pts_s)

    def close(self) -> None:
        """Release the decoder and the file; later decoding raises ValueError (metadata stays)."""
        if self._decoder is not None and self._pid == os.getpid():
            self._decoder.close()
        elif self._decoder is not None:
            _INHERITED.append(self._decoder)
        self._decoder = None
        self._closed = True

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "backend": self._requested,
            "num_threads": self.num_threads,
            "short_side": self.short_side,
            "max_pixels": self.max_pixels,
            "device": self.device,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.num_threads = state["num_threads"]
        self.short_side = state["short_side"]
        self.max_pixels = state["max_pixels"]
        self.device = state.get("device", "cpu")
        self._requested = state["backend"]
        self._decoder = None
        self._pid = -1
        self._closed = False
        self._info = None

    def __repr__(self) -> str:
        return f"VideoReader({str(self.path)!r}, backend={self._requested!r})"

    def _live(self) -> _Decoder:
        """The decoder of this process, opened on first use here."""
        if self._closed:
            raise ValueError(f"VideoReader for {self.path} is closed")
        if self._decoder is None or self._pid != os.getpid():
            if self._decoder is not None:  # inherited through fork: it shares the parent's file
                _INHERITED.append(self._decoder)  # offset, so it must not be used
            self._decoder = _open(
                self.path, self._requested, self.num_threads, self.short_side, self.device
            )
            self._pid = os.getpid()
            d = self._decoder
            if self.max_pixels is not None and d.source_pixels > self.max_pixels:
                d.close()
                self._decoder = None
                raise VideoDecodeError(
                    self.path,
                    f"its frames have {d.source_pixels:,} pixels, over the ceiling of "
                    f"{self.max_pixels:,} that bounds decoding memory; lift it (--max-pixels 0) "
                    "if the file is trusted",
                )
            self._info = _Info(
                d.backend, d.num_frames, d.fps, d.start, d.duration, d.width, d.height
            )
        return self._decoder

    def _metadata(self) -> _Info:
        """Metadata of the frames, opening the file if this reader has not yet done so."""
        if self._info is None:
            self._live()
        assert self._info is not None
        return self._info

    def _check_indices(
        self, indices: Sequence[int] | torch.Tensor | np.ndarray, num_frames: int
    ) -> list[int]:
        values = indices.tolist() if isinstance(indices, torch.Tensor | np.ndarray) else indices
        if not isinstance(values, Sequence) or any(
            isinstance(value, bool) or not hasattr(value, "__index__") for value in values
        ):
            raise TypeError(
                "frame indices must be a 1-D sequence or tensor of integers, got "
                f"{type(indices).__name__} {values!r:.80}"
            )
        wanted = [operator.index(value) for value in values]
        for index in wanted:
            if not 0 <= index < num_frames:
                raise IndexError(
                    f"frame index {index} is out of range for {self.path}, which has "
                    f"{num_frames} frames (valid indices: 0 to {num_frames - 1})"
                )
        return wanted

    def _check_times(
        self, seconds: Sequence[float] | torch.Tensor | np.ndarray, start: float, duration: float
    ) -> list[float]:
        values = seconds.tolist() if isinstance(seconds, torch.Tensor | np.ndarray) else seconds
        if not isinstance(values, Sequence) or any(
            isinstance(value, bool) or not isinstance(value, numbers.Real) for value in values
        ):
            raise TypeError(
                "times must be a 1-D sequence or tensor of seconds, got "
                f"{type(seconds).__name__} {values!r:.80}"
            )
        end = start + duration
        for value in values:
            if not value < end:  # also refuses NaN
                raise IndexError(
                    f"time {value} s is past the end of {self.path}: its frames span {start:.6g} "
                    f"to {end:.6g} s (duration {duration:.6g} s)"
                )
        return [max(float(value), start) for value in values]


def check_device(device: str, backend: str) -> str:
    """`device` ("cpu", "cuda" or "cuda:N") as the reader keeps it, or ValueError naming the fix
    when `backend` cannot decode there or this machine has no such GPU."""
    try:
        kind = torch.device(device).type if isinstance(device, str) else None
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    device = str(torch.device(device))
    if kind == "cpu":
        return device
    if backend == "pyav":
        raise ValueError(
            f"PyAV decodes on the CPU only: device={device!r} needs backend='torchcodec' or "
            "'auto' (which then uses torchcodec), or use device='cpu'"
        )
    unavailable = load_error()
    if unavailable is not None:
        raise ValueError(f"device={device!r} decodes with torchcodec, which is unavailable: "
                         f"{unavailable}; or use device='cpu'")  # fmt: skip
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} needs a GPU that torch can use, and torch.cuda.is_available() is "
            "False (no GPU here, or a CPU-only torch build); use device='cpu'"
        )
    return device


def auto_backend(*, resized: bool, torchcodec_loads: bool = True) -> str:
    """The backend `backend="auto"` opens a file with on the CPU: "torchcodec" or "pyav".

    It uses only what is known before the file is opened, `resized` (a `short_side` is given) and
    whether torchcodec loads here, because learning more costs an open: the container's codec
    takes an `av.open` (FFmpeg decodes a frame to probe the stream: 0.2 ms for 320x240 MPEG-4,
    7.5 ms for 640x360 VP9, 24 ms for 1280x720 H.264), and the indices come only with
    `get_frames`, after the open.

    Measured by benchmarks/decoder_rule.py (2-core x86-64 CPU shared with other jobs, one FFmpeg
    and one torch thread as in a DataLoader worker, one `VideoReader` per clip; torchcodec 0.17,
    PyAV 18.1; 120 cases: H.264, VP9 and MPEG-4 part 2, 160x120 to 1280x720, 2 s and 60 s,
    keyframes every 30 or 250 frames, 8/16/32 frames uniform or dense; ratio = torchcodec's time
    / PyAV's, geometric mean over the cases; docs/experiments/2026-12-05-decoder-auto-rule.md):

    - resized to a short side of 129 (`--size 112` training): H.264 1.12 (PyAV faster in 56 of
      72 cases; up to 1.84 on sparse reads of long GOPs, where PyAV skips the non-reference
      frames), VP9 0.98 and MPEG-4 0.96 (ties: PyAV faster in 11 of 24 each). torchcodec's resize
      needs the frame size before its decoder is made, which costs it a second open. PyAV for
      every file: 1.05x the faster backend of each case; torchcodec for every file: 1.11x;
      by codec after an `av.open` probe (PyAV for H.264): 1.05x, no gain for the probe.
    - full frames: VP9 0.90, MPEG-4 0.82 (torchcodec faster), H.264 1.02 (PyAV faster on sparse
      reads of long GOPs, up to 1.50; torchcodec on dense reads, down to 0.60). torchcodec for
      every file: 1.07x the faster backend; by codec after a probe: 1.07x. (MPEG-4 part 2 still
      goes to PyAV, for its frames: `TORCHCODEC_MISSEEKS`.)

    Without torchcodec, PyAV decodes everything; on a GPU (`device`) only torchcodec decodes.
    """
    if not torchcodec_loads or resized:
        return "pyav"
    return "torchcodec"


def _open(
    path: Path, requested: str, num_threads: int, short_side: int | None, device: str = "cpu"
) -> _Decoder:
    """Check the file, then open it with the requested backend ("auto": `auto_backend`)."""
    _check_file(path)
    if device != "cpu":  # only torchcodec decodes on a GPU (`check_device`)
        return _open_torchcodec_strict(path, num_threads, short_side, device)
    unavailable = load_error()
    if requested == "auto":
        loads = unavailable is None
        requested = auto_backend(resized=short_side is not None, torchcodec_loads=loads)
        if requested == "torchcodec":
            return _open_torchcodec_or_pyav(path, num_threads, short_side)
    if requested == "pyav":
        return PyAVDecoder(path, num_threads, short_side)
    if unavailable is not None:
        raise RuntimeError(
            f"backend='torchcodec' is unavailable: {unavailable}, or use backend='pyav'"
        )
    return _open_torchcodec_strict(path, num_threads, short_side)


def _open_torchcodec_or_pyav(path: Path, num_threads: int, short_side: int | None) -> _Decoder:
    """torchcodec, or PyAV for the files torchcodec cannot open, counts wrongly (truncated) or
    seeks wrongly (`TORCHCODEC_MISSEEKS`)."""
    try:
        decoder = TorchcodecDecoder(path, num_threads, short_side)
    except TorchcodecOpenError:
        pass  # PyAV opens it or says in plain words why not
    else:
        if decoder.codec in TORCHCODEC_MISSEEKS or path.suffix.lower() in TORCHCODEC_MISSEEKS_IN:
            decoder.close()
        elif decoder.header_num_frames in (None, decoder.num_frames):
            return decoder
        else:
            decoder.close()  # likely truncated: PyAV counts only frames that decode
    return PyAVDecoder(path, num_threads, short_side)


def _open_torchcodec_strict(
    path: Path, num_threads: int, short_side: int | None, device: str = "cpu"
) -> TorchcodecDecoder:
    """Open with torchcodec only; explain failures in PyAV's plain words where PyAV also fails."""
    others = "backend='auto' or 'pyav'" if device == "cpu" else "device='cpu'"
    try:
        decoder = TorchcodecDecoder(path, num_threads, short_side, device)
    except TorchcodecOpenError as error:
        PyAVDecoder(path, num_threads).close()  # raises VideoDecodeError with the reason
        raise VideoDecodeError(path, f"torchcodec cannot open it ({error}); {others} can") from None
    if decoder.header_num_frames not in (None, decoder.num_frames):
        # Header and packets disagree: a truncated file, whose last packet may be cut off.
        try:
            decoder.decode([decoder.num_frames - 1])
        except VideoDecodeError:
            decoder.close()
            raise VideoDecodeError(
                path,
                f"truncated or corrupt: the header lists {decoder.header_num_frames} frames, the "
                f"file holds {decoder.num_frames} and frame {decoder.num_frames - 1} does not "
                f"decode with torchcodec; {others} reads the frames that do",
            ) from None
    return decoder


def _check_file(path: Path) -> None:
    """Raise VideoDecodeError unless `path` is a non-empty regular file this process can read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise VideoDecodeError(path, "file does not exist") from None
    except PermissionError:
        raise VideoDecodeError(
            path, "permission denied: a folder on its path cannot be entered"
        ) from None
    except OSError as error:
        raise VideoDecodeError(path, f"cannot access it ({error.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise VideoDecodeError(path, "is a folder, not a video file")
    if not stat.S_ISREG(info.st_mode):
        raise VideoDecodeError(path, "not a regular file (pipes and devices cannot be seeked)")
    if info.st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    try:
        with path.open("rb"):
            pass
    except PermissionError:
        raise VideoDecodeError(
            path, "no read permission (check the file's mode and owner)"
        ) from None
    except OSError as error:
        raise VideoDecodeError(path, f"cannot open it ({error.strerror})") from None
