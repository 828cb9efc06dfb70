"""Annotation lists: which videos a data set holds, their labels, and its class names.

Three layouts are read, chosen by what the folder holds (checked in this order):

1. **List files** (Kinetics/UCF style): `train.csv` and `val.csv` with lines `relative/path.mp4 label_index`
   (space or comma separated), optional `classes.txt` (one name per line, in label order). The label is
   the last field and the path is everything before its separator, kept exactly (spaces and commas in
   file names survive); a path may also be quoted as in CSV (`"a, b.mp4",3`).
2. **Something-Something-v2 JSON**: `train.json` / `validation.json` (or the official
   `something-something-v2-{train,validation}.json`) holding `[{"id": ..., "template": ...}, ...]`, with
   `labels.json` mapping each template (brackets removed) to its index; videos are `videos/ID.webm`
   (or `ID.webm`/`ID.mp4` beside the lists).
3. **One sub-folder per class**: `train/<class>/*.mp4` and `val/<class>/*.mp4`; or `<class>/*.mp4` with no
   split, in which case every fifth video of each class (sorted by name) is held out for validation.

Any layout may add `reversal_pairs.txt` (lines `classA classB`): pairs of classes that are each
other's time reversal; evaluation then also reports accuracy on telling each from its reversal.

Text files are UTF-8 (a byte-order mark is allowed); a file in another encoding is named in the error.
A video listed twice in one split is refused with both line numbers: it would count twice.
`read_annotations(..., classes=...)` gives the labels by name in another class list (the training
split's, or a model's), so train/val and a model/data set are matched the same way everywhere.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
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


def read_annotations(
    root: str | Path, split: str, *, classes: Sequence[str] | None = None
) -> Annotations:
    """Read the `split` ("train" or "val") of the data set in `root` (layouts in the module doc).

    With `classes` (e.g. the training split's, or a trained model's) the labels index that list,
    matched by class name; a video of a class not in it is refused, naming the class.
    """
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if (root / f"{split}.csv").is_file():
        records, own = _read_list(root, split)
        layout = "list"
    elif _ssv2_list(root, split) is not None:
        records, own = _read_ssv2(root, split)
        layout = "ssv2-json"
    else:
        records, own = _read_folders(root, split)
        layout = "class-folders"
    if not records:
        raise EmptySplitError(f"no {split} videos found in {root} ({layout} layout)")
    annotations = Annotations(tuple(records), tuple(own), _read_pairs(root, own), layout)
    if classes is not None:
        annotations = relabel(annotations, classes, f"the {split} split of {root}")
    return annotations


def relabel(annotations: Annotations, classes: Sequence[str], what: str) -> Annotations:
    """`annotations` with labels (and reversal pairs) indexing `classes`, matched by name.

    The one class check of train (val against train) and eval (data against the model): a split
    may lack some of `classes`, but a video of a class outside them stops with the names of both
    lists, since its label would silently mean another class.
    """
    classes = tuple(classes)
    if annotations.classes == classes:
        return annotations
    index = {name: i for i, name in enumerate(classes)}
    used = sorted({annotations.classes[r.label] for r in annotations.records})
    unknown = [name for name in used if name not in index]
    if unknown:
        shown = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        known = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        raise ValueError(
            f"{what} has videos of {len(unknown)} class(es) outside the {len(classes)} it must "
            f"match ({known}): {shown}; give the splits (and the model) the same classes "
            "(one classes.txt, or the same class folders)"
        )
    records = tuple(
        replace(r, label=index[annotations.classes[r.label]]) for r in annotations.records
    )
    pairs = tuple(
        (index[annotations.classes[a]], index[annotations.classes[b]])
        for a, b in annotations.reversal_pairs
        if annotations.classes[a] in index and annotations.classes[b] in index
    )
    return Annotations(records, classes, pairs, annotations.layout)


def read_text(path: Path) -> str:
    """A UTF-8 text file (a byte-order mark is dropped); another encoding is named in the error."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}): "
            "save it as UTF-8"
        ) from None


_LINE = re.compile(r"^(?P<path>.*?)\s*(?:,|\s)\s*(?P<label>[+-]?\d+)\s*$")


def _parse_line(line: str) -> tuple[str, int] | None:
    """`path label` of one list line: the label is the last field, the path everything before its
    separator (a comma or white space), kept exactly; a quoted first field is read as CSV."""
    if line.lstrip().startswith('"'):
        fields = next(csv.reader([line.strip()], skipinitialspace=True))
        if len(fields) == 2 and re.fullmatch(r"[+-]?\d+", fields[1].strip()):
            return fields[0], int(fields[1])
        return None
    match = _LINE.match(line)
    if not match or not match["path"].strip():
        return None
    return match["path"].lstrip(), int(match["label"])


