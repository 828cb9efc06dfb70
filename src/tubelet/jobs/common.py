"""What every task's job shares: the settings of a training run and the run-folder plumbing."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tubelet.data import ClipSpec
from tubelet.data.transforms import EvalTransform
from tubelet.engine.distributed import dist_env, main_decides
from tubelet.engine.run import RunDir, open_run_dir, seed_everything, tensorboard_error, versions
from tubelet.engine.trainer import OptimConfig, RuntimeConfig
from tubelet.models.spec import Preprocessing
from tubelet.normalization import IMAGENET_MEAN, IMAGENET_STD

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FlowSettings:
    """What `--task flow` adds to the run settings: RAFT's refinement `updates` per pair, in
    training and evaluation."""

    updates: int = 12


@dataclass(frozen=True)
class DiffusionSettings:
    """What `--task generation` adds to the run settings (see `tubelet.jobs.generation`).

    DDPM: the denoiser's target (`prediction`: "v" or "epsilon") and the noise `schedule`
    ("cosine" or "linear") over `train_steps` steps. Flow matching (`objective` "flow"; None: flow
    for text-conditioned models, else "ddpm"): the timestep `shift` and `timestep_sampling`
    ("logit_normal" or "uniform"), a frozen `vae` (a run, or a folder in `vae_format`) whose latents
    are modelled, `text_embeddings` (a folder of one embedding per class) and, with --lora-rank,
    `lora_alpha`. Both: the share of labels dropped for classifier-free guidance (`cond_drop`) and
    the EMA decay of the weights that sample (`ema_decay`).
    """

    prediction: str = "v"
    schedule: str = "cosine"
    train_steps: int = 1000
    cond_drop: float = 0.1
    ema_decay: float = 0.995
    objective: str | None = None
    shift: float = 1.0
    timestep_sampling: str = "logit_normal"
    vae: str | None = None
    vae_format: str = "tubelet"
    text_embeddings: str | None = None
    lora_alpha: float | None = None


TaskSettings = FlowSettings | DiffusionSettings
# Each task that has settings of its own, and their type (`--task-arg KEY=VALUE`).
TASK_SETTINGS: dict[str, type[FlowSettings] | type[DiffusionSettings]] = {
    "flow": FlowSettings,
    "generation": DiffusionSettings,
}
# The names those settings had when they rode in the model arguments (`-m`), for old commands.
_OLD_NAMES = {"flow": {"num_flow_updates": "updates"}, "generation": {}}


def task_settings(task: str, args: dict[str, Any]) -> TaskSettings | None:
    """The typed settings of `task` from `--task-arg` KEY=VALUE pairs (values already parsed);
    None for a task without settings and no pairs. Unknown keys are a ValueError naming the task's."""
    kind = TASK_SETTINGS.get(task)
    if kind is None:
        if args:
            raise ValueError(f"--task {task} has no settings of its own; leave --task-arg out")
        return None
    known = {f.name: f.type for f in dataclasses.fields(kind)}
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(
            f"unknown --task-arg {', '.join(unknown)} for --task {task}; its settings: "
            f"{', '.join(known)}"
        )
    defaults = kind()
    typed = {  # a setting whose default is None keeps its value as given
        k: v if getattr(defaults, k) is None else type(getattr(defaults, k))(v)
        for k, v in args.items()
    }
    return kind(**typed)


