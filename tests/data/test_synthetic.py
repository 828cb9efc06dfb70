"""The built-in synthetic motion dataset: determinism, motion conventions, frame statistics of
time-reversal partners, and the files the writer leaves."""

import dataclasses
import json

import av
import numpy as np
import pytest

from tubelet.data.annotations import read_annotations
from tubelet.data.synthetic import (
    CLASSES,
    REVERSAL_PAIRS,
    default_dataset_dir,
    ensure_synthetic_dataset,
    render_clip,
    render_scene,
    sample_scene,
    write_synthetic_dataset,
)

FRAMES, SIZE = 8, 32


def object_mask(label: int, seed: int) -> np.ndarray:
    """The object's alpha per frame, (T, H, W) in [0, 1]: the clip drawn as a white object
    (premultiplied) on a black background without noise, where the shadow darkens nothing."""
    scene = sample_scene(label, seed=seed, num_frames=FRAMES, size=SIZE)
    sprite = scene.sprite.copy()
    sprite[..., :3] = sprite[..., 3:4]
    flat = dataclasses.replace(
        scene, background=np.zeros_like(scene.background), sprite=sprite, noise_std=0.0
    )
    return render_scene(flat)[..., 0] / 255.0


def mask_stats(mask: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame area (pixels), centroid (pixels) and principal-axis angle (radians, unwrapped over
    time; in image coordinates with y down, so a growing angle turns clockwise on screen)."""
    ys, xs = np.mgrid[: mask.shape[1], : mask.shape[2]] + 0.5
    area = mask.sum((1, 2))
    weight = np.maximum(area, 1e-9)
    cx = (mask * xs).sum((1, 2)) / weight
    cy = (mask * ys).sum((1, 2)) / weight
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    mxx, myy, mxy = ((mask * a * b).sum((1, 2)) for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    angle = np.unwrap(np.arctan2(2 * mxy, mxx - myy)) / 2  # the axis is defined modulo 180 degrees
    return {"area": area, "cx": cx, "cy": cy, "angle": angle}


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    values = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, values, side="right") / len(a)
    cdf_b = np.searchsorted(b, values, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def test_classes_come_in_reversal_pairs():
    assert CLASSES[:4] == ("move_left", "move_right", "move_up", "move_down")
    assert len(CLASSES) == 10
    assert sorted(name for pair in REVERSAL_PAIRS for name in pair) == sorted(CLASSES)
    assert ("rotate_cw", "rotate_ccw") in REVERSAL_PAIRS
    assert ("appear", "disappear") in REVERSAL_PAIRS


@pytest.mark.parametrize("label", range(len(CLASSES)))
def test_render_clip_shape_dtype_and_determinism(label):
    clip = render_clip(label, seed=3, num_frames=FRAMES, size=SIZE)
    assert clip.shape == (FRAMES, SIZE, SIZE, 3)
    assert clip.dtype == np.uint8
    assert clip.flags.c_contiguous
    assert render_clip(label, seed=3, num_frames=FRAMES, size=SIZE).tobytes() == clip.tobytes()
    other = render_clip(label, seed=4, num_frames=FRAMES, size=SIZE)
    assert np.abs(other.astype(int) - clip).mean() > 5


def test_default_clip_is_textured_and_moving():
    clip = render_clip(CLASSES.index("move_right"), seed=0).astype(float)
    assert clip.shape == (24, 72, 72, 3)
    assert clip[0].std() > 10  # a textured background, not a flat colour
    assert np.abs(clip[-1] - clip[0]).mean() > 3


@pytest.mark.parametrize(("first", "second"), REVERSAL_PAIRS)
def test_partners_with_the_same_seed_are_exact_reversals(first, second):
    forward = render_clip(CLASSES.index(first), seed=7, num_frames=FRAMES, size=SIZE)
    backward = render_clip(CLASSES.index(second), seed=7, num_frames=FRAMES, size=SIZE)
    np.testing.assert_array_equal(backward, forward[::-1])
    assert not np.array_equal(forward[0], forward[-1])


@pytest.mark.parametrize(
    ("name", "stat", "sign"),
    [
        ("move_left", "cx", -1),
        ("move_right", "cx", 1),
        ("move_up", "cy", -1),
        ("move_down", "cy", 1),
        ("zoom_in", "area", 1),
        ("zoom_out", "area", -1),
        ("rotate_cw", "angle", 1),
        ("rotate_ccw", "angle", -1),
        ("appear", "area", 1),
        ("disappear", "area", -1),
    ],
)
def test_motion_direction(name, stat, sign):
    label = CLASSES.index(name)
    for seed in range(4):
        stats = mask_stats(object_mask(label, seed))
        change = sign * (stats[stat][-1] - stats[stat][0])
        if stat in ("cx", "cy"):
            assert change > 0.25 * SIZE, (seed, stats[stat])  # it moves 30-50% of the frame
        elif stat == "angle":
            assert np.deg2rad(80) < change < np.deg2rad(150), (seed, np.rad2deg(stats[stat]))
        elif name.startswith("zoom"):
            big, small = max(stats["area"][[0, -1]]), min(stats["area"][[0, -1]])
            assert change > 0 and big > 3 * small, (seed, stats["area"])
        else:
            start = stats["area"][0] if sign > 0 else stats["area"][-1]
            assert change > 0 and start < 1.0, (seed, stats["area"])  # absent at one end
        # The other kinds of motion stay small.
        if stat != "cx":
            assert abs(stats["cx"][-1] - stats["cx"][0]) < 0.1 * SIZE or stats["area"].min() < 1
        if stat != "angle" and name not in ("appear", "disappear"):
            assert abs(stats["angle"][-1] - stats["angle"][0]) < np.deg2rad(15)


@pytest.mark.parametrize(
    ("first", "stat"),
    [("move_left", "cx"), ("move_up", "cy"), ("zoom_in", "area"), ("rotate_cw", "angle")]
    + [("appear", "area")],
)
def test_partners_share_single_frame_statistics_but_not_order(first, stat):
    """Pooled over all frames of independent videos, the statistic that moves has the same
    distribution in both classes of a pair (a frame carries no class signal), while its
    first->last change has one sign per class, opposite between partners."""
    label, videos = CLASSES.index(first), 24
    forward = [mask_stats(object_mask(label, seed))[stat] for seed in range(videos)]
    backward = [mask_stats(object_mask(label + 1, 1000 + seed))[stat] for seed in range(videos)]
    forward_sign = {np.sign(s[-1] - s[0]) for s in forward}
    assert len(forward_sign) == 1
    assert {np.sign(s[-1] - s[0]) for s in backward} == {-forward_sign.pop()}
    if stat == "angle":  # the axis' orientation on screen, not the unwrapped angle
        forward, backward = ([np.mod(s, np.pi) for s in x] for x in (forward, backward))
    assert ks_statistic(np.concatenate(forward), np.concatenate(backward)) < 0.2
    if stat != "angle":  # the check can see a difference: the clips' first halves differ
        half = FRAMES // 2
        early = [np.concatenate([s[:half] for s in x]) for x in (forward, backward)]
        assert ks_statistic(*early) > 0.5


def test_object_stands_out_from_the_background():
    for label in range(len(CLASSES)):
        scene = sample_scene(label, seed=label, num_frames=FRAMES, size=SIZE)
        clip = render_scene(scene).astype(float)
        no_object = dataclasses.replace(scene, sprite=np.zeros_like(scene.sprite))
        background = render_scene(no_object).astype(float)
        inside = object_mask(label, label) > 0.9
        assert inside.sum() > 20, CLASSES[label]
        assert np.abs(clip - background).sum(-1)[inside].mean() > 60, CLASSES[label]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="label"):
        render_clip(10, seed=0)
    with pytest.raises(ValueError, match="seed"):
        render_clip(0, seed=-1)
    with pytest.raises(ValueError, match="num_frames"):
        render_clip(0, seed=0, num_frames=1)
    with pytest.raises(ValueError, match="val_fraction"):
        write_synthetic_dataset("/nonexistent", val_fraction=1.0)
    with pytest.raises(ValueError, match="videos_per_class"):
        write_synthetic_dataset("/nonexistent", videos_per_class=1)


def test_write_synthetic_dataset(tmp_path):
    calls = []
    root = write_synthetic_dataset(
        tmp_path / "ds",
        videos_per_class=2,
        num_frames=FRAMES,
        size=SIZE,
        fps=8.0,
        seed=5,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(i, 20) for i in range(1, 21)]
    assert (root / "classes.txt").read_text().split() == list(CLASSES)
    pairs = [line.split() for line in (root / "reversal_pairs.txt").read_text().splitlines()]
    assert [tuple(p) for p in pairs] == list(REVERSAL_PAIRS)
    params = json.loads((root / "dataset.json").read_text())
    assert params == {
        "name": "tubelet-synthetic-motion",
        "version": 1,
        "seed": 5,
        "num_frames": FRAMES,
        "size": SIZE,
        "fps": 8.0,
        "videos_per_class": 2,
        "val_fraction": 0.25,
    }
    train = (root / "train.csv").read_text().splitlines()
    val = (root / "val.csv").read_text().splitlines()
    assert len(train) == len(val) == 10
    assert train[0] == "videos/move_left/move_left_0000.mp4 0"
    assert val[-1] == "videos/disappear/disappear_0001.mp4 9"
    for line in train + val:
        relative, label = line.split()
        with av.open(str(root / relative)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == FRAMES
        assert frames[0].shape == (SIZE, SIZE, 3)
        assert relative.startswith(f"videos/{CLASSES[int(label)]}/")
    annotations = read_annotations(root, "val")
    assert annotations.classes == CLASSES
    assert annotations.reversal_pairs == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    assert len({r.path for r in annotations.records}) == 10

    # Same parameters, same clips: rendering is exact, H.264 at crf 18 stays close to it. (The
    # coded bytes are not compared: x264 gave different bytes for the same frames from one call to
    # the next in one process, depending on what ran before.)
    again = write_synthetic_dataset(
        tmp_path / "again", videos_per_class=2, num_frames=FRAMES, size=SIZE, fps=8.0, seed=5
    )
    assert (again / "train.csv").read_text() == "\n".join(train) + "\n"
    relative, label = val[0].split()
    index = int(relative.removesuffix(".mp4").rsplit("_", 1)[1])
    seed = int(np.random.SeedSequence([5, int(label), index]).generate_state(1)[0])
    rendered = render_clip(int(label), seed=seed, num_frames=FRAMES, size=SIZE).astype(int)
    for folder in (root, again):
        with av.open(str(folder / relative)) as container:
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        assert np.abs(decoded - rendered).mean() < 4, folder


def test_videos_of_a_dataset_differ(tmp_path):
    root = write_synthetic_dataset(
        tmp_path / "ds", videos_per_class=2, num_frames=4, size=SIZE, fps=8.0
    )

    def first_frame(relative: str) -> np.ndarray:
        with av.open(str(root / relative)) as container:
            return next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)

    names = [line.split()[0] for line in (root / "train.csv").read_text().splitlines()]
    left, right = names[0], names[1]  # move_left_0000 and move_right_0000: independent seeds
    assert np.abs(first_frame(left) - first_frame(right)).mean() > 5


def test_default_dataset_dir_follows_xdg_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = default_dataset_dir()
    assert folder.parent == tmp_path / "tubelet"
    assert folder.name.startswith("synthetic-motion-v1-s0-n60-f24-72px")
    assert default_dataset_dir(seed=1) != folder
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ".cache" in default_dataset_dir().parts


def test_ensure_reuses_and_regenerates(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    params = {"videos_per_class": 2, "num_frames": 4, "size": 16, "fps": 4.0}
    calls = []
    root = ensure_synthetic_dataset(**params, progress=lambda d, t: calls.append(d))
    assert root == default_dataset_dir(**params)
    assert len(calls) == 20 and (root / "dataset.json").is_file()
    stamp = (root / "dataset.json").stat().st_mtime_ns

    assert ensure_synthetic_dataset(**params, progress=lambda d, t: calls.append(d)) == root
    assert len(calls) == 20  # reused, nothing rendered
    assert (root / "dataset.json").stat().st_mtime_ns == stamp

    target = tmp_path / "mine"
    ensure_synthetic_dataset(target, **params)
    first = (target / "train.csv").read_text()
    ensure_synthetic_dataset(target, **params, seed=1)
    assert json.loads((target / "dataset.json").read_text())["seed"] == 1
    assert (target / "train.csv").read_text() == first  # same layout, new videos
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mine"]  # no staging left

    (target / "dataset.json").unlink()  # looks interrupted: regenerated, not reused
    ensure_synthetic_dataset(target, **params)
    assert json.loads((target / "dataset.json").read_text())["seed"] == 0


def test_ensure_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="no synthetic dataset"):
        ensure_synthetic_dataset(tmp_path, videos_per_class=2, num_frames=4, size=16)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_ensure_leaves_nothing_behind_when_interrupted(monkeypatch, tmp_path):
    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(
            tmp_path / "ds", videos_per_class=2, num_frames=4, size=16, progress=stop
        )
    assert list(tmp_path.iterdir()) == []