def _read_list(root: Path, split: str) -> tuple[list[VideoRecord], list[str]]:
    list_file = root / f"{split}.csv"
    records, lines = [], []
    for number, line in enumerate(read_text(list_file).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parsed = _parse_line(line)
        if parsed is None:
            raise ValueError(f"{list_file}:{number}: expected 'path label_index', got {line!r}")
        records.append(VideoRecord(root / parsed[0], parsed[1]))
        lines.append(number)
    _refuse_duplicates(list_file, records, [f"lines {n}" for n in lines])
    names_file = root / "classes.txt"
    if names_file.is_file():
        classes = [c.strip() for c in read_text(names_file).splitlines() if c.strip()]
    else:
        classes = [str(i) for i in range(max(r.label for r in records) + 1)] if records else []
    bad = [r for r in records if not 0 <= r.label < len(classes)]
    if bad:
        raise ValueError(
            f"{list_file}: label {bad[0].label} of {bad[0].path.name} is outside "
            f"0..{len(classes) - 1} ({len(classes)} classes in classes.txt)"
        )
    return records, classes


def _refuse_duplicates(source: Path, records: list[VideoRecord], places: list[str]) -> None:
    """A video listed twice would count twice in every metric: refuse, naming where."""
    first: dict[str, str] = {}
    repeats = []
    for record, place in zip(records, places, strict=True):
        key = os.path.normpath(record.path)
        if key in first:
            repeats.append(f"{record.path.name} ({first[key]} and {place.split()[-1]})")
        else:
            first[key] = place
    if repeats:
        shown = "; ".join(repeats[:5]) + (
            f"; ... ({len(repeats)} in all)" if len(repeats) > 5 else ""
        )
        raise ValueError(
            f"{source} lists {len(repeats)} video(s) more than once, which would count them twice: "
            f"{shown}; remove the repeated lines"
        )


def _ssv2_list(root: Path, split: str) -> Path | None:
    names = {"train": ("train.json",), "val": ("validation.json", "val.json")}[split]
    official = {"train": "train", "val": "validation"}[split]
    for name in (*names, f"something-something-v2-{official}.json"):
        if (root / name).is_file():
            return root / name
    return None


def _read_ssv2(root: Path, split: str) -> tuple[list[VideoRecord], list[str]]:
    labels_file = next(
        (
            p
            for p in (root / "labels.json", root / "something-something-v2-labels.json")
            if p.is_file()
        ),
        None,
    )
    if labels_file is None:
        raise FileNotFoundError(f"{root} has SSv2 lists but no labels.json (template -> index)")
    labels = _read_json(labels_file)
    try:
        label_of = {str(name): int(index) for name, index in labels.items()}
    except (AttributeError, TypeError, ValueError):
        raise ValueError(
            f"{labels_file}: expected an object mapping each template to its index, e.g. "
            '{"Opening something": "0"}'
        ) from None
    indices = sorted(label_of.values())
    if indices != list(range(len(indices))):
        missing = sorted(set(range(len(indices))) - set(indices))[:5]
        raise ValueError(
            f"{labels_file}: indices must be 0..{len(indices) - 1} with each used once "
            f"(missing {missing}, or repeated); fix the file"
        )
    classes = [name for name, _ in sorted(label_of.items(), key=lambda item: item[1])]
    video_dir = root / "videos" if (root / "videos").is_dir() else root
    list_file = _ssv2_list(root, split)
    entries = _read_json(list_file)
    records, places = [], []
    for number, entry in enumerate(entries if isinstance(entries, list) else [None]):
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise ValueError(
                f'{list_file}: entry {number} is not an object with an "id" and a "template" '
                f"(got {entry!r:.80}); fix the file"
            )
        template = str(entry["template"]).replace("[", "").replace("]", "")
        if template not in label_of:
            raise ValueError(
                f"SSv2 video {entry['id']}: template {template!r} is not in {labels_file}"
            )
        path = video_dir / f"{entry['id']}.webm"
        if not path.exists() and (video_dir / f"{entry['id']}.mp4").exists():
            path = video_dir / f"{entry['id']}.mp4"
        records.append(VideoRecord(path, label_of[template]))
        places.append(f"entries {number}")
    _refuse_duplicates(list_file, records, places)
    return records, classes


def _read_json(path: Path) -> object:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix the file") from None


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
    for line in read_text(pairs_file).splitlines():
        names = line.split()
        if not names:
            continue
        unknown = [n for n in names if n not in index]
        if len(names) != 2 or unknown:
            raise ValueError(f"{pairs_file}: expected two known class names per line, got {line!r}")
        pairs.append((index[names[0]], index[names[1]]))
    return tuple(pairs)
