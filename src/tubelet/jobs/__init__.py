"""The jobs behind the commands: one module per task, each wiring data, model, task and loaders
for the generic trainer in `tubelet.engine`.

Every training task's module has `DEFAULT_MODEL`, `UNUSED` (the run settings it does not read)
and `train(job, *, show_progress, on_data) -> summary`; `TASKS` maps each `tubelet train --task
NAME` to its module. A job is the shared run settings (`TrainJob`) with the task's own typed
settings (`TASK_SETTINGS`).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

from tubelet.data.synthetic import ensure_synthetic_dataset
from tubelet.engine.distributed import init_distributed, main_first
from tubelet.jobs import (
    autoencoder,
    classification,
    detection,
    flow,
    generation,
    pretrain,
)
from tubelet.jobs import features as features_job
from tubelet.jobs.common import (
    ClassificationSettings,
    Progress,
    TrainJob,
    default_workers,
    hold_run,
)

TASKS: dict[str, ModuleType] = {
    "autoencoder": autoencoder,
    "classification": classification,
    "detection": detection,
    "generation": generation,
    "flow": flow,
    "pretrain": pretrain,
}

__all__ = [
    "TASKS", "TrainJob", "check_options", "check_task", "default_model", "default_workers", "train"
]  # fmt: skip


def check_task(task: str) -> str:
    """`task` itself if known, else a ValueError listing the known tasks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    return task


def default_model(task: str) -> str:
    """The model `tubelet train --task TASK` trains when no --model is given."""
    return TASKS[check_task(task)].DEFAULT_MODEL


def check_options(task: str, given: Iterable[str], *, features: bool = False) -> None:
    """Refuse, naming the option, a setting in `given` (run or task settings, by field name) that
    the job of `task` does not read (`features`: a head trained on cached features)."""
    unused = features_job.UNUSED if features else TASKS[check_task(task)].UNUSED
    for name in given:
        if name in unused:
            what = "a head on cached features (--features)" if features else f"--task {task}"
            raise ValueError(f"--{name.replace('_', '-')} is not used by {what}: leave it out")


def train(job: TrainJob, *, show_progress: bool = True, on_data: Progress | None = None) -> dict:
    """Train (or resume) the run in `job.out` with the job of `job.task`; return its summary.

    The run folder is held for the whole job, and a job refused before its first epoch leaves
    nothing behind (`hold_run`)."""
    # Under torchrun: join the process group before loaders are built (they shard by rank).
    distributed = init_distributed().world_size > 1
    with hold_run(job.out):
        module = TASKS[check_task(job.task)]
        # Cached features train a classification head (`tubelet.jobs.features`).
        if isinstance(job.settings, ClassificationSettings) and job.settings.features is not None:
            return features_job.train(job, show_progress=show_progress)
        # Under torchrun, rank 0 alone writes the built-in dataset.
        if distributed and job.data is None:
            main_first(lambda: ensure_synthetic_dataset(progress=on_data))
        return module.train(job, show_progress=show_progress, on_data=on_data)
