"""Feature extraction: run a video backbone over every frame or sliding window of every video.

`extract_features` decodes each video once, front to back in chunks (`tubelet.io.VideoReader`,
frames resized in the decoder to the short side `size`, centre-cropped and normalised as
evaluation does), and writes a features folder (`tubelet.data.features`) that `FeatureStore`
reads and `tubelet train --features` trains on.

- level "frame": the model's un-pooled features (B, D, T, h, w) are averaged over space only,
  one feature per frame. The model must keep time (a per-frame model such as `frame2d_resnet18`).
- level "clip": windows of `window` frames every `stride` frames, each pooled by
  `forward_head(forward_features(clip), pre_logits=True)`; a video shorter than a window gives
  one window with its last frame repeated.
- level "tokens": the same windows, each kept whole: its un-pooled features (B, D, *dims) become
  prod(dims) tokens (in the model's order, e.g. (t, h, w)), all with the window's time. A frozen
  backbone's tokens are what a probe (`tubelet train --features DIR --head attentive`) pools.

A video that cannot be read is reported (and recorded in the folder) and skipped; the run goes on.
Videos already in the folder are skipped, so an interrupted run resumes. Under `torchrun` each
process takes every WORLD_SIZE-th video and writes its own shards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from torch import nn

from tubelet.data.annotations import EmptySplitError, read_annotations
from tubelet.data.features import (
    LEVELS,
    FeatureWriter,
    centre_times,
    shard_videos,
)
from tubelet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from tubelet.engine.checkpoint import find_checkpoint, load_model
from tubelet.engine.distributed import launch_env
from tubelet.engine.run import versions
from tubelet.io import VideoDecodeError, VideoReader
from tubelet.models import create_model
from tubelet.models.spec import Preprocessing

# Frames decoded per call to the reader: bounds memory on long videos; each call after the first
# re-decodes at most one GOP before its first frame.
DECODE_CHUNK = 256
DEFAULT_SIZE = 112  # the crop of a model whose checkpoint records none


@dataclass(frozen=True)
class _Source:
    """One video to extract: its key in the features folder, file, label and split."""

    key: str
    path: Path
    label: int | None
    split: str | None


def extract_features(
    *,
    out: Path,
    data: Path | None = None,
    videos: list[Path] | None = None,
    model: str | None = None,
    checkpoint: Path | None = None,
    checkpoint_format: str | None = None,
    level: str = "frame",
    window: int = 16,
    stride: int = 8,
    size: int | None = None,
    batch_size: int = 8,
    show_progress: bool = True,
    model_args: dict[str, Any] | None = None,
    dtype: str = "float32",
    shard_mb: float = 256.0,
) -> Path:
    """Extract features of the videos of `data` (both splits, labelled) and/or the loose `videos`
    into the features folder `out`; returns `out`.

    `model` is a registered name (random weights unless `checkpoint`), `checkpoint` a run or
    checkpoint folder of `tubelet train` (then `model` may be left out, or must match it), or with
    `checkpoint_format` a published checkpoint that `model` loads (`classification.load_classifier`).
    `model_args` go to the builder (ignored with a run's checkpoint). Frames are resized, cropped
    (`size`: the checkpoint's crop by default, else 112) and normalised as the checkpoint was
    trained or published with (ImageNet's statistics for a model without one). At level "frame"
    `window` is 1 and `stride` 1 whatever is passed; at "clip", windows of `window` frames start
    every `stride` frames. A forward pass takes `batch_size` windows, or `batch_size * window` frames at frame
    level. Features are stored as `dtype`. The run's summary (videos done, skipped, unreadable,
    features, seconds) is written to `out/summary-<rank>.json`.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    if window < 1 or stride < 1 or (size is not None and size < 1) or batch_size < 1:
        raise ValueError(
            f"window, stride, size and batch_size must be >= 1, got {window}, {stride}, {size}, "
            f"{batch_size}"
        )
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file: give a folder for the features")
    frames_per_forward = batch_size * window
    if level == "frame":
        window, stride = 1, 1
    sources, data_meta = _sources(data, videos)
    net, meta, pre = _load_backbone(model, checkpoint, checkpoint_format, model_args or {})
    size = size or (pre.crop if pre is not None and isinstance(pre.crop, int) else DEFAULT_SIZE)
    resize = max(size, pre.resize_to) if pre is not None and pre.crop == size else size
    mean, std = (pre.mean, pre.std) if pre is not None else (IMAGENET_MEAN, IMAGENET_STD)
    meta.update(
        level=level, window=window, stride=stride, size=size, resize=resize, crop="center",
        mean=list(mean), std=list(std), dim=int(net.num_features), **data_meta,
    )  # fmt: skip
    launched = launch_env()
    rank, world_size = launched.rank, launched.world_size
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if cuda else "cpu")
    net = net.to(device).eval()
    if level == "frame":
        _check_keeps_time(net, size, device)  # before anything is written to `out`
    out = Path(out)
    writer = FeatureWriter(
        out, {**meta, "versions": versions()}, rank=rank, world_size=world_size, dtype=dtype,
        shard_mb=shard_mb,
    )  # fmt: skip
    by_key = {s.key: s for s in sources}
    mine = writer.pending(list(by_key))
    share = len(shard_videos(list(by_key), rank, world_size))
    transform = EvalTransform(size=size, crops=1, mean=mean, std=std, resize=resize)
    extractor = _Extractor(
        net, level, window, stride, transform, batch_size, device, frames_per_forward
    )
    bad: list[dict[str, str]] = []
    num_features = num_frames = 0
    start = time.perf_counter()
    with writer, _bar(show_progress, len(mine)) as (progress, task):
        for key in mine:
            source = by_key[key]
            try:
                feats, times, frames, fps, total = extractor(source.path)
            except VideoDecodeError as error:
                bad.append({"path": key, "reason": error.reason})
                writer.add_bad(key, error.reason)
                progress.console.print(f"skipped {key}: {error.reason}", markup=False)
            else:
                writer.add(
                    key, feats, times, frames, fps=fps, num_frames=total, label=source.label,
                    split=source.split,
                )  # fmt: skip
                num_features += len(feats)
                num_frames += total
            elapsed = time.perf_counter() - start
            progress.update(
                task, advance=1, stats=f"{num_frames / max(elapsed, 1e-9):.0f} frames/s"
            )
    elapsed = time.perf_counter() - start
    summary = {
        "out": str(out),
        "rank": rank,
        "world_size": world_size,
        "videos": share,
        "extracted": len(mine) - len(bad),
        "already_done": share - len(mine),
        "unreadable": len(bad),
        "features": num_features,
        "frames": num_frames,
        "dim": meta["dim"],
        "seconds": round(elapsed, 2),
        "frames_per_s": round(num_frames / max(elapsed, 1e-9), 1),
        "bad_files": bad,
    }
    (out / f"summary-{rank:05d}.json").write_text(json.dumps(summary, indent=2))
    return out


class _Extractor:
    """Decodes one video in chunks and runs the model over its frames or windows."""

    def __init__(
        self,
        model: nn.Module,
        level: str,
        window: int,
        stride: int,
        transform: EvalTransform,
        batch_size: int,
        device: torch.device,
        frames_per_forward: int,
    ) -> None:
        self.model = model
        self.frames_per_forward = frames_per_forward
        self.level = level
        self.window = window
        self.stride = stride
        self.batch_size = batch_size
        self.device = device
        self.transform = transform  # resize (the reader does it while decoding), crop, normalise

    @torch.inference_mode()
    def __call__(self, path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, int]:
        """Features (N, D), centre times (N,), first frames (N,), fps and frame count of a video."""
        pts: list[torch.Tensor] = []
        with VideoReader(path, short_side=self.transform.resize_to) as reader:
            n, fps = reader.num_frames, reader.fps
            starts = window_starts(n, self.window, self.stride)  # (N,)
            chunks = self._chunks(reader, pts)
            if self.level == "frame":
                parts = [self._frame_features(x) for x in chunks]
            else:
                parts = list(self._clip_features(chunks, starts, n))
        feats = torch.cat(parts).float().cpu()  # (N, D); N = windows * tokens at level "tokens"
        times = centre_times(torch.cat(pts), fps, starts, self.window)
        if self.level == "tokens":  # every token of a window carries the window's time and start
            per_window = feats.shape[0] // len(starts)
            times, starts = (
                times.repeat_interleave(per_window),
                starts.repeat_interleave(per_window),
            )
        return feats, times, starts, fps, n

    def _chunks(self, reader: VideoReader, pts: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Normalised frames (C, F, S, S), DECODE_CHUNK frames at a time; appends their pts."""
        for first in range(0, reader.num_frames, DECODE_CHUNK):
            frames = reader.get_frames(range(first, min(first + DECODE_CHUNK, reader.num_frames)))
            pts.append(frames.pts_s)
            yield self.transform(frames.data)[0]  # (C, F, S, S)

    def _frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """(C, F, S, S) -> one feature per frame (F, D): features pooled over space only."""
        step = self.frames_per_forward
        outs = []
        for i in range(0, x.shape[1], step):
            part = x[None, :, i : i + step].to(self.device)  # (1, C, F', S, S)
            feats = self.model.forward_features(part)  # (1, D, F', h, w), checked at the start
            outs.append(feats.flatten(3).mean(3)[0].T)  # (F', D)
        return torch.cat(outs)

    def _clip_features(
        self, chunks: Iterator[tuple[torch.Tensor, torch.Tensor]], starts: torch.Tensor, n: int
    ) -> Iterator[torch.Tensor]:
        """Pooled features (B, D) of the windows, as soon as their frames are decoded."""
        buffer = torch.empty(0)
        offset = 0  # frame index of buffer[:, 0]
        todo = starts.tolist()
        for x in chunks:
            buffer = x if buffer.numel() == 0 else torch.cat([buffer, x], dim=1)  # (C, L, S, S)
            decoded = offset + buffer.shape[1]
            ready = []
            while todo and min(todo[0] + self.window, n) <= decoded:
                ready.append(todo.pop(0))
            for i in range(0, len(ready), self.batch_size):
                clips = []
                for s in ready[i : i + self.batch_size]:
                    idx = torch.arange(s, s + self.window).clamp(max=n - 1) - offset
                    clips.append(buffer[:, idx])  # (C, W, S, S)
                batch = torch.stack(clips).to(self.device)  # (B, C, W, S, S)
                feats = self.model.forward_features(batch)  # (B, D, *dims)
                if self.level == "tokens":
                    yield feats.flatten(2).transpose(1, 2).flatten(0, 1)  # (B * tokens, D)
                else:
                    yield self.model.forward_head(feats, pre_logits=True)  # (B, D)
            keep_from = (todo[0] if todo else decoded) - offset
            buffer, offset = buffer[:, keep_from:], offset + keep_from


@torch.inference_mode()
def _check_keeps_time(model: nn.Module, size: int, device: torch.device) -> None:
    """Refuse, at level "frame", a model whose features do not keep one step per frame."""
    try:
        shape = tuple(model.forward_features(torch.zeros(1, 3, 2, size, size, device=device)).shape)
    except (RuntimeError, ValueError) as error:  # a 3D model that needs more than 2 frames
        shape = f"none ({str(error).splitlines()[0]})"
    if not isinstance(shape, tuple) or len(shape) < 3 or shape[2] != 2:
        raise ValueError(
            "level 'frame' needs a model that keeps time (features (B, D, T, ...) for T frames "
            f"in); this one maps 2 frames to features of shape {shape}: use --level clip"
        )


def window_starts(num_frames: int, window: int, stride: int) -> torch.Tensor:
    """First frame of each window: 0, stride, ... while the window fits; [0] for a short video."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return torch.arange(0, max(num_frames - window, 0) + 1, stride)


def _load_backbone(
    model: str | None,
    checkpoint: Path | None,
    checkpoint_format: str | None,
    model_args: dict[str, Any],
) -> tuple[nn.Module, dict[str, Any], Preprocessing | None]:
    """The model, the meta entries that name it, and the preprocessing its checkpoint records."""
    if checkpoint is not None and checkpoint_format not in (None, "tubelet"):
        from tubelet.jobs.classification import load_classifier

        if model is None:
            raise ValueError(
                f"--checkpoint-format {checkpoint_format} needs --model: the registered model "
                "the published checkpoint loads into (`tubelet models`)"
            )
        net, spec, _ = load_classifier(
            checkpoint, model=model, checkpoint_format=checkpoint_format, model_args=model_args
        )
        return net, {
            "model": model, "model_args": spec.model_args, "checkpoint": str(checkpoint),
            "checkpoint_format": checkpoint_format,
        }, spec.preprocessing  # fmt: skip
    if checkpoint is not None:
        net, spec = load_model(checkpoint)
        if model is not None and model != spec.model:
            raise ValueError(
                f"--model {model} does not match the checkpoint's model {spec.model} in "
                f"{checkpoint}; leave --model out to use the checkpoint's"
            )
        return net, {
            "model": spec.model, "model_args": spec.model_args,
            "checkpoint": str(find_checkpoint(checkpoint).resolve()), "checkpoint_format": "tubelet",
        }, spec.preprocessing  # fmt: skip
    if model is None:
        raise ValueError("name a model (--model NAME) or a trained one (--checkpoint RUN_DIR)")
    net = create_model(model, **model_args)
    if not hasattr(net, "num_features") or not hasattr(net, "forward_features"):
        raise ValueError(
            f"{model} is not a video classifier (forward_features / forward_head / num_features); "
            "features come from classifiers (`tubelet models`)"
        )
    return net, {"model": model, "model_args": model_args, "checkpoint": None}, None


def _sources(data: Path | None, videos: list[Path] | None) -> tuple[list[_Source], dict[str, Any]]:
    """The videos to extract and the meta entries describing the data."""
    if data is None and not videos:
        raise ValueError("nothing to extract: pass a data folder (--data DIR) or video files")
    sources: list[_Source] = []
    meta: dict[str, Any] = {"data": None, "classes": None, "reversal_pairs": None}
    if data is not None:
        root = Path(data).resolve()
        found = False
        for split in ("train", "val"):
            try:
                annotations = read_annotations(root, split)
            except EmptySplitError:
                continue
            found = True
            meta.update(
                data=str(root), classes=list(annotations.classes),
                reversal_pairs=[list(p) for p in annotations.reversal_pairs],
            )  # fmt: skip
            seen = {s.key for s in sources}
            for record in annotations.records:
                key = _key(record.path, root)
                if key not in seen:
                    sources.append(_Source(key, record.path, record.label, split))
        if not found:
            raise ValueError(f"no videos in {root}: no train or val split found")
    for path in videos or []:
        path = Path(path).resolve()
        sources.append(_Source(str(path), path, None, None))
    keys = [s.key for s in sources]
    if len(set(keys)) != len(keys):
        raise ValueError("a video is listed twice (as a loose file and in the data folder?)")
    return sources, meta


def _key(path: Path, root: Path) -> str:
    """The video's key: its path relative to the data folder (absolute if outside it)."""
    path = Path(path).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


class _bar:
    """A rich progress bar over videos (nothing shown when disabled), as (progress, task)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.progress = Progress(
            TextColumn("[bold]extracting"), BarColumn(bar_width=24), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TextColumn("eta"), TimeRemainingColumn(),
            console=Console(stderr=True), disable=not enabled,
        )  # fmt: skip
        self.total = total

    def __enter__(self) -> tuple[Progress, Any]:
        self.progress.start()
        return self.progress, self.progress.add_task("videos", total=self.total, stats="")

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
