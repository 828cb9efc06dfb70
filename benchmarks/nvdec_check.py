"""GPU decoding check: the same clip decoded by torchcodec on the CPU and on the GPU (NVDEC).

It writes a short H.264 file (`tubelet.io.write_video`), then for each decoder resize (none, and
`--short-side`) reads the same frames with `VideoReader(backend="torchcodec", device=D)` for D in
cpu and `--device`, and reports:

- the layout on the GPU (uint8 (T, H, W, 3), contiguous, on the device) and the frame size;
- the largest and the mean absolute pixel difference between the two devices (NVDEC converts YUV
  to RGB with its own kernels, and the GPU path resizes with torch, the CPU path with swscale);
- clips/s on each device, each clip opened, decoded and closed as `VideoDataset` does;
- that `TrainTransform` and a `VideoDataset(decode_device=...)` item run on the GPU frames.

Needs a CUDA GPU, PyAV and a CUDA build of torchcodec; where torchcodec or PyAV does not import it
writes `{"skipped": reason}` and exits 0, so `benchmarks/gpu_suite.sh` can always run it.

    python benchmarks/nvdec_check.py --out nvdec.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _skip_reason() -> str | None:
    """Why the check cannot run here, or None."""
    try:
        import av  # noqa: F401
    except ImportError as error:
        return f"PyAV does not import ({error})"
    from tubelet.io import torchcodec_error

    reason = torchcodec_error()
    if reason is not None:
        return reason
    if not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is False)"
    return None


def make_clip(path: Path, width: int, height: int, num_frames: int, fps: int = 30) -> Path:
    """An H.264 file of smooth colour ramps with a bright block moving across them."""
    from tubelet.io import write_video

    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = (xs * 255 // max(width - 1, 1) + 3 * t) % 256
        frames[t, ..., 1] = ys * 255 // max(height - 1, 1)
        frames[t, ..., 2] = (xs + ys + 5 * t) % 256
        left = (t * 7) % max(width - height // 4, 1)
        frames[t, height // 3 : height // 3 + height // 4, left : left + height // 4] = 250
    return write_video(path, frames, fps, crf=18, gop=30, bframes=2)


def decode(path: Path, indices: list[int], device: str, short_side: int | None) -> torch.Tensor:
    """One training clip as `VideoDataset` reads it: open, get_frames, close."""
    from tubelet.io import VideoReader

    reader = VideoReader(path, "torchcodec", num_threads=1, short_side=short_side, device=device)
    with reader:
        return reader.get_frames(indices).data


def clips_per_second(
    path: Path, clips: list[list[int]], device: str, short_side: int | None
) -> float:
    """Clips decoded per second on `device`, the GPU's work included (synchronised)."""
    decode(path, clips[0], device, short_side)  # warm-up: NVDEC and CUDA contexts
    if device != "cpu":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for indices in clips:
        decode(path, indices, device, short_side)
    if device != "cpu":
        torch.cuda.synchronize(device)
    return len(clips) / (time.perf_counter() - start)


def transforms_on_device(path: Path, device: str, short_side: int) -> dict[str, Any]:
    """`TrainTransform` on GPU frames, and one `VideoDataset(decode_device=device)` item."""
    from tubelet.data.annotations import VideoRecord
    from tubelet.data.datasets import ClipSpec, VideoDataset
    from tubelet.data.transforms import TrainTransform

    result: dict[str, Any] = {}
    transform = TrainTransform(size=112, resize=short_side)
    try:
        frames = decode(path, list(range(16)), device, short_side)
        clip = transform(frames, np.random.default_rng(0))  # (C, T, 112, 112)
        result["train_transform"] = f"ok: {tuple(clip.shape)} {clip.dtype} on {clip.device}"
    except Exception as error:  # reported, not fatal: the decode figures still count
        result["train_transform"] = f"FAILED: {type(error).__name__}: {error}"
    try:
        dataset = VideoDataset(
            [VideoRecord(path, 0)], clip=ClipSpec(frames=16, sampling="dense"),
            transform=transform, train=True, bad_files="raise", decode_device=device,
        )  # fmt: skip
        video = dataset[0]["video"]
        result["dataset_item"] = f"ok: {tuple(video.shape)} {video.dtype} on {video.device}"
    except Exception as error:
        result["dataset_item"] = f"FAILED: {type(error).__name__}: {error}"
    return result


def check(path: Path, device: str, frames: int, short_side: int, clips: int) -> dict[str, Any]:
    """The comparison for one file; see the module docstring."""
    from tubelet.io import VideoReader

    with VideoReader(path, "torchcodec") as reader:
        num_frames = reader.num_frames
    rng = np.random.default_rng(0)
    starts = rng.integers(0, max(num_frames - 2 * frames, 1), clips)
    draws = [[int(s) + 2 * i for i in range(frames)] for s in starts]  # dense, stride 2
    report: dict[str, Any] = {"num_frames": num_frames, "frames_per_clip": frames, "cases": []}
    for resize in (None, short_side):
        cpu = decode(path, draws[0], "cpu", resize)
        gpu = decode(path, draws[0], device, resize)
        difference = (gpu.cpu().to(torch.int16) - cpu.to(torch.int16)).abs()
        case = {
            "short_side": resize,
            "cpu_shape": list(cpu.shape),
            "gpu_shape": list(gpu.shape),
            "gpu_layout_ok": gpu.dtype == torch.uint8
            and gpu.device.type == torch.device(device).type
            and gpu.is_contiguous()
            and gpu.shape == cpu.shape,
            "max_abs_pixel_diff": int(difference.max()) if gpu.shape == cpu.shape else None,
            "mean_abs_pixel_diff": float(difference.float().mean())
            if gpu.shape == cpu.shape
            else None,
            "cpu_clips_per_s": clips_per_second(path, draws, "cpu", resize),
            "gpu_clips_per_s": clips_per_second(path, draws, device, resize),
        }
        case["gpu_to_cpu_speed"] = case["gpu_clips_per_s"] / case["cpu_clips_per_s"]
        report["cases"].append(case)
        print(json.dumps(case), flush=True)
    report["on_device"] = transforms_on_device(path, device, short_side)
    return report


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("nvdec.json"), help="JSON results")
    parser.add_argument("--device", default="cuda", help="the GPU (default cuda)")
    parser.add_argument("--size", default="1280x720", help="WxH of the test file")
    parser.add_argument("--seconds", type=int, default=4, help="its length at 30 fps")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (dense, stride 2)")
    parser.add_argument("--short-side", type=int, default=129, help="decoder resize (--size 112)")
    parser.add_argument("--clips", type=int, default=20, help="clips timed per device")
    args = parser.parse_args(argv)
    reason = _skip_reason()
    if reason is not None:
        report: dict[str, Any] = {"skipped": reason}
        print(f"nvdec_check skipped: {reason}")
    else:
        width, height = (int(v) for v in args.size.lower().split("x"))
        with tempfile.TemporaryDirectory() as folder:
            path = make_clip(Path(folder) / "clip.mp4", width, height, 30 * args.seconds)
            report = {
                "device": torch.cuda.get_device_name(args.device),
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "versions": {
                    "torch": torch.__version__,
                    "torchcodec": __import__("torchcodec").__version__,
                },
                "file": f"H.264 {width}x{height}, {args.seconds} s at 30 fps, GOP 30",
                **check(path, args.device, args.frames, args.short_side, args.clips),
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
