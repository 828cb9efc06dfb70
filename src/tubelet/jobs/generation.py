"""The generation jobs: train a class-conditional video denoiser, sample clips from it, and measure
them with a classifier trained on the same data.

`tubelet train --task generation` trains on clips scaled to [-1, 1]: the whole frame resized to
`--size` (no random crops, so samples and real clips share one framing), `--frames` frames picked
by `--sampling`/`--stride`. Diffusion settings ride in `-m` next to the model's arguments and are
kept apart from them (`DIFFUSION_DEFAULTS`): `-m prediction=epsilon|v`, `-m schedule=cosine|linear`,
`-m cond_drop=0.1` (share of labels dropped for classifier-free guidance), `-m ema_decay=0.995`.
The run's checkpoints hold the trained and the EMA weights; sampling uses the EMA weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from tubelet.data import ClipSpec, VideoDataset, build_dataset, build_loader, read_annotations
from tubelet.data.loader import names_a_direction
from tubelet.data.synthetic import ensure_synthetic_dataset
from tubelet.data.transforms import EvalTransform, TrainTransform, normalize
from tubelet.engine.checkpoint import WEIGHTS, find_checkpoint, load_model
from tubelet.engine.trainer import Trainer
from tubelet.io import write_video
from tubelet.jobs.common import (
    TrainJob,
    clip_preprocessing,
    clip_spec,
    jsonable,
    open_run,
    optim_config,
    runtime_config,
)
from tubelet.models import architecture_args, create_model
from tubelet.models.spec import ModelSpec, Preprocessing, WeightsSource, read_spec
from tubelet.normalization import SIGNED_MEAN, SIGNED_STD
from tubelet.tasks.generation import (
    DDIMSampler,
    DenoiserWithEMA,
    GenerationTask,
    NoiseSchedule,
    frame_difference,
    frechet_distance,
    sample,
)

# Diffusion settings read from the job's model arguments (`-m KEY=VALUE`), with their defaults.
DEFAULT_MODEL = "video_unet"
DIFFUSION_DEFAULTS: dict[str, Any] = {
    "prediction": "v",
    "schedule": "cosine",
    "train_steps": 1000,
    "cond_drop": 0.1,
    "ema_decay": 0.995,
}

Progress = Callable[[int, int], None]


def split_diffusion_args(model_args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(diffusion settings with defaults filled in, the remaining model builder arguments)."""
    diffusion = {k: model_args.get(k, v) for k, v in DIFFUSION_DEFAULTS.items()}
    rest = {k: v for k, v in model_args.items() if k not in DIFFUSION_DEFAULTS}
    return diffusion, rest


def train(job: TrainJob, *, show_progress: bool = True, on_data: Progress | None = None) -> dict:
    """Train (or resume) a denoiser run in `job.out` (see the module docstring); return its summary.

    The best checkpoint is the epoch with the lowest validation loss of the EMA weights (timesteps
    and noise fixed per clip, so epochs compare).
    """
    data_root = Path(job.data) if job.data else ensure_synthetic_dataset(progress=on_data)
    run = open_run(job, {**jsonable(job), "data": str(data_root)})

    diffusion, model_args = split_diffusion_args(job.model_args)
    schedule = NoiseSchedule.create(diffusion["schedule"], int(diffusion["train_steps"]))
    task = GenerationTask(schedule, diffusion["prediction"], float(diffusion["cond_drop"]))
    clip = ClipSpec(frames=job.frames, sampling=job.sampling, stride=job.stride)
    train_annotations = read_annotations(data_root, "train")
    val_annotations = read_annotations(data_root, "val")
    flip = not names_a_direction(train_annotations.classes) if job.flip is None else job.flip
    whole_frame = TrainTransform(
        size=job.size, resize=job.size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=flip,
        mean=SIGNED_MEAN, std=SIGNED_STD,
    )  # fmt: skip
    common = {"clip": clip, "bad_files": job.bad_files, "seed": job.seed}
    train_set = VideoDataset(train_annotations.records, transform=whole_frame, train=True, **common)
    val_set = VideoDataset(
        val_annotations.records, transform=EvalTransform(size=job.size, mean=SIGNED_MEAN, std=SIGNED_STD),
        train=False, **{**common, "bad_files": "skip"},
    )  # fmt: skip
    model_args = {**model_args, "num_classes": len(train_annotations.classes)}
    denoiser = create_model(job.model, **model_args)
    model = DenoiserWithEMA(denoiser, float(diffusion["ema_decay"]))
    spec = ModelSpec(
        model=job.model,
        model_args=architecture_args(job.model, model_args),
        task="generation",
        classes=train_annotations.classes,
        preprocessing=clip_preprocessing(job, SIGNED_MEAN, SIGNED_STD),
        source=WeightsSource(data=str(data_root)),
        task_args={"diffusion": diffusion},
    )
    loader_args = {"batch_size": job.batch_size, "num_workers": job.workers, "seed": job.seed}
    optim = optim_config(job)
    trainer = Trainer(
        model, task, config=optim, run=run, spec=spec, show_progress=show_progress,
        train_loader=build_loader(train_set, train=True, **loader_args),
        val_loader=build_loader(val_set, train=False, **loader_args),
        monitor="loss", minimize=True, runtime=runtime_config(job),
    )  # fmt: skip
    summary = trainer.fit()
    summary["params"] = sum(p.numel() for p in denoiser.parameters())  # not counting the EMA copy
    run.write_summary(summary)
    return summary


