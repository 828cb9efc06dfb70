"""Video transforms on decoded clips, `uint8 (T, H, W, 3)` tensors as the reader returns them.

Geometric transforms keep the uint8 frame layout and apply one box to every frame of a clip;
`normalize` turns a clip into the model layout `float32 (C, T, H, W)`. `TrainTransform` and
`EvalTransform` chain them. Resampling is bilinear with antialiasing, done on all frames at once.

Training on a GPU moves clips there as uint8 and normalises them on the device: the transforms
with `normalized=False` stop at the model layout `uint8 (C, T, H, W)`, and `BatchNormalize` does
the rest on a batch, wherever it is. Worker queues, pinned memory and the copy to the device then
carry a quarter of the bytes of float32 clips.

Horizontal flipping is off by default: some datasets' labels name a direction (move_left /
move_right; SSv2 "pushing something from left to right"), and a flip would swap such a label.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tubelet.normalization import IMAGENET_MEAN, IMAGENET_STD


class CropBox(NamedTuple):
    """A crop in pixels: rows `top:top + height`, columns `left:left + width`."""

    top: int
    left: int
    height: int
    width: int


def short_side_resize(clip: Tensor, size: int) -> Tensor:
    """Resize `uint8 (T, H, W, 3)` so its short side is `size`, keeping the aspect ratio
    -> `uint8 (T, H', W', 3)`. The long side is `floor(long * size / short)`, as torchvision and
    PyTorchVideo compute it, so evaluation crops match theirs."""
    _check_clip(clip)
    _check_positive("size", size)
    height, width = clip.shape[1:3]
    if height <= width:
        return _resize(clip, size, width * size // height)
    return _resize(clip, height * size // width, size)


def random_resized_box(
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rng: np.random.Generator,
) -> CropBox:
    """A random box inside a `height x width` image whose area is a fraction in `scale` of the image's
    and whose width/height lies in `ratio` (log-uniform).

    Area and aspect ranges follow Szegedy et al. 2015 ("Going deeper with convolutions", sec. 6).
    Up to 10 draws are tried; when none fits inside the image, the largest centred box whose aspect
    is the image's clamped to `ratio` is returned.
    """
    _check_positive("height", height)
    _check_positive("width", width)
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        box_width = round(math.sqrt(target * aspect))
        box_height = round(math.sqrt(target / aspect))
        if 0 < box_width <= width and 0 < box_height <= height:
            top = int(rng.integers(0, height - box_height + 1))
            left = int(rng.integers(0, width - box_width + 1))
            return CropBox(top, left, box_height, box_width)
    aspect = min(max(width / height, ratio[0]), ratio[1])
    box_width = min(width, max(1, round(height * aspect)))
    box_height = min(height, max(1, round(box_width / aspect)))
    return CropBox((height - box_height) // 2, (width - box_width) // 2, box_height, box_width)


def random_resized_crop(
    clip: Tensor,
    size: int,
    *,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rng: np.random.Generator,
) -> Tensor:
    """Crop one `random_resized_box` from every frame of `uint8 (T, H, W, 3)` and resize it to
    `uint8 (T, size, size, 3)`. Only the box is resampled."""
    _check_clip(clip)
    _check_positive("size", size)
    box = random_resized_box(clip.shape[1], clip.shape[2], scale=scale, ratio=ratio, rng=rng)
    return _resize(_crop(clip, box), size, size)


def center_crop(clip: Tensor, size: int) -> Tensor:
    """The centred `size x size` box of every frame: `uint8 (T, H, W, 3)` -> `(T, size, size, 3)`
    (a view of `clip`)."""
    height, width = _check_crop(clip, size)
    return _crop(clip, CropBox((height - size) // 2, (width - size) // 2, size, size))


def three_crop(clip: Tensor, size: int) -> list[Tensor]:
    """Three `size x size` boxes spread along the long side, centred across the short side: left,
    centre, right for landscape frames; top, centre, bottom for portrait ones. Each is
    `(T, size, size, 3)`, a view of `clip`; together they cover the long side."""
    height, width = _check_crop(clip, size)
    if width >= height:
        top = (height - size) // 2
        lefts = (0, (width - size) // 2, width - size)
        boxes = [CropBox(top, left, size, size) for left in lefts]
    else:
        left = (width - size) // 2
        tops = (0, (height - size) // 2, height - size)
        boxes = [CropBox(top, left, size, size) for top in tops]
    return [_crop(clip, box) for box in boxes]


def hflip(clip: Tensor) -> Tensor:
    """Mirror every frame of `(T, H, W, 3)` left to right."""
    _check_clip(clip)
    return clip.flip(2)


def normalize(clip: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """`uint8 (T, H, W, 3)` -> `float32 (C, T, H, W)` with `(x / 255 - mean) / std` per channel."""
    _check_clip(clip)
    _check_stats(mean, std)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=clip.device).view(3, 1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=clip.device).view(3, 1, 1, 1)
    x = clip.permute(3, 0, 1, 2)  # (C, T, H, W)
    x = x.to(torch.float32, memory_format=torch.contiguous_format)
    return x.div_(255.0).sub_(mean_t).div_(std_t)


def model_layout(clip: Tensor) -> Tensor:
    """`uint8 (T, H, W, 3)` -> `uint8 (C, T, H, W)`, contiguous: the model layout, not normalised
    (`BatchNormalize` normalises it later, on the device)."""
    _check_clip(clip)
    return clip.permute(3, 0, 1, 2).contiguous()


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need one value per RGB channel, got {mean} and {std}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be > 0 for every channel, got {std}")


@dataclass(frozen=True)
class BatchNormalize:
    """Normalise a batch's uint8 clips where they lie (on the GPU after a uint8 copy):
    `video uint8 (..., C, T, H, W)` -> `float32`, `(x / 255 - mean) / std` per channel, as
    `normalize` computes it (equal within float32 rounding). A float `video` (already normalised)
    passes through.

    `channels_last`: 5-D batches come out in `channels_last_3d` memory (the layout a
    channels-last model runs in), at no extra copy.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channels_last: bool = False

    def __post_init__(self) -> None:
        _check_stats(self.mean, self.std)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        video = batch.get("video")
        if not isinstance(video, Tensor) or video.dtype != torch.uint8:
            return batch
        if video.ndim < 4 or video.shape[-4] != 3:
            raise ValueError(f"expected uint8 clips (..., 3, T, H, W), got {tuple(video.shape)}")
        layout = torch.channels_last_3d if self.channels_last and video.ndim == 5 else None
        x = video.to(torch.float32, memory_format=layout or torch.contiguous_format)
        scale, shift = _affine(self.mean, self.std, x.device)
        return {**batch, "video": torch.addcmul(shift, x, scale, out=x)}


