"""The generation jobs: train a class-conditional video denoiser, sample clips from it, and measure
them with a classifier trained on the same data.

`tubelet train --task generation` trains on clips scaled to [-1, 1]: the whole frame resized to
`--size` (no random crops, so samples and real clips share one framing), `--frames` frames picked
by `--sampling`/`--stride`. Diffusion settings are the task's own (`GenerationSettings`, given as
`--task-arg`/`-t`): `-t prediction=epsilon|v`, `-t schedule=cosine|linear`, `-t cond_drop=0.1`
(share of labels dropped for classifier-free guidance), `-t ema_decay=0.995`.
The run's checkpoints hold the trained and the EMA weights; sampling uses the EMA weights.

Two objectives (`-t objective=`): "ddpm" (the class-conditional `video_unet`'s default) and "flow"
(rectified flow, `tubelet.tasks.flow_matching`; the default of text-conditioned models such as
`wan_dit`, and open to `video_unet` too), with `-t shift=1.0` and
`-t timestep_sampling=logit_normal|uniform`. A flow run may model the latents of a frozen VAE,
`-t vae=RUN` (a `--task autoencoder` run; latent statistics are measured on the training clips)
or `-t vae=FOLDER -t vae_format=diffusers` (Wan 2.1's `vae/`). A text-conditioned model gets
one embedding per class: `<class>.safetensors` files in `-t text_embeddings=DIR`
(docs/generation.md shows how to make them with UMT5), or fixed random stand-ins.

`--lora-rank R` (or `-t lora_rank=R`) trains LoRA adapters (`tubelet.nn.lora`, PEFT) on a flow
model's attention and MLP projections with the base weights frozen (the base from
`-m checkpoint=FOLDER -m checkpoint_format=diffusers`, e.g. Wan 2.1's `transformer/`); checkpoints
hold the adapter alone, the best one is also written as `RUN/adapter.safetensors`, and sampling
folds it into the base.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tubelet.convert import read_state_dict
from tubelet.data import ClipSpec, VideoDataset, build_dataset, build_loader, read_annotations
from tubelet.data.loader import names_a_direction
from tubelet.data.synthetic import ensure_synthetic_dataset
from tubelet.data.transforms import EvalTransform, TrainTransform, normalize
from tubelet.engine.checkpoint import WEIGHTS, find_checkpoint, load_model
from tubelet.engine.trainer import Trainer
from tubelet.io import write_video
from tubelet.jobs.common import (
    GenerationSettings,
    TrainJob,
    builder_args,
    clip_preprocessing,
    clip_spec,
    jsonable,
    open_run,
    optim_config,
    runtime_config,
    settings_of,
)
from tubelet.models import architecture_args, create_model, model_kind
from tubelet.models.spec import ModelSpec, Preprocessing, WeightsSource, read_spec
from tubelet.normalization import SIGNED_MEAN, SIGNED_STD
from tubelet.tasks.flow_matching import (
    ClassLabels,
    Conditioner,
    FlowMatchEulerSampler,
    FlowMatchingTask,
    TextEmbeddings,
    sample_flow,
)
from tubelet.tasks.generation import (
    DDIMSampler,
    DenoiserWithEMA,
    GenerationTask,
    NoiseSchedule,
    frame_difference,
    frechet_distance,
    sample,
)

DEFAULT_MODEL = "video_unet"
UNUSED = ("decode_device",)  # the run settings this job does not read
OBJECTIVES = ("ddpm", "flow")
TEXT_TABLE = "text_embeddings.safetensors"
ADAPTER = "adapter.safetensors"  # a LoRA run's best adapter, with its rank in the metadata

Progress = Callable[[int, int], None]


def clip_loaders(job: TrainJob, data_root: Path) -> tuple[Any, Any, tuple[str, ...]]:
    """(train loader, validation loader, classes) of clips in [-1, 1]: whole frames resized to
    `job.size` (no random crops, so samples and real clips share one framing)."""
    clip = ClipSpec(frames=job.frames, sampling=job.sampling, stride=job.stride)
    train_annotations = read_annotations(data_root, "train")
    val_annotations = read_annotations(data_root, "val", classes=train_annotations.classes)
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
    loader_args = {"batch_size": job.batch_size, "num_workers": job.workers, "seed": job.seed}
    return (
        build_loader(train_set, train=True, **loader_args),
        build_loader(val_set, train=False, **loader_args),
        tuple(train_annotations.classes),
    )


def load_vae(diffusion: dict[str, Any]) -> nn.Module:
    """The frozen VAE of `-t vae=PATH`: an autoencoder run (`--task autoencoder`), or a diffusers
    `AutoencoderKLWan` folder with `-t vae_format=diffusers`; its latent statistics are those the
    generation run measured (`latents_mean`/`latents_std`) when it has them."""
    if diffusion["vae_format"] == "diffusers":
        vae = create_model(
            "wan_vae", checkpoint=str(diffusion["vae"]), checkpoint_format="diffusers"
        )
    elif diffusion["vae_format"] == "tubelet":
        vae, spec = load_model(diffusion["vae"])
        if model_kind(spec.model) != "autoencoder":
            raise ValueError(f"-t vae={diffusion['vae']} is a {spec.model} run, not a VAE")
    else:
        raise ValueError(
            f"vae_format must be tubelet or diffusers, not {diffusion['vae_format']!r}"
        )
    if diffusion.get("latents_mean") is not None:
        vae.latents_mean = tuple(diffusion["latents_mean"])
        vae.latents_std = tuple(diffusion["latents_std"])
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def latent_statistics(vae: nn.Module, loader: Any, max_batches: int = 16) -> tuple[list, list]:
    """Per-channel mean and std of the VAE's latent means over up to `max_batches` batches."""
    latents = []
    for i, batch in enumerate(loader):
        if i == max_batches:
            break
        if batch["video"] is not None:
            latents.append(vae.encode(batch["video"].float(), chunked=False).mean)
    z = torch.cat(latents).transpose(0, 1).flatten(1)  # (C, N)
    return z.mean(1).tolist(), z.std(1).clamp(min=1e-6).tolist()


