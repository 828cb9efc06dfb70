"""`tubelet train --features FEATS`: train a temporal head on cached features.

The features folder (`tubelet extract`) holds per-frame or per-clip features of a labelled data
folder's train and val videos; this job trains a sequence model (`frame_mean`,
`frame_transformer`) on the train split's sequences and validates on the val split's, with the
classification trainer (run folder, resume, best checkpoint, summary).

The settings used: `features` and `label_smoothing` (`ClassificationSettings`); `out`, `model`
(`tubelet train` picks `frame_transformer` when none is given), `model_args`, `frames` (T,
features per sequence), `sampling` ("uniform": T features spread over the video, one per equal
segment; "dense": T consecutive features; shorter videos are padded and masked), `epochs`,
`batch_size`, `lr`, `weight_decay`, `warmup_epochs`, `accumulate`, `precision`, `seed` and the
runtime switches of `TrainJob`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tubelet.data.features import FeatureDataset, FeatureStore, collate_features
from tubelet.data.loader import build_loader
from tubelet.engine.trainer import Trainer
from tubelet.jobs.common import (
    ClassificationSettings,
    TrainJob,
    jsonable,
    open_run,
    optim_config,
    runtime_config,
    settings_of,
)
from tubelet.models import architecture_args, create_model
from tubelet.models.spec import ModelSpec, WeightsSource
from tubelet.models.temporal import SequenceClassifier
from tubelet.tasks.features import FeatureClassificationTask

# `--sampling` of clips -> how features are picked (`tubelet.data.features.feature_indices`).
SAMPLINGS = {"uniform": "uniform", "dense": "crop"}
# The settings of clips and of starting weights, which do not apply to features: refused by
# `tubelet train --features`, left out of the config (`--workers`, which changes no result, is let
# through).
UNUSED = (
    "data", "stride", "size", "flip", "bad_files", "init", "checkpoint", "checkpoint_format",
    "freeze_backbone", "layer_decay", "decode_device",
)  # fmt: skip


def train(job: TrainJob, *, show_progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a sequence classifier on the features in the job's `features` folder; return the
    run's summary."""
    own = settings_of(job, ClassificationSettings)
    if job.sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {tuple(SAMPLINGS)}, not {job.sampling!r}")
    store = FeatureStore(own.features)
    if not store.classes:
        raise ValueError(
            f"the features in {store.root} have no classes: extract them from a data folder with "
            "labels (`tubelet extract --data DIR`)"
        )
    model_name = job.model
    config = {
        **{k: v for k, v in jsonable(job).items() if k not in (*UNUSED, "workers")},
        "features": str(Path(own.features).resolve()),
        "features_meta": {k: v for k, v in store.meta.items() if k != "versions"},
    }
    run = open_run(job, config)

    num_classes = len(store.classes)
    model_args = {**job.model_args, "in_dim": store.dim, "num_classes": num_classes}
    hint = "--features trains a model over feature sequences: frame_mean or frame_transformer"
    try:
        model = create_model(model_name, **model_args)
    except (TypeError, ValueError) as error:  # a video model has no `in_dim`; a misspelt -m
        raise ValueError(f"cannot build {model_name} on features ({error}); {hint}") from None
    if not isinstance(model, SequenceClassifier):
        raise ValueError(f"{model_name} is not a model over feature sequences; {hint}")
    # Reversing a sequence reverses the clip only when each feature is one frame.
    pairs = tuple(tuple(p) for p in store.meta.get("reversal_pairs") or ())
    pairs = pairs if store.meta["level"] == "frame" else ()
    sampling = SAMPLINGS[job.sampling]
    common = {"length": job.frames, "sampling": sampling, "seed": job.seed}
    train_set = FeatureDataset(store, split="train", train=True, **common)
    val_set = FeatureDataset(store, split="val", train=False, **common)
    loader_args = {"batch_size": job.batch_size, "num_workers": 0, "seed": job.seed}
    loaders = {
        "train_loader": build_loader(
            train_set, train=True, collate_fn=collate_features, **loader_args
        ),
        "val_loader": build_loader(
            val_set, train=False, collate_fn=collate_features, **loader_args
        ),
    }
    spec = ModelSpec(
        model=model_name,
        model_args=architecture_args(model_name, model_args),
        task="features",
        classes=store.classes,
        source=WeightsSource(data=config["features"]),
        task_args={
            "reversal_pairs": [list(p) for p in pairs],
            "features": {"length": job.frames, "sampling": sampling, **config["features_meta"]},
        },
    )
    optim = optim_config(job)
    task = FeatureClassificationTask(num_classes, own.label_smoothing, pairs)
    trainer = Trainer(
        model, task, config=optim, run=run, spec=spec, show_progress=show_progress,
        runtime=runtime_config(job), **loaders,
    )  # fmt: skip
    return trainer.fit()
