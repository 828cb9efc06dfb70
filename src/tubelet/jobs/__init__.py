"""The jobs behind the commands: one module per task, each wiring data, model, task and loaders
for the generic trainer in `tubelet.engine`.

Every training task's module has `DEFAULT_MODEL` and `train(job, *, show_progress, on_data) ->
summary`; `TASKS` maps each `tubelet train --task NAME` to its module.
"""

from __future__ import annotations

from types import ModuleType

from tubelet.data.synthetic import ensure_synthetic_dataset
from tubelet.engine.distributed import init_distributed, main_first
from tubelet.jobs import (
    autoencoder,
    classification,
    detection,
    features,
    flow,
    generation,
    pretrain,
)
from tubelet.jobs.common import Progress, TrainJob, default_workers, hold_run

TASKS: dict[str, ModuleType] = {
    "autoencoder": autoencoder,
    "classification": classification,
    "detection": detection,
    "generation": generation,
    "flow": flow,
    "pretrain": pretrain,
}

__all__ = ["TASKS", "TrainJob", "check_task", "default_model", "default_workers", "train"]


def check_task(task: str) -> str:
    """`task` itself if known, else a ValueError listing the known tasks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    return task


def default_model(task: str) -> str:
    """The model `tubelet train --task TASK` trains when no --model is given."""
    return TASKS[check_task(task)].DEFAULT_MODEL


def train(job: TrainJob, *, show_progress: bool = True, on_data: Progress | None = None) -> dict:
    """Train (or resume) the run in `job.out` with the job of `job.task`; return its summary.

    The run folder is held for the whole job, and a job refused before its first epoch leaves
    nothing behind (`hold_run`)."""
    # Under torchrun: join the process group before loaders are built (they shard by rank).
    distributed = init_distributed().world_size > 1
    with hold_run(job.out):
        # Cached features train a classification head; only detection reads them itself.
        if job.features is not None and job.task != "detection":
            return features.train(job, show_progress=show_progress)
        module = TASKS[check_task(job.task)]
        if job.init is not None and job.task not in ("classification", "flow"):
            raise ValueError(
                f"--init starts classification (from a pretrain run) or flow (from a flow run), "
                f"not --task {job.task}: leave --init out"
            )
        if job.lora_rank is not None and job.task != "generation":
            raise ValueError(
                f"--lora-rank trains adapters of a generation model, not --task {job.task}"
            )
        # Under torchrun, rank 0 alone writes the built-in dataset.
        if distributed and job.data is None:
            main_first(lambda: ensure_synthetic_dataset(progress=on_data))
        return module.train(job, show_progress=show_progress, on_data=on_data)