def load_denoiser(path: str | Path, *, ema: bool = True) -> tuple[nn.Module, ModelSpec]:
    """The denoiser of a generation run (run folder or checkpoint folder) and its spec.

    `ema=True` loads the EMA weights (what sampling should use), else the trained weights.
    """
    folder = find_checkpoint(path)
    spec = read_spec(folder)
    if spec.task != "generation":
        raise ValueError(
            f"{folder} is not a generation run (it holds a {spec.task} model); "
            "train one with `tubelet train --task generation`"
        )
    model = create_model(spec.model, **spec.model_args)
    prefix = "ema.model." if ema else "denoiser."
    state = {
        k[len(prefix) :]: v
        for k, v in load_file(str(folder / WEIGHTS)).items()
        if k.startswith(prefix)
    }
    model.load_state_dict(state)
    return model.eval(), spec


def generate(
    checkpoint: str | Path,
    out: str | Path,
    *,
    class_name: str | None = None,
    num: int = 4,
    steps: int = 50,
    guidance: float = 3.0,
    eta: float = 0.0,
    seed: int = 0,
    fps: float = 6.0,
    zoom: int = 1,
    batch_size: int = 16,
    classifier: str | Path | None = None,
    ema: bool = True,
    on_step: Progress | None = None,
) -> dict[str, Any]:
    """Sample clips and write them as one grid video to `out` (.mp4 or .gif).

    `class_name` given: `num` clips of that class in one row; else `num` clips of every class, one
    row per class. `zoom` enlarges every pixel to zoom x zoom in the video. With `classifier` (a
    classification run trained on the same data at the same frames and size) the clips are also
    measured (`measure_samples`) and the metrics written to `out` with the suffix `.json`.
    Returns the metrics (or the settings when no classifier is given).
    """
    if num < 1 or zoom < 1:
        raise ValueError(f"num and zoom must be >= 1, got num={num}, zoom={zoom}")
    out = Path(out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"--out must end in .mp4 or .gif, not {out.name!r}")
    denoiser, spec = load_denoiser(checkpoint, ema=ema)
    classes = list(spec.classes)
    if class_name is not None and class_name not in classes:
        raise ValueError(f"unknown class {class_name!r}; the model knows: {', '.join(classes)}")
    rows = [classes.index(class_name)] if class_name is not None else list(range(len(classes)))
    labels = torch.tensor([r for r in rows for _ in range(num)])  # (rows * num,)
    clips = generate_clips(
        denoiser, spec, labels, steps=steps, guidance=guidance, eta=eta, seed=seed,
        batch_size=batch_size, on_step=on_step,
    )  # fmt: skip
    frames = to_uint8(clips)  # (N, T, S, S, 3)
    write_video(out, grid(frames, len(rows), zoom), fps=fps)
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "out": str(out), "classes": [classes[r] for r in rows],
        "num_per_class": num, "steps": steps, "guidance": guidance, "eta": eta, "seed": seed,
    }  # fmt: skip
    if classifier is not None:
        result.update(measure_samples(frames, labels, spec, classifier))
        out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    return result


def generate_clips(
    denoiser: nn.Module,
    spec: ModelSpec,
    labels: Tensor,
    *,
    steps: int,
    guidance: float,
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    on_step: Progress | None = None,
) -> Tensor:
    """Clips (N, C, T, S, S) in [-1, 1] of the classes `labels` (N,), sampled in batches."""
    diffusion = spec.task_args["diffusion"]
    schedule = NoiseSchedule.create(diffusion["schedule"], int(diffusion["train_steps"]))
    sampler = DDIMSampler(schedule, steps, prediction=diffusion["prediction"], eta=eta)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    denoiser = denoiser.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    pre = _clip_preprocessing(spec)
    size, frames = min(pre.crop_size), pre.frames
    batches = labels.split(batch_size)
    done, total = 0, len(batches) * steps
    out = []
    for batch in batches:

        def report(i: int, _: int, before: int = done) -> None:
            if on_step is not None:
                on_step(before + i, total)

        shape = (len(batch), denoiser.in_channels, frames, size, size)
        out.append(
            sample(
                denoiser, sampler, shape, class_labels=batch, guidance=guidance,
                generator=generator, on_step=report,
            ).cpu()
        )  # fmt: skip
        done += steps
    return torch.cat(out)


