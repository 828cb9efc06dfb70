"""Cached features: a folder of sharded safetensors written by `tubelet extract`, and its datasets.

A features folder holds:

- `meta.json`: how the features were made: `model`, `model_args`, `checkpoint`, `level` ("frame":
  one feature per frame; "clip": one per window of frames; "tokens": every token of each window,
  in the model's (t, h, w) order, for probes that pool tokens themselves), `window` (frames per feature, 1 at frame
  level), `stride` (frames between consecutive features), `size` and `crop` (the frames' short side
  and centre crop in pixels), `mean` / `std` (normalisation), `dim` (feature size D), `dtype` (as
  stored), `data` (the data folder, or None) and `classes` (its class names, or None);
- `shard-00000.safetensors`, ...: per video three tensors, `<n>.features` (N, D), `<n>.times` (N,)
  float64, the centre in seconds of the span of frames each feature covers, and `<n>.frames` (N,)
  int64, the index of each feature's first frame;
- `index-00000.jsonl`, ...: one line per written video (its key, shard, tensor prefix, number of
  features, fps, number of frames, label and split), one file per writing process;
- `bad-00000.jsonl`: the videos that could not be read, with the reason.

A video's key is its path relative to the data folder, or its absolute path for a loose file.

Writers (`FeatureWriter`) append: a video already in an index is skipped when extraction runs again
(resume), and `W` processes (`torchrun`: `RANK`, `WORLD_SIZE`) each take every W-th video and write
their own shards and index, which `FeatureStore` merges on reading.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

META = "meta.json"
LEVELS = ("frame", "clip", "tokens")
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FEATURE_SAMPLINGS = ("uniform", "crop", "all")
# meta.json keys that may differ between the runs writing one folder (they describe a run, not
# the features).
_RUN_KEYS = ("versions",)


class FeatureStore:
    """Read a features folder (layout in the module docstring).

    `meta` is the folder's `meta.json`; `videos` lists every written video's key in sorted order.
    `load(video)` gives its features `float32 (N, D)`, `times(video)` the centre time in seconds of
    each feature `(N,)`, `frames(video)` the first frame index of each feature `(N,)`.
    """

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)
        meta_path = self.root / META
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"no features in {self.root}: expected {META} (write features with `tubelet extract "
                "--model NAME --data DIR --out FOLDER`)"
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self._entries = read_index(self.root)
        self.videos: list[str] = sorted(self._entries)
        done = set(self._entries)
        self.bad_files: list[dict[str, str]] = [
            {"path": video, "reason": reason}
            for video, reason in sorted(_read_bad(self.root).items())
            if video not in done
        ]
        self._open: dict[str, Any] = {}  # shard name -> open safetensors file (parsed once)

    def __len__(self) -> int:
        return len(self.videos)

    def __contains__(self, video: object) -> bool:
        return video in self._entries

    @property
    def dim(self) -> int:
        """Feature size D."""
        return int(self.meta["dim"])

    @property
    def classes(self) -> list[str] | None:
        """Class names of the data folder the features came from (None for loose files)."""
        return self.meta.get("classes")

    def info(self, video: str) -> dict[str, Any]:
        """The index entry of `video`: shard, num (features), fps, num_frames, label, split."""
        try:
            return self._entries[video]
        except KeyError:
            raise KeyError(
                f"{video!r} has no features in {self.root} ({len(self.videos)} videos; keys are "
                "paths relative to the data folder, or absolute for loose files)"
            ) from None

    def load(self, video: str) -> torch.Tensor:
        """The features of `video`: float32 (N, D)."""
        return self._tensor(video, "features").float()

    def times(self, video: str) -> torch.Tensor:
        """Centre time in seconds of the frames each feature covers: float64 (N,)."""
        return self._tensor(video, "times")

    def frames(self, video: str) -> torch.Tensor:
        """Index of the first frame each feature covers: int64 (N,)."""
        return self._tensor(video, "frames")

    def fps(self, video: str) -> float:
        """The video's average frame rate."""
        return float(self.info(video)["fps"])

    def label(self, video: str) -> int | None:
        """The video's class index, or None when it is not known (loose files)."""
        return self.info(video)["label"]

    def split(self, video: str) -> str | None:
        """ "train" or "val" for a video of a data folder, None for a loose file."""
        return self.info(video)["split"]

    def videos_in(self, split: str) -> list[str]:
        """The keys of the videos of one split ("train" or "val"), sorted."""
        return [v for v in self.videos if self._entries[v]["split"] == split]

    def video_path(self, video: str) -> Path:
        """The video file the features were extracted from."""
        path = Path(video)
        data = self.meta.get("data")
        return path if path.is_absolute() or data is None else Path(data) / path

    def _tensor(self, video: str, name: str) -> torch.Tensor:
        entry = self.info(video)
        shard = entry["shard"]
        if shard not in self._open:  # a shard's header lists all its tensors: parse it once
            self._open[shard] = safe_open(str(self.root / shard), framework="pt")
        return self._open[shard].get_tensor(f"{entry['key']}.{name}")

    def __getstate__(self) -> dict[str, Any]:
        # Open files stay behind: DataLoader workers reopen the shards they read.
        return {**self.__dict__, "_open": {}}


