"""Which reader backend decodes a training clip faster: torchcodec against PyAV, per kind of file.

It times what `VideoDataset._load` does for one training clip: open a `VideoReader` (FFmpeg threads
`--threads`, frames resized in the decoder to `--short-side`), `get_frames` of the indices
`sample_clip(train=True)` draws ("uniform" TSN segments over the whole video, or "dense" frames
`--stride` apart from a random start), close. Both backends get the same indices in each round
and run in alternating order; a case's time is the median over its rounds.

The files vary in what the reader knows when it opens one: codec (H.264, VP9, MPEG-4 part 2),
resolution, length and keyframe interval. They are made with the `ffmpeg` program (a moving test
pattern over fixed grain, about 4 Mbit/s at 720p) and cached in `--workdir`.

    python benchmarks/decoder_rule.py --out rule.json            # the whole grid, a few minutes
    python benchmarks/decoder_rule.py --quick --out quick.json   # two tiny files (smoke run)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from tubelet.data.sampling import sample_clip
from tubelet.io import VideoReader, torchcodec_error

DEFAULT_WORKDIR = Path("/tmp/tubelet_decoder_rule")
BACKENDS = ("torchcodec", "pyav")
SAMPLINGS = ("uniform", "dense")

# codec -> (file suffix, ffmpeg encoder arguments; the keyframe interval is added per file)
ENCODERS: dict[str, tuple[str, list[str]]] = {
    "h264": ("mp4", ["-c:v", "libx264", "-preset", "fast", "-crf", "23", "-bf", "3"]),
    "vp9": (
        "webm",
        [
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "0",
            "-crf",
            "34",
            "-row-mt",
            "1",
        ],
    ),  # fmt: skip
    "mpeg4": ("avi", ["-c:v", "mpeg4", "-q:v", "5", "-bf", "2"]),
}


@dataclass(frozen=True)
class FileSpec:
    """One generated file: codec, size, length in seconds (30 fps) and keyframe interval."""

    codec: str
    width: int
    height: int
    seconds: int
    gop: int

    @property
    def name(self) -> str:
        return f"{self.codec}_{self.width}x{self.height}_{self.seconds}s_g{self.gop}"


def _grid() -> tuple[FileSpec, ...]:
    specs = []
    for width, height in ((160, 120), (320, 240), (640, 360), (1280, 720)):
        specs.append(FileSpec("h264", width, height, 2, 250))  # one GOP: a short clip
        specs += [FileSpec("h264", width, height, 60, gop) for gop in (30, 250)]
    for codec in ("vp9", "mpeg4"):
        for width, height in ((320, 240), (640, 360)):
            specs += [
                FileSpec(codec, width, height, 2, 250),
                FileSpec(codec, width, height, 60, 250),
            ]
    return tuple(specs)


FILES = _grid()
QUICK_FILES = (FileSpec("h264", 160, 120, 2, 250), FileSpec("h264", 160, 120, 10, 30))
FRAMES = (8, 16, 32)
QUICK_FRAMES = (8,)


def generate(spec: FileSpec, folder: Path) -> Path:
    """The file for `spec` in `folder`, encoded once with the ffmpeg program."""
    suffix, codec_args = ENCODERS[spec.codec]
    path = folder / f"{spec.name}.{suffix}"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{spec.name}.partial.{suffix}")  # renamed when complete
    source = f"testsrc2=size={spec.width}x{spec.height}:rate=30,noise=alls=10"
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source,
        "-t", str(spec.seconds), *codec_args, "-g", str(spec.gop), "-pix_fmt", "yuv420p",
        str(partial),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    partial.rename(path)
    return path


def describe(path: Path) -> dict[str, Any]:
    """What the reader can know at open: codec, size, frame count and mean keyframe interval, and
    what learning the codec costs before opening a decoder (`probe_seconds`: `av.open`, median of
    5; FFmpeg decodes a frame there to probe the stream)."""
    probes, codecs = [], set()
    for _ in range(5):
        start = time.perf_counter()
        with av.open(str(path)) as container:
            codecs.add(container.streams.video[0].codec_context.name)
        probes.append(time.perf_counter() - start)
    keyframes, packets = 0, 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
        for packet in container.demux(stream):
            if packet.size:
                packets += 1
                keyframes += packet.is_keyframe
    return {
        "codec": codec,
        "width": width,
        "height": height,
        "num_frames": packets,
        "keyframes": keyframes,
        "keyframe_interval": packets / max(keyframes, 1),
        "size_bytes": path.stat().st_size,
        "probe_seconds": statistics.median(probes),
    }


def clip_once(
    path: Path, backend: str, indices: list[int], threads: int, short_side: int | None
) -> tuple[float, float, torch.Tensor]:
    """One training clip: (seconds to open, seconds to decode, frames uint8 (T, H', W', 3))."""
    start = time.perf_counter()
    reader = VideoReader(path, backend=backend, num_threads=threads, short_side=short_side)
    opened = time.perf_counter()
    with reader:
        frames = reader.get_frames(indices).data
    return opened - start, time.perf_counter() - opened, frames


def run_case(
    path: Path, info: dict[str, Any], sampling: str, frames: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Both backends on one file and clip shape; returns the case's JSON record."""
    rng = np.random.default_rng(zlib.crc32(f"{path.name}/{sampling}/{frames}".encode()))
    total: dict[str, list[float]] = {b: [] for b in BACKENDS}
    opening: dict[str, list[float]] = {b: [] for b in BACKENDS}
    max_diff = 0
    spent = 0.0
    for round_index in range(args.repeats):
        clip = sample_clip(
            info["num_frames"], 30.0, sampling=sampling, clip_len=frames, stride=args.stride,
            train=True, rng=rng,
        )  # fmt: skip
        indices = [int(i) for i in clip.indices]
        order = BACKENDS if round_index % 2 == 0 else BACKENDS[::-1]
        decoded = {}
        for backend in order:
            open_s, decode_s, decoded[backend] = clip_once(
                path, backend, indices, args.threads, args.short_side
            )
            total[backend].append(open_s + decode_s)
            opening[backend].append(open_s)
            spent += open_s + decode_s
        a, b = (decoded[name].to(torch.int16) for name in BACKENDS)
        max_diff = max(max_diff, int((a - b).abs().max()) if a.shape == b.shape else 255)
        if round_index + 1 >= args.min_repeats and spent > args.case_budget:
            break
    seconds = {b: statistics.median(ts) for b, ts in total.items()}
    ratio = seconds["torchcodec"] / seconds["pyav"]
    pick = info["auto_picks"]
    return {
        "sampling": sampling,
        "frames": frames,
        "rounds": len(total["pyav"]),
        "seconds": seconds,
        "open_seconds": {b: statistics.median(ts) for b, ts in opening.items()},
        "all_seconds": total,
        "ratio_torchcodec_to_pyav": ratio,
        "faster": "pyav" if ratio > 1 else "torchcodec",
        "auto_picks": pick,
        "auto_to_best": seconds[pick] / min(seconds.values()),
        "max_abs_pixel_diff": max_diff,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    """The study's table in Markdown: one row per file, the ratio for each clip shape."""
    shapes = [(s, f) for s in SAMPLINGS for f in sorted({r["frames"] for r in results})]
    header = ["file", "kf interval", *(f"{s} {f}" for s, f in shapes), "auto"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
    by_file: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for r in results:
        by_file.setdefault(r["file"], {})[(r["sampling"], r["frames"])] = r
    for name, cases in by_file.items():
        first = next(iter(cases.values()))
        cells = [
            f"{cases[shape]['ratio_torchcodec_to_pyav']:.2f}" if shape in cases else "-"
            for shape in shapes
        ]
        row = [name, f"{first['keyframe_interval']:.0f}", *cells, first["auto_picks"]]
        print("| " + " | ".join(row) + " |")


def by_codec_after_probe(result: dict[str, Any]) -> float:
    """Seconds per clip of the rule that learns the codec first (`av.open`): PyAV for H.264 (it
    can go on with the probe's container), torchcodec after the probe for the other codecs."""
    if result["codec"] == "h264":
        return result["seconds"]["pyav"]
    return result["seconds"]["torchcodec"] + result["probe_seconds"]


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each policy's time against the faster backend of each case: geometric mean and worst."""
    policies = {
        "auto": lambda r: r["seconds"][r["auto_picks"]],
        "torchcodec_always": lambda r: r["seconds"]["torchcodec"],
        "pyav_always": lambda r: r["seconds"]["pyav"],
        "by_codec_after_probe": by_codec_after_probe,
    }
    summary: dict[str, Any] = {
        "cases": len(results),
        "auto_picks_the_faster": sum(r["auto_picks"] == r["faster"] for r in results),
    }
    for name, seconds in policies.items():
        loss = [seconds(r) / min(r["seconds"].values()) for r in results]
        summary[f"{name}_to_best_geomean"] = float(np.exp(np.mean(np.log(loss))))
        summary[f"{name}_to_best_worst"] = max(loss)
    for codec in sorted({r["codec"] for r in results}):
        ratios = [r["ratio_torchcodec_to_pyav"] for r in results if r["codec"] == codec]
        summary[f"ratio_geomean_{codec}"] = float(np.exp(np.mean(np.log(ratios))))
        summary[f"pyav_faster_{codec}"] = f"{sum(x > 1 for x in ratios)} of {len(ratios)}"
    return summary


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("decoder_rule.json"), help="JSON results")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="generated files")
    parser.add_argument("--repeats", type=int, default=7, help="most rounds per case (default 7)")
    parser.add_argument("--min-repeats", type=int, default=2, help="fewest rounds (default 2)")
    parser.add_argument(
        "--case-budget", type=float, default=3.0, help="stop a case's rounds after this many s"
    )
    parser.add_argument("--threads", type=int, default=1, help="FFmpeg threads (as a worker)")
    parser.add_argument(
        "--short-side",
        type=int,
        default=129,
        help="decoder resize (129: --size 112 training; 0: none, full frames)",
    )
    parser.add_argument("--stride", type=int, default=2, help="dense clips' frame step")
    parser.add_argument("--files", nargs="+", help="only these files (names as in the JSON)")
    parser.add_argument("--quick", action="store_true", help="two tiny files, 8 frames (smoke run)")
    args = parser.parse_args(argv)
    args.short_side = args.short_side or None
    if args.min_repeats < 1 or args.repeats < args.min_repeats:
        parser.error("need 1 <= --min-repeats <= --repeats")
    if torchcodec_error() is not None:
        parser.error(f"torchcodec is needed to compare it: {torchcodec_error()}")
    if shutil.which("ffmpeg") is None:
        parser.error("the ffmpeg program makes the test files: install FFmpeg")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)  # as in tubelet's DataLoader workers
    specs = QUICK_FILES if args.quick else FILES
    specs = tuple(s for s in specs if not args.files or s.name in args.files)
    frame_counts = QUICK_FRAMES if args.quick else FRAMES
    started = time.perf_counter()
    results = []
    files = {}
    for spec in specs:
        path = generate(spec, args.workdir)
        info = files[spec.name] = {**asdict(spec), **describe(path)}
        with VideoReader(path, short_side=args.short_side) as reader:
            info["auto_picks"] = reader.backend  # the rule, and the codecs PyAV reads anyway
        clip_once(path, "torchcodec", [0], args.threads, args.short_side)  # warm the page cache
        clip_once(path, "pyav", [0], args.threads, args.short_side)
        for sampling in SAMPLINGS:
            for frames in frame_counts:
                record = run_case(path, info, sampling, frames, args)
                keep = ("codec", "width", "height", "num_frames", "keyframe_interval")
                keep += ("probe_seconds",)
                results.append({"file": spec.name, **{k: info[k] for k in keep}, **record})
                print(
                    f"{spec.name:28s} {sampling:7s} {frames:2d}: torchcodec "
                    f"{record['seconds']['torchcodec'] * 1e3:7.1f} ms, pyav "
                    f"{record['seconds']['pyav'] * 1e3:7.1f} ms, ratio "
                    f"{record['ratio_torchcodec_to_pyav']:.2f}",
                    flush=True,
                )
    report = {
        "meta": {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor()}".strip(),
            "cpu_count": os.cpu_count(),
            "load_average_end": os.getloadavg(),
            "seconds": time.perf_counter() - started,
            "threads": args.threads,
            "short_side": args.short_side,
            "versions": {
                "torch": torch.__version__,
                "av": av.__version__,
                "torchcodec": __import__("torchcodec").__version__,
            },
            "ratio": "torchcodec seconds / PyAV seconds per clip (open + decode + close); > 1: "
            "PyAV is faster",
        },
        "files": files,
        "results": results,
        "summary": summarize(results),
    }
    print_table(results)
    print(json.dumps(report["summary"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
