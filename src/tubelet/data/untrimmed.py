"""Untrimmed video for temporal action detection: annotation files, a synthetic set, feature datasets.

Annotations use the ActivityNet layout, which THUMOS14 releases converted to JSON share:

    {"database": {"<video>": {"subset": "training", "duration": 61.5, "fps": 4.0,
                              "annotations": [{"segment": [12.0, 15.25], "label": "move_left"}]}}}

(`fps` is optional; a top-level `classes` list, when present, fixes the class order, otherwise the
sorted labels do.) `read_detection_annotations` reads it, `write_detection_annotations` writes it.

The built-in synthetic untrimmed set (`ensure_untrimmed_dataset`) strings the built-in motion
actions of `tubelet.data.synthetic` together into long videos over one static textured background:
each action instance is one object doing its class's motion, repeated in cycles when the instance is
long, so instances last from half a second to twenty seconds (log-uniform); background stretches
without any object lie between them and about one instance in five overlaps the next (both objects
are drawn). The object is on screen exactly while its action lasts.

`DetectionFeatureDataset` pairs a `tubelet.data.features.FeatureStore` of such videos with their
annotations: a sequence of features (L, D) and the segments in units of feature steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from tubelet.data.cache import cache_dir, ensure_generated, write_params
from tubelet.data.features import FeatureStore
from tubelet.data.synthetic import CLASSES, Track, render_scene, sample_scene
from tubelet.io import write_video

UNTRIMMED_NAME = "tubelet-synthetic-untrimmed"
UNTRIMMED_VERSION = 1
ANNOTATIONS_FILE = "annotations.json"
SUBSETS = {"train": "training", "val": "validation"}


class Segment(NamedTuple):
    """One annotated action: seconds from the start of the video, and the class name."""

    start: float
    end: float
    label: str


class UntrimmedVideo(NamedTuple):
    """A video's entry: its name (the JSON key), subset, duration in seconds, fps and segments."""

    name: str
    subset: str
    duration: float
    fps: float | None
    segments: tuple[Segment, ...]


@dataclasses.dataclass(frozen=True)
class DetectionAnnotations:
    """The videos of an annotation file (by name) and the class names, in label-index order."""

    videos: dict[str, UntrimmedVideo]
    classes: tuple[str, ...]

    def subset(self, subset: str) -> list[UntrimmedVideo]:
        """The videos of one subset (as the file names it: "training", "Validation", ...), by name."""
        found = [v for _, v in sorted(self.videos.items()) if v.subset == subset]
        if not found:
            names = sorted({v.subset for v in self.videos.values()})
            raise ValueError(f"no videos in subset {subset!r}; the subsets are {names}")
        return found

    def ground_truth(self, videos: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Records `{video, start, end, label}` for `evaluate_detections` (all videos by default)."""
        names = sorted(self.videos) if videos is None else list(videos)
        return [
            {"video": name, "start": s.start, "end": s.end, "label": s.label}
            for name in names
            for s in self.videos[name].segments
        ]


def read_detection_annotations(path: str | Path) -> DetectionAnnotations:
    """Read a THUMOS14 / ActivityNet style JSON (layout in the module docstring)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no annotation file {path}") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable JSON file: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise ValueError(
            f"{path} has no 'database' object; expected the ActivityNet layout "
            "{'database': {video: {'subset', 'duration', 'annotations': [{'segment', 'label'}]}}}"
        )
    videos = {}
    for name, entry in data["database"].items():
        try:
            segments = tuple(
                Segment(float(a["segment"][0]), float(a["segment"][1]), str(a["label"]))
                for a in entry.get("annotations", [])
            )
            video = UntrimmedVideo(
                str(name), str(entry["subset"]), float(entry["duration"]),
                float(entry["fps"]) if entry.get("fps") else None, segments,
            )  # fmt: skip
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise ValueError(
                f"{path}: video {name!r} is malformed ({type(error).__name__}: {error}); each "
                "needs subset, duration and annotations [{segment: [start, end], label}]"
            ) from None
        bad = [s for s in segments if not s.end >= s.start]
        if bad:
            raise ValueError(
                f"{path}: video {name!r} has a segment that ends before it starts: {bad[0]}"
            )
        videos[str(name)] = video
    labels = {s.label for v in videos.values() for s in v.segments}
    if "classes" in data:
        classes = tuple(str(c) for c in data["classes"])
        unknown = sorted(labels - set(classes))
        if unknown:
            raise ValueError(f"{path}: labels {unknown} are not in its 'classes' list")
    else:
        classes = tuple(sorted(labels))
    return DetectionAnnotations(videos, classes)


