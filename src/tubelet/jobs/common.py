"""What every task's job shares: the settings of a training run and the run-folder plumbing."""

from __future__ import annotations

import dataclasses
import os
import shutil
import typing
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tubelet.data import ClipSpec
from tubelet.data.transforms import EvalTransform
from tubelet.engine.distributed import dist_env, main_decides
from tubelet.engine.run import RunDir, open_run_dir, seed_everything, tensorboard_error, versions
from tubelet.engine.trainer import OptimConfig, RuntimeConfig
from tubelet.models.registry import translate_legacy_args
from tubelet.models.spec import Preprocessing
from tubelet.normalization import IMAGENET_MEAN, IMAGENET_STD

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ClassificationSettings:
    """What `--task classification` adds to the run settings.

    Where the weights start: `init` (a `tubelet pretrain` run whose encoder is fine-tuned with
    layer-wise learning-rate decay) or `checkpoint` (published weights in `checkpoint_format`, any
    `tubelet.convert` format); `features` (a `tubelet extract` folder) trains a head on cached
    features instead of clips. `head` picks the model's head ("attentive", "linear"),
    `freeze_backbone` trains the head alone, `layer_decay` (e.g. 0.75) decays the learning rate
    layer by layer in full fine-tuning, and `label_smoothing` softens the targets of the loss.
    """

    init: Path | None = None
    features: Path | None = None
    checkpoint: Path | None = None
    checkpoint_format: str | None = None
    head: str | None = None
    freeze_backbone: bool = False
    layer_decay: float | None = None
    label_smoothing: float = 0.1


@dataclass(frozen=True)
class FlowSettings:
    """What `--task flow` adds to the run settings: RAFT's refinement `updates` per pair, in
    training and evaluation, and `init`, a flow run of the same model whose weights start this one
    (RAFT's schedule: one data set or size, then the next)."""

    updates: int = 12
    init: Path | None = None


@dataclass(frozen=True)
class GenerationSettings:
    """What `--task generation` adds to the run settings (see `tubelet.jobs.generation`).

    DDPM: the denoiser's target (`prediction`: "v" or "epsilon") and the noise `schedule`
    ("cosine" or "linear") over `train_steps` steps. Flow matching (`objective` "flow"; None: flow
    for text-conditioned models, else "ddpm"): the timestep `shift` and `timestep_sampling`
    ("logit_normal" or "uniform"), a frozen `vae` (a run, or a folder in `vae_format`) whose latents
    are modelled, `text_embeddings` (a folder of one embedding per class) and `lora_rank`: LoRA
    adapters of that rank trained on the attention and MLP projections, base weights frozen
    (scaled by `lora_alpha`; None: the rank). Both: the share of labels dropped for
    classifier-free guidance (`cond_drop`) and the EMA decay of the weights that sample
    (`ema_decay`).
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
    lora_rank: int | None = None
    lora_alpha: float | None = None

    def diffusion(self) -> dict[str, Any]:
        """The settings a generation run's spec records under `diffusion` (LoRA's go apart)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "lora_rank"}


@dataclass(frozen=True)
class AutoencoderSettings:
    """What `--task autoencoder` adds to the run settings: the KL term's weight (per pixel)."""

    kl_weight: float = 1e-3


TaskSettings = ClassificationSettings | FlowSettings | GenerationSettings | AutoencoderSettings
S = TypeVar("S", ClassificationSettings, FlowSettings, GenerationSettings, AutoencoderSettings)
# Each task that has settings of its own, and their type; tasks not named here have none.
TASK_SETTINGS: dict[str, type[TaskSettings]] = {
    "classification": ClassificationSettings,
    "flow": FlowSettings,
    "generation": GenerationSettings,
    "autoencoder": AutoencoderSettings,
}
# The settings that rode in the model arguments (`-m`) before they had their own home, under their
# names then: read from `-m` with a FutureWarning, and from the config of a run saved then.
_FROM_MODEL_ARGS: dict[str, dict[str, str]] = {
    "flow": {"num_flow_updates": "updates"},
    "generation": {
        f.name: f.name for f in dataclasses.fields(GenerationSettings) if f.name != "lora_rank"
    },
    "autoencoder": {"kl_weight": "kl_weight"},
}
# The settings with an option of their own in `tubelet train` (the others: `--task-arg KEY=VALUE`).
OPTIONS = {
    "init": "--init", "features": "--features", "checkpoint": "--checkpoint",
    "checkpoint_format": "--checkpoint-format", "head": "--head",
    "freeze_backbone": "--freeze-backbone", "layer_decay": "--layer-decay",
    "lora_rank": "--lora-rank",
}  # fmt: skip


