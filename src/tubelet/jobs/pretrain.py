"""The pre-training job: VideoMAE on a folder of videos, labels ignored (`tubelet pretrain`,
`tubelet train --task pretrain`).

The run folder is a normal `Trainer` run (config, metrics.jsonl, summary.json, best/ and last/
checkpoints, resume), monitoring the validation reconstruction loss (lower is better), plus
`reconstruction.png`: a few validation clips as rows of frames, original / masked input /
reconstruction. `tubelet train --init RUN` fine-tunes its encoder (`tubelet.jobs.finetune`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from tubelet.data import ClipSpec, VideoDataset, VideoRecord, build_loader, read_annotations
from tubelet.data.annotations import VIDEO_SUFFIXES, EmptySplitError, hold_out
from tubelet.data.synthetic import ensure_synthetic_dataset
from tubelet.data.transforms import BatchNormalize, EvalTransform, TrainTransform
from tubelet.engine.trainer import OptimConfig, Trainer
from tubelet.jobs.common import (
    Progress,
    TrainJob,
    clip_preprocessing,
    jsonable,
    loader_workers,
    open_run,
    runtime_config,
)
from tubelet.models import architecture_args, create_model
from tubelet.models.spec import ModelSpec, WeightsSource
from tubelet.models.videomae import CLASSIFIER_OF, VideoMAEPretrain
from tubelet.nn.masking import patchify, unpatchify
from tubelet.tasks.masked_video import MaskedVideoTask

DEFAULT_MODEL = "videomae_pretrain_s"
UNUSED: tuple[str, ...] = ()  # the run settings this job does not read
PNG_NAME = "reconstruction.png"


def unlabeled_records(root: Path, split: str) -> list[VideoRecord]:
    """The videos of `split` in `root`: any layout `--data` reads (labels dropped), or else every
    video file under `root`, with every fifth (sorted by path) held out for "val"."""
    try:
        return list(read_annotations(root, split).records)
    except EmptySplitError:
        pass
    videos = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    chosen = hold_out(videos, split)
    if not chosen:
        raise EmptySplitError(
            f"no {split} videos in {root} ({len(videos)} video files found; a folder needs at "
            f"least 5 for a validation video)"
        )
    return [VideoRecord(v, 0) for v in chosen]


def train(job: TrainJob, *, show_progress: bool = True, on_data: Progress | None = None) -> dict:
    """Pre-train (or resume) the masked autoencoder `job.model` in `job.out`; return its summary.

    Used fields: out, data, model, model_args (mask_ratio, masking, width, ...), frames, sampling,
    stride, size, epochs, batch_size, lr, weight_decay, warmup_epochs, accumulate, precision,
    flip (None: flips, as labels are never read), bad_files, workers, seed and the runtime
    switches.
    """
    data_root = Path(job.data) if job.data else ensure_synthetic_dataset(progress=on_data)
    run = open_run(job, {**jsonable(job), "data": str(data_root)})

    if job.model not in CLASSIFIER_OF:
        raise ValueError(
            f"{job.model} is not a pre-training model; use one of {', '.join(CLASSIFIER_OF)}"
        )
    model = create_model(job.model, **job.model_args)
    clip = ClipSpec(frames=job.frames, sampling=job.sampling, stride=job.stride)
    model.encoder.grid((1, 3, job.frames, job.size, job.size))  # a clear error for a bad size
    common = {"clip": clip, "bad_files": job.bad_files, "seed": job.seed,
              "decode_device": job.decode_device}  # fmt: skip
    train_set = VideoDataset(
        unlabeled_records(data_root, "train"), train=True,
        transform=TrainTransform(size=job.size, flip=job.flip is not False, normalized=False),
        **common,
    )  # fmt: skip
    val_set = VideoDataset(
        unlabeled_records(data_root, "val"), train=False,
        transform=EvalTransform(size=job.size, normalized=False),
        **{**common, "bad_files": "skip"},
    )  # fmt: skip
    spec = ModelSpec(
        model=job.model,
        model_args=architecture_args(job.model, dict(job.model_args)),
        task="pretrain",
        preprocessing=(pre := clip_preprocessing(job)),
        source=WeightsSource(data=str(data_root)),
    )
    loader_args = {"batch_size": job.batch_size, "seed": job.seed,
                   "item_bytes": 3 * job.frames * job.size**2,  # a uint8 clip
                   **loader_workers(job)}  # fmt: skip
    loaders = {
        "train_loader": build_loader(train_set, train=True, **loader_args),
        "val_loader": build_loader(val_set, train=False, **loader_args),
    }
    normalize = BatchNormalize(pre.mean, pre.std, channels_last=job.channels_last)
    optim = OptimConfig(
        epochs=job.epochs, lr=job.lr, weight_decay=job.weight_decay,
        warmup_epochs=job.warmup_epochs, accumulate=job.accumulate, precision=job.precision,
    )  # fmt: skip
    trainer = Trainer(
        model, MaskedVideoTask(seed=job.seed), config=optim, run=run, spec=spec,
        show_progress=show_progress, monitor="loss", minimize=True, runtime=runtime_config(job),
        prepare=normalize, **loaders,
    )  # fmt: skip
    summary = trainer.fit()
    # A sharded model's forward gathers its weights from every process: all of them draw it.
    if trainer.env.is_main or trainer.fsdp:
        png = save_reconstructions(
            model, val_set, run.root / PNG_NAME, seed=job.seed, write=trainer.env.is_main,
            prepare=normalize,
        )  # fmt: skip
        summary["reconstruction_png"] = str(png)
        run.write_summary(summary)
    return summary


@torch.no_grad()
def reconstruction_rows(
    model: VideoMAEPretrain, clips: torch.Tensor, seed: int = 0
) -> torch.Tensor:
    """(K, C, T, H, W) normalised clips -> (3K*T, C, H, W) frames in [0, 1]: for each clip, a row
    of its T frames as recorded, one with the masked tubes grey, one with them reconstructed."""
    model.eval()
    mask = model.draw_mask(clips, generator=torch.Generator().manual_seed(seed))
    out = model(clips, mask=mask)
    original = model.pixels(clips).float()
    tubes = patchify(original, model.tubelet_size, model.patch_size)  # (K, N, P*C)
    tubes[mask] = 0.5
    grid = model.encoder.grid(clips.shape)
    masked = unpatchify(tubes, grid, model.tubelet_size, model.patch_size)
    rebuilt = model.reconstruct(clips, out)
    rows = torch.stack([original, masked, rebuilt], dim=1)  # (K, 3, C, T, H, W)
    return rows.permute(0, 1, 3, 2, 4, 5).flatten(0, 2).clamp(0, 1).cpu()  # (K*3*T, C, H, W)


def save_reconstructions(
    model: VideoMAEPretrain,
    dataset: VideoDataset,
    path: Path,
    *,
    clips: int = 4,
    seed: int = 0,
    write: bool = True,
    prepare: BatchNormalize | None = None,
) -> Path:
    """Write a PNG of `clips` validation clips (original / masked / reconstruction rows); with
    `write=False` only run the model (a process of a sharded model that is not rank 0).
    `prepare` normalises the dataset's clips when it leaves them uint8."""
    items = [dataset[i] for i in range(min(clips, len(dataset)))]
    videos = [item["video"][0] for item in items if item["video"] is not None]  # first view
    if not videos:
        raise ValueError(f"no readable validation video to draw {path.name} from")
    device = next(model.parameters()).device
    batch = {"video": torch.stack(videos).to(device)}
    frames = reconstruction_rows(model, (prepare(batch) if prepare else batch)["video"], seed=seed)
    if write:
        save_image(frames, str(path), nrow=videos[0].shape[1], padding=1, pad_value=1.0)
    return path
