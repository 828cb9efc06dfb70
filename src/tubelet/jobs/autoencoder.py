"""The autoencoder job: train a video VAE (`wan_vae`, small ones by `-m width=... -m z_dim=...`) on
clips scaled to [-1, 1], whole frames resized to `--size`, as the generation job reads them, so
that its latents can serve `tubelet train --task generation -t vae=RUN`.

`-t kl_weight=1e-3` (`AutoencoderSettings`) is the KL term's weight (per pixel); the best checkpoint
is the epoch with the lowest validation L1 reconstruction error.
"""

from __future__ import annotations

from pathlib import Path

from tubelet.data.synthetic import ensure_synthetic_dataset
from tubelet.engine.trainer import Trainer
from tubelet.jobs.common import (
    AutoencoderSettings,
    Progress,
    TrainJob,
    builder_args,
    clip_preprocessing,
    jsonable,
    open_run,
    optim_config,
    runtime_config,
    settings_of,
)
from tubelet.jobs.generation import clip_loaders
from tubelet.models import architecture_args, create_model, model_kind
from tubelet.models.spec import ModelSpec, WeightsSource
from tubelet.normalization import SIGNED_MEAN, SIGNED_STD
from tubelet.tasks.autoencoder import AutoencoderTask

DEFAULT_MODEL = "wan_vae"
UNUSED = ("decode_device",)  # the run settings this job does not read


def train(job: TrainJob, *, show_progress: bool = True, on_data: Progress | None = None) -> dict:
    """Train (or resume) a VAE run in `job.out`; return its summary."""
    if model_kind(job.model) != "autoencoder":
        raise ValueError(
            f"--task autoencoder trains a video VAE (wan_vae), not {job.model!r}: pass --model wan_vae"
        )
    data_root = Path(job.data) if job.data else ensure_synthetic_dataset(progress=on_data)
    run = open_run(job, {**jsonable(job), "data": str(data_root)})
    model_args = builder_args(job)
    task = AutoencoderTask(settings_of(job, AutoencoderSettings).kl_weight)
    model = create_model(job.model, **model_args)
    train_loader, val_loader, classes = clip_loaders(job, data_root)
    spec = ModelSpec(
        model=job.model,
        model_args=architecture_args(job.model, model_args),
        task="autoencoder",
        classes=classes,
        preprocessing=clip_preprocessing(job, SIGNED_MEAN, SIGNED_STD),
        source=WeightsSource(data=str(data_root)),
        task_args={"kl_weight": task.kl_weight},
    )
    trainer = Trainer(
        model, task, config=optim_config(job), run=run, spec=spec, show_progress=show_progress,
        train_loader=train_loader, val_loader=val_loader, monitor="loss", minimize=True,
        runtime=runtime_config(job),
    )  # fmt: skip
    summary = trainer.fit()
    summary["params"] = sum(p.numel() for p in model.parameters())
    run.write_summary(summary)
    return summary