def write_detection_annotations(
    path: str | Path, videos: Iterable[UntrimmedVideo], classes: Sequence[str], **extra: Any
) -> Path:
    """Write videos in the ActivityNet layout, with the class order and any `extra` top-level keys."""
    database = {
        v.name: {
            "subset": v.subset,
            "duration": v.duration,
            **({"fps": v.fps} if v.fps else {}),
            "annotations": [{"segment": [s.start, s.end], "label": s.label} for s in v.segments],
        }
        for v in videos
    }
    path = Path(path)
    path.write_text(json.dumps({**extra, "classes": list(classes), "database": database}, indent=1))
    return path


# -- the synthetic untrimmed set -----------------------------------------------------------------


def render_untrimmed_video(
    seed: int,
    *,
    duration: float,
    fps: float = 4.0,
    size: int = 64,
    min_action: float = 0.5,
    max_action: float = 20.0,
    overlap: float = 0.2,
) -> tuple[np.ndarray, list[Segment]]:
    """Render one long video: uint8 frames (round(duration * fps), size, size, 3) and its segments.

    Instance lengths are log-uniform in [`min_action`, `max_action`] seconds (at least two frames),
    gaps 0.5-8 s; with probability `overlap` the next instance starts while one is still running.
    A segment spans exactly the frames its object is drawn on: [first / fps, (last + 1) / fps).
    """
    if duration * fps < 8 or fps <= 0:
        raise ValueError(f"a video needs at least 8 frames; got duration={duration}, fps={fps}")
    if not 0 < min_action <= max_action:
        raise ValueError(f"need 0 < min_action <= max_action, got {min_action}, {max_action}")
    rng = np.random.default_rng(seed)
    num_frames = round(duration * fps)
    backdrop = sample_scene(0, seed=int(rng.integers(2**31)), num_frames=2, size=size)
    video = np.broadcast_to(backdrop.background, (num_frames, size, size, 3)).copy()  # float [0, 1]
    segments = []
    t = rng.uniform(0.5, 4.0)
    while True:
        length = math.exp(rng.uniform(math.log(min_action), math.log(max_action)))
        first = round(t * fps)
        last = max(first + 2, round((t + length) * fps))  # exclusive
        end_of_room = num_frames - round(0.5 * fps)  # leave half a second of background at the end
        if end_of_room - first < max(2, min_action * fps):
            break
        last = min(last, end_of_room)
        label = int(rng.integers(len(CLASSES)))
        _draw_instance(video, first, last, label, fps, int(rng.integers(2**31)), rng)
        segments.append(Segment(first / fps, last / fps, CLASSES[label]))
        if rng.random() < overlap and last - first >= 4:
            t = (first + rng.uniform(0.3, 0.8) * (last - first)) / fps
        else:
            t = last / fps + rng.uniform(0.5, 8.0)
    grain = rng.standard_normal((num_frames, size, size, 1), dtype=np.float32)
    video += grain * np.float32(backdrop.noise_std)
    frames = np.clip(video * 255 + 0.5, 0, 255).astype(np.uint8)
    return frames, sorted(segments)


