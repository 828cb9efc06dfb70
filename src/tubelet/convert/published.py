"""How a published checkpoint is used: its class names and the preprocessing it was trained with.

`published_use(name, checkpoint, checkpoint_format, num_classes)` reads them from what each
format ships, never from the network:

- `torchvision`: the model's default weights entry, installed with torchvision: Kinetics-400
  class names (`meta["categories"]`), resize, crop, mean and std (`weights.transforms()`), and the
  clip length of its evaluation (`clip_len` in the entry's notes; frames at 15 fps, i.e. every
  second frame of a 30 fps video).
- `transformers`: the folder's `config.json` (`id2label`, `num_frames`, `image_size`) and its
  image processor's `preprocessor_config.json` (`image_mean`, `image_std`, `size`, `crop_size`).
- `pytorchvideo`, `pyslowfast`: the statistics both document (mean 0.45, std 0.225 per channel,
  short side 256, 256 crop) and each model's clip (`slowfast_r50`: 32 frames 2 apart; `slow_r50`
  and `i3d_r50`: 8 frames 8 apart). Their checkpoints carry no class names: a 400-way head gets the
  Kinetics-400 names (the alphabetical order both train with), another head "class N".

The preprocessing is a dict of `tubelet.models.spec.Preprocessing`'s fields (mean, std, crop,
resize, frames, sampling, stride).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PYTORCHVIDEO_MEAN = (0.45, 0.45, 0.45)
PYTORCHVIDEO_STD = (0.225, 0.225, 0.225)
# model -> (frames, stride) of PyTorchVideo's model zoo and PySlowFast's configs (Kinetics-400,
# 30 fps): SLOWFAST_8x8_R50 samples 32 frames 2 apart, SLOW_8x8_R50 and I3D_8x8_R50 8 frames 8 apart.
PYTORCHVIDEO_CLIPS = {"slowfast_r50": (32, 2), "slow_r50": (8, 8), "i3d_r50": (8, 8)}
TORCHVISION_FPS = 15  # torchvision's video recipe resamples every video to 15 fps
ASSUMED_VIDEO_FPS = 30  # what a clip stride in frames assumes about the video (Kinetics is ~30)


@dataclass(frozen=True)
class PublishedUse:
    """Class names (one per output) and preprocessing of a published checkpoint; `notes` says what
    had to be assumed because the checkpoint does not say it."""

    classes: tuple[str, ...]
    preprocessing: dict[str, Any]
    notes: tuple[str, ...] = field(default=())


def published_use(
    name: str, checkpoint: str | Path, checkpoint_format: str, num_classes: int
) -> PublishedUse:
    """How to use tubelet model `name` with the weights of `checkpoint` (written in
    `checkpoint_format`) whose head has `num_classes` outputs."""
    readers = {
        "torchvision": _torchvision,
        "transformers": _transformers,
        "pytorchvideo": _pytorchvideo,
        "pyslowfast": _pytorchvideo,
    }
    if checkpoint_format not in readers:
        raise ValueError(
            f"--checkpoint-format {checkpoint_format!r} ships no class names or preprocessing; "
            f"published classifiers come as {', '.join(sorted(readers))}"
        )
    return readers[checkpoint_format](name, Path(checkpoint), num_classes)


def kinetics400_classes() -> tuple[str, ...]:
    """The 400 Kinetics-400 class names in their label order, as torchvision ships them."""
    from torchvision.models.video import R3D_18_Weights

    return tuple(R3D_18_Weights.KINETICS400_V1.meta["categories"])


def _names(known: tuple[str, ...], num_classes: int, source: str) -> tuple[tuple[str, ...], list]:
    """`known` when it names every output, else "class N" with a note saying why."""
    if len(known) == num_classes:
        return known, []
    generic = tuple(f"class {i}" for i in range(num_classes))
    return generic, [f"{source} names {len(known)} classes, the head has {num_classes}: numbered"]


def _torchvision(name: str, checkpoint: Path, num_classes: int) -> PublishedUse:
    from torchvision.models import get_model_weights

    try:
        weights = get_model_weights(name).DEFAULT
    except ValueError:
        raise ValueError(
            f"torchvision publishes no weights for {name!r}; its video classifiers are r3d_18, "
            "mc3_18, r2plus1d_18, s3d and swin3d_t/s/b"
        ) from None
    transform = weights.transforms()  # torchvision's VideoClassification preset
    resize = list(transform.resize_size)  # [short side] or [height, width]
    crop = list(transform.crop_size)
    clip_len = re.search(r"clip_len=(\d+)", weights.meta.get("_docs", ""))
    classes, notes = _names(tuple(weights.meta["categories"]), num_classes, str(weights))
    if clip_len is None:
        notes.append(f"{weights} states no clip length: 16 frames")
    if len(resize) == 2:
        notes.append(
            f"{weights} resizes to {resize[0]}x{resize[1]}; here the short side to {min(resize)}"
        )
    preprocessing = {
        "mean": tuple(transform.mean),
        "std": tuple(transform.std),
        "resize": min(resize),
        "crop": crop[0] if crop[0] == crop[-1] else tuple(crop),
        "frames": int(clip_len.group(1)) if clip_len else 16,
        "sampling": "dense",
        "stride": ASSUMED_VIDEO_FPS // TORCHVISION_FPS,
    }
    return PublishedUse(classes, preprocessing, tuple(notes))


def _transformers(name: str, folder: Path, num_classes: int) -> PublishedUse:
    from tubelet.convert import preprocessing_from_checkpoint
    from tubelet.normalization import IMAGENET_MEAN, IMAGENET_STD

    if not folder.is_dir():
        raise ValueError(
            f"a transformers checkpoint is a folder (save_pretrained); {folder} is not"
        )
    config = _read_json(folder / "config.json") or {}
    labels = config.get("id2label") or {}
    known = tuple(str(labels[k]) for k in sorted(labels, key=int)) if labels else ()
    classes, notes = _names(known, num_classes, f"{folder}/config.json id2label")
    # What the model's own config states (V-JEPA 2, VideoPrism), else the generic config keys.
    stated = preprocessing_from_checkpoint(name, folder, "transformers") or {}
    image_size = stated.get("size") or _side(config.get("image_size") or 224)
    processor = next(
        (p for p in ("preprocessor_config.json", "video_preprocessor_config.json")
         if (folder / p).is_file()),
        None,
    )  # fmt: skip
    settings = _read_json(folder / processor) if processor else {}
    if processor is None and not stated:
        notes.append(
            f"{folder} has no preprocessor_config.json (save the processor with the model): "
            f"ImageNet statistics, {image_size} px"
        )
    crop = _side(settings.get("crop_size")) if settings.get("do_center_crop", True) else None
    size = settings.get("size")
    short = size.get("shortest_edge") if isinstance(size, dict) else size
    if crop is None:  # no centre crop: the frames are resized to the processor's size
        crop = _side(size)
    preprocessing = {
        "mean": tuple(settings.get("image_mean", stated.get("mean", IMAGENET_MEAN))),
        "std": tuple(settings.get("image_std", stated.get("std", IMAGENET_STD))),
        "resize": int(short) if isinstance(short, int) else None,
        "crop": crop or image_size,
        "frames": int(stated.get("frames") or config.get("num_frames") or 16),
        "sampling": "uniform",
        "stride": 1,
    }
    return PublishedUse(classes, preprocessing, tuple(notes))


def _pytorchvideo(name: str, checkpoint: Path, num_classes: int) -> PublishedUse:
    if name not in PYTORCHVIDEO_CLIPS:
        raise ValueError(
            f"PyTorchVideo/PySlowFast checkpoints load into {', '.join(PYTORCHVIDEO_CLIPS)}, "
            f"not {name!r}"
        )
    frames, stride = PYTORCHVIDEO_CLIPS[name]
    classes, notes = _names(kinetics400_classes(), num_classes, "Kinetics-400")
    preprocessing = {
        "mean": PYTORCHVIDEO_MEAN, "std": PYTORCHVIDEO_STD, "resize": 256, "crop": 256,
        "frames": frames, "sampling": "dense", "stride": stride,
    }  # fmt: skip
    return PublishedUse(classes, preprocessing, tuple(notes))


def _side(value: Any) -> int | tuple[int, int] | None:
    """A processor's size entry ({"height", "width"}, {"shortest_edge"}, [h, w] or an int) as a side
    or (height, width); None when it gives neither."""
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            h, w = int(value["height"]), int(value["width"])
            return h if h == w else (h, w)
        return int(value["shortest_edge"]) if "shortest_edge" in value else None
    if isinstance(value, list | tuple):
        return int(value[0]) if value[0] == value[-1] else (int(value[0]), int(value[-1]))
    return int(value) if isinstance(value, int) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None