def text_conditioner(
    diffusion: dict[str, Any], classes: tuple[str, ...], text_dim: int, seed: int
) -> TextEmbeddings:
    """Per-class text embeddings: `<class>.safetensors` files in `-t text_embeddings=DIR`, or
    fixed random stand-ins (seeded) when no folder is given."""
    folder = diffusion["text_embeddings"]
    if folder is None:
        return TextEmbeddings.stand_in(len(classes), text_dim, seed=seed)
    table = TextEmbeddings.from_files([Path(folder) / f"{name}.safetensors" for name in classes])
    if table.text_dim != text_dim:
        raise ValueError(
            f"text embeddings in {folder} are {table.text_dim} wide, the model takes {text_dim}: "
            f"build it with -m text_dim={table.text_dim}"
        )
    return table


def train(job: TrainJob, *, show_progress: bool = True, on_data: Progress | None = None) -> dict:
    """Train (or resume) a denoiser run in `job.out` (see the module docstring); return its summary.

    The best checkpoint is the epoch with the lowest validation loss of the EMA weights (timesteps
    and noise fixed per clip, so epochs compare).
    """
    own = settings_of(job, GenerationSettings)
    diffusion = own.diffusion()
    model_args = builder_args(job)
    data_root = Path(job.data) if job.data else ensure_synthetic_dataset(progress=on_data)
    run = open_run(job, {**jsonable(job), "data": str(data_root)})
    train_loader, val_loader, classes = clip_loaders(job, data_root)
    denoiser = create_model(job.model, **model_args)
    text_dim = getattr(denoiser, "text_dim", None)
    conditioner: Conditioner
    if text_dim is None:  # a class-conditional denoiser
        model_args = {**model_args, "num_classes": len(classes)}
        denoiser = create_model(job.model, **model_args)
        conditioner = ClassLabels(len(classes))
    else:
        conditioner = text_conditioner(diffusion, classes, text_dim, job.seed)
        conditioner.save(Path(job.out) / TEXT_TABLE)
        diffusion["text_table"] = str(Path(job.out).resolve() / TEXT_TABLE)
    objective = diffusion["objective"] or ("ddpm" if text_dim is None else "flow")
    if objective not in OBJECTIVES:
        raise ValueError(f"-t objective must be one of {OBJECTIVES}, not {objective!r}")
    diffusion["objective"] = objective
    if objective == "ddpm":
        if text_dim is not None or diffusion["vae"] is not None:
            raise ValueError(
                f"{job.model} with text or a VAE trains with flow matching: leave out -t objective"
            )
        schedule = NoiseSchedule.create(diffusion["schedule"], int(diffusion["train_steps"]))
        task: Any = GenerationTask(schedule, diffusion["prediction"], float(diffusion["cond_drop"]))
    else:
        vae = None
        if diffusion["vae"] is not None:
            vae = load_vae(diffusion)
            if vae.latents_mean == (0.0,) * vae.z_dim and vae.latents_std == (1.0,) * vae.z_dim:
                vae.latents_mean, vae.latents_std = map(tuple, latent_statistics(vae, train_loader))
            diffusion["latents_mean"], diffusion["latents_std"] = vae.latents_mean, vae.latents_std
        task = FlowMatchingTask(
            conditioner, sampling=diffusion["timestep_sampling"], shift=float(diffusion["shift"]),
            cond_drop=float(diffusion["cond_drop"]), autoencoder=vae,
        )  # fmt: skip
    lora = None
    if own.lora_rank is not None:
        from tubelet.nn.lora import AdapterOnly, LoraSpec, add_lora  # PEFT imports slowly

        if objective != "flow":
            raise ValueError("--lora-rank fine-tunes a flow-matching model (wan_dit)")
        lora = LoraSpec(own.lora_rank, float(diffusion["lora_alpha"] or own.lora_rank))
        add_lora(denoiser, lora)
        model: nn.Module = AdapterOnly(denoiser)
    else:
        model = DenoiserWithEMA(denoiser, float(diffusion["ema_decay"]))
    task_args: dict[str, Any] = {"diffusion": diffusion}
    if lora is not None:
        task_args["lora"] = dataclasses.asdict(lora)
    spec = ModelSpec(
        model=job.model,
        model_args=architecture_args(job.model, model_args),
        task="generation",
        classes=classes,
        preprocessing=clip_preprocessing(job, SIGNED_MEAN, SIGNED_STD),
        source=WeightsSource(data=str(data_root)),
        task_args=task_args,
    )
    trainer = Trainer(
        model, task, config=optim_config(job), run=run, spec=spec, show_progress=show_progress,
        train_loader=train_loader, val_loader=val_loader, monitor="loss", minimize=True,
        runtime=runtime_config(job),
    )  # fmt: skip
    summary = trainer.fit()
    summary["params"] = sum(p.numel() for p in denoiser.parameters())  # not counting the EMA copy
    if lora is not None:
        from tubelet.nn.lora import save_adapter

        model.load_state_dict(read_state_dict(find_checkpoint(job.out) / WEIGHTS))
        save_adapter(denoiser, lora, Path(job.out) / ADAPTER)
        summary["trained_params"] = sum(p.numel() for p in denoiser.parameters() if p.requires_grad)
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
    weights = read_state_dict(folder / WEIGHTS)
    if "lora" in spec.task_args:  # the adapter alone: put it on the base weights and fold it in
        from tubelet.nn.lora import LoraSpec, add_lora, merge_lora, set_adapter_state_dict

        add_lora(model, LoraSpec(**spec.task_args["lora"]))
        adapter = {k.removeprefix("denoiser."): v for k, v in weights.items()}
        set_adapter_state_dict(model, adapter, str(folder / WEIGHTS))
        return merge_lora(model).eval(), spec
    prefix = "ema.model." if ema else "denoiser."
    model.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
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
    """Clips (N, C, T, S, S) in [-1, 1] of the classes `labels` (N,), sampled in batches: DDIM for a
    DDPM run, Euler steps of the flow (with the run's shift) for a flow-matching run, decoded by
    its VAE when it models latents."""
    diffusion = spec.task_args["diffusion"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    denoiser = denoiser.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    pre = _clip_preprocessing(spec)
    size, frames = min(pre.crop_size), pre.frames
    flow = diffusion.get("objective") == "flow"
    vae = load_vae(diffusion).to(device) if flow and diffusion.get("vae") else None
    if vae is not None:
        shape_tail = (vae.z_dim, *vae.latent_shape(frames, size, size))
    else:
        shape_tail = (denoiser.in_channels, frames, size, size)
    batches = labels.split(batch_size)
    done, total = 0, len(batches) * steps
    out = []
    for batch in batches:

        def report(i: int, _: int, before: int = done) -> None:
            if on_step is not None:
                on_step(before + i, total)

        shape = (len(batch), *shape_tail)
        if flow:
            conditioner: Conditioner = (
                TextEmbeddings.load(diffusion["text_table"])
                if diffusion.get("text_table")
                else ClassLabels(len(spec.classes))
            )
            sampler = FlowMatchEulerSampler(steps, shift=float(diffusion["shift"]))
            x = sample_flow(
                denoiser, sampler, shape, conditioner, batch, guidance=guidance,
                generator=generator, on_step=report,
            )  # fmt: skip
            clips = vae.decode(vae.denormalize_latents(x)) if vae is not None else x.clamp(-1, 1)
        else:
            schedule = NoiseSchedule.create(diffusion["schedule"], int(diffusion["train_steps"]))
            ddim = DDIMSampler(schedule, steps, prediction=diffusion["prediction"], eta=eta)
            clips = sample(
                denoiser, ddim, shape, class_labels=batch, guidance=guidance,
                generator=generator, on_step=report,
            )  # fmt: skip
        out.append(clips.cpu())
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
