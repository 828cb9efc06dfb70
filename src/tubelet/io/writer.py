"""Writing frames to mp4 (H.264) and gif with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch


def write_video(
    path: str | Path,
    frames: torch.Tensor | np.ndarray,
    fps: float,
    *,
    crf: int = 18,
    gop: int | None = None,
    bframes: int | None = None,
) -> Path:
    """Write uint8 frames (T, H, W, 3) to `path`; the suffix picks the format (.mp4 or .gif).

    mp4 is H.264 in yuv420p, so odd sizes are padded by one pixel on the right/bottom edge (the
    encoder needs even sizes). `gop` and `bframes` set the keyframe interval and B-frame count.
    """
    path = Path(path)
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(
            f"write_video expects uint8 frames of shape (T, H, W, 3), got {array.dtype} "
            f"{tuple(array.shape)}; convert with (x * 255).clamp(0, 255).to(torch.uint8)"
        )
    if len(array) == 0:
        raise ValueError("write_video got no frames")
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"write_video writes .mp4 or .gif, not {suffix!r} ({path})")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    if suffix == ".gif":
        _write_gif(path, array, rate)
    else:
        _write_mp4(path, array, rate, crf=crf, gop=gop, bframes=bframes)
    return path


def _write_mp4(
    path: Path, array: np.ndarray, rate: Fraction, *, crf: int, gop: int | None, bframes: int | None
) -> None:
    height, width = array.shape[1:3]
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    options = {"crf": str(crf)}
    if gop is not None:
        options["g"] = str(gop)
    if bframes is not None:
        options["bf"] = str(bframes)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height = array.shape[2], array.shape[1]
        stream.pix_fmt = "yuv420p"
        for image in array:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_gif(path: Path, array: np.ndarray, rate: Fraction) -> None:
    with av.open(str(path), mode="w", format="gif") as container:
        stream = container.add_stream("gif", rate=rate)
        stream.width, stream.height = array.shape[2], array.shape[1]
        stream.pix_fmt = "rgb8"
        for image in array:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
