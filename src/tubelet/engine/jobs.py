"""The jobs behind the commands: train, evaluate and predict for action classification.

Each job wires the layers (data -> models -> tasks -> trainer) from plain settings, so the command
line only parses options and prints what comes back.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tubelet.data import ClipSpec, build_dataset, build_loader
from tubelet.data.sampling import temporal_views
from tubelet.data.synthetic import ensure_synthetic_dataset
from tubelet.data.transforms import EvalTransform
from tubelet.engine import finetune
from tubelet.engine.checkpoint import find_checkpoint, load_model
from tubelet.engine.distributed import init_distributed, main_first
from tubelet.engine.progress import TrainProgress
from tubelet.engine.run import RunDir, seed_everything, versions
from tubelet.engine.trainer import OptimConfig, RuntimeConfig, Trainer, evaluate_loader
from tubelet.io import VideoReader
from tubelet.models import architecture_args, create_model
from tubelet.tasks import ClassificationTask

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainJob:
    """Everything `tubelet train` needs. `data=None` trains on the built-in synthetic dataset.

    `task` picks the job (see `TASKS`); the fields a task has no use for are ignored by it.
    """

    out: Path
    task: str = "classification"
    data: Path | None = None
    model: str = "r2plus1d_18"
    model_args: dict[str, Any] = field(default_factory=dict)
    init: Path | None = None  # a pretrain run whose encoder starts fine-tuning; a flow run (flow)
    features: Path | None = None  # a `tubelet extract` folder: train a temporal head on it
    frames: int = 8
    sampling: str = "uniform"
    stride: int = 2
    size: int = 112
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    accumulate: int = 1
    precision: str = "fp32"
    label_smoothing: float = 0.1
    flip: bool | None = None
    bad_files: str = "resample"
    workers: int = 1
    seed: int = 0
    grad_checkpointing: bool = False
    channels_last: bool = False
    compile: bool = False
    fsdp: bool = False


# Every task `tubelet train --task NAME` knows: the module whose `train(job, *, show_progress,
# on_data) -> summary` runs it, and the model used when no --model is given.
TASKS: dict[str, tuple[str, str]] = {
    "classification": ("tubelet.engine.jobs", "r2plus1d_18"),
    "detection": ("tubelet.engine.detection", "actionformer_tiny"),
    "generation": ("tubelet.engine.generation", "video_unet"),
    "flow": ("tubelet.engine.flow", "raft_small"),
    "pretrain": ("tubelet.engine.pretrain", "videomae_pretrain_s"),
}


# Switches that change memory, speed or devices but not what is learnt: a run may resume with others.
RUNTIME_FIELDS = ("grad_checkpointing", "channels_last", "compile", "fsdp")


def runtime_config(job: TrainJob) -> RuntimeConfig:
    """The trainer's runtime switches from a job (every task's `train` passes it to `Trainer`)."""
    return RuntimeConfig(
        grad_checkpointing=job.grad_checkpointing, channels_last=job.channels_last,
        compile=job.compile, parallel="fsdp" if job.fsdp else "ddp",
    )  # fmt: skip


def default_model(task: str) -> str:
    """The model `tubelet train --task TASK` trains when no --model is given."""
    return TASKS[check_task(task)][1]


def check_task(task: str) -> str:
    """`task` itself if known, else a ValueError listing the known tasks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    return task