def split_task_args(task: str, model_args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(builder arguments, task settings) of `-m` pairs written before task settings had their own
    option: `-m num_flow_updates=4` for flow, `-m prediction=epsilon` etc. for generation."""
    kind = TASK_SETTINGS.get(task)
    names = {f.name for f in dataclasses.fields(kind)} if kind else set()
    renamed = {**{n: n for n in names}, **_OLD_NAMES.get(task, {})}
    settings = {renamed[k]: v for k, v in model_args.items() if k in renamed}
    return {k: v for k, v in model_args.items() if k not in renamed}, settings


def builder_args(job: TrainJob) -> dict[str, Any]:
    """The model arguments of `job`, refusing task settings among them (`-m` is for the builder)."""
    model_args, settings = split_task_args(job.task, job.model_args)
    if settings:
        pairs = " ".join(f"--task-arg {k}={v}" for k, v in settings.items())
        raise ValueError(
            f"{', '.join(sorted(set(job.model_args) - set(model_args)))} are --task {job.task} "
            f"settings, not builder arguments of {job.model}: pass {pairs}"
        )
    return model_args


def settings_of(job: TrainJob, kind: type[FlowSettings] | type[DiffusionSettings]) -> Any:
    """The task settings of `job` (their defaults when it has none); a ValueError for another
    task's settings."""
    if job.task_settings is None:
        return kind()
    if not isinstance(job.task_settings, kind):
        raise ValueError(
            f"--task {job.task} takes {kind.__name__}, not {type(job.task_settings).__name__}"
        )
    return job.task_settings


@dataclass(frozen=True)
class TrainJob:
    """Everything `tubelet train` needs. `data=None` trains on the built-in synthetic dataset.

    `task` picks the job (see `tubelet.jobs.TASKS`); the fields a task has no use for are ignored.
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
    lora_rank: int | None = None  # generation: train LoRA adapters of this rank, base frozen
    task_settings: TaskSettings | None = None  # the task's own (`--task-arg`); None: defaults
    # Probes and fine-tuning from a published checkpoint (`tubelet.jobs.probe`).
    checkpoint: Path | None = None  # weights to start from (any `tubelet.convert` format)
    checkpoint_format: str | None = None
    head: str | None = None  # the model's head ("attentive", "linear"); with --features: the probe
    freeze_backbone: bool = False  # train the head only
    layer_decay: float | None = None  # layer-wise learning-rate decay for full fine-tuning
    log: str = "files"  # "tensorboard": also write TensorBoard event files into the run folder


# Switches that change memory, speed or devices but not what is learnt: a run may resume with others.
RUNTIME_FIELDS = ("grad_checkpointing", "channels_last", "compile", "fsdp")
LOGS = (
    "files",
    "tensorboard",
)  # what `--log` takes: the run folder's files only, or TensorBoard too


def runtime_config(job: TrainJob) -> RuntimeConfig:
    """The trainer's runtime switches from a job (every task's `train` passes it to `Trainer`)."""
    return RuntimeConfig(
        grad_checkpointing=job.grad_checkpointing, channels_last=job.channels_last,
        compile=job.compile, parallel="fsdp" if job.fsdp else "ddp",
    )  # fmt: skip


def default_workers() -> int:
    """Decoding workers: one per core beyond the one that runs the model, at least one."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def jsonable(job: Any) -> dict[str, Any]:
    """A job dataclass as JSON-ready values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(job).items()}


@contextmanager
def hold_run(out: str | Path) -> Iterator[RunDir]:
    """The run folder `out`, held for this process while inside (`RunDir.lock`: a second process
    is refused, naming the PID). A job stopped before its run committed an epoch (refused settings,
    an unknown model, unreadable data, Ctrl-C) leaves the folder as it found it, so the corrected
    command is not refused as "other settings"."""
    run = RunDir(Path(out))
    existed, had_config = run.root.exists(), (run.root / "config.json").is_file()
    with ExitStack() as stack:
        main_decides(lambda: stack.enter_context(run.lock()))
        try:
            yield run
        except BaseException:
            if dist_env().is_main and not run.has_commit():
                if not existed:
                    shutil.rmtree(run.root, ignore_errors=True)
                elif not had_config:
                    (run.root / "config.json").unlink(missing_ok=True)
            raise


def open_run(job: TrainJob, config: dict[str, Any]) -> RunDir:
    """The run folder of `job` with `config` (its settings as JSON, plus what the task adds) and the
    library versions written in it; seeds everything. A folder that holds a run with other settings
    is refused (`check_same_run`); one whose run never committed an epoch holds nothing to keep,
    and takes the new settings. Under torchrun rank 0 alone checks and writes, and every process
    stops with its message (`open_run_dir`). `job.log` may add TensorBoard event files."""
    tensorboard = logs_to_tensorboard(job)
    config = {**config, "versions": versions()}
    root = Path(job.out)

    def check(previous: dict[str, Any]) -> None:
        if RunDir(root).has_commit():
            check_same_run(previous, config, root)

    run = open_run_dir(root, config, check)
    seed_everything(job.seed)
    return dataclasses.replace(run, tensorboard=tensorboard)


def logs_to_tensorboard(job: TrainJob) -> bool:
    """Whether `job.log` asks for TensorBoard event files; refuses, before anything is trained, a
    log it does not know or cannot write."""
    if job.log not in LOGS:
        raise ValueError(f"unknown --log {job.log!r}; choose one of {', '.join(LOGS)}")
    if job.log == "tensorboard" and (reason := tensorboard_error()) is not None:
        raise ValueError(reason)
    return job.log == "tensorboard"


def optim_config(job: TrainJob) -> OptimConfig:
    """The optimisation settings of `job`: AdamW with warm-up and cosine decay over its epochs."""
    return OptimConfig(
        epochs=job.epochs, lr=job.lr, weight_decay=job.weight_decay,
        warmup_epochs=job.warmup_epochs, accumulate=job.accumulate, precision=job.precision,
    )  # fmt: skip


def check_same_run(previous: dict[str, Any], config: dict[str, Any], root: Path) -> None:
    """Refuse to resume a run folder whose saved settings differ from `config` (but for epochs)."""
    ignore = {"epochs", "versions", "workers", "out", "log", *RUNTIME_FIELDS}
    differs = sorted(k for k in config if k not in ignore and previous.get(k) != config[k])
    if differs:
        changes = ", ".join(f"{k}: {previous.get(k)!r} -> {config[k]!r}" for k in differs)
        raise ValueError(
            f"{root} already holds a run with other settings ({changes}); "
            "pass another --out, or delete the folder to start over"
        )


def clip_preprocessing(
    job: TrainJob,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> Preprocessing:
    """How the clips of `job` are prepared for evaluation: `job.frames` frames, centre crops of
    `job.size`, normalised with `mean` and `std` (what a saved model records)."""
    return Preprocessing(
        mean=mean, std=std, crop=job.size, frames=job.frames, sampling=job.sampling,
        stride=job.stride,
    )  # fmt: skip


def clip_spec(pre: Preprocessing) -> ClipSpec:
    """The frames of a clip that `pre` describes."""
    return ClipSpec(frames=pre.frames, sampling=pre.sampling, stride=pre.stride)


def eval_transform(pre: Preprocessing, crops: int = 1) -> EvalTransform:
    """The evaluation views (`crops` per clip) of square crops that `pre` describes."""
    if not isinstance(pre.crop, int):
        raise ValueError(f"evaluation views are square crops; this model takes {pre.crop} frames")
    return EvalTransform(size=pre.crop, crops=crops, mean=pre.mean, std=pre.std, resize=pre.resize)
