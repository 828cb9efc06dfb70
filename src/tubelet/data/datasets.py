"""`VideoDataset`: decoded, sampled and transformed clips from a list of annotated video files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tubelet.data.annotations import VideoRecord
from tubelet.data.sampling import ClipIndices, sample_clip, temporal_views
from tubelet.data.transforms import EvalTransform, TrainTransform
from tubelet.io import VideoDecodeError, VideoReader, thread_budget
from tubelet.io.reader import MAX_PIXELS, check_device

BAD_FILE_POLICIES = ("resample", "skip", "raise")
SAMPLINGS = ("uniform", "dense")


@dataclass(frozen=True)
class ClipSpec:
    """How clips are taken from a video: `frames` frames by `sampling` ("uniform" TSN segments or
    "dense" consecutive frames `stride` apart)."""

    frames: int = 8
    sampling: str = "uniform"
    stride: int = 2

    def __post_init__(self) -> None:
        if self.frames < 1 or self.stride < 1:
            raise ValueError(
                f"clips need at least 1 frame (--frames) and a stride of at least 1 (--stride), "
                f"not frames={self.frames}, stride={self.stride}"
            )
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"--sampling must be one of {SAMPLINGS}, not {self.sampling!r}")


class VideoDataset(Dataset):
    """Clips of annotated videos.

    Training (`train=True`): one randomly sampled, randomly cropped clip per item,
    `video` float (C, T, H, W). Evaluation: `num_clips` temporal views x the transform's spatial crops,
    `video` float (V, C, T, H, W) with V = clips x crops, all decoded from one read of the video.

    A video that cannot be read follows `bad_files`: "resample" replaces it by another video of the
    list (training only: evaluation skips it so that no video counts twice), "skip" drops it from its
    batch, "raise" stops with the `VideoDecodeError`. Every bad file rides along in the item's
    `bad_files` list as (path, reason), so the run summary can report it even from worker processes.

    `decode_device="cuda"` decodes on the GPU (torchcodec's NVDEC; see `VideoReader`) and the
    transforms then run there too, so items come out on the GPU: read such a dataset in the process
    that owns the GPU (no forked DataLoader workers) and without pinned memory.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        *,
        clip: ClipSpec,
        transform: TrainTransform | EvalTransform,
        train: bool,
        num_clips: int = 1,
        bad_files: str = "resample",
        backend: str = "auto",
        seed: int = 0,
        max_pixels: int | None = MAX_PIXELS,
        decode_device: str = "cpu",
    ) -> None:
        if bad_files not in BAD_FILE_POLICIES:
            raise ValueError(f"bad_files must be one of {BAD_FILE_POLICIES}, not {bad_files!r}")
        if train != isinstance(transform, TrainTransform):
            raise ValueError(
                "use a TrainTransform for training and an EvalTransform for evaluation"
            )
        self.records = list(records)
        self.clip = clip
        self.transform = transform
        self.train = train
        self.num_clips = num_clips
        self.bad_files = bad_files
        self.backend = backend
        self.seed = seed
        self.max_pixels = max_pixels  # frames over it make the video unreadable (`VideoReader`)
        self.decode_device = check_device(decode_device, backend)  # ValueError here, not per item
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Give each epoch its own (reproducible) random clips and crops."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        bad: list[tuple[str, str]] = []
        attempts = min(len(self.records), 10) if self.bad_files == "resample" and self.train else 1
        current = index
        for _ in range(attempts):
            record = self.records[current]
            try:
                video = self._load(record, rng)
                return {"video": video, "label": record.label, "index": current, "bad_files": bad}
            except VideoDecodeError as error:
                if self.bad_files == "raise":
                    raise
                bad.append((error.path, error.reason))
                current = int(rng.integers(len(self.records)))
        return {"video": None, "label": -1, "index": index, "bad_files": bad}

    def _load(self, record: VideoRecord, rng: np.random.Generator) -> torch.Tensor:
        # Resizing in the decoder skips full-size frames; the transform's own resize is then a no-op.
        short_side = self.transform.resize_to
        threads = thread_budget()  # cores shared among the DataLoader workers
        with VideoReader(
            record.path, backend=self.backend, num_threads=threads, short_side=short_side,
            max_pixels=self.max_pixels, device=self.decode_device,
        ) as reader:  # fmt: skip
            if self.train:
                clip = self._indices(reader, rng)
                frames = reader.get_frames(list(clip.indices)).data  # (T, H, W, 3) uint8
                return self.transform(frames, rng)  # (C, T, S, S)
            views = self._views(reader)
            wanted = [i for view in views for i in view.indices]
            frames = reader.get_frames(wanted).data  # (V*T, H, W, 3), one decode for all views
        clips = frames.view(len(views), self.clip.frames, *frames.shape[1:])  # (V_t, T, H, W, 3)
        crops = [self.transform(c) for c in clips]  # each (V_s, C, T, S, S)
        return torch.cat(crops)  # (V_t * V_s, C, T, S, S)

    def _indices(self, reader: VideoReader, rng: np.random.Generator) -> ClipIndices:
        c = self.clip
        return sample_clip(
            reader.num_frames, reader.fps, sampling=c.sampling, clip_len=c.frames,
            stride=c.stride, train=True, rng=rng,
        )  # fmt: skip

    def _views(self, reader: VideoReader) -> list[ClipIndices]:
        c = self.clip
        return temporal_views(
            reader.num_frames, reader.fps, self.num_clips, sampling=c.sampling, clip_len=c.frames,
            stride=c.stride,
        )  # fmt: skip


def collate_clips(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the readable items of a batch; keep every item's bad files and the number dropped."""
    good = [item for item in items if item["video"] is not None]
    bad_files = [entry for item in items for entry in item["bad_files"]]
    if not good:
        return {
            "video": None,
            "label": None,
            "index": None,
            "bad_files": bad_files,
            "skipped": len(items),
        }
    return {
        "video": torch.stack(
            [item["video"] for item in good]
        ),  # (B, C, T, H, W) or (B, V, C, T, H, W)
        "label": torch.tensor([item["label"] for item in good]),
        "index": torch.tensor([item["index"] for item in good]),
        "bad_files": bad_files,
        "skipped": len(items) - len(good),
    }