def _typed(task: str, key: str, value: Any, hint: Any) -> Any:
    """`value` of setting `key` as the type `hint` names (of a `X | None` hint: X, or None)."""
    kind = next((k for k in typing.get_args(hint) if k is not type(None)), hint)
    if value is None or type(value) is kind:
        return value
    try:
        fraction = isinstance(value, float) and not value.is_integer()
        if kind is bool or isinstance(value, bool | list | dict) or kind is int and fraction:
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"--task {task} setting {key} takes {kind.__name__}, not {value!r}"
        ) from None


def task_settings(
    task: str, args: dict[str, Any], options: dict[str, Any] | None = None
) -> TaskSettings | None:
    """The typed settings of `task` from `--task-arg` KEY=VALUE pairs (values already parsed) and
    from the options that spell some of them out (`options`: setting name -> value; None or False
    is "not given"). None for a task without settings and nothing given. An option or key the task
    has no setting for is a ValueError naming it and the task's settings."""
    given = {k: v for k, v in (options or {}).items() if v is not None and v is not False}
    kind = TASK_SETTINGS.get(task)
    known = {f.name: f for f in dataclasses.fields(kind)} if kind else {}
    for key in given:
        if key not in known:
            users = [t for t, k in TASK_SETTINGS.items() if key in _names(k)]
            raise ValueError(
                f"{OPTIONS.get(key, key)} is for --task {' or '.join(users)}, not --task {task}: "
                "leave it out"
            )
    both = sorted(set(given) & set(args))
    if both:
        raise ValueError(f"{OPTIONS[both[0]]} and --task-arg {both[0]}= give one setting twice")
    if kind is None:
        if args:
            raise ValueError(f"--task {task} has no settings of its own; leave --task-arg out")
        return None
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(
            f"unknown --task-arg {', '.join(unknown)} for --task {task}; its settings: "
            f"{', '.join(known)}"
        )
    hints = typing.get_type_hints(kind)
    values = {**args, **given}
    return kind(**{k: _typed(task, k, v, hints[k]) for k, v in values.items()})


def _names(kind: type[TaskSettings]) -> set[str]:
    return {f.name for f in dataclasses.fields(kind)}


def job_settings(
    task: str, model_args: dict[str, Any], task_args: dict[str, Any], options: dict[str, Any]
) -> tuple[dict[str, Any], TaskSettings | None]:
    """(builder arguments, task settings) of a `tubelet train` command: `-m` pairs, `--task-arg`
    pairs and the options that spell settings out (`task_settings`). A setting given in `-m` under
    the name it had there (`split_task_args`) is still read, with a FutureWarning naming its
    `--task-arg` spelling."""
    model_args, old = split_task_args(task, model_args)
    if old:
        pairs = " ".join(f"--task-arg {k}={v}" for k, v in old.items())
        warnings.warn(f"task settings go in --task-arg now: {pairs}", FutureWarning, stacklevel=2)
    return model_args, task_settings(task, {**old, **task_args}, options)


