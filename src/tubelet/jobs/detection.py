"""The jobs behind temporal action detection: train (`tubelet train --task detection`), evaluate
(`tubelet eval` on a detection run) and detect in one video (`tubelet detect`).

A detector trains on a features folder written by `tubelet extract` (`tubelet.data.features`) and
an annotation file in the ActivityNet layout (`tubelet.data.untrimmed`): `--data` names the
features folder, whose `annotations.json` is used if it has one, else the `annotations.json` of
the data folder the features were extracted from. Without `--data` the
built-in untrimmed set is used, with its features expected in its `features/` folder (the error
says how to make them).

The training / evaluation subsets are "training" / "validation" (ActivityNet, the built-in set) or
"Validation" / "Test" (THUMOS14, which trains on its validation videos).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from tubelet.data.features import FeatureStore
from tubelet.data.loader import build_loader
from tubelet.data.untrimmed import (
    ANNOTATIONS_FILE,
    DetectionAnnotations,
    DetectionFeatureDataset,
    collate_detection,
    ensure_untrimmed_dataset,
    feature_grid,
    read_detection_annotations,
)
from tubelet.engine.checkpoint import find_checkpoint, load_model
from tubelet.engine.prefetch import to_device
from tubelet.engine.progress import TrainProgress
from tubelet.engine.trainer import Trainer
from tubelet.jobs.common import TrainJob, jsonable, open_run, optim_config, runtime_config
from tubelet.models import architecture_args, create_model
from tubelet.models.actionformer import DETECTION_MODELS, WindowClassifier
from tubelet.models.spec import ModelSpec, WeightsSource, read_spec
from tubelet.tasks.detection import (
    THUMOS14_TIOUS,
    DecodeConfig,
    DetectionTask,
    WindowTask,
)

# (training subset, evaluation subset) pairs, tried in order.
DEFAULT_MODEL = "actionformer_tiny"
# The run settings of clips, which a detector on features does not read (`--workers`, which
# changes no result, is let through: one command line may serve several tasks).
UNUSED = ("frames", "sampling", "stride", "size", "flip", "bad_files", "decode_device")
SUBSET_PAIRS = (("training", "validation"), ("Validation", "Test"), ("train", "val"))
# The meta.json entries of a features folder that say how to make the same features again.
FEATURE_KEYS = ("model", "model_args", "checkpoint", "level", "window", "stride", "size")


def resolve_data(data: Path | None) -> tuple[Path, Path]:
    """(features folder, annotation file) for `--data` (see the module docstring)."""
    if data is None:
        root = ensure_untrimmed_dataset()
        features = root / "features"
        if not (features / "meta.json").is_file():
            raise FileNotFoundError(
                f"no features of the built-in untrimmed set in {features}; extract them first, e.g. "
                f"`tubelet extract --data {root} --checkpoint BACKBONE_RUN --level clip --window 8 "
                f"--stride 2 --size 64 --out {features}` (BACKBONE_RUN: a `tubelet train` run, e.g. "
                "of r2plus1d_18 -m width=16 --size 64 on the built-in clips)"
            )
        data = features
    store_meta = Path(data) / "meta.json"
    if not store_meta.is_file():
        raise FileNotFoundError(
            f"{data} is not a features folder (no meta.json); write one with `tubelet extract`"
        )
    own = Path(data) / ANNOTATIONS_FILE
    if own.is_file():
        return Path(data), own
    source = json.loads(store_meta.read_text()).get("data")
    if source and (Path(source) / ANNOTATIONS_FILE).is_file():
        return Path(data), Path(source) / ANNOTATIONS_FILE
    raise FileNotFoundError(
        f"no {ANNOTATIONS_FILE} in {data} nor in the data folder its features came from ({source}); "
        f"put the annotations (ActivityNet layout) there as {ANNOTATIONS_FILE}"
    )


def pick_subsets(annotations: DetectionAnnotations) -> tuple[str, str]:
    """The (training, evaluation) subset names of an annotation file."""
    present = {v.subset for v in annotations.videos.values()}
    for train, val in SUBSET_PAIRS:
        if train in present and val in present:
            return train, val
    raise ValueError(
        f"the annotations' subsets are {sorted(present)}; expected one of the pairs "
        f"{[list(p) for p in SUBSET_PAIRS]} (training, evaluation)"
    )


def _loader(
    dataset: DetectionFeatureDataset, *, batch_size: int, train: bool, multiple: int, seed: int
) -> DataLoader:
    """Batches of feature sequences padded to a multiple of `multiple` (`build_loader`: sharded
    under torchrun, shuffled per epoch from `seed`)."""
    return build_loader(
        dataset, batch_size=batch_size, train=train, num_workers=0, seed=seed,
        collate_fn=partial(collate_detection, multiple=multiple),
    )  # fmt: skip


def _task(
    model: torch.nn.Module,
    classes: list[str],
    videos: list[str],
    annotations: DetectionAnnotations,
    thresholds: list[float],
) -> DetectionTask | WindowTask:
    """The detector's task, or the sliding-window baseline's for a `WindowClassifier`."""
    common = {
        "classes": classes, "videos": videos, "ground_truth": annotations.ground_truth(videos),
        "tiou_thresholds": thresholds,
    }  # fmt: skip
    return WindowTask(**common) if isinstance(model, WindowClassifier) else DetectionTask(**common)


def train(job: TrainJob, *, show_progress: bool = True, on_data: Any = None) -> dict[str, Any]:
    """Train (or resume) a detector (`job.model`, e.g. `actionformer_tiny`, or the baseline
    `window_classifier`) on features; returns the summary (best epoch by `val_average_mAP`).

    Uses `out`, `data`, `model`, `model_args`, `epochs`, `batch_size`, `lr`, `weight_decay`,
    `warmup_epochs`, `accumulate`, `precision` and `seed` of the job.
    """
    features_dir, annotations_path = resolve_data(job.data)
    config = {
        **jsonable(job), "data": str(features_dir), "annotations": str(annotations_path),
    }  # fmt: skip
    run = open_run(job, config)

    store = FeatureStore(features_dir)
    annotations = read_detection_annotations(annotations_path)
    train_subset, val_subset = pick_subsets(annotations)
    train_videos = [v.name for v in annotations.subset(train_subset)]
    val_videos = [v.name for v in annotations.subset(val_subset)]
    classes = list(annotations.classes)
    model_args = {**job.model_args, "num_classes": len(classes), "input_dim": store.dim}
    if job.model not in DETECTION_MODELS:
        raise ValueError(
            f"{job.model} is not a detector; --task detection trains one of "
            f"{', '.join(DETECTION_MODELS)} (--model NAME)"
        )
    model = create_model(job.model, **model_args)
    multiple = model.length_multiple
    max_len = max(multiple, 256 // multiple * multiple)
    train_set = DetectionFeatureDataset(
        store, annotations, train_videos, max_len=max_len, train=True, seed=job.seed
    )
    val_set = DetectionFeatureDataset(store, annotations, val_videos)
    thresholds = list(THUMOS14_TIOUS)
    spec = ModelSpec(
        model=job.model,
        model_args=architecture_args(job.model, model_args),
        task="detection",
        classes=classes,
        source=WeightsSource(data=str(features_dir)),
        task_args={
            "annotations": str(annotations_path),
            "subsets": {"train": train_subset, "val": val_subset},
            "features": {k: store.meta.get(k) for k in FEATURE_KEYS},
            "tiou_thresholds": thresholds,
            "decode": asdict(DecodeConfig()),
        },
    )
    task = _task(model, classes, val_videos, annotations, thresholds)
    optim = optim_config(job)
    trainer = Trainer(
        model, task, config=optim, run=run, spec=spec, show_progress=show_progress,
        monitor="average_mAP", runtime=runtime_config(job),
        train_loader=_loader(train_set, batch_size=job.batch_size, train=True, multiple=multiple,
                             seed=job.seed),
        val_loader=_loader(val_set, batch_size=job.batch_size, train=False, multiple=multiple,
                           seed=job.seed),
    )  # fmt: skip
    return trainer.fit()


def is_detection_run(checkpoint: Path) -> bool:
    """Whether the run or checkpoint folder holds a detector saved by `train`."""
    return read_spec(find_checkpoint(checkpoint)).task == "detection"


def evaluate(
    checkpoint: Path,
    *,
    data: Path | None = None,
    tiou_thresholds: list[float] | None = None,
    batch_size: int = 4,
    show_progress: bool = True,
) -> dict[str, Any]:
    """mAP of a saved detector on the evaluation subset, at each tIoU (the run's, THUMOS14 by
    default); also written to `eval-detection.json` in the run folder with every prediction."""
    model, spec = load_model(checkpoint)
    saved = spec.task_args
    features_dir, annotations_path = (
        resolve_data(data)
        if data is not None
        else (Path(str(spec.source.data)), Path(saved["annotations"]))
    )
    store = FeatureStore(features_dir)
    if store.dim != spec.model_args["input_dim"]:
        raise ValueError(
            f"the features in {features_dir} have {store.dim} channels; the model was trained on "
            f"{spec.model_args['input_dim']}: evaluate on features made like its training data"
        )
    annotations = read_detection_annotations(annotations_path)
    if tuple(annotations.classes) != spec.classes:
        raise ValueError(
            f"the classes of {annotations_path} differ from the model's {len(spec.classes)}"
        )
    _, val_subset = pick_subsets(annotations)
    videos = [v.name for v in annotations.subset(val_subset)]
    thresholds = list(tiou_thresholds or saved["tiou_thresholds"])
    task = _task(model, list(spec.classes), videos, annotations, thresholds)
    loader = _loader(
        DetectionFeatureDataset(store, annotations, videos), batch_size=batch_size, train=False,
        multiple=model.length_multiple, seed=0,
    )  # fmt: skip
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meter = task.new_meter()
    model = model.to(device).eval()
    with TrainProgress(enabled=show_progress) as progress:
        bar = progress.start_eval(len(loader))
        with torch.no_grad():
            for batch in loader:
                task.evaluate_batch(model, to_device(batch, device), meter)
                progress.advance(bar)
        progress.finish(bar)
    metrics = {"model": spec.model, **meter.compute(), "subset": val_subset}
    run_root = find_checkpoint(checkpoint).parent
    if (run_root / "config.json").is_file():
        record = {**metrics, "predictions": meter.predictions}
        (run_root / "eval-detection.json").write_text(json.dumps(record, indent=1))
    return metrics


def detect(
    checkpoint: Path,
    video: Path,
    *,
    min_score: float = 0.1,
    work_dir: Path | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Segments of one video file: features made as the detector's training features were (same
    backbone checkpoint, level, window, stride, size), then the detector; those scoring at least
    `min_score`, best first, in seconds."""
    import tempfile

    from tubelet.io import VideoReader
    from tubelet.jobs.extract import extract_features

    model, spec = load_model(checkpoint)
    made = spec.task_args["features"]
    if not Path(video).is_file():
        raise FileNotFoundError(f"no video file {video}")
    if made.get("checkpoint") is None or not Path(made["checkpoint"]).exists():
        raise ValueError(
            f"the detector's features came from {made.get('model')!r} with checkpoint "
            f"{made.get('checkpoint')!r}, which is not available here; `tubelet detect` needs that "
            "backbone run folder to make the same features from a video"
        )
    with VideoReader(video) as reader:
        duration = reader.num_frames / reader.fps
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        folder = extract_features(
            out=Path(tmp) / "features", videos=[Path(video)], checkpoint=Path(made["checkpoint"]),
            level=made["level"], window=made["window"], stride=made["stride"], size=made["size"],
            show_progress=show_progress,
        )  # fmt: skip
        store = FeatureStore(folder)
        key = store.videos[0]
        feats, times = store.load(key), store.times(key)
    offset, step = feature_grid(times)
    step = step or 1.0
    multiple = model.length_multiple
    length = -(-len(feats) // multiple) * multiple
    batch = {
        "features": torch.nn.functional.pad(feats.T, (0, length - len(feats)))[None],  # (1, D, L)
        "mask": (torch.arange(length) < len(feats))[None],
        "offset_s": torch.tensor([offset], dtype=torch.float64),
        "step_s": torch.tensor([step], dtype=torch.float64),
        "duration_s": torch.tensor([duration], dtype=torch.float64),
    }
    task = _task(model, list(spec.classes), [], DetectionAnnotations({}, spec.classes), [])
    with torch.no_grad():
        records = task.predict(model.eval(), batch)[0]
    segments = [r for r in records if r["score"] >= min_score]
    return {"video": str(video), "duration": duration, "segments": segments}


def timeline_png(path: Path, result: dict[str, Any], classes: list[str]) -> Path:
    """Draw detected segments as a timeline: one row per class, bars shaded by score, a tick
    every 10 s; written as PNG with Pillow."""
    from PIL import Image, ImageDraw

    width, row, left, top = 900, 18, 110, 20
    height = top + row * len(classes) + 24
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    duration = max(float(result["duration"]), 1e-6)
    span = width - left - 10

    def x(t: float) -> float:
        return left + span * min(max(t / duration, 0.0), 1.0)

    for i, name in enumerate(classes):
        y = top + i * row
        draw.text((4, y + 3), name[:16], fill="black")
        draw.line([(left, y + row - 1), (width - 10, y + row - 1)], fill=(225, 225, 225))
    palette = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                        (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
                        (188, 189, 34), (23, 190, 207)])  # fmt: skip
    for seg in sorted(result["segments"], key=lambda s: s["score"]):
        k = classes.index(seg["label"])
        colour = palette[k % len(palette)]
        shade = tuple(int(c) for c in 255 - (255 - colour) * min(1.0, max(seg["score"], 0.15)))
        y = top + k * row
        draw.rectangle([x(seg["start"]), y + 2, max(x(seg["end"]), x(seg["start"]) + 1), y + row - 3],
                       fill=shade)  # fmt: skip
    base = top + row * len(classes)
    for t in range(0, int(duration) + 1, 10):
        draw.line([(x(t), base), (x(t), base + 4)], fill="black")
        draw.text((x(t) - 6, base + 6), f"{t}s", fill="black")
    draw.text((left, 4), Path(result["video"]).name, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
