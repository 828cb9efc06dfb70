"""Optical-flow files: Middlebury/Sintel `.flo` and KITTI 16-bit PNG, read and written.

Flow is a float32 array (H, W, 2) of (dx, dy) in pixels. KITTI files also carry a validity mask
(H, W) bool: pixels without ground truth.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch

FLO_MAGIC = 202021.25  # "PIEH" read as a little-endian float32: the .flo format's tag
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_flo(path: str | Path) -> np.ndarray:
    """A `.flo` file -> float32 (H, W, 2)."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != FLO_MAGIC:
        raise ValueError(f"{path} is not a .flo file (no PIEH tag at its start)")
    width, height = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    expected = 12 + 8 * width * height
    if width <= 0 or height <= 0 or len(data) != expected:
        raise ValueError(
            f"{path}: a {width}x{height} .flo file has {expected} bytes, this one {len(data)} "
            "(truncated or damaged)"
        )
    return np.frombuffer(data[12:], "<f4").reshape(height, width, 2).copy()


def write_flo(path: str | Path, flow: np.ndarray) -> Path:
    """Write float (H, W, 2) flow as a `.flo` file."""
    flow = _check_flow(flow)
    height, width = flow.shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    path.write_bytes(header + flow.astype("<f4").tobytes())
    return path


def read_kitti_flow(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A KITTI flow PNG -> (flow float32 (H, W, 2), valid bool (H, W)).

    KITTI stores u, v, valid as 16-bit R, G, B with flow = (value - 2^15) / 64.
    """
    from torchcodec.decoders import decode_png

    path = Path(path)
    _read_bytes(path, check_only=True)
    try:
        image = decode_png(path, mode="UNCHANGED", output_dtype="auto")  # (3, H, W) uint16
    except RuntimeError as error:
        raise ValueError(f"{path} is not a readable PNG: {error}") from None
    if image.dtype != torch.uint16 or image.shape[0] != 3:
        raise ValueError(
            f"{path} is not a KITTI flow PNG: expected 16-bit RGB, got {image.dtype} with "
            f"{image.shape[0]} channel(s)"
        )
    array = image.permute(1, 2, 0).numpy().astype(np.float32)  # (H, W, 3)
    flow = (array[..., :2] - 2**15) / 64.0
    return flow, array[..., 2] > 0


def write_kitti_flow(path: str | Path, flow: np.ndarray, valid: np.ndarray | None = None) -> Path:
    """Write flow (H, W, 2) as a KITTI 16-bit PNG (range +-512 px, 1/64 px steps)."""
    flow = _check_flow(flow)
    if valid is None:
        valid = np.ones(flow.shape[:2], bool)
    if valid.shape != flow.shape[:2]:
        raise ValueError(f"valid mask {valid.shape} does not match flow {flow.shape[:2]}")
    encoded = np.clip(np.round(flow * 64.0 + 2**15), 0, 2**16 - 1)
    rgb = np.concatenate([encoded, valid[..., None].astype(np.float64)], axis=-1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png16(rgb.astype(np.uint16)))
    return path


def _png16(rgb: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (no filtering) of uint16 (H, W, 3): what KITTI's devkit writes."""
    height, width = rgb.shape[:2]
    rows = rgb.astype(">u2").reshape(height, width * 6 // 2).view(np.uint8)  # big-endian bytes
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # depth 16, colour type RGB
    return (
        _PNG_SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _check_flow(flow: np.ndarray) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[-1] != 2 or not np.issubdtype(flow.dtype, np.floating):
        raise ValueError(f"flow must be a float array (H, W, 2), got {flow.dtype} {flow.shape}")
    return flow


def _read_bytes(path: Path, *, check_only: bool = False) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"flow file {path} does not exist")
    return b"" if check_only else path.read_bytes()


def _colour_wheel() -> np.ndarray:
    """The Middlebury colour wheel (Baker et al., "A Database and Evaluation Methodology for Optical
    Flow", 2011): 55 hues, red -> yellow -> green -> cyan -> blue -> magenta -> red, (55, 3) in [0, 1]."""
    segments = [
        (15, (1, 0, 0), (1, 1, 0)),
        (6, (1, 1, 0), (0, 1, 0)),
        (4, (0, 1, 0), (0, 1, 1)),
        (11, (0, 1, 1), (0, 0, 1)),
        (13, (0, 0, 1), (1, 0, 1)),
        (6, (1, 0, 1), (1, 0, 0)),
    ]
    rows = []
    for n, start, end in segments:
        t = np.arange(n)[:, None] / n
        rows.append((1 - t) * np.array(start) + t * np.array(end))
    return np.concatenate(rows)


def flow_to_image(flow: np.ndarray, *, max_flow: float | None = None) -> np.ndarray:
    """Flow (2, H, W) or (H, W, 2) -> uint8 RGB (H, W, 3) on the Middlebury colour wheel.

    Hue is the direction, saturation the magnitude relative to `max_flow` (default: the largest
    magnitude in this flow); zero flow is white. Pass one `max_flow` for all frames of a video so
    that colours compare across frames.
    """
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim == 3 and flow.shape[0] == 2 and flow.shape[-1] != 2:
        flow = flow.transpose(1, 2, 0)
    flow = _check_flow(flow)
    u, v = flow[..., 0], flow[..., 1]
    magnitude = np.sqrt(u**2 + v**2)
    scale = max_flow if max_flow is not None else float(magnitude.max())
    radius = np.clip(magnitude / max(scale, 1e-6), 0, 1)[..., None]
    wheel = _colour_wheel()
    position = (np.arctan2(-v, -u) / np.pi + 1) / 2 * len(wheel)  # [0, 55]
    low = np.floor(position).astype(int) % len(wheel)
    high = (low + 1) % len(wheel)
    frac = (position - np.floor(position))[..., None]
    colour = (1 - frac) * wheel[low] + frac * wheel[high]  # (H, W, 3)
    image = 1 - radius * (1 - colour)  # white at zero motion, full colour at max_flow
    return np.round(image * 255).astype(np.uint8)
