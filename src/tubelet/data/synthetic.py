"""The built-in synthetic motion dataset: textured objects over textured backgrounds whose ten
classes only the order of frames tells apart.

Classes come in time-reversal pairs (`REVERSAL_PAIRS`). For each pair the first class is rendered
forward and the second is the same kind of clip played backwards, so the single frames of two
partners have the same distribution by construction: a model that pools over frames without
looking at their order cannot beat chance within a pair, while a model of motion can.

Conventions (normalised image coordinates, x to the right, y down, the frame spans [-1, 1]):

| class      | forward motion (the partner plays it backwards)                          |
|------------|--------------------------------------------------------------------------|
| move_left  | the centre's x decreases by 0.6-1.0 (30-50% of the frame width)          |
| move_up    | the centre's y decreases by 0.6-1.0                                      |
| zoom_in    | the object's scale grows by a factor 1.8-2.4 (geometrically)             |
| rotate_cw  | the object turns 90-140 degrees clockwise as seen on screen              |
| appear     | opacity and scale ramp up (0 -> 1 and 0.5 -> 1) over 30-50% of the clip |

A clip is a static fractal-noise background with a random palette, one soft-edged elongated
textured object (blob or polygon) with a drop shadow, and per-frame sensor noise.
Everything is drawn from `numpy.random.Generator` seeded with `(seed, pair index)`, so the same
seed gives byte-identical frames, and `render_clip(partner, seed=s)` is exactly
`render_clip(label, seed=s)[::-1]`. The dataset writer gives every video its own seed.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from tubelet.data.cache import cache_dir, ensure_generated, write_params
from tubelet.io import write_video

CLASSES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "zoom_in",
    "zoom_out",
    "rotate_cw",
    "rotate_ccw",
    "appear",
    "disappear",
)
REVERSAL_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (CLASSES[i], CLASSES[i + 1]) for i in range(0, len(CLASSES), 2)
)
DATASET_NAME = "tubelet-synthetic-motion"
DATASET_VERSION = 1

# Where the shadow falls, in normalised units (down and to the right: light from the top left).
_SHADOW_OFFSET = (0.05, 0.07)
_SHADOW_STRENGTH = 0.45


class Track(NamedTuple):
    """Per-frame pose of the object, each an array of shape (T,).

    `cx`, `cy`: centre in normalised image coordinates (x right, y down, frame spans [-1, 1]);
    `scale`: half-size of the object's canvas in the same units; `angle`: radians, positive is
    clockwise on screen; `opacity`: in [0, 1].
    """

    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    opacity: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
    """Everything `render_scene` needs to draw a clip.

    `background`: float32 (H, W, 3) in [0, 1]; `sprite`: float32 (S, S, 5) spanning the object's
    own coordinates [-1, 1]: premultiplied RGB, alpha, and the softer alpha of its drop shadow;
    `track`: the forward motion; `noise_std`: sensor-noise standard deviation in [0, 1] units;
    `reverse`: play the clip backwards (the second class of a pair); `noise_seed`: seeds the noise.
    """

    background: np.ndarray
    sprite: np.ndarray
    track: Track
    noise_std: float
    reverse: bool
    noise_seed: int


def render_clip(label: int, *, seed: int, num_frames: int = 24, size: int = 72) -> np.ndarray:
    """Render one clip of class `CLASSES[label]`: uint8 frames of shape (num_frames, size, size, 3)."""
    return render_scene(sample_scene(label, seed=seed, num_frames=num_frames, size=size))


def sample_scene(label: int, *, seed: int, num_frames: int = 24, size: int = 72) -> Scene:
    """Draw the background, the object and its motion for class `CLASSES[label]` from `seed`.

    Partners (`label` and its reversal) with the same seed get the same scene, played in opposite
    directions.
    """
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in 0..{len(CLASSES) - 1} (one of {CLASSES}), not {label}")
    _check_clip_args(seed, num_frames, size)
    pair = label // 2
    rng = np.random.default_rng([seed, pair])
    background_hue = rng.random()
    background = _background(rng, size, background_hue)
    sprite = _sprite(rng, size, background_hue)
    track = _track(rng, pair, num_frames)
    noise_std = float(rng.uniform(1.0, 2.5)) / 255
    noise_seed = int(rng.integers(2**31))
    return Scene(background, sprite, track, noise_std, bool(label % 2), noise_seed)


def render_scene(scene: Scene) -> np.ndarray:
    """Draw `scene`: uint8 frames (T, H, W, 3), the object warped over the background per frame."""
    height, width, _ = scene.background.shape
    track = scene.track
    frames = len(track.cx)
    grid = torch.from_numpy(_sampling_grid(track, height, width))  # (T, H, W, 2)
    sprite = torch.from_numpy(scene.sprite).permute(2, 0, 1)[None]  # (1, 5, S, S)
    warped = F.grid_sample(sprite.expand(frames, -1, -1, -1), grid, align_corners=False).numpy()
    opacity = track.opacity.astype(np.float32).reshape(frames, 1, 1, 1)
    colour, alpha = warped[:, :3] * opacity, warped[:, 3:4] * opacity  # (T, 3|1, H, W)
    # The shadow is the warped shadow channel moved down-right by a few pixels.
    dx, dy = (
        round(offset * n / 2) for offset, n in zip(_SHADOW_OFFSET, (width, height), strict=True)
    )
    shadow = np.zeros_like(alpha)
    shadow[..., dy:, dx:] = warped[:, 4:5, : height - dy, : width - dx]
    shadow *= opacity * np.float32(_SHADOW_STRENGTH)
    background = scene.background.transpose(2, 0, 1)  # (3, H, W)
    video = background * (1 - shadow) * (1 - alpha) + colour  # (T, 3, H, W)
    # Grain shared by the three channels, (T, 1, H, W): a third of the cost of per-channel noise.
    grain = np.random.default_rng(scene.noise_seed).standard_normal(alpha.shape, dtype=np.float32)
    video += grain * np.float32(scene.noise_std)
    video = np.clip(video * 255 + 0.5, 0, 255).astype(np.uint8)
    order = slice(None, None, -1) if scene.reverse else slice(None)
    return np.ascontiguousarray(video[order].transpose(0, 2, 3, 1))  # (T, H, W, 3)


def write_synthetic_dataset(
    out_dir: str | Path,
    *,
    videos_per_class: int = 60,
    val_fraction: float = 0.25,
    num_frames: int = 24,
    size: int = 72,
    fps: float = 12.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the dataset to `out_dir` as H.264 mp4 files plus the list files the loader reads.
    A folder that holds anything is refused unless `overwrite` (its data set files are replaced).

    Layout: `videos/<class>/<class>_<nnnn>.mp4`, `train.csv` / `val.csv` (lines
    `videos/<class>/<file>.mp4 <label>`; the last `val_fraction` of each class is validation),
    `classes.txt`, `reversal_pairs.txt` and, written last, `dataset.json` with the parameters.
    `progress(done, total)` is called after each video. Returns `out_dir`.
    """
    params = _params(
        videos_per_class=videos_per_class, val_fraction=val_fraction, num_frames=num_frames,
        size=size, fps=fps, seed=seed,
    )  # fmt: skip
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: give a folder for the data set")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise ValueError(
            f"{out} is not empty: give an empty or new folder, or pass --overwrite to write the "
            "data set over what is there (train.csv, val.csv, classes.txt and videos/ are replaced)"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset.json").unlink(missing_ok=True)
    # The class list goes first: it marks a half-written folder as this writer's (`ensure_generated`).
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (out / "reversal_pairs.txt").write_text("\n".join(f"{a} {b}" for a, b in REVERSAL_PAIRS) + "\n")
    num_val = min(videos_per_class - 1, max(1, round(videos_per_class * val_fraction)))
    total = len(CLASSES) * videos_per_class
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for label, name in enumerate(CLASSES):
        for index in range(videos_per_class):
            video_seed = int(np.random.SeedSequence([seed, label, index]).generate_state(1)[0])
            frames = render_clip(label, seed=video_seed, num_frames=num_frames, size=size)
            relative = f"videos/{name}/{name}_{index:04d}.mp4"
            write_video(out / relative, frames, fps)
            split = "val" if index >= videos_per_class - num_val else "train"
            lines[split].append(f"{relative} {label}")
            if progress is not None:
                progress(label * videos_per_class + index + 1, total)
    for split, split_lines in lines.items():
        (out / f"{split}.csv").write_text("\n".join(split_lines) + "\n")
    write_params(out, params)
    return out