def _draw_instance(
    video: np.ndarray, first: int, last: int, label: int, fps: float, seed: int,
    rng: np.random.Generator,
) -> None:  # fmt: skip
    """Composite one object doing class `label` over `video[first:last]` (float, in place).

    A long instance repeats its motion in cycles of 1.5-3 s. The object is rendered twice by
    `render_scene`, over black and over white without noise: with `o0` and `o1` those frames, the
    object over any frames F is F * (o1 - o0) + o0 (= F * (1 - shadow) * (1 - alpha) + colour).
    """
    n = last - first
    cycles = 1 if n <= 3 * fps else math.ceil(n / (rng.uniform(1.5, 3.0) * fps))
    cycle_frames = max(2, round(n / cycles))
    size = video.shape[1]
    scene = sample_scene(label, seed=seed, num_frames=cycle_frames, size=size)
    track = Track(*(np.tile(part, cycles + 1)[:n] for part in scene.track))
    over = []
    for value in (0.0, 1.0):
        background = np.full((size, size, 3), value, dtype=np.float32)
        plain = dataclasses.replace(scene, track=track, background=background, noise_std=0.0)
        over.append(render_scene(plain).astype(np.float32) / 255)
    video[first:last] = video[first:last] * (over[1] - over[0]) + over[0]


