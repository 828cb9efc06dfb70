"""Optical-flow samples: synthetic pairs with exact ground truth, and FlyingChairs/Sintel/KITTI folders.

Every dataset yields dicts of `image1`, `image2` float (3, H, W) in [-1, 1] (RAFT's input range),
`flow` float (2, H, W) in pixels from image1 to image2, and `valid` bool (H, W) (False where the
ground truth is unknown, as in KITTI's sparse maps).

The synthetic pairs follow the FlyingChairs recipe (Dosovitskiy et al. 2015) in a few lines: a
textured background and several textured foreground layers (ellipses and rectangles), each moved by
its own random affine motion (rotation, scale, translation); layers overlap, so parts of the scene
are occluded or revealed. A pixel's flow is the motion of the layer visible there in image1,
M_k(x) - x, exact by construction.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from tubelet.data.annotations import hold_out
from tubelet.io.flow import read_flo, read_kitti_flow


@dataclass(frozen=True)
class SyntheticFlowConfig:
    """How the synthetic scenes are drawn. Motions are in pixels at the given image size."""

    height: int = 64
    width: int = 96
    min_layers: int = 2
    max_layers: int = 4
    max_translation: float = 6.0  # foreground layers, per axis
    max_rotation_deg: float = 10.0
    max_scale_change: float = 0.1
    background_translation: float = 3.0
    texture_size: int = 64

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8 or not 0 <= self.min_layers <= self.max_layers:
            raise ValueError(f"invalid synthetic flow config: {self}")


def make_texture(generator: torch.Generator, size: int) -> Tensor:
    """A colour texture (3, size, size) in [0, 1]: random noise at four scales, each with its own
    colour, summed (so every region has features at several frequencies for matching)."""
    texture = torch.zeros(3, size, size)
    for cells in (4, 8, 16, 32):
        noise = torch.rand(1, 1, cells, cells, generator=generator)
        up = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)[0]
        colour = torch.rand(3, 1, 1, generator=generator)
        texture += colour * (up - 0.5)
    low, high = texture.amin(), texture.amax()
    return (texture - low) / (high - low).clamp(min=1e-6)


def _affine(scale: float, angle: float, centre: Tensor, shift: Tensor) -> Tensor:
    """The 2x3 matrix of x -> scale R(angle) (x - centre) + centre + shift."""
    cos, sin = math.cos(angle), math.sin(angle)
    linear = scale * torch.tensor([[cos, -sin], [sin, cos]])
    return torch.cat([linear, (centre - linear @ centre + shift)[:, None]], dim=1)


def _apply(matrix: Tensor, points: Tensor) -> Tensor:
    """Affine 2x3 applied to points (..., 2)."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def _invert(matrix: Tensor) -> Tensor:
    linear_inv = torch.linalg.inv(matrix[:, :2])
    return torch.cat([linear_inv, (-linear_inv @ matrix[:, 2])[:, None]], dim=1)


def synthetic_pair(config: SyntheticFlowConfig, generator: torch.Generator) -> dict[str, Tensor]:
    """One synthetic sample (see the module docstring); deterministic given the generator state."""
    h, w = config.height, config.width

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pixels = torch.stack([xs, ys], dim=-1).float()  # (H, W, 2) as (x, y)
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2])

    # Background: the image spans the middle 60% of its texture; a small affine motion.
    background = make_texture(generator, config.texture_size * 2)
    to_texture = _affine(0.6 / (max(h, w) / 2), 0.0, centre, -centre)  # pixel -> [-0.6, 0.6]
    t = config.background_translation
    motion = _affine(
        uniform(0.98, 1.02), math.radians(uniform(-2, 2)), centre,
        torch.tensor([uniform(-t, t), uniform(-t, t)]),
    )  # fmt: skip
    layers = [(background, to_texture, motion, None)]
    for _ in range(int(uniform(config.min_layers, config.max_layers + 1 - 1e-6))):
        size = torch.tensor([uniform(0.12, 0.3) * w, uniform(0.12, 0.3) * h])  # half-extents
        position = torch.tensor([uniform(0, w - 1), uniform(0, h - 1)])
        angle = uniform(-math.pi, math.pi)
        # pixel -> layer coordinates in [-1, 1]: rotate about the layer's centre, divide by its size
        cos, sin = math.cos(-angle), math.sin(-angle)
        linear = torch.tensor([[cos, -sin], [sin, cos]]) / size[:, None]
        to_layer = torch.cat([linear, (-linear @ position)[:, None]], dim=1)
        t, s = config.max_translation, config.max_scale_change
        motion = _affine(
            uniform(1 - s, 1 + s), math.radians(uniform(-1, 1) * config.max_rotation_deg), position,
            torch.tensor([uniform(-t, t), uniform(-t, t)]),
        )  # fmt: skip
        shape = "ellipse" if uniform(0, 1) < 0.5 else "rectangle"
        layers.append((make_texture(generator, config.texture_size), to_layer, motion, shape))

    images = []
    flow = torch.zeros(h, w, 2)
    for frame in (0, 1):
        image = torch.zeros(3, h, w)
        for texture, to_coords, motion, shape in layers:
            # frame 0 samples the layer at x; frame 1 at the point that moved to x, M^-1(x)
            source = pixels if frame == 0 else _apply(_invert(motion), pixels)
            coords = _apply(to_coords, source)  # (H, W, 2) in the layer's [-1, 1] square
            colour = F.grid_sample(
                texture[None], coords[None], mode="bilinear", padding_mode="reflection",
                align_corners=False,
            )[0]  # fmt: skip
            inside = torch.ones(h, w, dtype=torch.bool) if shape is None else _inside(coords, shape)
            image = torch.where(inside, colour, image)
            if frame == 0:
                flow = torch.where(inside[..., None], _apply(motion, pixels) - pixels, flow)
        images.append(image * 2 - 1)
    return {
        "image1": images[0],
        "image2": images[1],
        "flow": flow.permute(2, 0, 1).contiguous(),
        "valid": torch.ones(h, w, dtype=torch.bool),
    }


