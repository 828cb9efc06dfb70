"""Decoding benchmark: tubelet's `VideoReader` against the decoders users have today.

In one process, on the same generated H.264 files and the same frame indices, it times

- `tubelet`: `VideoReader(path)` (backend "auto", or the first of `--backend`) then
  `get_frames(indices)`; each further `--backend` is timed as `tubelet_<backend>` (not a peer);
- `torchcodec_exact` / `torchcodec_approximate`: torchcodec's `VideoDecoder` used directly with
  `seek_mode="exact"` / `"approximate"`, then `get_frames_at(indices)`;
- `decord`: `decord.VideoReader(path).get_batch(indices)` (when decord imports; the JSON says why not);
- `pyav_loop`: a plain PyAV loop that decodes every frame from the start up to the last wanted one
  and keeps the wanted frames (the "decode everything" baseline).

Every call opens the file, decodes and closes it, as a training dataset does for each clip, with
the same FFmpeg thread count for every decoder (`--threads`). Each case runs one warm-up round,
then `--repeats` timed rounds; a round runs tubelet first (its frames are the reference), then the
peers in an order that rotates between rounds, and every peer's frames are compared with tubelet's:
exactly for the FFmpeg-based peers, within a small tolerance for decord (its own FFmpeg and colour
conversion). Wrong frames are reported in the JSON as a mismatch, whatever the time.

`--memory` adds the loader memory check: random reads through a DataLoader with 2 workers, each
opening a reader and decoding a random clip, with the resident memory of the worker processes
(VmRSS from /proc) tracked from the end of a warm-up to the end of the run.

    python benchmarks/decode.py --out results.json            # full run (generates files once)
    python benchmarks/decode.py --quick --out quick.json      # one tiny file, one case: a smoke run
    python benchmarks/decode.py --memory --no-timing          # only the 10,000-read memory check
    python benchmarks/decode.py --files 720p_60s --cases uniform_8 uniform_16 uniform_32 \
        --backend auto pyav --out sparse.json                  # the sparse goal, both backends
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from tubelet.data.sampling import dense_indices, temporal_views, uniform_indices
from tubelet.io import VideoReader, torchcodec_error

DEFAULT_WORKDIR = Path(__file__).resolve().parent / ".cache"
GENERATOR_VERSION = 1  # bump when the generated content changes, so cached files are remade
# decord decodes with its own FFmpeg and YUV->RGB conversion: a right frame differs from
# FFmpeg's by rounding (mean |diff| below 1 level); a wrong frame of moving texture by far more.
DECORD_MEAN_TOLERANCE = 3.0


@dataclass(frozen=True)
class VideoSpec:
    """One generated H.264 file: size, length, keyframe interval and B-frames."""

    name: str
    width: int
    height: int
    seconds: int
    fps: int
    gop: int
    bframes: int

    @property
    def num_frames(self) -> int:
        return self.seconds * self.fps

    def filename(self) -> str:
        return (
            f"{self.name}_{self.width}x{self.height}_{self.seconds}s_{self.fps}fps_"
            f"g{self.gop}_bf{self.bframes}_v{GENERATOR_VERSION}.mp4"
        )


FILES = (
    VideoSpec("240p_10s", 426, 240, seconds=10, fps=30, gop=250, bframes=3),  # a Kinetics-like clip
    VideoSpec("720p_60s", 1280, 720, seconds=60, fps=30, gop=250, bframes=3),  # the long file
    VideoSpec("1080p_20s", 1920, 1080, seconds=20, fps=30, gop=60, bframes=3),  # 2 s GOP, streaming
)
QUICK_FILES = (VideoSpec("120p_2s", 160, 120, seconds=2, fps=30, gop=250, bframes=3),)
LONG_FILE = "720p_60s"  # the file of the ">= 5x faster than the PyAV loop" goal

IndexFn = Callable[[int, float, np.random.Generator], list[int]]


@dataclass(frozen=True)
class Case:
    """A sampling pattern: frame indices from (num_frames, fps, rng). `sparse` cases are the ones
    the >= 5x goal applies to."""

    name: str
    indices: IndexFn
    sparse: bool


def _uniform(segments: int) -> IndexFn:
    def indices(num_frames: int, fps: float, rng: np.random.Generator) -> list[int]:
        return list(uniform_indices(num_frames, fps, segments, train=False).indices)

    return indices


def _random_dense(num_frames: int, fps: float, rng: np.random.Generator) -> list[int]:
    return list(dense_indices(num_frames, fps, 16, 2, train=True, rng=rng).indices)


def _views_4x3(num_frames: int, fps: float, rng: np.random.Generator) -> list[int]:
    # 4 temporal clips x 3 spatial crops: crops cut the decoded frames, so only the 4 clips'
    # 4 * 16 frames are decoded, in one call, as `VideoDataset` does for evaluation.
    views = temporal_views(num_frames, fps, 4, sampling="dense", clip_len=16, stride=2)
    return [i for view in views for i in view.indices]


CASES = (
    Case("uniform_8", _uniform(8), sparse=True),
    Case("uniform_16", _uniform(16), sparse=True),
    Case("uniform_32", _uniform(32), sparse=True),
    Case("dense_16x2_random", _random_dense, sparse=False),
    Case("views_4x3_dense_16x2", _views_4x3, sparse=False),
)
QUICK_CASES = CASES[:1]


# --- generated files ---------------------------------------------------------------------------


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (height, width, 3) smooth colour noise at three scales: detail the encoder must code."""
    total = torch.zeros(1, 3, height, width)
    for cell, weight in ((96, 0.55), (24, 0.3), (6, 0.15)):
        coarse = torch.from_numpy(
            rng.random((1, 3, height // cell + 2, width // cell + 2), dtype=np.float32)
        )
        total += weight * F.interpolate(coarse, size=(height, width), mode="bicubic")
    image = (total.clamp(0, 1) * 255).to(torch.uint8)  # (1, 3, H, W)
    return image[0].permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)


def textured_frames(spec: VideoSpec, seed: int = 0) -> Iterator[np.ndarray]:
    """uint8 (H, W, 3) frames: a camera panning over a textured scene, a textured block moving on
    its own path, and a little grain, so every frame has motion and detail to code."""
    rng = np.random.default_rng(seed)
    pan_x, pan_y = spec.width // 3, spec.height // 6  # pan amplitude in pixels
    scene = _texture(spec.height + pan_y, spec.width + pan_x, rng)
    block = _texture(spec.height // 4, spec.height // 4, rng)
    grain = rng.integers(-6, 7, (4, spec.height, spec.width, 3), dtype=np.int16)
    room_y, room_x = spec.height - block.shape[0], spec.width - block.shape[1]
    for i in range(spec.num_frames):
        t = i / spec.fps
        x = round(pan_x * (0.5 - 0.5 * math.cos(2 * math.pi * t / 7.0)))
        y = round(pan_y * (0.5 - 0.5 * math.cos(2 * math.pi * t / 5.0)))
        image = scene[y : y + spec.height, x : x + spec.width].astype(np.int16)  # (H, W, 3)
        by = round(room_y * (0.5 + 0.5 * math.sin(2 * math.pi * t / 3.0)))
        bx = round(room_x * (0.5 + 0.5 * math.sin(2 * math.pi * t / 4.3)))
        image[by : by + block.shape[0], bx : bx + block.shape[1]] = block
        image += grain[i % len(grain)]
        yield image.clip(0, 255).astype(np.uint8)


def generate(spec: VideoSpec, folder: Path) -> Path:
    """The file for `spec` in `folder`, encoded once with libx264 (preset medium, crf 23)."""
    path = folder / spec.filename()
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")  # renamed when complete: no half file is cached
    options = {"g": str(spec.gop), "bf": str(spec.bframes), "crf": "23", "preset": "medium"}
    with av.open(str(partial), mode="w") as container:
        stream = container.add_stream("libx264", rate=spec.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        for image in textured_frames(spec):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)
    return path


# --- decoders ----------------------------------------------------------------------------------

Decode = Callable[[Path, list[int], int], torch.Tensor]  # (path, indices, threads) -> (N, H, W, 3)


def _tubelet(backend: str) -> Decode:
    def decode(path: Path, indices: list[int], threads: int) -> torch.Tensor:
        with VideoReader(path, backend=backend, num_threads=threads) as reader:
            return reader.get_frames(indices).data

    return decode


def _torchcodec(seek_mode: str) -> Decode:
    def decode(path: Path, indices: list[int], threads: int) -> torch.Tensor:
        from torchcodec.decoders import VideoDecoder

        decoder = VideoDecoder(
            str(path), seek_mode=seek_mode, dimension_order="NHWC", num_ffmpeg_threads=threads
        )
        return decoder.get_frames_at(indices).data

    return decode


def decode_decord(path: Path, indices: list[int], threads: int) -> torch.Tensor:
    import decord

    reader = decord.VideoReader(str(path), num_threads=threads)
    return torch.from_numpy(reader.get_batch(indices).asnumpy())


def decode_pyav_loop(path: Path, indices: list[int], threads: int) -> torch.Tensor:
    wanted, last = set(indices), max(indices)
    kept: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                kept[index] = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            if index >= last:
                break
    return torch.from_numpy(np.stack([kept[i] for i in indices]))  # (N, H, W, 3)


@dataclass(frozen=True)
class Peer:
    """A decoder to compare with tubelet; `exact` peers decode with the same FFmpeg as tubelet,
    so their frames must be byte-equal to tubelet's. `tubelet` marks another tubelet backend:
    timed and checked like a peer, never the best peer."""

    name: str
    decode: Decode
    exact: bool
    tubelet: bool = False


def available_peers() -> tuple[list[Peer], dict[str, str]]:
    """The peers that import here, and {name: reason} for those that do not."""
    peers: list[Peer] = []
    unavailable: dict[str, str] = {}
    reason = torchcodec_error()
    if reason is None:
        peers.append(Peer("torchcodec_exact", _torchcodec("exact"), exact=True))
        peers.append(Peer("torchcodec_approximate", _torchcodec("approximate"), exact=True))
    else:
        unavailable["torchcodec_exact"] = unavailable["torchcodec_approximate"] = reason
    try:
        import decord  # noqa: F401
    except Exception as error:  # ImportError, or OSError when its bundled FFmpeg does not load
        unavailable["decord"] = f"{type(error).__name__}: {error} (pip install decord==0.6.0)"
    else:
        peers.append(Peer("decord", decode_decord, exact=False))
    peers.append(Peer("pyav_loop", decode_pyav_loop, exact=True))
    return peers, unavailable


def compare(reference: torch.Tensor, frames: torch.Tensor, indices: list[int], exact: bool) -> str:
    """A peer's frames against tubelet's: "exact", "close (...)" or "MISMATCH: ..."."""
    if frames.shape != reference.shape or frames.dtype != reference.dtype:
        return f"MISMATCH: shape {tuple(frames.shape)} {frames.dtype}, tubelet {tuple(reference.shape)}"
    if torch.equal(frames, reference):
        return "exact"
    diff = (frames.to(torch.int16) - reference.to(torch.int16)).abs()  # (N, H, W, 3)
    per_frame = diff.flatten(1).float().mean(1)  # (N,) mean |diff| of each frame
    worst = int(per_frame.argmax())
    detail = (
        f"max |diff| {int(diff.max())}, worst frame {indices[worst]} mean {per_frame.max():.2f}"
    )
    wrong = [indices[i] for i in (per_frame > DECORD_MEAN_TOLERANCE).nonzero().flatten().tolist()]
    if exact or wrong:
        return f"MISMATCH: {detail}; frames {wrong[:8] or 'all within tolerance'} differ"
    return f"close ({detail})"


def _verdict(old: str | None, new: str) -> str:
    """The worst of two comparison results: a mismatch sticks, then the first "close"."""
    if old is None or new.startswith("MISMATCH") or old == "exact":
        return new
    return old


# --- timing ------------------------------------------------------------------------------------


def _timed(decode: Decode, path: Path, indices: list[int], threads: int) -> tuple[float, Any]:
    start = time.perf_counter()
    frames = decode(path, indices, threads)
    return time.perf_counter() - start, frames


def run_case(
    path: Path,
    case: Case,
    peers: list[Peer],
    info: dict[str, Any],
    layout: StreamLayout,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Time tubelet and every peer on one file (`info` from `describe`, `layout` its frames)
    and case; returns the case's JSON record."""
    decode_tubelet = _tubelet(args.backend[0])
    rng = np.random.default_rng(zlib.crc32(f"{path.name}/{case.name}".encode()))
    rounds = [  # round 0 is the warm-up
        case.indices(info["num_frames"], info["fps"], rng) for _ in range(args.repeats + 1)
    ]
    times: dict[str, list[float]] = {"tubelet": [], **{p.name: [] for p in peers}}
    verdicts: dict[str, str | None] = {p.name: None for p in peers}
    errors: dict[str, str] = {}
    for round_index, indices in enumerate(rounds):
        seconds, reference = _timed(decode_tubelet, path, indices, args.threads)
        if round_index:
            times["tubelet"].append(seconds)
        shift = round_index % len(peers)
        for peer in peers[shift:] + peers[:shift]:
            if peer.name in errors:
                continue
            try:
                seconds, frames = _timed(peer.decode, path, indices, args.threads)
            except Exception as error:  # a peer that fails on a file is reported, not fatal
                errors[peer.name] = f"{type(error).__name__}: {str(error).strip()[:300]}"
                continue
            verdicts[peer.name] = _verdict(
                verdicts[peer.name], compare(reference, frames, indices, peer.exact)
            )
            del frames
            if round_index:
                times[peer.name].append(seconds)
        del reference
    medians = {name: statistics.median(ts) for name, ts in times.items() if ts}
    fastest = {name: min(ts) for name, ts in times.items() if ts}
    tubelets = {"tubelet", *(p.name for p in peers if p.tubelet)}
    peer_times = {name: t for name, t in medians.items() if name not in tubelets}
    best_peer = min(peer_times, key=peer_times.__getitem__) if peer_times else None
    tubelet = medians["tubelet"]
    peer_fastest = min((t for name, t in fastest.items() if name not in tubelets), default=None)
    timed = rounds[1]
    must_decode = frames_to_decode(timed, info["keyframes"])
    must_decode_skipping = reference_frames_to_decode(timed, info["keyframes"], layout)
    return {
        "case": case.name,
        "sparse": case.sparse,
        "num_indices": len(timed),
        "indices_first_timed_round": timed,
        # Decoding work for those indices: the frame-exact floor (every frame from each needed
        # keyframe on) against the PyAV loop's; their ratio bounds the speedup over the loop.
        "frames_to_decode_seeking": must_decode,
        "frames_to_decode_loop": max(timed) + 1,
        "decode_work_ratio_loop_to_seeking": (max(timed) + 1) / must_decode,
        # The floor when non-reference frames are skipped too (tubelet's PyAV backend on H.264):
        # the reference frames among them, and the wanted frames; the loop over it bounds the
        # speedup of any frame-exact decoder (frames differ in cost: a bound on work, not time).
        "frames_to_decode_skipping": must_decode_skipping,
        "decode_work_ratio_loop_to_skipping": (max(timed) + 1) / must_decode_skipping,
        "seconds": medians,
        "all_seconds": times,
        "frames_match": {**verdicts, **{name: f"ERROR: {e}" for name, e in errors.items()}},
        "best_peer": best_peer,
        "ratio_to_best_peer": tubelet / peer_times[best_peer] if best_peer else None,
        # The fastest round of each decoder: less sensitive to other processes on a busy machine.
        "min_seconds": fastest,
        "ratio_to_best_peer_min": fastest["tubelet"] / peer_fastest if peer_fastest else None,
        "speedup_vs_pyav_loop": medians["pyav_loop"] / tubelet if "pyav_loop" in medians else None,
        "speedups_vs_pyav_loop": {
            name: medians["pyav_loop"] / medians[name]
            for name in sorted(tubelets)
            if "pyav_loop" in medians and name in medians
        },
    }


def keyframe_indices(path: Path) -> list[int]:
    """Display-order indices of the keyframes of the first video stream (packets only, no decode)."""
    with av.open(str(path)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.size]
    packets.sort()  # display order
    return [index for index, (_, key) in enumerate(packets) if key]


def frames_to_decode(indices: Sequence[int], keyframes: Sequence[int]) -> int:
    """Frames a seek-and-decode-forward reader must decode for `indices`: for each GOP holding a
    wanted frame, from its keyframe to the last wanted frame in it (the floor for frame-exact
    decoding with every frame decoded; the PyAV loop decodes `max(indices) + 1`)."""
    last_in_gop: dict[int, int] = {}
    for index in indices:
        key = keyframes[bisect.bisect_right(keyframes, index) - 1]
        last_in_gop[key] = max(last_in_gop.get(key, key), index)
    return sum(last - key + 1 for key, last in last_in_gop.items())


@dataclass(frozen=True)
class StreamLayout:
    """Where each frame of a file sits: `decode_position[i]` is the place of display frame i's
    packet in decode order; `references` are the display indices of the frames a decode with
    `skip_frame` NONREF still yields (the frames others may be predicted from)."""

    decode_position: list[int]
    references: frozenset[int]


def stream_layout(path: Path) -> StreamLayout:
    """The `StreamLayout` of the first video stream: its packets, then one NONREF decode."""
    with av.open(str(path)) as container:
        pts = [p.pts for p in container.demux(video=0) if p.size]  # decode order
    display = {value: index for index, value in enumerate(sorted(pts))}
    position = [0] * len(pts)
    for place, value in enumerate(pts):
        position[display[value]] = place
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        references = frozenset(display[frame.pts] for frame in container.decode(stream))
    return StreamLayout(position, references)


def reference_frames_to_decode(
    indices: Sequence[int], keyframes: Sequence[int], layout: StreamLayout
) -> int:
    """Frames a seek-and-decode-forward reader that skips non-reference frames must decode for
    `indices`: for each GOP holding a wanted frame, the reference frames sent to the decoder from
    its keyframe up to the last wanted frame in decode order, and the wanted frames."""
    last_in_gop: dict[int, int] = {}  # keyframe -> decode position of its last wanted frame
    for index in indices:
        key = keyframes[bisect.bisect_right(keyframes, index) - 1]
        last_in_gop[key] = max(last_in_gop.get(key, 0), layout.decode_position[index])
    wanted = set(indices)
    must = set()
    for key, last in last_in_gop.items():
        first = layout.decode_position[key]
        must |= {
            i
            for i, place in enumerate(layout.decode_position)
            if first <= place <= last and (i in layout.references or i in wanted)
        }
    return len(must)


def describe(path: Path, spec: VideoSpec, threads: int) -> dict[str, Any]:
    """The file's spec and the frame count each decoder reports (they must agree)."""
    with VideoReader(path, num_threads=threads) as reader:
        info = {
            "path": str(path),
            "size_bytes": path.stat().st_size,
            **asdict(spec),
            "tubelet_backend": reader.backend,
            "num_frames": reader.num_frames,
            "fps": reader.fps,
            "keyframes": keyframe_indices(path),
        }
    counts = {"written": spec.num_frames, "tubelet": info["num_frames"]}
    if torchcodec_error() is None:
        from torchcodec.decoders import VideoDecoder

        counts["torchcodec"] = VideoDecoder(str(path)).metadata.num_frames_from_content
    try:
        import decord

        counts["decord"] = len(decord.VideoReader(str(path), num_threads=threads))
    except ImportError:
        pass
    info["num_frames_by_decoder"] = counts
    info["num_frames_agree"] = len(set(counts.values())) == 1
    return info


# --- loader memory -----------------------------------------------------------------------------


def rss_kib(pid: int | str = "self") -> int:
    """Resident memory of a process in KiB (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


class RandomReads(Dataset):
    """Item i opens one of `paths`, decodes a random clip (16 dense frames or 8 uniform ones,
    drawn from seed i) and closes it, as a training dataset does; it returns the worker's pid and
    resident memory after the read, not the frames, so only the reader's memory is measured."""

    def __init__(self, paths: Sequence[Path], num_reads: int) -> None:
        self.readers = [VideoReader(p) for p in paths]  # opened here for metadata, reopened lazily
        self.num_reads = num_reads

    def __len__(self) -> int:
        return self.num_reads

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        rng = np.random.default_rng(index)
        template = self.readers[index % len(self.readers)]
        with VideoReader(template.path) as reader:
            n, fps = reader.num_frames, reader.fps
            if index % 2:
                clip = dense_indices(n, fps, 16, 2, train=True, rng=rng)
            else:
                clip = uniform_indices(n, fps, 8, train=True, rng=rng)
            checksum = int(reader.get_frames(list(clip.indices)).data[:, ::8, ::8].sum())
        return os.getpid(), rss_kib(), checksum


def loader_memory(
    dataset: Dataset, *, warmup: int, workers: int = 2, window: int = 50
) -> dict[str, Any]:
    """Read every item of `dataset` (items `(worker pid, worker RSS KiB, anything)`, as
    `RandomReads` gives) through a DataLoader with `workers` workers and report how much each
    worker's resident memory grew from the end of the first `warmup` reads to the end.

    Per worker, the baseline is the median RSS over its last `window` reads of the warm-up and
    the final value the median over its last `window` reads, so one read's transient buffers do
    not count as growth. `growth` is the largest relative growth over the workers.
    """
    num_reads = len(dataset)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers)
    samples: dict[int, list[tuple[int, int]]] = {}  # pid -> [(read number, rss KiB)]
    start = time.perf_counter()
    for read, (pid, rss, _) in enumerate(loader):
        samples.setdefault(pid, []).append((read, rss))
    seconds = time.perf_counter() - start
    per_worker = {}
    for pid, series in samples.items():
        warm = [rss for read, rss in series if read < warmup][-window:]
        end = [rss for _, rss in series][-window:]
        baseline, final = statistics.median(warm), statistics.median(end)
        per_worker[str(pid)] = {
            "reads": len(series),
            "rss_after_warmup_mib": baseline / 1024,
            "rss_end_mib": final / 1024,
            "rss_peak_mib": max(rss for _, rss in series) / 1024,
            "growth": final / baseline - 1,
            "rss_trace_mib": [rss / 1024 for _, rss in series[:: max(1, len(series) // 20)]],
        }
    growth = max(w["growth"] for w in per_worker.values())
    return {
        "reads": num_reads,
        "warmup_reads": warmup,
        "workers": workers,
        "seconds": seconds,
        "reads_per_second": num_reads / seconds,
        "growth": growth,
        "goal": "growth < 0.05",
        "goal_met": growth < 0.05,
        "per_worker": per_worker,
    }


# --- report ------------------------------------------------------------------------------------


SHORT_NAMES = {"torchcodec_exact": "tc exact", "torchcodec_approximate": "tc approx"}


def print_table(results: list[dict[str, Any]], names: list[str], console: Console) -> None:
    table = Table(
        title="median ms per call (open + decode); ratio = tubelet / best peer (medians; min: "
        "fastest rounds); vs loop = "
        "PyAV loop / tubelet (each tubelet backend); bound = loop's frames / a frame-exact "
        "seeking decoder's (all frames of its GOPs / reference frames only)"
    )
    for column in ("file", "case", "N", *(SHORT_NAMES.get(n, n) for n in names)):
        table.add_column(column, justify="left" if column in ("file", "case") else "right")
    for column in ("ratio", "ratio(min)", "vs loop", "bound", "frames"):
        table.add_column(column, justify="left" if column == "frames" else "right")
    for r in results:
        cells = [f"{r['seconds'][n] * 1e3:.1f}" if n in r["seconds"] else "-" for n in names]
        ratio, speedups = r["ratio_to_best_peer"], r["speedups_vs_pyav_loop"]
        bad = [n for n, v in r["frames_match"].items() if not v.startswith(("exact", "close"))]
        table.add_row(
            r["file"], r["case"], str(r["num_indices"]), *cells,
            f"{ratio:.2f}" if ratio else "-",
            f"{r['ratio_to_best_peer_min']:.2f}" if ratio else "-",
            " / ".join(f"{v:.1f}x" for v in speedups.values()) or "-",
            f"{r['decode_work_ratio_loop_to_seeking']:.1f}x / "
            f"{r['decode_work_ratio_loop_to_skipping']:.1f}x",
            "[red]" + ", ".join(bad) + "[/red]" if bad else "ok",
        )  # fmt: skip
    console.print(table)


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's two goals, checked case by case."""
    slower = [
        f"{r['file']}/{r['case']}: {r['ratio_to_best_peer']:.2f}x {r['best_peer']}"
        for r in results
        if r["ratio_to_best_peer"] is not None and r["ratio_to_best_peer"] > 1.0
    ]
    long_sparse = [r for r in results if r["file"] == LONG_FILE and r["sparse"]]
    under_5x = [
        f"{r['case']}: {r['speedup_vs_pyav_loop']:.1f}x"
        for r in long_sparse
        if r["speedup_vs_pyav_loop"] is not None and r["speedup_vs_pyav_loop"] < 5
    ]
    mismatches = [
        f"{r['file']}/{r['case']}/{name}: {verdict}"
        for r in results
        for name, verdict in r["frames_match"].items()
        if not verdict.startswith(("exact", "close"))
    ]
    return {
        "never_slower_than_best_peer": not slower,
        "slower_than_best_peer": slower,
        "sparse_long_file_at_least_5x_pyav_loop": bool(long_sparse) and not under_5x,
        "sparse_long_file_under_5x": under_5x,
        "frame_mismatches_or_errors": mismatches,
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__, "av": av.__version__}
    for module in ("torchcodec", "decord", "tubelet"):
        try:
            found[module] = str(__import__(module).__version__)
        except Exception as error:
            found[module] = f"unavailable ({type(error).__name__})"
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results.json"), help="JSON results")
    parser.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="where generated files are cached"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed rounds (default 5; 1 quick)"
    )
    parser.add_argument("--threads", type=int, default=1, help="FFmpeg threads for every decoder")
    parser.add_argument(
        "--backend",
        nargs="+",
        default=["auto"],
        choices=["auto", "torchcodec", "pyav"],
        help="tubelet's reader backend (default auto); more than one times the others too, as "
        "tubelet_<backend>",
    )
    parser.add_argument(
        "--files", nargs="+", help=f"only these files (of {', '.join(f.name for f in FILES)})"
    )
    parser.add_argument(
        "--cases", nargs="+", help=f"only these cases (of {', '.join(c.name for c in CASES)})"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1, as in tubelet's DataLoader workers; torchcodec "
        "copies frames with torch ops, which on a busy machine run 2x slower on small frames "
        "with more threads)",
    )
    parser.add_argument("--quick", action="store_true", help="one tiny file, one case (smoke run)")
    parser.add_argument("--memory", action="store_true", help="also run the loader memory check")
    parser.add_argument("--reads", type=int, default=None, help="memory reads (10000; 300 quick)")
    parser.add_argument("--no-timing", action="store_true", help="skip the timings")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.reads is None:
        args.reads = 300 if args.quick else 10_000
    if args.repeats < 1 or args.reads < 20 or args.threads < 0 or args.torch_threads < 1:
        parser.error("--repeats must be >= 1, --reads >= 20, --threads >= 0, --torch-threads >= 1")
    for option, known in (("files", FILES), ("cases", CASES)):
        unknown = set(getattr(args, option) or ()) - {k.name for k in known}
        if unknown:
            parser.error(
                f"--{option}: unknown {sorted(unknown)}; choose from {[k.name for k in known]}"
            )
    if len(set(args.backend)) != len(args.backend):
        parser.error("--backend: each backend once")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    console = Console(width=max(Console().width, 132))
    specs, cases = (QUICK_FILES, QUICK_CASES) if args.quick else (FILES, CASES)
    specs = tuple(s for s in specs if not args.files or s.name in args.files)
    cases = tuple(c for c in cases if not args.cases or c.name in args.cases)
    peers, unavailable = available_peers()
    peers += [Peer(f"tubelet_{b}", _tubelet(b), exact=True, tubelet=True) for b in args.backend[1:]]
    report: dict[str, Any] = {
        "meta": {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor()}".strip(),
            "cpu_count": os.cpu_count(),
            "load_average_start": os.getloadavg(),
            "threads": args.threads,
            "tubelet_backends": args.backend,
            "torch_threads": args.torch_threads,
            "repeats": args.repeats,
            "timed": "median of the repeats; each call opens, decodes and closes the file",
            "versions": versions(),
            "peers": [p.name for p in peers],
            "unavailable_peers": unavailable,
        },
    }
    for name, reason in unavailable.items():
        console.print(f"[yellow]{name} left out: {reason}[/yellow]")
    paths = {}
    for spec in specs:
        console.print(f"file {spec.name}: generating or reusing in {args.workdir}")
        paths[spec.name] = generate(spec, args.workdir)
    if not args.no_timing:
        report["files"], results = {}, []
        for spec in specs:
            info = describe(paths[spec.name], spec, args.threads)
            layout = stream_layout(paths[spec.name])
            info["num_reference_frames"] = len(layout.references)
            report["files"][spec.name] = info
            for case in cases:
                console.print(f"  {spec.name} {case.name}")
                record = run_case(paths[spec.name], case, peers, info, layout, args)
                results.append({"file": spec.name, **record})
        report["results"] = results
        report["summary"] = summarize(results)
        print_table(results, ["tubelet", *(p.name for p in peers)], console)
        console.print_json(data=report["summary"])
    if args.memory:
        memory_file = paths[specs[0].name]  # the short clip, read over and over
        console.print(f"memory: {args.reads} random reads of {memory_file.name}, 2 workers")
        dataset = RandomReads([memory_file], args.reads)
        report["memory"] = {
            "file": str(memory_file),
            **loader_memory(dataset, warmup=max(args.reads // 10, 20)),
        }
        console.print_json(data={k: v for k, v in report["memory"].items() if k != "per_worker"})
    report["meta"]["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