def to_uint8(clips: Tensor) -> Tensor:
    """Clips (N, C, T, H, W) in [-1, 1] -> frames uint8 (N, T, H, W, 3)."""
    pixels = ((clips.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 4, 1)


def grid(frames: Tensor, rows: int, zoom: int = 1, gap: int = 1) -> Tensor:
    """Clips uint8 (N, T, H, W, 3), N = rows x cols, tiled row by row with `gap` white pixels
    between tiles and each pixel enlarged to zoom x zoom -> one clip uint8 (T, H', W', 3)."""
    n, t, h, w, _ = frames.shape
    if n % rows:
        raise ValueError(f"{n} clips do not fill {rows} rows")
    cols = n // rows
    tiles = frames.repeat_interleave(zoom, dim=2).repeat_interleave(zoom, dim=3)
    h, w = h * zoom, w * zoom
    canvas = torch.full(
        (t, rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 255, dtype=torch.uint8
    )
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = gap + r * (h + gap), gap + c * (w + gap)
        canvas[:, top : top + h, left : left + w] = tiles[i]
    return canvas


def measure_samples(
    frames: Tensor, labels: Tensor, spec: ModelSpec, classifier: str | Path
) -> dict[str, Any]:
    """Class faithfulness, temporal consistency and Frechet distance of generated clips.

    `frames` uint8 (N, T, S, S, 3) were asked for as classes `labels` (N,). The classifier (a
    `tubelet train` run on the same classes and clip length) labels them: `class_acc` is its
    accuracy against the requested class (chance 1 / classes). `frame_diff` is the mean absolute
    change between consecutive frames (pixels in [0, 1]), beside `real_frame_diff`, the same on the
    real validation clips. `fd` is the Frechet distance between real validation clips and the
    generated ones in the classifier's pre-logit feature space (`real_class_acc`: the classifier's
    accuracy on those real clips, the ceiling for `class_acc`). Real clips are taken at the
    samples' size S; when the classifier was trained at another size, real and generated clips alike
    are resized to it (trilinear, frames kept), so both go through the same processing.
    """
    model, cls_spec = load_model(classifier)
    model.eval()
    if cls_spec.classes != spec.classes:
        raise ValueError(
            f"the classifier {classifier} was trained on other classes than the generator; "
            "train it on the same data"
        )
    frames_n, size = frames.shape[1], frames.shape[2]
    cls_pre = _clip_preprocessing(cls_spec)
    if cls_pre.frames != frames_n:
        raise ValueError(
            f"the classifier takes {cls_pre.frames} frames, the samples have "
            f"{frames_n}; train it with --frames {frames_n}"
        )
    shape = (frames_n, *cls_pre.crop_size)
    transform = EvalTransform(size=size, mean=cls_pre.mean, std=cls_pre.std)
    fake = torch.stack([normalize(c, transform.mean, transform.std) for c in frames])
    fake_logits, fake_feats = _classify(model, fake, shape)
    real_set, _ = build_dataset(
        str(spec.source.data), "val", clip=clip_spec(cls_pre), size=size, train=False,
        bad_files="skip", eval_transform=transform,
    )  # fmt: skip
    real_clips, real_labels = [], []
    for batch in build_loader(real_set, batch_size=16, train=False, num_workers=0):
        if batch["video"] is not None:
            real_clips.append(batch["video"][:, 0])
            real_labels.append(batch["label"])
    real = torch.cat(real_clips)  # (M, C, T, S, S), normalised as the classifier's input
    real_logits, real_feats = _classify(model, real, shape)
    mean = torch.tensor(transform.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(transform.std).view(1, 3, 1, 1, 1)
    fake_pixels = frames.permute(0, 4, 1, 2, 3).float() / 255  # (N, C, T, S, S) in [0, 1]
    predicted = fake_logits.argmax(-1)
    per_class = {
        name: (predicted[labels == k] == k).float().mean().item()
        for k, name in enumerate(spec.classes)
        if (labels == k).any()
    }
    return {
        "class_acc": (predicted == labels).float().mean().item(),
        "per_class_acc": per_class,
        "real_class_acc": (real_logits.argmax(-1) == torch.cat(real_labels)).float().mean().item(),
        "frame_diff": frame_difference(fake_pixels).mean().item(),
        "real_frame_diff": frame_difference(real * std + mean).mean().item(),
        "fd": frechet_distance(real_feats, fake_feats),
        "num_generated": len(frames),
        "num_real": len(real),
    }


@torch.no_grad()
def _classify(
    model: nn.Module, clips: Tensor, shape: tuple[int, int, int], batch_size: int = 32
) -> tuple[Tensor, Tensor]:
    """(logits (N, K), pre-logit features (N, F)) of a classifier on clips (N, C, T, H, W),
    resized to `shape` (T, H', W') first when they have another size."""
    logits, feats = [], []
    for chunk in clips.split(batch_size):
        if tuple(chunk.shape[2:]) != shape:
            chunk = F.interpolate(chunk, size=shape, mode="trilinear", align_corners=False)
        unpooled = model.forward_features(chunk)
        feats.append(model.forward_head(unpooled, pre_logits=True).float())
        logits.append(model.forward_head(unpooled).float())
    return torch.cat(logits), torch.cat(feats)


def _clip_preprocessing(spec: ModelSpec) -> Preprocessing:
    """The clip settings of a saved generator or classifier (square crops of clips)."""
    pre = spec.preprocessing
    if pre is None or not isinstance(pre.crop, int):
        raise ValueError(f"the saved {spec.task} model {spec.model} does not take square clips")
    return pre
