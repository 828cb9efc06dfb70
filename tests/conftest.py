"""Fixtures shared across the test packages: small real video files and a tiny built-in dataset."""

from pathlib import Path

import numpy as np
import pytest

from tubelet.io import write_video


def index_coded_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3) frames; frame i has a bright bar starting at x = 2 * i on a dark ramp."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 2] = np.linspace(0, 80, width, dtype=np.uint8)
    for i in range(num_frames):
        x = (2 * i) % (width - 4)
        frames[i, :, x : x + 4] = 230
    return frames


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The built-in synthetic dataset at its smallest: 10 classes x 3 videos, 8 frames of 32x32."""
    from tubelet.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    return write_synthetic_dataset(
        root, videos_per_class=3, val_fraction=0.34, num_frames=8, size=32, fps=8.0, seed=0
    )


@pytest.fixture(scope="session")
def list_dataset(tmp_path_factory) -> Path:
    """A list-layout folder: 3 readable videos of 12 frames and one empty file, in train and val."""
    root = tmp_path_factory.mktemp("listdata")
    for i in range(3):
        write_video(root / f"v{i}.mp4", index_coded_frames(12, 40, 48), fps=12)
    (root / "broken.mp4").write_bytes(b"")
    lines = "v0.mp4 0\nbroken.mp4 1\nv1.mp4 1\nv2.mp4 0\n"
    (root / "train.csv").write_text(lines)
    (root / "val.csv").write_text(lines)
    (root / "classes.txt").write_text("rise\nfall\n")
    return root
