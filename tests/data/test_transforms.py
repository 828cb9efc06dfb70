"""Video transforms: shapes, dtypes, one box for all frames, and values checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from tubelet.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchNormalize,
    CropBox,
    EvalTransform,
    TrainTransform,
    center_crop,
    hflip,
    model_layout,
    normalize,
    random_resized_box,
    random_resized_crop,
    short_side_resize,
    three_crop,
)


def random_clip(t: int, h: int, w: int, seed: int = 0, high: int = 256) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (t, h, w, 3), dtype=torch.uint8, generator=generator)


def offset_clip(t: int, h: int, w: int, step: int = 10, seed: int = 0) -> torch.Tensor:
    """Frames that differ only by a constant: frame i = base + step * i."""
    base = random_clip(1, h, w, seed=seed, high=256 - step * (t - 1))
    return base + step * torch.arange(t, dtype=torch.uint8).view(t, 1, 1, 1)


def column_clip(h: int, w: int) -> torch.Tensor:
    """One frame whose pixels hold their column index (w <= 256)."""
    columns = torch.arange(w, dtype=torch.uint8).view(1, 1, w, 1)
    return columns.expand(2, h, w, 3).contiguous()


def assert_same_box(frames: torch.Tensor, step: int = 10) -> None:
    """Output frame i minus frame 0 is step * i (to within rounding of the resample)."""
    diff = frames.int() - frames[:1].int()  # (T, H, W, 3)
    expected = step * torch.arange(frames.shape[0]).view(-1, 1, 1, 1)
    assert (diff - expected).abs().max() <= 1
    assert (diff == expected).float().mean() > 0.99


# --- resize ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("h", "w", "size", "expected"),
    [
        (24, 32, 12, (12, 16)),
        (32, 24, 12, (16, 12)),
        (30, 50, 20, (20, 33)),
        (40, 60, 17, (17, 25)),
        (20, 20, 40, (40, 40)),
    ],
)
def test_short_side_resize_keeps_aspect(h, w, size, expected):
    out = short_side_resize(random_clip(3, h, w), size)
    assert out.dtype == torch.uint8
    assert out.shape == (3, *expected, 3)
    assert out.is_contiguous()


def test_short_side_resize_matches_torchvision():
    clip = random_clip(2, 40, 60, seed=1)
    ours = short_side_resize(clip, 17)  # (T, 17, 25, 3)
    reference = TF.resize(clip.permute(0, 3, 1, 2), [17], antialias=True)  # (T, 3, 17, 25)
    assert (ours.permute(0, 3, 1, 2).int() - reference.int()).abs().max() <= 1


def test_short_side_resize_keeps_a_constant_frame_constant():
    clip = torch.full((2, 30, 40, 3), 123, dtype=torch.uint8)
    assert torch.equal(
        short_side_resize(clip, 11), torch.full((2, 11, 14, 3), 123, dtype=torch.uint8)
    )


def test_resize_to_the_same_size_is_the_identity():
    clip = random_clip(2, 16, 24)
    assert torch.equal(short_side_resize(clip, 16), clip)


# --- random resized crop ----------------------------------------------------------------------------


def test_random_boxes_stay_inside_the_image():
    rng = np.random.default_rng(0)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(1, 200, size=2))
        box = random_resized_box(h, w, rng=rng)
        assert isinstance(box, CropBox)
        assert box.height >= 1 and box.width >= 1
        assert box.top >= 0 and box.left >= 0
        assert box.top + box.height <= h and box.left + box.width <= w


def test_random_boxes_respect_scale_and_ratio():
    rng = np.random.default_rng(1)
    h, w = 120, 160
    tops, lefts = set(), set()
    for _ in range(300):
        box = random_resized_box(h, w, scale=(0.3, 0.6), ratio=(0.8, 1.25), rng=rng)
        area = box.height * box.width / (h * w)
        assert 0.3 - 0.02 <= area <= 0.6 + 0.02  # integer rounding of the sides
        assert 0.8 - 0.03 <= box.width / box.height <= 1.25 + 0.03
        tops.add(box.top)
        lefts.add(box.left)
    assert len(tops) > 20 and len(lefts) > 20


def test_random_box_falls_back_to_a_centred_box():
    # A 4:1 frame cannot hold a box of aspect 1 and area 90%: every draw fails.
    box = random_resized_box(
        10, 40, scale=(0.9, 1.0), ratio=(1.0, 1.0), rng=np.random.default_rng(0)
    )
    assert box == CropBox(0, 15, 10, 10)


def test_random_resized_crop_uses_one_box_for_every_frame():
    for seed in range(10):
        clip = offset_clip(4, 36, 48, seed=seed)
        out = random_resized_crop(clip, 20, rng=np.random.default_rng(seed))
        assert out.shape == (4, 20, 20, 3) and out.dtype == torch.uint8
        assert_same_box(out)


def test_random_resized_crop_takes_the_box_it_draws():
    clip = random_clip(2, 30, 40, seed=2)
    box = random_resized_box(30, 40, rng=np.random.default_rng(5))
    out = random_resized_crop(clip, 16, rng=np.random.default_rng(5))
    region = clip[:, box.top : box.top + box.height, box.left : box.left + box.width]
    reference = TF.resize(region.permute(0, 3, 1, 2), [16, 16], antialias=True)
    assert (out.permute(0, 3, 1, 2).int() - reference.int()).abs().max() <= 1


@pytest.mark.parametrize(("scale", "ratio"), [((0.0, 1.0), (0.75, 1.33)), ((0.5, 1.0), (2.0, 1.0))])
def test_random_box_rejects_bad_ranges(scale, ratio):
    with pytest.raises(ValueError, match="scale|ratio"):
        random_resized_box(10, 10, scale=scale, ratio=ratio, rng=np.random.default_rng(0))


# --- fixed crops and flip -------------------------------------------------------------------------


def test_center_crop_is_centred():
    clip = column_clip(10, 21)
    out = center_crop(clip, 7)
    assert out.shape == (2, 7, 7, 3)
    assert out[0, 0, :, 0].tolist() == list(range(7, 14))


@pytest.mark.parametrize(("h", "w"), [(12, 40), (40, 12), (16, 16)])
def test_three_crop_covers_the_long_side(h, w):
    y = torch.arange(h, dtype=torch.uint8).view(1, h, 1, 1).expand(2, h, w, 1)
    x = torch.arange(w, dtype=torch.uint8).view(1, 1, w, 1).expand(2, h, w, 1)
    clip = torch.cat([y, x, torch.zeros_like(x)], dim=3)  # channel 0 = row, channel 1 = column
    size = min(h, w) - 2
    crops = three_crop(clip, size)
    assert len(crops) == 3 and all(c.shape == (2, size, size, 3) for c in crops)
    along = 1 if w >= h else 0  # channel that runs along the long side
    across = 1 - along
    starts = [int(c[0, 0, 0, along]) for c in crops]
    ends = [int(c[0, -1, -1, along]) for c in crops]
    long = max(h, w)
    assert starts == [0, (long - size) // 2, long - size]
    assert ends[-1] == long - 1
    assert all(int(c[0, 0, 0, across]) == 1 for c in crops)  # centred across: (short - size) // 2


def test_crops_larger_than_the_frame_are_refused():
    with pytest.raises(ValueError, match="short_side_resize"):
        center_crop(random_clip(1, 10, 20), 11)
    with pytest.raises(ValueError, match="short_side_resize"):
        three_crop(random_clip(1, 20, 10), 11)


def test_hflip_mirrors_columns_and_twice_is_identity():
    clip = random_clip(3, 5, 7)
    flipped = hflip(clip)
    assert torch.equal(flipped[:, :, 0], clip[:, :, -1])
    assert not torch.equal(flipped, clip)
    assert torch.equal(hflip(flipped), clip)


# --- normalize ------------------------------------------------------------------------------------


def test_normalize_matches_a_hand_computation():
    clip = random_clip(2, 3, 4, seed=3)
    out = normalize(clip, IMAGENET_MEAN, IMAGENET_STD)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 3, 4) and out.is_contiguous()
    values = clip.numpy().astype(np.float64)
    for c in range(3):
        for t in range(2):
            expected = (values[t, :, :, c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
            np.testing.assert_allclose(out[c, t].numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("mean", "std"), [((0.5, 0.5), (0.5, 0.5, 0.5)), ((0.5, 0.5, 0.5), (0.5, 0.0, 0.5))]
)
def test_normalize_rejects_bad_statistics(mean, std):
    with pytest.raises(ValueError, match="std|mean"):
        normalize(random_clip(1, 2, 2), mean, std)


@pytest.mark.parametrize(
    "clip",
    [torch.zeros(2, 4, 4, 3), torch.zeros(2, 4, 4, 1, dtype=torch.uint8), torch.zeros(4, 4, 3)],
)
def test_transforms_reject_clips_that_are_not_uint8_thwc(clip):
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        short_side_resize(clip, 2)


# --- composed transforms --------------------------------------------------------------------------


def test_train_transform_output():
    transform = TrainTransform(size=16)
    assert transform.resize_to == 18
    clip = offset_clip(4, 30, 40)
    out = transform(clip, np.random.default_rng(0))
    assert out.shape == (3, 4, 16, 16) and out.dtype == torch.float32
    assert torch.equal(out, transform(clip, np.random.default_rng(0)))
    assert not torch.equal(out, transform(clip, np.random.default_rng(1)))
    # One box for all frames: undo the normalisation and compare frames.
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    pixels = ((out * std + mean) * 255).round().to(torch.uint8).permute(1, 2, 3, 0)  # (T, H, W, 3)
    assert_same_box(pixels)


def test_train_transform_resizes_the_short_side_before_cropping():
    # A full-frame box (scale 1, the frame's own aspect) leaves only the short-side resize.
    clip = random_clip(2, 40, 60, seed=4)
    transform = TrainTransform(size=20, resize=20, scale=(1.0, 1.0), ratio=(1.5, 1.5))
    out = transform(clip, np.random.default_rng(0))
    resized = short_side_resize(clip, 20)  # (T, 20, 30, 3): the box is all of it
    cropped = random_resized_crop(
        resized, 20, scale=(1.0, 1.0), ratio=(1.5, 1.5), rng=np.random.default_rng(0)
    )  # (T, 20, 20, 3)
    expected = normalize(cropped, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("flip", [False, True])
def test_train_transform_flips_only_when_asked(flip):
    clip = column_clip(12, 18)
    transform = TrainTransform(size=12, resize=12, scale=(1.0, 1.0), ratio=(1.5, 1.5), flip=flip)
    first_columns = set()
    for seed in range(30):
        out = transform(clip, np.random.default_rng(seed))  # (C, T, S, S)
        first_columns.add(float(out[0, 0, 0, 0]))
    assert len(first_columns) == (2 if flip else 1)


def test_train_transform_validates():
    with pytest.raises(ValueError, match="size"):
        TrainTransform(size=0)
    with pytest.raises(ValueError, match="resize"):
        TrainTransform(size=8, resize=0)


@pytest.mark.parametrize(("h", "w"), [(24, 40), (40, 24)])
def test_eval_transform_views(h, w):
    clip = random_clip(3, h, w, seed=5)
    one = EvalTransform(size=12)(clip)
    three = EvalTransform(size=12, crops=3)(clip)
    assert one.shape == (1, 3, 3, 12, 12) and one.dtype == torch.float32
    assert three.shape == (3, 3, 3, 12, 12)
    assert torch.equal(three[1], one[0])  # the middle of the three crops is the centre crop
    assert not torch.equal(three[0], three[2])
    resized = short_side_resize(clip, 12)
    expected = normalize(center_crop(resized, 12), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(one[0], expected)


def test_eval_transform_refuses_other_crop_counts():
    with pytest.raises(ValueError, match="crops"):
        EvalTransform(size=8, crops=2)


# --- uint8 clips normalised on the device ---------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_normalize_equals_normalize_on_each_clip(channels_last):
    clips = [random_clip(2, 5, 6, seed=s) for s in range(3)]
    batch = {"video": torch.stack([model_layout(c) for c in clips]), "label": torch.arange(3)}
    out = BatchNormalize(IMAGENET_MEAN, IMAGENET_STD, channels_last=channels_last)(batch)
    assert out["label"] is batch["label"] and batch["video"].dtype == torch.uint8
    video = out["video"]
    assert video.dtype == torch.float32 and video.shape == (3, 3, 2, 5, 6)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    assert video.is_contiguous(memory_format=layout)
    expected = torch.stack([normalize(c, IMAGENET_MEAN, IMAGENET_STD) for c in clips])
    torch.testing.assert_close(video, expected, rtol=0, atol=2e-6)


def test_batch_normalize_takes_views_and_passes_float_clips_through():
    views = torch.stack([EvalTransform(size=4, crops=3, normalized=False)(random_clip(2, 4, 8))])
    assert views.dtype == torch.uint8 and views.shape == (1, 3, 3, 2, 4, 4)
    out = BatchNormalize()({"video": views})["video"]
    assert out.shape == views.shape and out.dtype == torch.float32
    floats = {"video": out}
    assert BatchNormalize()(floats) is floats
    empty = {"video": None, "bad_files": []}
    assert BatchNormalize()(empty) is empty
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, T, H, W\)"):
        BatchNormalize()({"video": torch.zeros(2, 4, 2, 3, 3, dtype=torch.uint8)})
    with pytest.raises(ValueError, match="std"):
        BatchNormalize(std=(0.5, 0.0, 0.5))


@pytest.mark.parametrize("crops", [1, 3])
def test_uint8_transforms_then_batch_normalize_equal_the_float_transforms(crops):
    clip = random_clip(3, 30, 40, seed=6)
    float_train = TrainTransform(size=16, flip=True)(clip, np.random.default_rng(2))
    uint8_train = TrainTransform(size=16, flip=True, normalized=False)(
        clip, np.random.default_rng(2)
    )
    assert uint8_train.dtype == torch.uint8 and uint8_train.shape == (3, 3, 16, 16)
    normalized = BatchNormalize()({"video": uint8_train[None]})["video"][0]
    torch.testing.assert_close(normalized, float_train, rtol=0, atol=2e-6)
    float_eval = EvalTransform(size=16, crops=crops)(clip)
    uint8_eval = EvalTransform(size=16, crops=crops, normalized=False)(clip)
    normalized = BatchNormalize()({"video": uint8_eval[None]})["video"][0]
    torch.testing.assert_close(normalized, float_eval, rtol=0, atol=2e-6)