def _inside(coords: Tensor, shape: str) -> Tensor:
    if shape == "ellipse":
        return coords.square().sum(-1) < 1
    return coords.abs().amax(-1) < 1


class SyntheticFlowDataset(Dataset):
    """`length` synthetic pairs, sample i drawn from seed (`seed`, epoch, i).

    With `resample_each_epoch=True` (training), `set_epoch` draws new scenes every epoch; otherwise
    (held-out evaluation) the pairs never change. Train and validation sets should use different
    seeds.
    """

    def __init__(
        self,
        length: int,
        *,
        config: SyntheticFlowConfig = SyntheticFlowConfig(),
        seed: int = 0,
        resample_each_epoch: bool = False,
    ) -> None:
        if length < 1:
            raise ValueError(f"a synthetic flow dataset needs at least one pair, got {length}")
        self.length = length
        self.config = config
        self.seed = seed
        self.resample_each_epoch = resample_each_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at each epoch start."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        epoch = self.epoch if self.resample_each_epoch else 0
        seed = (self.seed * 1_000_003 + epoch) * 10_000_019 + index
        return synthetic_pair(self.config, torch.Generator().manual_seed(seed))


# -- folders that users already have ------------------------------------------------------------


@dataclass(frozen=True)
class FlowFile:
    """One sample on disk: two images and the flow file (.flo or KITTI .png)."""

    image1: Path
    image2: Path
    flow: Path


class FlowFolderDataset(Dataset):
    """Samples from a list of `FlowFile`; `crop=(H, W)` takes a random crop (seeded per epoch and
    index) so that batches stack and sides are multiples of 8; `crop=None` returns full frames."""

    def __init__(
        self, files: list[FlowFile], *, crop: tuple[int, int] | None = None, seed: int = 0
    ) -> None:
        if not files:
            raise ValueError("no flow samples found (check the folder layout)")
        self.files = files
        self.crop = crop
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = self.files[index]
        image1, image2 = read_image(item.image1), read_image(item.image2)
        if item.flow.suffix == ".flo":
            flow_np = read_flo(item.flow)
            valid_np = np.abs(flow_np).max(-1) < 1000  # Sintel marks unknown flow with huge values
        else:
            flow_np, valid_np = read_kitti_flow(item.flow)
        flow = torch.from_numpy(flow_np).permute(2, 0, 1)
        valid = torch.from_numpy(valid_np)
        if image1.shape[1:] != flow.shape[1:] or image2.shape != image1.shape:
            raise ValueError(
                f"{item.image1}, {item.image2} and {item.flow} differ in size: "
                f"{tuple(image1.shape[1:])}, {tuple(image2.shape[1:])}, {tuple(flow.shape[1:])}"
            )
        sample = {"image1": image1, "image2": image2, "flow": flow, "valid": valid}
        return sample if self.crop is None else self._random_crop(sample, index)

    def _random_crop(self, sample: dict[str, Tensor], index: int) -> dict[str, Tensor]:
        ch, cw = self.crop
        h, w = sample["flow"].shape[1:]
        if ch > h or cw > w:
            raise ValueError(f"crop {ch}x{cw} is larger than the {h}x{w} frames")
        generator = torch.Generator().manual_seed(
            (self.seed * 100_003 + self.epoch) * 1_000_003 + index
        )
        top = int(torch.randint(0, h - ch + 1, (), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (), generator=generator))
        return {k: v[..., top : top + ch, left : left + cw] for k, v in sample.items()}