def write_untrimmed_dataset(
    out_dir: str | Path,
    *,
    train_videos: int = 24,
    val_videos: int = 8,
    min_duration: float = 30.0,
    max_duration: float = 60.0,
    fps: float = 4.0,
    size: int = 64,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the synthetic untrimmed set: `videos/<name>.mp4`, `annotations.json` (ActivityNet
    layout, subsets "training" / "validation"), `classes.txt`, `train.csv` / `val.csv` (each video
    under its dominant class, for `tubelet extract --data`) and, last, `dataset.json`."""
    params = _untrimmed_params(
        train_videos=train_videos, val_videos=val_videos, min_duration=min_duration,
        max_duration=max_duration, fps=fps, size=size, seed=seed,
    )  # fmt: skip
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "dataset.json").unlink(missing_ok=True)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    total = train_videos + val_videos
    videos = []
    for index in range(total):
        video_seed = int(np.random.SeedSequence([seed, 7, index]).generate_state(1)[0])
        duration = np.random.default_rng(video_seed).uniform(min_duration, max_duration)
        duration = round(duration * fps) / fps
        frames, segments = render_untrimmed_video(video_seed, duration=duration, fps=fps, size=size)
        name = f"video_{index:04d}"
        write_video(out / "videos" / f"{name}.mp4", frames, fps)
        subset = SUBSETS["train"] if index < train_videos else SUBSETS["val"]
        videos.append(UntrimmedVideo(name, subset, len(frames) / fps, fps, tuple(segments)))
        if progress is not None:
            progress(index + 1, total)
    write_detection_annotations(out / ANNOTATIONS_FILE, videos, CLASSES, version=UNTRIMMED_NAME)
    # Classification lists (each video under its dominant class) make the folder a `--data` folder
    # for `tubelet extract`, whose features then record the split and this folder.
    for split, subset in SUBSETS.items():
        lines = [f"videos/{v.name}.mp4 {_dominant_label(v)}" for v in videos if v.subset == subset]
        (out / f"{split}.csv").write_text("\n".join(lines) + "\n")
    write_params(out, params)
    return out


def _dominant_label(video: UntrimmedVideo) -> int:
    """The class index with the most annotated seconds in `video` (0 for a video without any)."""
    seconds = np.zeros(len(CLASSES))
    for s in video.segments:
        seconds[CLASSES.index(s.label)] += s.end - s.start
    return int(seconds.argmax())


def default_untrimmed_dir(**settings: Any) -> Path:
    """The cache folder for these parameters under `$XDG_CACHE_HOME/tubelet` (or ~/.cache/tubelet)."""
    p = _untrimmed_params(**{**_UNTRIMMED_DEFAULTS, **settings})
    name = (
        f"synthetic-untrimmed-v{UNTRIMMED_VERSION}-s{p['seed']}-n{p['train_videos']}+"
        f"{p['val_videos']}-{p['min_duration']:g}-{p['max_duration']:g}s-{p['size']}px-{p['fps']:g}fps"
    )
    return cache_dir() / name


def ensure_untrimmed_dataset(
    out_dir: str | Path | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> Path:
    """A complete synthetic untrimmed set for these settings (see `write_untrimmed_dataset`),
    generated only when needed, into a temporary sibling folder renamed into place when complete.

    A folder whose `dataset.json` holds other settings (or a half-written set) is replaced; a folder
    holding anything else is refused.
    """
    settings = {**_UNTRIMMED_DEFAULTS, **settings}
    out = Path(out_dir) if out_dir is not None else default_untrimmed_dir(**settings)
    return ensure_generated(
        out,
        _untrimmed_params(**settings),
        lambda folder: write_untrimmed_dataset(folder, **settings, progress=progress),
        classes=CLASSES,
        what="synthetic untrimmed set",
    )


_UNTRIMMED_DEFAULTS: dict[str, Any] = {
    "train_videos": 24, "val_videos": 8, "min_duration": 30.0, "max_duration": 60.0, "fps": 4.0,
    "size": 64, "seed": 0,
}  # fmt: skip


def _untrimmed_params(
    *, train_videos: int, val_videos: int, min_duration: float, max_duration: float, fps: float,
    size: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    if train_videos < 1 or val_videos < 1:
        raise ValueError(
            f"need at least one train and one val video, got {train_videos}, {val_videos}"
        )
    if not 0 < min_duration <= max_duration or fps <= 0 or size < 16 or seed < 0:
        raise ValueError(
            "need 0 < min_duration <= max_duration, fps > 0, size >= 16 and seed >= 0; got "
            f"{min_duration}, {max_duration}, {fps}, {size}, {seed}"
        )
    return {
        "name": UNTRIMMED_NAME, "version": UNTRIMMED_VERSION, "train_videos": train_videos,
        "val_videos": val_videos, "min_duration": float(min_duration),
        "max_duration": float(max_duration), "fps": float(fps), "size": size, "seed": seed,
    }  # fmt: skip


# -- features with annotations -------------------------------------------------------------------


def feature_key_names(store: FeatureStore) -> dict[str, str]:
    """Annotation video name (the file's stem) -> the store's key for it."""
    names: dict[str, str] = {}
    for key in store.videos:
        stem = Path(key).stem
        if stem in names:
            raise ValueError(f"{store.root} holds two videos named {stem!r}: {names[stem]}, {key}")
        names[stem] = key
    return names


def feature_grid(times: torch.Tensor) -> tuple[float, float]:
    """(offset_s, step_s) of evenly spaced feature centre times (N,): time of step i = offset + i*step.

    One feature gives a step of 0 (nothing to scale); uneven spacing is an error, since the detector
    assumes a regular grid.
    """
    times = times.double()
    if len(times) < 2:
        return float(times[0]), 0.0
    diffs = times.diff()
    step = float(diffs.mean())
    if step <= 0 or float((diffs - step).abs().max()) > 0.05 * step:
        raise ValueError("features must be evenly spaced in time (extract with a fixed --stride)")
    return float(times[0]), step


class DetectionFeatureDataset(Dataset):
    """Feature sequences of annotated untrimmed videos, for the detector and its baseline.

    Item `i` (video `videos[i]`, an annotation name) gives `features` float32 (L, D), `segments`
    float32 (M, 2) in feature steps (step k is the feature centred at offset + k * step seconds),
    `labels` int64 (M,), `offset_s`, `step_s`, `duration_s` and `index`. With `train=True` a video
    longer than `max_len` features is cut to a random `max_len` window (segments clipped to it, those
    left with under half their length dropped); otherwise it is whole.
    """

    def __init__(
        self,
        store: FeatureStore,
        annotations: DetectionAnnotations,
        videos: Sequence[str],
        *,
        max_len: int = 512,
        train: bool = False,
        seed: int = 0,
    ) -> None:
        self.keys = feature_key_names(store)
        missing = [v for v in videos if v not in self.keys]
        if missing:
            raise ValueError(
                f"{len(missing)} annotated videos have no features in {store.root} (first: "
                f"{missing[0]!r}); extract features of every video first (`tubelet extract`)"
            )
        unknown = [v for v in videos if v not in annotations.videos]
        if unknown:
            raise ValueError(f"videos {unknown[:3]} are not in the annotations")
        if not videos:
            raise ValueError("no videos to make a detection dataset of")
        self.store = store
        self.annotations = annotations
        self.videos = list(videos)
        self.class_index = {c: i for i, c in enumerate(annotations.classes)}
        self.max_len = max_len
        self.train = train
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int) -> None:
        """Give each epoch its own (reproducible) random crops."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.videos[index]
        key = self.keys[name]
        feats = self.store.load(key)  # (N, D)
        offset, step = feature_grid(self.store.times(key))
        step = step or 1.0 / self.store.fps(key)
        entry = self.annotations.videos[name]
        segments = torch.tensor(
            [[(s.start - offset) / step, (s.end - offset) / step] for s in entry.segments],
            dtype=torch.float32,
        ).reshape(-1, 2)
        labels = torch.tensor([self.class_index[s.label] for s in entry.segments], dtype=torch.long)
        if self.train and len(feats) > self.max_len:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            start = int(rng.integers(0, len(feats) - self.max_len + 1))
            feats = feats[start : start + self.max_len]
            length = (segments[:, 1] - segments[:, 0]).clamp(min=1e-6)
            segments = (segments - start).clamp(0, self.max_len)
            keep = (segments[:, 1] - segments[:, 0]) >= 0.5 * length
            segments, labels = segments[keep], labels[keep]
            offset += start * step
        return {
            "features": feats, "segments": segments, "labels": labels, "offset_s": offset,
            "step_s": step, "duration_s": entry.duration, "index": index,
        }  # fmt: skip


def collate_detection(items: list[dict[str, Any]], multiple: int = 1) -> dict[str, torch.Tensor]:
    """Batch detection items: `features` (B, D, L) zero-padded at the end to the longest rounded up
    to `multiple`, `mask` (B, L) True where real, `segments` (B, M, 2) and `labels` (B, M) padded
    with -1 labels, and `offset_s`, `step_s`, `duration_s` (B,) float64, `index` (B,)."""
    longest = max(len(item["features"]) for item in items)
    length = -(-longest // multiple) * multiple
    most = max(1, max(len(item["labels"]) for item in items))
    b, dim = len(items), items[0]["features"].shape[1]
    features = torch.zeros(b, dim, length)
    mask = torch.zeros(b, length, dtype=torch.bool)
    segments = torch.zeros(b, most, 2)
    labels = torch.full((b, most), -1, dtype=torch.long)
    for i, item in enumerate(items):
        n, m = len(item["features"]), len(item["labels"])
        features[i, :, :n] = item["features"].T
        mask[i, :n] = True
        segments[i, :m] = item["segments"]
        labels[i, :m] = item["labels"]
    return {
        "features": features,  # (B, D, L)
        "mask": mask,  # (B, L)
        "segments": segments,  # (B, M, 2) in feature steps
        "labels": labels,  # (B, M), -1 = padding
        **{
            k: torch.tensor([item[k] for item in items], dtype=torch.float64)
            for k in ("offset_s", "step_s", "duration_s")
        },
        "index": torch.tensor([item["index"] for item in items]),
    }