class FeatureWriter:
    """Append per-video features to a features folder; resumable and shardable across processes.

    `meta` describes the features (see the module docstring; `dim` and `level` are required). A
    folder that already holds features made with other settings is refused. Videos already in the
    folder's index are `done` and are skipped by `pending`. Rank `rank` of `world_size` processes
    takes every `world_size`-th video (`pending`), writes shards whose numbers are `rank` modulo
    `world_size` (never a number that exists, so runs with other world sizes add to one folder) and
    its own `index-<rank>.jsonl`. A shard is written to a temporary name and renamed into place, then
    indexed, so an interrupted writer never leaves a video half written.
    """

    def __init__(
        self,
        path: str | Path,
        meta: dict[str, Any],
        *,
        rank: int = 0,
        world_size: int = 1,
        shard_mb: float = 256.0,
        dtype: str = "float32",
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if dtype not in STORE_DTYPES:
            raise ValueError(f"dtype must be one of {tuple(STORE_DTYPES)}, not {dtype!r}")
        if meta.get("level") not in LEVELS or int(meta.get("dim", 0)) < 1:
            raise ValueError(f"meta needs level in {LEVELS} and dim >= 1, got {meta}")
        self.root = Path(path)
        self.root.mkdir(parents=True, exist_ok=True)
        self.meta = {**meta, "dtype": dtype}
        self.rank = rank
        self.world_size = world_size
        self.shard_bytes = int(shard_mb * 2**20)
        self.dtype = STORE_DTYPES[dtype]
        self._write_meta()
        self.done: set[str] = set(read_index(self.root))
        self._buffer: dict[str, torch.Tensor] = {}
        self._lines: list[dict[str, Any]] = []
        self._bytes = 0
        self._next_number = rank

    def pending(self, videos: Sequence[str]) -> list[str]:
        """This rank's share of `videos` (every `world_size`-th from `rank`) not yet written."""
        return [v for v in shard_videos(videos, self.rank, self.world_size) if v not in self.done]

    def add(
        self,
        video: str,
        features: torch.Tensor,
        times: torch.Tensor,
        frames: torch.Tensor,
        *,
        fps: float,
        num_frames: int,
        label: int | None = None,
        split: str | None = None,
    ) -> None:
        """Buffer one video's features (N, D), centre times (N,) and first frames (N,); the shard
        is written once the buffer passes `shard_mb`."""
        if video in self.done:
            raise ValueError(f"{video!r} is already written in {self.root}")
        n = features.shape[0]
        if features.ndim != 2 or features.shape[1] != self.meta["dim"] or n < 1:
            raise ValueError(
                f"features of {video!r} must be (N >= 1, {self.meta['dim']}), got "
                f"{tuple(features.shape)}"
            )
        if times.shape != (n,) or frames.shape != (n,):
            raise ValueError(
                f"times and frames of {video!r} must be ({n},), got {tuple(times.shape)} and "
                f"{tuple(frames.shape)}"
            )
        key = str(len(self._lines))
        self._buffer[f"{key}.features"] = features.detach().to("cpu", self.dtype).contiguous()
        self._buffer[f"{key}.times"] = times.detach().to("cpu", torch.float64).contiguous()
        self._buffer[f"{key}.frames"] = frames.detach().to("cpu", torch.int64).contiguous()
        self._bytes += sum(self._buffer[f"{key}.{part}"].nbytes for part in ("features", "times"))
        self._lines.append(
            {"video": video, "key": key, "num": n, "fps": float(fps), "num_frames": int(num_frames),
             "label": label, "split": split}
        )  # fmt: skip
        self.done.add(video)
        if self._bytes >= self.shard_bytes:
            self.flush()

    def add_bad(self, video: str, reason: str) -> None:
        """Record a video that could not be read (it is tried again by the next run)."""
        with open(self.root / f"bad-{self.rank:05d}.jsonl", "a") as f:
            f.write(json.dumps({"video": video, "reason": reason}) + "\n")

    def flush(self) -> None:
        """Write the buffered videos as one shard and index them."""
        if not self._lines:
            return
        while (self.root / _shard_name(self._next_number)).exists():
            self._next_number += self.world_size
        name = _shard_name(self._next_number)
        tmp = self.root / f"{name}.tmp"
        save_file(self._buffer, str(tmp), metadata={"format": "tubelet-features"})
        os.replace(tmp, self.root / name)
        with open(self.root / f"index-{self.rank:05d}.jsonl", "a") as f:
            for line in self._lines:
                f.write(json.dumps({**line, "shard": name}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._buffer, self._lines, self._bytes = {}, [], 0

    def close(self) -> None:
        """Write what is buffered."""
        self.flush()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_meta(self) -> None:
        path = self.root / META
        if path.is_file():
            old = json.loads(path.read_text())
            keys = (set(old) | set(self.meta)) - set(_RUN_KEYS)
            differs = sorted(k for k in keys if old.get(k) != self.meta.get(k))
            if differs:
                changes = ", ".join(f"{k}: {old.get(k)!r} -> {self.meta.get(k)!r}" for k in differs)
                raise ValueError(
                    f"{self.root} holds features made with other settings ({changes}); pass another "
                    "--out, or delete the folder to start over"
                )
            return
        tmp = path.with_name(f"{META}.{self.rank}.tmp")
        tmp.write_text(json.dumps(self.meta, indent=2))
        os.replace(tmp, path)


def shard_videos(videos: Sequence[str], rank: int, world_size: int) -> list[str]:
    """Rank `rank`'s share of `videos`: every `world_size`-th one, starting at `rank`."""
    return list(videos[rank::world_size])


def read_index(root: Path) -> dict[str, dict[str, Any]]:
    """Every indexed video of a features folder -> its index entry (all writers' indexes merged).

    A line cut short by an interrupted write (no final newline) is ignored: its shard is renamed
    into place before the index line is written, so nothing is lost but that video, redone on resume.
    """
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(root.glob("index-*.jsonl")):
        for line in _complete_lines(path):
            entry = json.loads(line)
            entries.setdefault(entry["video"], entry)
    return entries


def _read_bad(root: Path) -> dict[str, str]:
    bad: dict[str, str] = {}
    for path in sorted(root.glob("bad-*.jsonl")):
        for line in _complete_lines(path):
            entry = json.loads(line)
            bad[entry["video"]] = entry["reason"]
    return bad


def _complete_lines(path: Path) -> Iterator[str]:
    text = path.read_text()
    lines = text.split("\n")
    # The last element is "" after a final newline, or a torn line without one: drop it either way.
    yield from (line for line in lines[:-1] if line.strip())


def _shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def feature_indices(
    num: int,
    length: int,
    *,
    sampling: str,
    train: bool,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Which of a video's `num` features to take for a sequence of at most `length`.

    "uniform": `length` features, one per equal segment (TSN; a random one per segment when
    training, the centres otherwise; repeats when `num < length`), so the sequence spans the video.
    "crop": `length` consecutive features (from a random start when training, centred otherwise),
    all `num` when fewer. "all": every feature (`length` ignored).
    """
    if sampling not in FEATURE_SAMPLINGS:
        raise ValueError(f"sampling must be one of {FEATURE_SAMPLINGS}, not {sampling!r}")
    if num < 1 or length < 1:
        raise ValueError(f"need num >= 1 and length >= 1, got num={num}, length={length}")
    if sampling == "all":
        return np.arange(num)
    if train and rng is None:
        raise ValueError("train=True samples at random: pass rng=np.random.default_rng(seed)")
    if sampling == "uniform":
        segment = np.arange(length)
        if train:
            offset = rng.integers(0, num, size=length if num >= length else 1)
            return (segment * num + offset) // length
        return ((2 * segment + 1) * num) // (2 * length)
    slack = num - length
    if slack <= 0:
        return np.arange(num)
    start = int(rng.integers(0, slack + 1)) if train else slack // 2
    return np.arange(start, start + length)


class FeatureDataset(Dataset):
    """Labelled feature sequences of a `FeatureStore` for classification.

    Item `index` gives `features` float32 (T, D) picked by `feature_indices` (`length`, `sampling`),
    its `label` and `index`. `videos` (keys) defaults to the videos of `split`. Every video must have
    a label. Use `collate_features` as the DataLoader's `collate_fn`.
    """

    def __init__(
        self,
        store: FeatureStore,
        *,
        split: str | None = None,
        videos: Sequence[str] | None = None,
        length: int = 16,
        sampling: str = "uniform",
        train: bool = False,
        seed: int = 0,
    ) -> None:
        if (split is None) == (videos is None):
            raise ValueError("pass exactly one of split= and videos=")
        feature_indices(1, length, sampling=sampling, train=False)  # validates the settings
        self.store = store
        self.videos = list(store.videos_in(split) if split is not None else videos)
        if not self.videos:
            raise ValueError(
                f"no {split} videos in {store.root} ({len(store)} videos, splits "
                f"{sorted({str(store.split(v)) for v in store.videos})})"
            )
        unlabelled = [v for v in self.videos if store.label(v) is None]
        if unlabelled:
            raise ValueError(
                f"{len(unlabelled)} videos have no label (first: {unlabelled[0]!r}); extract "
                "features from a data folder with annotation lists (--data) to train on them"
            )
        self.length = length
        self.sampling = sampling
        self.train = train
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        """Give each epoch its own (reproducible) random sampling."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        video = self.videos[index]
        feats = self.store.load(video)  # (N, D)
        rng = np.random.default_rng((self.seed, self.epoch, index)) if self.train else None
        picked = feature_indices(
            len(feats), self.length, sampling=self.sampling, train=self.train, rng=rng
        )
        return {
            "features": feats[torch.from_numpy(picked)],  # (T, D)
            "label": self.store.label(video),
            "index": index,
        }


def collate_features(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack feature sequences into `features` (B, T, D), zero-padded at the end to the longest,
    with `mask` (B, T) True where a feature is real; plus `label` (B,) and `index` (B,)."""
    longest = max(len(item["features"]) for item in items)
    dim = items[0]["features"].shape[1]
    features = torch.zeros(len(items), longest, dim)
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for i, item in enumerate(items):
        n = len(item["features"])
        features[i, :n] = item["features"]
        mask[i, :n] = True
    return {
        "features": features,  # (B, T, D)
        "mask": mask,  # (B, T)
        "label": torch.tensor([item["label"] for item in items]),
        "index": torch.tensor([item["index"] for item in items]),
    }


def centre_times(pts: torch.Tensor, fps: float, starts: torch.Tensor, window: int) -> torch.Tensor:
    """Centre, in seconds, of the frames `[start, start + window)` for each start (N,) -> (N,).

    Frame j is shown from `pts[j]` until the next frame's pts (the last one for 1 / fps), so a
    feature's span runs from its first frame's pts to its last frame's end; frames past the video's
    end (a window longer than the video) are not counted.
    """
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0, got {fps}")
    pts = pts.to(torch.float64)
    ends = torch.cat([pts[1:], pts[-1:] + 1.0 / fps])  # (F,) end of each frame
    last = (starts + window - 1).clamp(max=len(pts) - 1)
    return (pts[starts] + ends[last]) / 2
