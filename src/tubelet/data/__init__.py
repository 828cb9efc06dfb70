"""Samples from frames: frame-index sampling, video transforms, datasets and loaders."""

from tubelet.data.annotations import Annotations, VideoRecord, read_annotations
from tubelet.data.datasets import ClipSpec, VideoDataset, collate_clips
from tubelet.data.loader import build_dataset, build_loader

__all__ = [
    "Annotations",
    "ClipSpec",
    "VideoDataset",
    "VideoRecord",
    "build_dataset",
    "build_loader",
    "collate_clips",
    "read_annotations",
]
