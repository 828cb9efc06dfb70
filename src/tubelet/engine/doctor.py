"""`tubelet doctor`: what this machine gives tubelet, as a bug report needs it, and what to fix.

Each check is a `Check`: a name, what was found, whether it works, whether tubelet needs it, and
the fix when it does not work. Needed: the libraries tubelet imports and a decoder that reads
video (PyAV always can). Optional: torchcodec's FFmpeg (faster reads; PyAV stands in), GPUs and
NVDEC (decoding on the GPU).
"""

from __future__ import annotations

import ctypes
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Check:
    """One line of the report. `fix` says what to do when `ok` is false."""

    name: str
    found: str
    ok: bool = True
    needed: bool = True
    fix: str | None = None


def diagnose() -> list[Check]:
    """Every check, in the order a report shows them."""
    return [
        Check("python", f"{platform.python_version()} ({platform.platform()})"),
        *_versions(),
        *_decoders(),
        _cpus(),
        *_gpus(),
    ]


def problems(checks: list[Check]) -> list[Check]:
    """The needed checks that failed (`tubelet doctor` exits 1 when there is any)."""
    return [c for c in checks if c.needed and not c.ok]


def _versions() -> list[Check]:
    import av

    from tubelet import __version__

    checks = [
        Check("tubelet", __version__),
        Check("torch", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"),
    ]
    try:
        import torchvision

        checks.append(Check("torchvision", torchvision.__version__))
    except (ImportError, RuntimeError) as error:
        checks.append(
            Check("torchvision", f"does not import ({error})", ok=False,
                  fix=f"pip install the torchvision built for torch {torch.__version__}")
        )  # fmt: skip
    try:
        import torchcodec

        checks.append(Check("torchcodec", torchcodec.__version__, needed=False))
    except ImportError:
        checks.append(
            Check(
                "torchcodec", "not installed", ok=False, needed=False, fix="pip install torchcodec"
            )
        )
    ffmpeg = getattr(av, "ffmpeg_version_info", "?")
    checks.append(Check("PyAV", f"{av.__version__} (its own FFmpeg {ffmpeg})"))
    return checks


def _decoders() -> list[Check]:
    from tubelet.io import torchcodec_error

    reason = torchcodec_error()
    if reason is None:
        import torchcodec

        major = getattr(torchcodec, "ffmpeg_major_version", None)
        loaded = f"loads (FFmpeg {major})" if major else "loads"
        checks = [Check("FFmpeg for torchcodec", loaded, needed=False)]
    else:
        checks = [
            Check("FFmpeg for torchcodec", "does not load", ok=False, needed=False, fix=reason)
        ]
    from tubelet.io.reader import auto_backend

    resized = auto_backend(resized=True, torchcodec_loads=reason is None)
    full = auto_backend(resized=False, torchcodec_loads=reason is None)
    picks = f"{resized} for clips resized in decoding, {full} for full frames"
    checks.append(Check("decoder of backend='auto'", full if full == resized else picks))
    checks.append(_round_trip())
    return checks


def _round_trip() -> Check:
    """Write an 8-frame H.264 file and read it back with the reader tubelet trains with."""
    import numpy as np

    from tubelet.io import VideoReader, write_video

    frames = np.zeros((8, 32, 32, 3), np.uint8)
    frames[:, :, :16] = np.arange(8, dtype=np.uint8)[:, None, None, None] * 30  # (8, 32, 16, 3)
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "doctor.mp4"
            write_video(path, frames, fps=8)
            with VideoReader(path) as reader:
                got = reader.get_frames([0, 7]).data
                backend = reader.backend
        if tuple(got.shape) != (2, 32, 32, 3):
            raise ValueError(f"decoded frames of shape {tuple(got.shape)}, wrote (2, 32, 32, 3)")
    except Exception as error:  # any failure here is what the report is for
        return Check(
            "write and read a video", f"fails: {type(error).__name__}: {error}", ok=False,
            fix="reinstall PyAV (pip install --force-reinstall 'av>=14'); it ships its own FFmpeg",
        )  # fmt: skip
    return Check("write and read a video", f"works (H.264 mp4, read with {backend})")


def _cpus() -> Check:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = platform.processor() or platform.machine()
    return Check(
        "CPUs", f"{os.cpu_count()} ({usable} usable; torch threads {torch.get_num_threads()}; "
        f"{machine})",
    )  # fmt: skip


def _gpus() -> list[Check]:
    if not torch.cuda.is_available():
        found = "none (CUDA build of torch: " + (torch.version.cuda or "no") + ")"
        return [Check("GPUs", found, needed=False), Check("NVDEC", "no GPU", needed=False)]
    names = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        names.append(f"cuda:{index} {props.name} ({props.total_memory / 2**30:.0f} GiB)")
    checks = [Check("GPUs", "; ".join(names), needed=False)]
    try:
        ctypes.CDLL("libnvcuvid.so.1")  # the driver's video decoder (NVDEC) library
    except OSError:
        checks.append(
            Check("NVDEC", "libnvcuvid.so.1 does not load", ok=False, needed=False,
                  fix="install the NVIDIA driver's video codec libraries (libnvidia-decode) to "
                  "decode on the GPU; CPU decoding works without them")
        )  # fmt: skip
    else:
        checks.append(Check("NVDEC", "libnvcuvid.so.1 loads (GPU decoding possible)", needed=False))
    return checks
