"""The classification job: train, evaluate and predict action recognition (`tubelet train`,
`tubelet eval`, `tubelet predict`).

Each job wires the layers (data -> models -> tasks -> trainer) from plain settings, so the command
line only parses options and prints what comes back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tubelet.convert import architecture_from_checkpoint, preprocessing_from_checkpoint
from tubelet.convert.published import published_use
from tubelet.data import ClipSpec, build_dataset, build_loader
from tubelet.data.sampling import temporal_views
from tubelet.data.synthetic import ensure_synthetic_dataset
from tubelet.data.transforms import BatchNormalize
from tubelet.engine.checkpoint import find_checkpoint, load_model
from tubelet.engine.progress import TrainProgress
from tubelet.engine.trainer import Trainer, evaluate_loader
from tubelet.io import VideoReader
from tubelet.io.reader import MAX_PIXELS
from tubelet.jobs.common import (
    ClassificationSettings,
    Progress,
    TrainJob,
    clip_preprocessing,
    clip_spec,
    eval_transform,
    jsonable,
    loader_workers,
    open_run,
    optim_config,
    runtime_config,
    settings_of,
)
from tubelet.jobs.finetune import finetune_groups, init_model_args
from tubelet.jobs.probe import freeze_backbone, layer_decay_groups, start_from_checkpoint
from tubelet.models import architecture_args, create_model
from tubelet.models.spec import ModelSpec, Preprocessing, WeightsSource
from tubelet.tasks import ClassificationTask

DEFAULT_MODEL = "r2plus1d_18"
UNUSED: tuple[str, ...] = ()  # the run settings this job does not read


def train(job: TrainJob, *, show_progress: bool = True, on_data: Progress | None = None) -> dict:
    """Train (or resume) an action-recognition run in `job.out`; return its summary.

    A run folder that holds a run with other settings is refused (only `epochs` may grow); one that
    finished all its epochs returns its summary without training.
    """
    own = settings_of(job, ClassificationSettings)
    data_root = Path(job.data) if job.data else ensure_synthetic_dataset(progress=on_data)
    run = open_run(job, {**jsonable(job), "data": str(data_root)})

    clip = ClipSpec(frames=job.frames, sampling=job.sampling, stride=job.stride)
    # Clips stay uint8 until they reach the device (`prepare` below normalises them there).
    common = {"clip": clip, "size": job.size, "bad_files": job.bad_files, "seed": job.seed,
              "normalized": False, "decode_device": job.decode_device}  # fmt: skip
    train_set, annotations = build_dataset(data_root, "train", train=True, flip=job.flip, **common)
    val_set, _ = build_dataset(
        data_root, "val", train=False, classes=annotations.classes, **common
    )  # labels by the training split's class names
    num_classes = len(annotations.classes)
    model_args = {**job.model_args, "num_classes": num_classes}
    if own.head is not None:
        model_args["head"] = own.head
    if own.init:  # the encoder's shape comes from the pre-training run
        model_args = {**init_model_args(own.init, job.model), **model_args}
    stats: dict[str, Any] = {}  # the pixel statistics: ImageNet's, or the checkpoint's own
    if own.checkpoint is not None:  # published weights; the architecture from the checkpoint
        stated = preprocessing_from_checkpoint(job.model, own.checkpoint, own.checkpoint_format)
        if stated is not None:  # e.g. VideoPrism's [0, 1] pixels: mean 0, std 1
            stats = {"mean": tuple(stated["mean"]), "std": tuple(stated["std"])}
        model, model_args = start_from_checkpoint(
            job.model, own.checkpoint, own.checkpoint_format, num_classes=num_classes,
            model_args={k: v for k, v in model_args.items() if k != "num_classes"},
            new_head=own.freeze_backbone,  # a probe trains a head of its own
        )  # fmt: skip
    else:
        try:
            model = create_model(job.model, **model_args)
        except TypeError:
            if own.head is None:
                raise
            raise ValueError(
                f"--head: {job.model} has no choice of head; it applies to vjepa2_* and "
                "videoprism_b / videoprism_l"
            ) from None
    groups = None
    if own.freeze_backbone:
        freeze_backbone(model)
    if own.init:  # its weights, a new head, layer-wise learning-rate decay
        groups = finetune_groups(model, own.init, lr=job.lr, weight_decay=job.weight_decay)
    elif own.layer_decay is not None:
        groups = layer_decay_groups(
            model, lr=job.lr, weight_decay=job.weight_decay, decay=own.layer_decay
        )
    spec = ModelSpec(
        model=job.model,
        model_args=architecture_args(job.model, model_args),
        task="classification",
        classes=annotations.classes,
        preprocessing=(pre := clip_preprocessing(job, **stats)),
        source=WeightsSource(data=str(data_root)),
        task_args={"reversal_pairs": [list(p) for p in annotations.reversal_pairs]},
    )
    task = ClassificationTask(num_classes, own.label_smoothing, annotations.reversal_pairs)
    loader_args = {"batch_size": job.batch_size, "seed": job.seed,
                   "item_bytes": 3 * job.frames * job.size**2,  # a uint8 clip
                   **loader_workers(job)}  # fmt: skip
    trainer = Trainer(
        model, task, config=optim_config(job), run=run, spec=spec, show_progress=show_progress,
        runtime=runtime_config(job), groups=groups,
        train_loader=build_loader(train_set, train=True, **loader_args),
        val_loader=build_loader(val_set, train=False, **loader_args),
        prepare=BatchNormalize(pre.mean, pre.std, channels_last=job.channels_last),
    )  # fmt: skip
    return trainer.fit()


def load_classifier(
    checkpoint: Path,
    *,
    model: str | None = None,
    checkpoint_format: str | None = None,
    model_args: dict[str, Any] | None = None,
) -> tuple[nn.Module, ModelSpec, tuple[str, ...]]:
    """The clip classifier at `checkpoint`, its spec, and notes on what had to be assumed.

    Without `model`, `checkpoint` is a run or checkpoint folder of tubelet, whose spec says it all.
    With `model`, it is a published checkpoint (a file or a folder) in `checkpoint_format`, loaded
    into that registered model (`model_args` over the architecture the checkpoint states); the
    class names and preprocessing come from what the format ships (`tubelet.convert.published`).
    """
    if model is None:
        if checkpoint_format not in (None, "tubelet"):
            raise ValueError(
                f"--checkpoint-format {checkpoint_format} needs --model: the registered model "
                "the published checkpoint loads into (`tubelet models`)"
            )
        net, spec = load_model(checkpoint)
        return net, spec, ()
    if checkpoint_format is None:
        raise ValueError(
            f"--model {model} with --checkpoint {checkpoint}: give its --checkpoint-format "
            "(torchvision, transformers, pytorchvideo or pyslowfast), or leave --model out for a "
            "tubelet run folder"
        )
    args = {
        **architecture_from_checkpoint(model, checkpoint, checkpoint_format),
        **(model_args or {}),
    }
    net = create_model(
        model, checkpoint=str(checkpoint), checkpoint_format=checkpoint_format, **args
    )
    num_classes = getattr(net, "num_classes", None)
    if num_classes is None:
        raise ValueError(f"{model} is not a clip classifier (`tubelet models`: kind video)")
    use = published_use(model, checkpoint, checkpoint_format, num_classes)
    spec = ModelSpec(
        model=model,
        model_args=architecture_args(model, {**args, "num_classes": num_classes}),
        task="classification",
        classes=use.classes,
        preprocessing=Preprocessing(**use.preprocessing),
        source=WeightsSource(format=checkpoint_format, checkpoint=str(checkpoint)),
    )
    return net, spec, use.notes


def evaluate(
    checkpoint: Path,
    *,
    data: Path | None = None,
    clips: int = 1,
    crops: int = 1,
    batch_size: int = 8,
    workers: int = 1,
    show_progress: bool = True,
    model: str | None = None,
    checkpoint_format: str | None = None,
    model_args: dict[str, Any] | None = None,
    max_pixels: int | None = MAX_PIXELS,
) -> dict[str, Any]:
    """Multi-view evaluation (clips x crops per video) of a saved or published model (see
    `load_classifier`) on a data set's val split.

    For a run folder the metrics are also written to `eval-{clips}x{crops}.json` in it.
    """
    net, spec, notes = load_classifier(
        checkpoint, model=model, checkpoint_format=checkpoint_format, model_args=model_args
    )
    pre = _clip_model(spec, checkpoint)
    if data is None and spec.source.data is None:
        raise ValueError(f"{checkpoint} does not record its data set: pass --data DIR")
    root = Path(data or spec.source.data)
    # Labelled by the model's class names, checked as training checks val against train.
    dataset, annotations = build_dataset(
        root, "val", clip=clip_spec(pre), size=min(pre.crop_size), train=False, num_clips=clips,
        bad_files="skip", eval_transform=eval_transform(pre, crops), classes=spec.classes,
        max_pixels=max_pixels,
    )  # fmt: skip
    task = ClassificationTask(len(spec.classes), reversal_pairs=annotations.reversal_pairs)
    loader = build_loader(dataset, batch_size=batch_size, train=False, num_workers=workers)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bad_files: dict[str, dict[str, str]] = {}
    with TrainProgress(enabled=show_progress) as progress:
        metrics = evaluate_loader(
            net.to(device), task, loader, device=device, progress=progress, bad_files=bad_files
        )
    metrics["views"] = f"{clips}x{crops}"
    metrics["bad_files"] = [{"path": p, **i} for p, i in sorted(bad_files.items())]
    metrics["notes"] = list(notes)
    if model is not None:  # a published checkpoint: no run folder to write into
        return metrics
    run_root = find_checkpoint(checkpoint).parent
    if (run_root / "config.json").is_file():
        (run_root / f"eval-{clips}x{crops}.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def predict(
    checkpoint: Path,
    video: Path,
    *,
    top_k: int = 5,
    clips: int = 1,
    crops: int = 1,
    model: str | None = None,
    checkpoint_format: str | None = None,
    model_args: dict[str, Any] | None = None,
    max_pixels: int | None = MAX_PIXELS,
) -> list[dict[str, Any]]:
    """The `top_k` classes of one video file with their probabilities (views averaged), by a
    saved or published model (see `load_classifier`), fed as its spec's preprocessing says.

    Frames are resized in the decoder to the short side the transform resizes to, as evaluation
    reads them, so memory follows the model's input and not the file's resolution; a file whose
    frames have more than `max_pixels` pixels is refused (`tubelet.io.VideoReader`).
    """
    net, spec, _ = load_classifier(
        checkpoint, model=model, checkpoint_format=checkpoint_format, model_args=model_args
    )
    net.eval()
    pre = _clip_model(spec, checkpoint)
    clip = clip_spec(pre)
    transform = eval_transform(pre, crops)

    with VideoReader(video, short_side=transform.resize_to, max_pixels=max_pixels) as reader:
        if clips > reader.num_frames:
            raise ValueError(
                f"--views asks for {clips} clips of {video}, which has {reader.num_frames} "
                f"frames: ask for at most {reader.num_frames} clips"
            )
        views = temporal_views(
            reader.num_frames, reader.fps, clips, sampling=clip.sampling, clip_len=clip.frames,
            stride=clip.stride,
        )  # fmt: skip
        frames = reader.get_frames([i for v in views for i in v.indices]).data
    frames = frames.view(len(views), clip.frames, *frames.shape[1:])  # (V_t, T, H, W, 3)
    batch = torch.cat([transform(c) for c in frames])  # (V, C, T, S, S)
    with torch.no_grad():
        probs = net(batch).softmax(-1).mean(0)  # (K,)
    top = probs.topk(min(top_k, len(probs)))
    return [
        {"class": spec.classes[i], "index": i, "probability": p}
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def _clip_model(spec: ModelSpec, checkpoint: Path) -> Preprocessing:
    """The preprocessing of a saved clip classifier; a clear error for any other model."""
    if spec.task != "classification" or spec.preprocessing is None or not spec.classes:
        raise ValueError(
            f"{checkpoint} holds a {spec.task} model ({spec.model}), not a clip classifier: give a "
            "run of `tubelet train` (classification)"
        )
    return spec.preprocessing