def read_image(path: Path) -> Tensor:
    """An image file -> float (3, H, W) in [-1, 1]."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path} is not a readable image: {error}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1


def flying_chairs_files(root: str | Path, split: str = "train") -> list[FlowFile]:
    """FlyingChairs: `data/NNNNN_img1.ppm`, `_img2.ppm`, `_flow.flo`; the split from
    `FlyingChairs_train_val.txt` (1 = train, 2 = val, one line per sample); `split="all"` ignores it."""
    root = Path(root)
    data = root / "data" if (root / "data").is_dir() else root
    flows = sorted(data.glob("*_flow.flo"))
    split_file = root / "FlyingChairs_train_val.txt"
    if split != "all":
        if not split_file.is_file():
            raise FileNotFoundError(f"{split_file} (the train/val split) does not exist")
        marks = split_file.read_text().split()
        if len(marks) != len(flows):
            raise ValueError(
                f"{split_file} lists {len(marks)} samples but {data} holds {len(flows)}"
            )
        wanted = "1" if split == "train" else "2"
        flows = [f for f, m in zip(flows, marks, strict=True) if m == wanted]
    return [
        FlowFile(
            f.with_name(f.name.replace("_flow.flo", "_img1.ppm")),
            f.with_name(f.name.replace("_flow.flo", "_img2.ppm")),
            f,
        )
        for f in flows
    ]


def sintel_files(
    root: str | Path, split: str = "training", pass_name: str = "clean"
) -> list[FlowFile]:
    """MPI-Sintel: `{split}/{pass_name}/SCENE/frame_NNNN.png` with `{split}/flow/SCENE/frame_NNNN.flo`
    for the flow from frame N to N+1."""
    root = Path(root) / split
    files = []
    for flow in sorted((root / "flow").glob("*/frame_*.flo")):
        number = int(re.search(r"frame_(\d+)", flow.stem)[1])
        images = root / pass_name / flow.parent.name
        files.append(
            FlowFile(
                images / f"frame_{number:04d}.png", images / f"frame_{number + 1:04d}.png", flow
            )
        )
    return files


def kitti_files(root: str | Path, split: str = "training") -> list[FlowFile]:
    """KITTI 2012/2015 flow: `{split}/image_2/NNNNNN_10.png`, `_11.png`, `{split}/flow_occ/NNNNNN_10.png`."""
    root = Path(root) / split
    return [
        FlowFile(
            root / "image_2" / flow.name, root / "image_2" / flow.name.replace("_10", "_11"), flow
        )
        for flow in sorted((root / "flow_occ").glob("*_10.png"))
    ]


def find_flow_layout(root: str | Path) -> str:
    """ "chairs", "sintel" or "kitti" from a folder's contents; a ValueError naming the layouts."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"flow data folder {root} does not exist")
    if any((root / "data").glob("*_flow.flo")) or any(root.glob("*_flow.flo")):
        return "chairs"
    if (root / "training" / "flow").is_dir():
        return "sintel"
    if (root / "training" / "flow_occ").is_dir():
        return "kitti"
    raise ValueError(
        f"{root} is not a known flow data folder: expected FlyingChairs (data/*_flow.flo), "
        "Sintel (training/flow/) or KITTI (training/flow_occ/)"
    )


def flow_folder_dataset(
    root: str | Path, split: str, *, crop: tuple[int, int] | None = None, seed: int = 0
) -> FlowFolderDataset:
    """The `split` ("train" or "val") of a FlyingChairs, Sintel or KITTI folder.

    Sintel, KITTI and FlyingChairs without its split file: every fifth sample is held out.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    layout = find_flow_layout(root)
    if layout == "chairs" and (Path(root) / "FlyingChairs_train_val.txt").is_file():
        files = flying_chairs_files(root, split)
    else:
        readers = {
            "chairs": lambda: flying_chairs_files(root, "all"),
            "sintel": lambda: sintel_files(root),
            "kitti": lambda: kitti_files(root),
        }
        files = hold_out(readers[layout](), split)
    return FlowFolderDataset(files, crop=crop, seed=seed)