def default_dataset_dir(
    *,
    videos_per_class: int = 60,
    val_fraction: float = 0.25,
    num_frames: int = 24,
    size: int = 72,
    fps: float = 12.0,
    seed: int = 0,
) -> Path:
    """The cache folder for these parameters: `$XDG_CACHE_HOME/tubelet` (or `~/.cache/tubelet`) /
    `synthetic-motion-v1-s0-n60-f24-72px-12fps-val0.25`."""
    name = (
        f"synthetic-motion-v{DATASET_VERSION}-s{seed}-n{videos_per_class}-f{num_frames}-{size}px"
        f"-{fps:g}fps-val{val_fraction:g}"
    )
    return cache_dir() / name


def ensure_synthetic_dataset(
    out_dir: str | Path | None = None,
    *,
    videos_per_class: int = 60,
    val_fraction: float = 0.25,
    num_frames: int = 24,
    size: int = 72,
    fps: float = 12.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Return a complete dataset folder for these parameters, generating it only when needed.

    `out_dir` defaults to `default_dataset_dir(...)`. A folder whose `dataset.json` holds the same
    parameters is reused; a synthetic dataset with other parameters (or a half-written one) is
    replaced; a folder holding anything else is refused. Generation goes to a temporary sibling
    folder that is renamed into place when complete, so an interrupted run never leaves a folder
    that looks finished. Under `torchrun`, call it on one rank before the others.
    """
    settings = {
        "videos_per_class": videos_per_class,
        "val_fraction": val_fraction,
        "num_frames": num_frames,
        "size": size,
        "fps": fps,
        "seed": seed,
    }
    out = Path(out_dir) if out_dir is not None else default_dataset_dir(**settings)
    return ensure_generated(
        out,
        _params(**settings),
        lambda folder: write_synthetic_dataset(folder, **settings, progress=progress),
        classes=CLASSES,
        what="synthetic dataset",
    )


def _params(
    *, videos_per_class: int, val_fraction: float, num_frames: int, size: int, fps: float, seed: int
) -> dict:
    """Check the generation parameters and return them as `dataset.json` records them."""
    _check_clip_args(seed, num_frames, size)
    if videos_per_class < 2:
        raise ValueError(
            f"videos_per_class must be at least 2 (one train, one val video), not {videos_per_class}"
        )
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), not {val_fraction}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    return {
        "name": DATASET_NAME,
        "version": DATASET_VERSION,
        "seed": seed,
        "num_frames": num_frames,
        "size": size,
        "fps": float(fps),
        "videos_per_class": videos_per_class,
        "val_fraction": float(val_fraction),
    }


def _check_clip_args(seed: int, num_frames: int, size: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 to show motion, not {num_frames}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, not {size}")


def _track(rng: np.random.Generator, pair: int, num_frames: int) -> Track:
    """The forward motion of pair `pair` (module table), with per-video speed and position."""
    t = np.linspace(0.0, 1.0, num_frames)
    cx = np.full(num_frames, rng.uniform(-0.15, 0.15))
    cy = np.full(num_frames, rng.uniform(-0.15, 0.15))
    scale = np.full(num_frames, rng.uniform(0.36, 0.48))
    angle = np.full(num_frames, rng.uniform(0, 2 * np.pi))
    opacity = np.ones(num_frames)
    # A small drift in a random direction keeps every class from being perfectly still.
    drift = rng.uniform(-0.08, 0.08, size=2)
    cx = cx + drift[0] * (t - 0.5)
    cy = cy + drift[1] * (t - 0.5)
    if pair == 0:  # move_left
        cx = cx - rng.uniform(0.6, 1.0) * (t - 0.5)
    elif pair == 1:  # move_up
        cy = cy - rng.uniform(0.6, 1.0) * (t - 0.5)
    elif pair == 2:  # zoom_in
        scale = rng.uniform(0.24, 0.3) * rng.uniform(1.8, 2.4) ** t
    elif pair == 3:  # rotate_cw
        angle = angle + np.deg2rad(rng.uniform(90, 140)) * t
    else:  # appear
        start, length = rng.uniform(0.1, 0.35), rng.uniform(0.3, 0.5)
        ramp = np.clip((t - start) / length, 0, 1)
        ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
        opacity = ramp
        scale = scale * (0.5 + 0.5 * ramp)
    return Track(cx, cy, scale, angle, opacity)


def _sampling_grid(track: Track, height: int, width: int) -> np.ndarray:
    """Where each output pixel reads the sprite: (T, H, W, 2) sprite coordinates (x, y) in [-1, 1].

    Screen point p maps to R(-angle) (p - centre) / scale, the inverse of placing the sprite;
    pixel centres follow `grid_sample(align_corners=False)`.
    """
    xs = ((np.arange(width) + 0.5) / width * 2 - 1)[None, None, :] - track.cx[:, None, None]
    ys = ((np.arange(height) + 0.5) / height * 2 - 1)[None, :, None] - track.cy[:, None, None]
    cos = (np.cos(track.angle) / track.scale)[:, None, None]
    sin = (np.sin(track.angle) / track.scale)[:, None, None]
    return np.stack([cos * xs + sin * ys, cos * ys - sin * xs], -1).astype(np.float32)


def _background(rng: np.random.Generator, size: int, hue: float) -> np.ndarray:
    """Fractal noise coloured with a muted palette around `hue`: float32 (size, size, 3) in [0, 1]."""
    pattern = _fractal_noise(rng, size, base_cells=3, octaves=6, persistence=0.6)
    brightness = _fractal_noise(rng, size, base_cells=2, octaves=4, persistence=0.5)
    palette = [
        _hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.2, 0.6), value)
        for value in (rng.uniform(0.15, 0.3), rng.uniform(0.35, 0.55), rng.uniform(0.6, 0.8))
    ]
    # A second, smoother field modulates brightness so the palette bands do not read as contours.
    return np.clip(_colorize(pattern, palette) * (0.8 + 0.4 * brightness)[..., None], 0, 1)


def _sprite(rng: np.random.Generator, size: int, background_hue: float) -> np.ndarray:
    """A soft-edged, elongated, textured object: float32 (size, size, 5), see `Scene.sprite`.

    The shape is an ellipse or polygon bent by random harmonics (so no rotation symmetry) with an
    aspect ratio of 1.4-2.2; the texture mixes fractal noise with noise-warped stripes in a saturated
    palette whose hue sits away from the background's.
    """
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    u, v = coords[None, :], coords[:, None]  # x along columns, y along rows
    aspect = rng.uniform(1.4, 2.2)
    semi_major = 0.85  # leaves room inside the canvas for the shadow's soft edge
    x, y = u / semi_major, v * aspect / semi_major
    radius, phi = np.sqrt(x**2 + y**2), np.arctan2(y, x)
    outline = np.ones_like(phi)
    if rng.random() < 0.5:
        sides = int(rng.integers(3, 7))
        wedge = 2 * np.pi / sides
        outline = np.cos(np.pi / sides) / np.cos(np.remainder(phi, wedge) - wedge / 2)
    for k in (2, 3, 4):
        amplitude, phase = rng.uniform(0, 0.12), rng.uniform(0, 2 * np.pi)
        outline = outline * (1 + amplitude * np.cos(k * phi + phase))
    distance = radius / (outline / outline.max())  # 1 on the outline, 0 at the centre
    alpha = _soft_inside(distance, rng.uniform(0.04, 0.1))
    shadow = _soft_inside(distance, 0.15)

    texture = _fractal_noise(rng, size, base_cells=3, octaves=4, persistence=0.6)
    warp = _fractal_noise(rng, size, base_cells=2, octaves=3, persistence=0.5)
    direction, frequency = rng.uniform(0, np.pi), rng.uniform(1.5, 3.5)
    along = u * np.cos(direction) + v * np.sin(direction)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * along + 5 * warp)
    mix = rng.uniform(0.3, 0.7)
    hue = background_hue + rng.uniform(0.3, 0.7)
    palette = [
        _hsv(hue + rng.uniform(-0.06, 0.06), rng.uniform(0.6, 0.95), value)
        for value in (rng.uniform(0.3, 0.45), rng.uniform(0.6, 0.75), rng.uniform(0.85, 1.0))
    ]
    # Darker towards the rim, so the object reads as a rounded body.
    shading = 0.65 + 0.35 * np.sqrt(np.clip(1 - distance, 0, 1))
    colour = _colorize((1 - mix) * texture + mix * stripes, palette) * shading[..., None]
    layers = [colour * alpha[..., None], alpha[..., None], shadow[..., None]]
    return np.concatenate(layers, -1).astype(np.float32)


def _soft_inside(distance: np.ndarray, soft: float) -> np.ndarray:
    """1 inside the outline (distance < 1 - soft), 0 outside (> 1 + soft), smooth in between."""
    x = np.clip((1 + soft - distance) / (2 * soft), 0, 1)
    return x * x * (3 - 2 * x)


def _fractal_noise(
    rng: np.random.Generator, size: int, *, base_cells: int, octaves: int, persistence: float
) -> np.ndarray:
    """Multi-octave value noise: bicubically upsampled random grids, float32 (size, size) in [0, 1]."""
    total = np.zeros((size, size), dtype=np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        cells = min(base_cells * 2**octave, size)
        grid = rng.standard_normal((cells, cells), dtype=np.float32)
        upsample = _cubic_upsampler(cells, size)  # (size, cells)
        total += amplitude * (upsample @ grid @ upsample.T)
        amplitude *= persistence
    return (total - total.min()) / (total.max() - total.min())


@functools.cache
def _cubic_upsampler(cells: int, size: int) -> np.ndarray:
    """(size, cells) matrix resampling `cells` samples to `size` with the Catmull-Rom cubic
    (pixel centres aligned, edge samples repeated)."""
    source = (np.arange(size) + 0.5) * cells / size - 0.5
    base = np.floor(source).astype(int)
    t = (source - base)[:, None]
    taps = np.array([-1, 0, 1, 2])
    offset = np.abs(t - taps)  # distance of each tap, (size, 4)
    near = 1.5 * offset**3 - 2.5 * offset**2 + 1
    far = -0.5 * offset**3 + 2.5 * offset**2 - 4 * offset + 2
    weights = np.where(offset <= 1, near, far)
    matrix = np.zeros((size, cells), dtype=np.float32)
    np.add.at(
        matrix, (np.arange(size)[:, None], np.clip(base[:, None] + taps, 0, cells - 1)), weights
    )
    matrix.setflags(write=False)  # shared through the cache
    return matrix


def _colorize(field: np.ndarray, palette: list[tuple[float, float, float]]) -> np.ndarray:
    """Map an (H, W) field in [0, 1] through evenly spaced palette colours: float32 (H, W, 3)."""
    position = field * (len(palette) - 1)
    colour = np.zeros((*field.shape, 3), dtype=np.float32)
    for k, rgb in enumerate(palette):
        # Hat weight: colour k counts fully at position k and fades out at k - 1 and k + 1.
        weight = np.clip(1 - np.abs(position - k), 0, None)
        colour += weight[..., None] * np.asarray(rgb, dtype=np.float32)
    return colour


def _hsv(hue: float, saturation: float, value: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
