"""Batches on the device, one step ahead: the copy and on-device preparation of the next batch
overlap the current step.

On a GPU the loader's batches come from pinned memory (`tubelet.data.build_loader`); each is copied
with `non_blocking=True` on a side CUDA stream and prepared there (e.g. uint8 clips normalised,
`tubelet.data.transforms.BatchNormalize`), while the default stream still runs the step before.
The step then waits for that stream on the GPU only, never on the host. On the CPU the same
iterator copies and prepares in place, one batch at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

Batch = dict[str, Any]
Prepare = Callable[[Batch], Batch]


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch with its tensors on `device` (non-blocking: asynchronous from pinned memory)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def has_clips(batch: Batch) -> bool:
    """False for a batch that lost every item to unreadable videos (its `video` is None)."""
    return batch.get("video", ()) is not None


class DeviceBatches:
    """Iterate `loader`'s batches as `(batch on device, seconds waited for the loader)`.

    `prepare` runs on each batch once it is on `device`. Batches without clips (`has_clips`) pass
    through untouched, for the caller to count their unreadable files. On CUDA the next batch is
    copied and prepared on a side stream while the caller works on the current one.
    """

    def __init__(
        self, loader: Iterable[Batch], device: torch.device, prepare: Prepare | None = None
    ) -> None:
        self.loader = loader
        self.device = device
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Batch, float]]:
        if self.device.type == "cuda":
            return self._ahead()
        return ((self._load(batch), waited) for batch, waited in timed(self.loader))

    def _load(self, batch: Batch) -> Batch:
        if not has_clips(batch):
            return batch
        batch = to_device(batch, self.device)
        return self.prepare(batch) if self.prepare else batch

    def _ahead(self) -> Iterator[tuple[Batch, float]]:
        stream = torch.cuda.Stream(self.device)
        batches = timed(self.loader)

        def load_next() -> tuple[Batch, float] | None:
            item = next(batches, None)
            if item is None:
                return None
            batch, waited = item
            with torch.cuda.stream(stream):
                return self._load(batch), waited

        upcoming = load_next()
        while upcoming is not None:
            batch, waited = upcoming
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)
            for value in batch.values():
                if isinstance(value, torch.Tensor) and value.device.type == "cuda":
                    # Made on the side stream, used on this one: keep its memory until this
                    # stream is done with it.
                    value.record_stream(current)
            upcoming = load_next()
            yield batch, waited


def timed(loader: Iterable[Any]) -> Iterator[tuple[Any, float]]:
    """Yield each batch with the seconds spent waiting for it."""
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - start
