"""`tubelet data inspect`: what a data folder holds, and which of its files cannot be read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tubelet.data.annotations import SPLITS, EmptySplitError, read_annotations
from tubelet.io import VideoDecodeError, VideoReader


@dataclass
class SplitReport:
    """Counts and ranges of one split; `unreadable` lists (path, reason)."""

    videos: int = 0
    per_class: Counter = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    fps: Counter = field(default_factory=Counter)
    resolutions: Counter = field(default_factory=Counter)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class DatasetReport:
    root: Path
    layout: str
    classes: tuple[str, ...]
    splits: dict[str, SplitReport]


def inspect_dataset(
    root: str | Path, *, progress: Callable[[int, int], None] | None = None
) -> DatasetReport:
    """Open every video of every split of `root` (metadata and a frame index, no full decode)."""
    root = Path(root)
    annotations = {}
    for split in SPLITS:
        try:
            annotations[split] = read_annotations(root, split)
        except EmptySplitError:
            continue
    if not annotations:
        raise ValueError(f"{root} holds no videos in any known layout (see `tubelet data --help`)")
    total = sum(len(a.records) for a in annotations.values())
    done = 0
    splits = {}
    first = next(iter(annotations.values()))
    for split, ann in annotations.items():
        report = SplitReport(videos=len(ann.records))
        for record in ann.records:
            report.per_class[ann.classes[record.label]] += 1
            try:
                with VideoReader(record.path) as reader:
                    report.durations.append(reader.duration)
                    report.fps[round(reader.fps, 2)] += 1
                    report.resolutions[f"{reader.width}x{reader.height}"] += 1
            except VideoDecodeError as error:
                report.unreadable.append((error.path, error.reason))
            done += 1
            if progress:
                progress(done, total)
        splits[split] = report
    return DatasetReport(root, first.layout, first.classes, splits)