def split_task_args(task: str, model_args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(builder arguments, task settings) of `-m` pairs written before task settings had their own
    option: `-m num_flow_updates=4` for flow, `-m prediction=epsilon` etc. for generation,
    `-m kl_weight=...` for autoencoder."""
    renamed = _FROM_MODEL_ARGS.get(task, {})
    settings = {renamed[k]: v for k, v in model_args.items() if k in renamed}
    return {k: v for k, v in model_args.items() if k not in renamed}, settings


@dataclass(frozen=True)
class TrainJob:
    """The settings of a training run that every task shares, and the task's own (`settings`).

    `task` picks the job (see `tubelet.jobs.TASKS`); `data=None` trains on the built-in synthetic
    dataset. `settings` is the task's typed settings (`TASK_SETTINGS`; None: their defaults), so a
    setting one task has no use for cannot be given to another.
    """

    out: Path
    task: str = "classification"
    data: Path | None = None
    model: str = "r2plus1d_18"
    model_args: dict[str, Any] = field(default_factory=dict)
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
    flip: bool | None = None
    bad_files: str = "resample"
    workers: int = 1
    seed: int = 0
    grad_checkpointing: bool = False
    channels_last: bool = False
    compile: bool = False
    decode_device: str = "cpu"  # "cuda": NVDEC in the training process (video-clip tasks)
    fsdp: bool = False
    log: str = "files"  # "tensorboard": also write TensorBoard event files into the run folder
    settings: TaskSettings | None = None

    def __post_init__(self) -> None:
        kind = TASK_SETTINGS.get(self.task)
        if self.settings is None and kind is not None:
            object.__setattr__(self, "settings", kind())
        elif self.settings is not None and not isinstance(self.settings, kind or ()):
            wanted = f"takes {kind.__name__}" if kind else "has no settings of its own"
            raise ValueError(f"--task {self.task} {wanted}, not {type(self.settings).__name__}")


def settings_of(job: TrainJob, kind: type[S]) -> S:
    """The settings of `job`, which must be of type `kind` (a ValueError if its task's are not)."""
    if not isinstance(job.settings, kind):
        raise ValueError(f"--task {job.task} has no {kind.__name__}")
    return job.settings


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


# Switches that change memory, speed or devices but not what is learnt: a run may resume with others.
RUNTIME_FIELDS = ("grad_checkpointing", "channels_last", "compile", "decode_device", "fsdp")
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


def loader_workers(job: TrainJob) -> dict[str, Any]:
    """`build_loader`'s worker settings for the clips of `job`: `job.workers` processes, or, when
    clips are decoded on the GPU (`decode_device` "cuda"), none and no pinning: CUDA does not
    survive in forked workers, and frames that are on the GPU already cannot be pinned."""
    if job.decode_device == "cpu":
        return {"num_workers": job.workers}
    return {"num_workers": 0, "pin_memory": False}


def default_workers() -> int:
    """Decoding workers: one per core beyond the one that runs the model, at least one."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def jsonable(job: Any) -> dict[str, Any]:
    """A job dataclass as JSON-ready values (paths as strings). A `TrainJob`'s task settings sit
    beside its run settings, under their own names (as a run's config.json holds them)."""
    values = dataclasses.asdict(job)
    if isinstance(job, TrainJob):
        values.pop("settings")
        values.update(dataclasses.asdict(job.settings) if job.settings is not None else {})
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def saved_config(previous: dict[str, Any]) -> dict[str, Any]:
    """A run's saved config.json as `jsonable` writes it today. Runs saved before task settings
    had their own home kept them elsewhere: flow's and generation's in a `task_settings` entry, or
    earlier still in the model arguments (`num_flow_updates`, `prediction`, `kl_weight`, ...);
    settings they did not record had the defaults they have now. Renamed builder arguments take
    their new names (`translate_legacy_args`), as `open_run` records them."""
    if "model_args" not in previous:
        return previous
    task = previous.get("task", "classification")
    model_args, old = split_task_args(task, previous["model_args"] or {})
    rest = {k: v for k, v in previous.items() if k != "task_settings"}
    rest["model_args"] = translate_legacy_args(previous.get("model", ""), model_args)
    kind = TASK_SETTINGS.get(task)
    if kind is None:
        return rest
    defaults = {
        k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(kind()).items()
    }
    saved = {k: previous[k] for k in defaults if k in previous}
    nested = previous.get("task_settings") or {}
    return {**rest, **defaults, **saved, **old, **nested}


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
    if "model_args" in config:  # renamed builder arguments by their new names: one run either way
        config["model_args"] = translate_legacy_args(job.model, config["model_args"])
    root = Path(job.out)

    def check(previous: dict[str, Any]) -> None:
        if RunDir(root).has_commit():
            check_same_run(saved_config(previous), config, root)

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
