"""Annotation lists: which videos a data set holds, their labels, and its class names.

Three layouts are read, chosen by what the folder holds (checked in this order):

1. **List files** (Kinetics/UCF style): `train.csv` and `val.csv` with lines `relative/path.mp4 label_index`
   (space or comma separated), optional `classes.txt` (one name per line, in label order).
2. **Something-Something-v2 JSON**: `train.json` / `validation.json` (or the official
   `something-something-v2-{train,validation}.json`) holding `[{"id": ..., "template": ...}, ...]`, with
   `labels.json` mapping each template (brackets removed) to its index; videos are `videos/ID.webm`
   (or `ID.webm`/`ID.mp4` beside the lists).
3. **One sub-folder per class**: `train/<class>/*.mp4` and `val/<class>/*.mp4`; or `<class>/*.mp4` with no
   split, in which case every fifth video of each class (sorted by name) is held out for validation.

Any layout may add `reversal_pairs.txt` (lines `classA classB`): pairs of classes that are each
other's time reversal; evaluation then also reports accuracy on telling each from its reversal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".gif")
SPLITS = ("train", "val")
HOLD_OUT_EVERY = 5
T = TypeVar("T")


def hold_out(items: Sequence[T], split: str) -> list[T]:
    """The `split` share of `items` for a source without its own split: every `HOLD_OUT_EVERY`-th
    item (the 5th, 10th, ...; so indices 4, 9, ...) is "val", the others "train".

    The one rule of every reader that must split a folder itself (class folders, unlabeled videos
    for pre-training, flow data sets without a split file). Sort `items` first for a split that
    does not depend on the file system's listing order.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    val = split == "val"
    return [item for i, item in enumerate(items) if (i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1) == val]


class EmptySplitError(ValueError):
    """The data folder is readable but holds no video for the asked split."""


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video."""

    path: Path
    label: int


@dataclass(frozen=True)
class Annotations:
    """The videos of one split plus the data set's class names and reversal pairs (label indices)."""

    records: tuple[VideoRecord, ...]
    classes: tuple[str, ...]
    reversal_pairs: tuple[tuple[int, int], ...] = ()
    layout: str = ""


def read_annotations(root: str | Path, split: str) -> Annotations:
    """Read the `split` ("train" or "val") of the data set in `root` (layouts in the module doc)."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if (root / f"{split}.csv").is_file():
        records, classes = _read_list(root, split)
        layout = "list"
    elif _ssv2_list(root, split) is not None:
        records, classes = _read_ssv2(root, split)
        layout = "ssv2-json"
    else:
        records, classes = _read_folders(root, split)
        layout = "class-folders"
    if not records:
        raise EmptySplitError(f"no {split} videos found in {root} ({layout} layout)")
    return Annotations(tuple(records), tuple(classes), _read_pairs(root, classes), layout)


def _read_list(root: Path, split: str) -> tuple[list[VideoRecord], list[str]]:
    records = []
    for number, line in enumerate((root / f"{split}.csv").read_text().splitlines(), start=1):
        parts = line.replace(",", " ").split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 2 or not parts[-1].lstrip("-").isdigit():
            raise ValueError(f"{root / f'{split}.csv'}:{number}: expected 'path label_index', got {line!r}")
        records.append(VideoRecord(root / " ".join(parts[:-1]), int(parts[-1])))
    names_file = root / "classes.txt"
    if names_file.is_file():
        classes = [c.strip() for c in names_file.read_text().splitlines() if c.strip()]
    else:
        classes = [str(i) for i in range(max(r.label for r in records) + 1)] if records else []
    bad = [r for r in records if not 0 <= r.label < len(classes)]
    if bad:
        raise ValueError(
            f"{root / f'{split}.csv'}: label {bad[0].label} of {bad[0].path.name} is outside "
            f"0..{len(classes) - 1} ({len(classes)} classes in classes.txt)"
        )
    return records, classes


def _ssv2_list(root: Path, split: str) -> Path | None:
    names = {"train": ("train.json",), "val": ("validation.json", "val.json")}[split]
    official = {"train": "train", "val": "validation"}[split]
    for name in (*names, f"something-something-v2-{official}.json"):
        if (root / name).is_file():
            return root / name
    return None


def _read_ssv2(root: Path, split: str) -> tuple[list[VideoRecord], list[str]]:
    labels_file = next(
        (p for p in (root / "labels.json", root / "something-something-v2-labels.json") if p.is_file()),
        None,
    )
    if labels_file is None:
        raise FileNotFoundError(f"{root} has SSv2 lists but no labels.json (template -> index)")
    label_of = {name: int(index) for name, index in json.loads(labels_file.read_text()).items()}
    classes = [name for name, _ in sorted(label_of.items(), key=lambda item: item[1])]
    video_dir = root / "videos" if (root / "videos").is_dir() else root
    records = []
    for entry in json.loads(_ssv2_list(root, split).read_text()):
        template = entry["template"].replace("[", "").replace("]", "")
        if template not in label_of:
            raise ValueError(f"SSv2 video {entry['id']}: template {template!r} is not in {labels_file}")
        path = video_dir / f"{entry['id']}.webm"
        if not path.exists() and (video_dir / f"{entry['id']}.mp4").exists():
            path = video_dir / f"{entry['id']}.mp4"
        records.append(VideoRecord(path, label_of[template]))
    return records, classes


def _read_folders(root: Path, split: str) -> tuple[list[VideoRecord], list[str]]:
    split_root = root / split
    has_splits = split_root.is_dir()
    if not has_splits:
        split_root = root
    classes = sorted(
        p.name for p in split_root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not has_splits:
        classes = [c for c in classes if c not in SPLITS]
    records = []
    for label, name in enumerate(classes):
        videos = sorted(
            p for p in (split_root / name).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES
        )
        if not has_splits:
            videos = hold_out(videos, split)  # every fifth video of the class is validation
        records += [VideoRecord(v, label) for v in videos]
    return records, classes


def _read_pairs(root: Path, classes: list[str]) -> tuple[tuple[int, int], ...]:
    pairs_file = root / "reversal_pairs.txt"
    if not pairs_file.is_file():
        return ()
    index = {name: i for i, name in enumerate(classes)}
    pairs = []
    for line in pairs_file.read_text().splitlines():
        names = line.split()
        if not names:
            continue
        unknown = [n for n in names if n not in index]
        if len(names) != 2 or unknown:
            raise ValueError(f"{pairs_file}: expected two known class names per line, got {line!r}")
        pairs.append((index[names[0]], index[names[1]]))
    return tuple(pairs)
