"""How many decoding threads a reader should use, given the processes that decode at once."""

from __future__ import annotations

import os

from torch.utils.data import get_worker_info


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and `taskset` set)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def thread_budget(num_workers: int | None = None, *, cores: int | None = None) -> int:
    """FFmpeg threads per reader so that all decoding processes together use each core once.

    `num_workers` is the DataLoader's worker count; None reads it from inside a DataLoader worker
    (`torch.utils.data.get_worker_info`), and means 0 elsewhere. With 0 workers the main process
    decodes alone (the model waits meanwhile), so it gets every core. `cores` defaults to
    `available_cores()`. Returns at least 1: `cores // max(num_workers, 1)`.
    """
    if num_workers is None:
        info = get_worker_info()
        num_workers = 0 if info is None else info.num_workers
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if cores is None:
        cores = available_cores()
    elif isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores must be an int >= 1, got {cores!r}")
    return max(1, cores // max(num_workers, 1))
