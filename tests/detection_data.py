"""A tiny detection setup shared by the jobs and CLI tests: an untrimmed set, a backbone
checkpoint with random weights, and its clip features."""

from pathlib import Path

import torch

from tubelet.data.untrimmed import ensure_untrimmed_dataset
from tubelet.engine.checkpoint import save_model
from tubelet.jobs.extract import extract_features
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec


def make_detection_data(root: Path) -> tuple[Path, Path, Path]:
    """(untrimmed data folder, backbone run folder, features folder) under `root`."""
    data = ensure_untrimmed_dataset(
        root / "untrimmed", train_videos=2, val_videos=1, min_duration=8, max_duration=10, size=32
    )
    torch.manual_seed(0)
    args = {"num_classes": 10, "width": 8}
    save_model(root / "backbone" / "best", create_model("frame2d_resnet18", **args),
               ModelSpec("frame2d_resnet18", args, "classification"))  # fmt: skip
    features = extract_features(
        out=root / "features", data=data, checkpoint=root / "backbone", level="clip", window=4,
        stride=2, size=32, show_progress=False,
    )  # fmt: skip
    return data, root / "backbone", features
