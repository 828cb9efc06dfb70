"""The saved-model spec: what `model.json` beside a checkpoint's weights says, read and written here.

A checkpoint folder holds `model.safetensors` (the weights) and `model.json`, one `ModelSpec`: the
registered model and its builder arguments, the task it was made for, its class names, how a clip
is prepared for it (`Preprocessing`), where its weights came from (`WeightsSource`), and the task's
own saved settings (`task_args`: a generation run's diffusion settings, a flow model's number of
updates, ...). A run folder of `tubelet train` holds two such folders, `best/` and `last/`
(`checkpoint_folders`). With the spec, a model can be rebuilt and fed from its path alone.

Specs written before the format was versioned (no "format" key) are read too: their task is
inferred from what they hold, their preprocessing from their clip settings and the statistics the
task normalised with then.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tubelet.models.registry import translate_legacy_args
from tubelet.normalization import IMAGENET_MEAN, IMAGENET_STD, SIGNED_MEAN, SIGNED_STD

SPEC_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
SPEC_FORMAT = 2
SPEC_TASKS = (
    "autoencoder", "classification", "detection", "features", "flow", "generation", "pretrain",
)  # fmt: skip
SAMPLINGS = ("uniform", "dense")


@dataclass(frozen=True)
class Preprocessing:
    """How a video becomes the model's input.

    `frames` frames are picked by `sampling` ("uniform": one per equal segment; "dense": consecutive
    frames `stride` apart); their short side is resized to `resize` (None: to the crop's short
    side); the centre `crop` (a side in pixels, or (height, width)) is taken; then each channel is
    normalised, `(pixel / 255 - mean) / std`.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: int | tuple[int, int]
    resize: int | None = None
    frames: int = 1
    sampling: str = "uniform"
    stride: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not isinstance(self.crop, int):
            object.__setattr__(self, "crop", tuple(int(c) for c in self.crop))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(
                f"mean and std need 3 values each (RGB), std > 0; got {self.mean} and {self.std}"
            )
        sides = (self.crop,) if isinstance(self.crop, int) else self.crop
        if len(sides) not in (1, 2) or min(sides) < 1:
            raise ValueError(f"crop must be a side or (height, width) >= 1, got {self.crop}")
        for name in ("resize", "frames", "stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, not {self.sampling!r}")

    @property
    def crop_size(self) -> tuple[int, int]:
        """The crop as (height, width)."""
        return (self.crop, self.crop) if isinstance(self.crop, int) else self.crop  # type: ignore[return-value]

    @property
    def resize_to(self) -> int:
        """The short side, in pixels, frames are resized to before the crop."""
        return self.resize if self.resize is not None else min(self.crop_size)

    def to_json(self) -> dict[str, Any]:
        """The spec's "preprocessing" entry."""
        crop = self.crop if isinstance(self.crop, int) else list(self.crop)
        return {
            "mean": list(self.mean), "std": list(self.std), "resize": self.resize, "crop": crop,
            "frames": self.frames, "sampling": self.sampling, "stride": self.stride,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessing:
        """The inverse of `to_json`."""
        return cls(**data)


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights came from: trained by tubelet (`format` "tubelet") on the data set
    `data`, or imported from the published checkpoint `checkpoint` written in `format` (a
    `tubelet.convert` format name)."""

    format: str = "tubelet"
    checkpoint: str | None = None
    data: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The spec's "source" entry."""
        return {"format": self.format, "checkpoint": self.checkpoint, "data": self.data}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild and use a saved model besides its weights.

    `model` is a registered name and `model_args` its builder's keyword arguments (`num_classes`
    included; weight-initialisation arguments left out). `task` is one of `SPEC_TASKS`; `classes`
    names the outputs of a classifier or detector (empty otherwise). `preprocessing` is None for
    models that do not take clips (heads over cached features). `task_args` holds JSON values the
    task saves with its model.
    """

    model: str
    model_args: dict[str, Any]
    task: str
    classes: tuple[str, ...] = ()
    preprocessing: Preprocessing | None = None
    source: WeightsSource = field(default_factory=WeightsSource)
    task_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in SPEC_TASKS:
            raise ValueError(f"task must be one of {SPEC_TASKS}, not {self.task!r}")
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "model_args", dict(self.model_args))
        object.__setattr__(self, "task_args", dict(self.task_args))

    def to_json(self) -> dict[str, Any]:
        """The content of `model.json`."""
        return {
            "format": SPEC_FORMAT,
            "model": self.model,
            "model_args": self.model_args,
            "task": self.task,
            "classes": list(self.classes),
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_json(),
            "source": self.source.to_json(),
            "task_args": self.task_args,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        """A spec from the content of `model.json`, of this format or of the unversioned one."""
        if "format" not in data:
            return _from_unversioned(data)
        if data["format"] != SPEC_FORMAT:
            raise ValueError(
                f"model.json is of spec format {data['format']}; this tubelet reads format "
                f"{SPEC_FORMAT}: upgrade tubelet"
            )
        pre = data.get("preprocessing")
        return cls(
            model=data["model"],
            model_args=upgrade_model_args(data["model"], data["model_args"]),
            task=data["task"],
            classes=tuple(data.get("classes", ())),
            preprocessing=None if pre is None else Preprocessing.from_json(pre),
            source=WeightsSource(**data.get("source", {})),
            task_args=data.get("task_args", {}),
        )


def upgrade_model_args(model: str, args: dict[str, Any]) -> dict[str, Any]:
    """The builder arguments of a saved `model` under today's argument names.

    Every spec read goes through here, so a renamed builder argument needs one entry in the
    translation that `tubelet.models` keeps (`register_model(renamed_args=)`), and old run folders
    keep loading.
    """
    return translate_legacy_args(model, args)


def checkpoint_folders(path: str | Path) -> tuple[Path, Path, Path]:
    """Where a checkpoint may be, in order: `path` itself, and a run folder's `best/` and `last/`."""
    path = Path(path)
    return path, path / "best", path / "last"