@functools.cache
def _affine(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[Tensor, Tensor]:
    """(scale, shift), each (3, 1, 1, 1) on `device`, of the multiply-add x / (255 std) - mean / std.
    Made once per device: a tensor made from Python numbers on a GPU is a blocking copy."""
    scale = torch.tensor([1 / (255 * s) for s in std], device=device).view(3, 1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=device).view(3, 1, 1, 1)
    return scale, shift


@dataclass(frozen=True)
class TrainTransform:
    """Training augmentation: `uint8 (T, H, W, 3)` -> `float32 (C, T, size, size)`.

    The short side is resized to `resize` (default `round(size * 1.15)`), so that crops carry the
    detail of a frame near the model's resolution whatever the source resolution; then a random
    resized crop (`scale`, `ratio`) to `size`, the same box for every frame; then, when `flip`, a
    horizontal flip with probability 1/2 (off by default: see the module docstring); then
    `normalize` with `mean` and `std`, or, with `normalized=False`, `uint8 (C, T, size, size)` for
    `BatchNormalize` to normalise on the device.
    """

    size: int
    resize: int | None = None
    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    normalized: bool = True

    def __post_init__(self) -> None:
        _check_positive("size", self.size)
        if self.resize is not None:
            _check_positive("resize", self.resize)

    @property
    def resize_to(self) -> int:
        """The short side, in pixels, that frames are resized to before cropping."""
        return round(self.size * 1.15) if self.resize is None else self.resize

    def __call__(self, clip: Tensor, rng: np.random.Generator) -> Tensor:
        clip = short_side_resize(clip, self.resize_to)  # (T, H', W', 3)
        clip = random_resized_crop(clip, self.size, scale=self.scale, ratio=self.ratio, rng=rng)
        if self.flip and rng.random() < 0.5:
            clip = hflip(clip)
        if not self.normalized:
            return model_layout(clip)  # uint8 (C, T, size, size)
        return normalize(clip, self.mean, self.std)  # (C, T, size, size)


@dataclass(frozen=True)
class EvalTransform:
    """Evaluation views: `uint8 (T, H, W, 3)` -> `float32 (crops, C, T, size, size)`.

    The short side is resized to `resize` (default `size`), then `crops` = 1 takes the centre crop
    and `crops` = 3 the `three_crop` boxes; each view is normalised with `mean` and `std` (with
    `normalized=False`: left `uint8 (crops, C, T, size, size)` for `BatchNormalize`).
    """

    size: int
    crops: int = 1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: int | None = None
    normalized: bool = True

    def __post_init__(self) -> None:
        _check_positive("size", self.size)
        if self.resize is not None and self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be at least the crop size ({self.size})")
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 (centre) or 3 (three_crop), got {self.crops}")

    @property
    def resize_to(self) -> int:
        """The short side, in pixels, that frames are resized to before cropping."""
        return self.resize or self.size

    def __call__(self, clip: Tensor) -> Tensor:
        clip = short_side_resize(clip, self.resize_to)  # (T, H', W', 3)
        views = [center_crop(clip, self.size)] if self.crops == 1 else three_crop(clip, self.size)
        if not self.normalized:
            return torch.stack([model_layout(v) for v in views])  # uint8 (V, C, T, S, S)
        return torch.stack([normalize(v, self.mean, self.std) for v in views])  # (V, C, T, S, S)


def _resize(clip: Tensor, height: int, width: int) -> Tensor:
    """Bilinear, antialiased resize of `uint8 (T, H, W, 3)` to `(T, height, width, 3)`."""
    if clip.shape[1:3] == (height, width):
        return clip
    # (T, 3, H, W) in channels-last memory: no copy to reorder, and interpolate keeps that layout,
    # so the permute back yields a contiguous (T, H', W', 3).
    x = clip.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (T, H', W', 3)


def _crop(clip: Tensor, box: CropBox) -> Tensor:
    return clip[:, box.top : box.top + box.height, box.left : box.left + box.width]


def _check_clip(clip: Tensor) -> None:
    if not isinstance(clip, Tensor) or clip.dtype != torch.uint8 or clip.ndim != 4:
        got = f"{clip.dtype} {tuple(clip.shape)}" if isinstance(clip, Tensor) else type(clip)
        raise ValueError(f"expected a uint8 clip (T, H, W, 3) as the reader returns, got {got}")
    if clip.shape[-1] != 3:
        raise ValueError(f"expected RGB frames (T, H, W, 3), got shape {tuple(clip.shape)}")
    if min(clip.shape[:3]) < 1:
        raise ValueError(
            f"expected a clip with at least one frame and pixel, got {tuple(clip.shape)}"
        )


def _check_crop(clip: Tensor, size: int) -> tuple[int, int]:
    _check_clip(clip)
    _check_positive("size", size)
    height, width = clip.shape[1:3]
    if size > min(height, width):
        raise ValueError(
            f"crop size {size} exceeds the frame size {height}x{width}: "
            "resize the short side to at least the crop size first (short_side_resize)"
        )
    return height, width


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