def default_workers() -> int:
    """Decoding workers: one per core beyond the one that runs the model, at least one."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def train(job: TrainJob, *, show_progress: bool = True, on_data: Progress | None = None) -> dict:
    """Train (or resume) the run in `job.out` with the job of `job.task`; return its summary."""
    # Cached features train a classification head; only detection reads them itself.
    if job.features is not None and job.task != "detection":
        module = "tubelet.engine.features"
        return importlib.import_module(module).train(job, show_progress=show_progress)
    module = TASKS[check_task(job.task)][0]
    if job.init is not None and job.task not in ("classification", "flow"):
        raise ValueError(
            f"--init starts classification (from a pretrain run) or flow (from a flow run), "
            f"not --task {job.task}: leave --init out"
        )
    # Under torchrun: join the process group before loaders are built (they shard by rank), and
    # let rank 0 alone write the built-in dataset.
    if init_distributed().world_size > 1 and job.data is None:
        main_first(lambda: ensure_synthetic_dataset(progress=on_data))
    if module != __name__:
        return importlib.import_module(module).train(
            job, show_progress=show_progress, on_data=on_data
        )
    return train_classification(job, show_progress=show_progress, on_data=on_data)


def train_classification(
    job: TrainJob, *, show_progress: bool = True, on_data: Progress | None = None
) -> dict:
    """Train (or resume) an action-recognition run in `job.out`; return its summary.

    A run folder that holds a run with other settings is refused (only `epochs` may grow); one that
    finished all its epochs returns its summary without training.
    """
    data_root = Path(job.data) if job.data else ensure_synthetic_dataset(progress=on_data)
    run = open_run(job, {**jsonable(job), "data": str(data_root)})

    clip = ClipSpec(frames=job.frames, sampling=job.sampling, stride=job.stride)
    common = {"clip": clip, "size": job.size, "bad_files": job.bad_files, "seed": job.seed}
    train_set, annotations = build_dataset(data_root, "train", train=True, flip=job.flip, **common)
    val_set, _ = build_dataset(data_root, "val", train=False, **common)
    num_classes = len(annotations.classes)
    model_args = {**job.model_args, "num_classes": num_classes}
    if job.init:  # the encoder's shape comes from the pre-training run
        model_args = {**finetune.init_model_args(job.init, job.model), **model_args}
    model = create_model(job.model, **model_args)
    groups = None
    if job.init:  # its weights, a new head, layer-wise learning-rate decay
        groups = finetune.finetune_groups(model, job.init, lr=job.lr, weight_decay=job.weight_decay)
    spec = {
        "model": job.model,
        "model_args": architecture_args(job.model, model_args),
        "classes": list(annotations.classes),
        "reversal_pairs": [list(p) for p in annotations.reversal_pairs],
        "clip": dataclasses.asdict(clip),
        "size": job.size,
        "data": str(data_root),
    }
    task = ClassificationTask(num_classes, job.label_smoothing, annotations.reversal_pairs)
    loaders = {
        "train_loader": build_loader(
            train_set, batch_size=job.batch_size, train=True, num_workers=job.workers, seed=job.seed
        ),
        "val_loader": build_loader(
            val_set, batch_size=job.batch_size, train=False, num_workers=job.workers, seed=job.seed
        ),
    }
    optim = optim_config(job)
    trainer = Trainer(
        model, task, config=optim, run=run, spec=spec, show_progress=show_progress,
        runtime=runtime_config(job), groups=groups, **loaders,
    )  # fmt: skip
    return trainer.fit()


def evaluate(
    checkpoint: Path,
    *,
    data: Path | None = None,
    clips: int = 1,
    crops: int = 1,
    batch_size: int = 8,
    workers: int = 1,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Multi-view evaluation (clips x crops per video) of a saved model on a data set's val split.

    The metrics are also written to `eval-{clips}x{crops}.json` in the run folder.
    """
    model, spec = load_model(checkpoint)
    root = Path(data or spec["data"])
    clip = ClipSpec(**spec["clip"])
    dataset, annotations = build_dataset(
        root, "val", clip=clip, size=spec["size"], train=False, num_clips=clips, crops=crops,
        bad_files="skip",
    )  # fmt: skip
    if list(annotations.classes) != spec["classes"]:
        raise ValueError(
            f"the classes of {root} do not match the model's {len(spec['classes'])} classes; "
            "evaluate on the data set it was trained on (or one with the same classes.txt)"
        )
    task = ClassificationTask(len(spec["classes"]), reversal_pairs=annotations.reversal_pairs)
    loader = build_loader(dataset, batch_size=batch_size, train=False, num_workers=workers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bad_files: dict[str, dict[str, str]] = {}
    with TrainProgress(enabled=show_progress) as progress:
        metrics = evaluate_loader(
            model.to(device), task, loader, device=device, progress=progress, bad_files=bad_files
        )
    metrics["views"] = f"{clips}x{crops}"
    metrics["bad_files"] = [{"path": p, **i} for p, i in sorted(bad_files.items())]
    run_root = find_checkpoint(checkpoint).parent
    if (run_root / "config.json").is_file():
        (run_root / f"eval-{clips}x{crops}.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def predict(
    checkpoint: Path, video: Path, *, top_k: int = 5, clips: int = 1, crops: int = 1
) -> list[dict[str, Any]]:
    """The `top_k` classes of one video file with their probabilities (views averaged)."""
    model, spec = load_model(checkpoint)
    model.eval()
    clip = ClipSpec(**spec["clip"])
    transform = EvalTransform(size=spec["size"], crops=crops)

    with VideoReader(video) as reader:
        views = temporal_views(
            reader.num_frames, reader.fps, clips, sampling=clip.sampling, clip_len=clip.frames,
            stride=clip.stride,
        )  # fmt: skip
        frames = reader.get_frames([i for v in views for i in v.indices]).data
    frames = frames.view(len(views), clip.frames, *frames.shape[1:])  # (V_t, T, H, W, 3)
    batch = torch.cat([transform(c) for c in frames])  # (V, C, T, S, S)
    with torch.no_grad():
        probs = model(batch).softmax(-1).mean(0)  # (K,)
    top = probs.topk(min(top_k, len(probs)))
    return [
        {"class": spec["classes"][i], "index": i, "probability": p}
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def jsonable(job: Any) -> dict[str, Any]:
    """A job dataclass as JSON-ready values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(job).items()}


def open_run(job: TrainJob, config: dict[str, Any]) -> RunDir:
    """The run folder of `job` with `config` (its settings as JSON, plus what the task adds) and the
    library versions written in it; seeds everything. A folder that holds a run with other settings
    is refused (`check_same_run`)."""
    run = RunDir(Path(job.out))
    config = {**config, "versions": versions()}
    previous = run.read_config()
    if previous is not None:
        check_same_run(previous, config, run.root)
    run.write_config(config)
    seed_everything(job.seed)
    return run


def optim_config(job: TrainJob) -> OptimConfig:
    """The optimisation settings of `job`: AdamW with warm-up and cosine decay over its epochs."""
    return OptimConfig(
        epochs=job.epochs, lr=job.lr, weight_decay=job.weight_decay,
        warmup_epochs=job.warmup_epochs, accumulate=job.accumulate, precision=job.precision,
    )  # fmt: skip


def check_same_run(previous: dict[str, Any], config: dict[str, Any], root: Path) -> None:
    """Refuse to resume a run folder whose saved settings differ from `config` (but for epochs)."""
    ignore = {"epochs", "versions", "workers", "out", *RUNTIME_FIELDS}
    differs = sorted(k for k in config if k not in ignore and previous.get(k) != config[k])
    if differs:
        changes = ", ".join(f"{k}: {previous.get(k)!r} -> {config[k]!r}" for k in differs)
        raise ValueError(
            f"{root} already holds a run with other settings ({changes}); "
            "pass another --out, or delete the folder to start over"
        )