def weights_file(path: str | Path) -> Path:
    """The weights of the checkpoint at `path` (a checkpoint folder or a run folder): the first
    folder of `checkpoint_folders` that holds both `model.json` and `model.safetensors`."""
    for folder in checkpoint_folders(path):
        if (folder / SPEC_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
            return folder / WEIGHTS_FILE
    raise FileNotFoundError(
        f"no tubelet checkpoint in {path}: expected {SPEC_FILE} and {WEIGHTS_FILE} in it or in its "
        "best/ or last/ folder (a run folder written by `tubelet train`)"
    )


def read_spec(path: str | Path) -> ModelSpec:
    """The spec of the checkpoint at `path`: a `model.json` file, or a checkpoint or run folder
    (the first of `checkpoint_folders` that holds a `model.json`)."""
    path = Path(path)
    file = path if path.is_file() else None
    for folder in checkpoint_folders(path) if file is None else ():
        if (folder / SPEC_FILE).is_file():
            file = folder / SPEC_FILE
            break
    if file is None:
        raise FileNotFoundError(
            f"no {SPEC_FILE} in {path} or in its best/ or last/ folder (a run folder written by "
            "`tubelet train`, or a checkpoint folder)"
        )
    try:
        return ModelSpec.from_json(json.loads(file.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{file} is not a tubelet model spec ({error})") from None


def write_spec(folder: str | Path, spec: ModelSpec) -> Path:
    """Write `folder/model.json` (beside, then renamed into place, so it is never torn)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SPEC_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(spec.to_json(), indent=2))
    os.replace(tmp, path)
    return path


# Keys of an unversioned spec that map to ModelSpec fields; the others become task_args.
_UNVERSIONED_FIELDS = ("model", "model_args", "task", "classes", "clip", "size", "data")


def _from_unversioned(data: dict[str, Any]) -> ModelSpec:
    """A spec written before the format was versioned: every job wrote its own dict, and only
    detection and flow named their task."""
    task = data.get("task")
    if task is None:
        if "diffusion" in data:
            task = "generation"
        elif "features" in data:
            task = "features"
        elif "classes" in data:
            task = "classification"
        else:
            task = "pretrain"
    preprocessing = None
    if "clip" in data:  # classification, generation and pretrain runs: square crops of `size`
        signed = task == "generation"
        preprocessing = Preprocessing(
            mean=SIGNED_MEAN if signed else IMAGENET_MEAN,
            std=SIGNED_STD if signed else IMAGENET_STD,
            crop=int(data["size"]),
            **data["clip"],
        )
    elif task == "flow":  # frame pairs of (height, width) in [-1, 1]
        preprocessing = Preprocessing(
            mean=SIGNED_MEAN, std=SIGNED_STD, crop=tuple(data["size"]), frames=2, sampling="dense"
        )
    return ModelSpec(
        model=data["model"],
        model_args=upgrade_model_args(data["model"], data["model_args"]),
        task=task,
        classes=tuple(data.get("classes", ())),
        preprocessing=preprocessing,
        source=WeightsSource(data=data.get("data")),
        task_args={k: v for k, v in data.items() if k not in _UNVERSIONED_FIELDS},
    )
