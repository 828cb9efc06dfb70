"""Loader assembly: an annotated folder plus clip and crop settings -> dataset and DataLoader."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from tubelet.data.annotations import Annotations, read_annotations
from tubelet.data.datasets import ClipSpec, VideoDataset, collate_clips
from tubelet.data.transforms import EvalTransform, TrainTransform
from tubelet.io.reader import MAX_PIXELS

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
    eval_transform: EvalTransform | None = None,
    classes: Sequence[str] | None = None,
    max_pixels: int | None = MAX_PIXELS,
) -> tuple[VideoDataset, Annotations]:
    """The dataset of one split. `flip=None` flips training clips only when no class names a direction.

    Evaluation clips go through `eval_transform` when given (a saved model's own preprocessing),
    else `EvalTransform(size, crops)`. `classes` (the training split's, or a model's) labels the
    split by those class names (`tubelet.data.annotations.relabel`).
    """
    annotations = read_annotations(root, split, classes=classes)
    if train:
        do_flip = not names_a_direction(annotations.classes) if flip is None else flip
        transform: TrainTransform | EvalTransform = TrainTransform(size=size, flip=do_flip)
    else:
        transform = eval_transform or EvalTransform(size=size, crops=crops)
    dataset = VideoDataset(
        annotations.records, clip=clip, transform=transform, train=train, num_clips=num_clips,
        bad_files=bad_files, backend=backend, seed=seed, max_pixels=max_pixels,
    )  # fmt: skip
    return dataset, annotations


class ShuffleSampler(Sampler[int]):
    """A new random order each epoch, fixed by (seed, epoch), so a resumed run sees the same order
    as one that was never interrupted. Call `set_epoch` before each epoch (the trainer does).

    With `world_size` > 1 (one sampler per process of a distributed run) every process draws the same
    order and takes every `world_size`-th index from its `rank` on, after cutting the order to a
    multiple of `world_size`: the shares are disjoint and equally long (so every process runs the same
    number of steps), and together they are one shuffled epoch less at most `world_size - 1` videos.
    """

    def __init__(self, size: int, seed: int = 0, *, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size)
        if world_size > 1 and size < world_size:
            raise ValueError(
                f"{size} training videos cannot be shared among {world_size} processes; "
                "use fewer processes or more data"
            )
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.world_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        usable = len(self) * self.world_size
        return iter(order[self.rank : usable : self.world_size].tolist())


class ShardSampler(Sampler[int]):
    """Evaluation share of process `rank`: indices rank, rank + world_size, ... in order, no padding,
    so across all processes every video is evaluated exactly once (shares differ by at most one)."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size)
        self.size = size
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.world_size))


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process in the current torch.distributed group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    num_workers: int = 1,
    seed: int = 0,
    sampler: Sampler | None = None,
    collate_fn: Callable[[list[Any]], Any] = collate_clips,
) -> DataLoader:
    """The DataLoader of every task: it shuffles per epoch (reproducibly from `seed`) when
    training, and keeps every item in order, once, when evaluating. `sampler` replaces the
    shuffling (e.g. a distributed one); `collate_fn` makes a batch of the dataset's items (clips by
    default; `torch.utils.data.default_collate` for plain tensors).

    In a distributed run (a torch.distributed process group is initialised) each process gets its
    share: a `ShuffleSampler` slice when training, a `ShardSampler` (no padding) when evaluating,
    so that every item is evaluated once in all.
    """
    rank, world_size = process_group()
    if sampler is None and train:
        sampler = ShuffleSampler(len(dataset), seed, rank=rank, world_size=world_size)
    elif sampler is None and world_size > 1:
        sampler = ShardSampler(len(dataset), rank=rank, world_size=world_size)
    share = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=train and share > batch_size,
        # Workers are made anew each epoch so they see the dataset's `set_epoch`.
        persistent_workers=False,
        # Workers decode; the main process runs the model. Each worker keeps to one thread.
        worker_init_fn=_one_thread if num_workers > 0 else None,
    )


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)
