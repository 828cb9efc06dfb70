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
    normalized: bool = True,
    decode_device: str = "cpu",
) -> tuple[VideoDataset, Annotations]:
    """The dataset of one split. `flip=None` flips training clips only when no class names a direction.
    `normalized=False` leaves the clips uint8 for normalising on the device
    (`tubelet.data.transforms.BatchNormalize`).

    Evaluation clips go through `eval_transform` when given (a saved model's own preprocessing),
    else `EvalTransform(size, crops)`. `classes` (the training split's, or a model's) labels the
    split by those class names (`tubelet.data.annotations.relabel`). `decode_device` is where
    videos decode (`VideoDataset`: "cuda" decodes with NVDEC and yields clips on the GPU).
    """
    annotations = read_annotations(root, split, classes=classes)
    if train:
        do_flip = not names_a_direction(annotations.classes) if flip is None else flip
        transform: TrainTransform | EvalTransform = TrainTransform(
            size=size, flip=do_flip, normalized=normalized
        )
    else:
        transform = eval_transform or EvalTransform(size=size, crops=crops, normalized=normalized)
    dataset = VideoDataset(
        annotations.records, clip=clip, transform=transform, train=train, num_clips=num_clips,
        bad_files=bad_files, backend=backend, seed=seed, max_pixels=max_pixels,
        decode_device=decode_device,
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
    pin_memory: bool | None = None,
    item_bytes: int | None = None,
) -> DataLoader:
    """The DataLoader of every task: it shuffles per epoch (reproducibly from `seed`) when
    training, and keeps every item in order, once, when evaluating. `sampler` replaces the
    shuffling (e.g. a distributed one); `collate_fn` makes a batch of the dataset's items (clips by
    default; `torch.utils.data.default_collate` for plain tensors).

    In a distributed run (a torch.distributed process group is initialised) each process gets its
    share: a `ShuffleSampler` slice when training, a `ShardSampler` (no padding) when evaluating,
    so that every item is evaluated once in all.

    Workers live as long as the loader (`persistent_workers`): starting them anew each epoch cost
    seconds per epoch on small data sets. They still follow each epoch's randomness: a training
    loader asks its dataset for `(epoch, index)` pairs (`EpochItems`), so a dataset with
    `set_epoch` draws the epoch's clips and crops in the worker that loads the item. Batches are
    collated into pinned memory when a GPU is present (`pin_memory`, default: CUDA is available),
    so that the copy to the device can run without blocking. Each worker keeps
    `prefetch_batches(num_workers, batch_size * item_bytes)` batches in flight (`item_bytes`: an
    item's size, when known).
    """
    rank, world_size = process_group()
    if sampler is None and train:
        sampler = ShuffleSampler(len(dataset), seed, rank=rank, world_size=world_size)
    elif sampler is None and world_size > 1:
        sampler = ShardSampler(len(dataset), rank=rank, world_size=world_size)
    share = len(sampler) if sampler is not None else len(dataset)
    if isinstance(sampler, ShuffleSampler):
        dataset, sampler = EpochItems(dataset), EpochSampler(sampler)
    workers: dict[str, Any] = {}
    if num_workers > 0:
        batch_bytes = batch_size * item_bytes if item_bytes else None
        workers = {
            "persistent_workers": True,
            "prefetch_factor": prefetch_batches(num_workers, batch_bytes),
            # Workers decode; the main process runs the model. Each worker keeps to one thread.
            "worker_init_fn": _one_thread,
        }
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=train and share > batch_size,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        **workers,
    )


# Batches in flight per worker: enough to ride out a slow video, few enough to bound memory.
PREFETCH_BATCHES = 4
PREFETCH_BYTES = 2 * 1024**3  # what all workers together may hold in flight


def prefetch_batches(num_workers: int, batch_bytes: int | None = None) -> int:
    """Batches each of `num_workers` workers loads ahead (DataLoader's `prefetch_factor`).

    `PREFETCH_BATCHES` each (2 by default in torch: one slow decode then stalls the step), cut so
    that all workers together hold at most `PREFETCH_BYTES` of batches of `batch_bytes`; at least
    one each.
    """
    if num_workers < 1:
        raise ValueError(f"prefetching needs at least one worker, got {num_workers}")
    if not batch_bytes:
        return PREFETCH_BATCHES
    return max(1, min(PREFETCH_BATCHES, PREFETCH_BYTES // (num_workers * batch_bytes)))


class EpochSampler(Sampler[tuple[int, int]]):
    """`(epoch, index)` for each index of a `ShuffleSampler`, so that the item's epoch travels with
    it to the (persistent) worker that loads it; `set_epoch` sets the shuffler's."""

    def __init__(self, sampler: ShuffleSampler) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.sampler.epoch
        return ((epoch, index) for index in self.sampler)


class EpochItems(Dataset):
    """The items of `dataset` asked for as `(epoch, index)` (`EpochSampler`): the dataset's
    `set_epoch` (when it has one) is called with the item's epoch in the process that loads it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        epoch, index = item
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)
