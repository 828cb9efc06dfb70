"""Loader assembly: an annotated folder plus clip and crop settings -> dataset and DataLoader."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from tubelet.data.annotations import Annotations, read_annotations
from tubelet.data.datasets import ClipSpec, VideoDataset, collate_clips
from tubelet.data.transforms import EvalTransform, TrainTransform

_DIRECTION = re.compile(r"(^|[^a-z])(left|right|clockwise|counterclockwise|cw|ccw)([^a-z]|$)")


def names_a_direction(classes: Sequence[str]) -> bool:
    """True when a class name says left/right or a turning sense, so a horizontal flip would change
    the label (move_left vs move_right; SSv2 "pushing something from left to right")."""
    return any(_DIRECTION.search(name.lower()) for name in classes)


def build_dataset(
    root: str | Path,
    split: str,
    *,
    clip: ClipSpec,
    size: int,
    train: bool,
    num_clips: int = 1,
    crops: int = 1,
    flip: bool | None = None,
    bad_files: str = "resample",
    backend: str = "auto",
    seed: int = 0,
) -> tuple[VideoDataset, Annotations]:
    """The dataset of one split. `flip=None` flips training clips only when no class names a direction."""
    annotations = read_annotations(root, split)
    if train:
        do_flip = not names_a_direction(annotations.classes) if flip is None else flip
        transform: TrainTransform | EvalTransform = TrainTransform(size=size, flip=do_flip)
    else:
        transform = EvalTransform(size=size, crops=crops)
    dataset = VideoDataset(
        annotations.records, clip=clip, transform=transform, train=train, num_clips=num_clips,
        bad_files=bad_files, backend=backend, seed=seed,
    )  # fmt: skip
    return dataset, annotations


class ShuffleSampler(Sampler[int]):
    """A new random order each epoch, fixed by (seed, epoch), so a resumed run sees the same order
    as one that was never interrupted. Call `set_epoch` before each epoch (the trainer does)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def build_loader(
    dataset: VideoDataset,
    *,
    batch_size: int,
    train: bool,
    num_workers: int = 1,
    seed: int = 0,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader that shuffles per epoch (reproducibly from `seed`) when training, and keeps every
    video in order, once, when evaluating. `sampler` replaces the shuffling (e.g. a distributed one)."""
    if sampler is None and train:
        sampler = ShuffleSampler(len(dataset), seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_clips,
        drop_last=train and len(dataset) > batch_size,
        # Workers are made anew each epoch so they see the dataset's `set_epoch`.
        persistent_workers=False,
        # Workers decode; the main process runs the model. Each worker keeps to one thread.
        worker_init_fn=_one_thread if num_workers > 0 else None,
    )


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)
