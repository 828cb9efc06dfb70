"""Flow data: synthetic pairs whose ground truth explains image2 from image1, and folder datasets."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tubelet.data.flow import (
    SyntheticFlowConfig,
    SyntheticFlowDataset,
    find_flow_layout,
    flow_folder_dataset,
)
from tubelet.io.flow import write_flo, write_kitti_flow


def backward_warp(image, flow):
    """image2 sampled at x + flow(x): what image1 should look like where the flow is right."""
    _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    x = xs + flow[0]
    y = ys + flow[1]
    grid = torch.stack([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], -1)[None]
    return F.grid_sample(image[None], grid, align_corners=True)[0]


def photometric_error(sample, flow):
    warped = backward_warp(sample["image2"], flow)
    return (warped - sample["image1"]).abs()[:, 6:-6, 6:-6].mean(0)  # away from the borders


def test_samples_are_deterministic_and_shaped():
    ds = SyntheticFlowDataset(3, seed=4)
    a, b = ds[1], ds[1]
    assert a["image1"].shape == (3, 64, 96) and a["flow"].shape == (2, 64, 96)
    assert a["valid"].all() and a["image1"].min() >= -1 and a["image1"].max() <= 1
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(ds[0]["flow"], ds[1]["flow"])
    assert not torch.equal(SyntheticFlowDataset(3, seed=5)[1]["flow"], a["flow"])


def test_epochs_resample_only_training_sets():
    train = SyntheticFlowDataset(2, resample_each_epoch=True)
    held_out = SyntheticFlowDataset(2)
    first, fixed = train[0]["flow"], held_out[0]["flow"]
    train.set_epoch(1)
    held_out.set_epoch(1)
    assert not torch.equal(train[0]["flow"], first)
    assert torch.equal(held_out[0]["flow"], fixed)


def test_background_flow_is_exact():
    config = SyntheticFlowConfig(min_layers=0, max_layers=0)
    sample = SyntheticFlowDataset(1, config=config, seed=1)[0]
    assert sample["flow"].abs().max() > 0.5
    error = photometric_error(sample, sample["flow"])
    still = photometric_error(sample, torch.zeros_like(sample["flow"]))
    assert error.mean() < 0.01 and still.mean() > 5 * error.mean()


def test_layered_flow_explains_all_but_the_occluded_pixels():
    config = SyntheticFlowConfig(min_layers=3, max_layers=3)
    sample = SyntheticFlowDataset(1, config=config, seed=2)[0]
    error = photometric_error(sample, sample["flow"])
    still = photometric_error(sample, torch.zeros_like(sample["flow"]))
    # Pixels hidden in image2 (occlusions) have no match, and fine texture aliases under a
    # bilinear re-warp; the typical pixel is explained almost exactly.
    assert error.median() < 0.01 and still.median() > 5 * error.median()
    assert (error < 0.15).float().mean() > 0.85
    # At least two distinct motions (background and layers) are present.
    assert sample["flow"].flatten(1).unique(dim=1).shape[1] > 2


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)

    def image(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8)).save(path)

    flows = {}
    chairs = tmp_path / "chairs"
    for i in range(1, 4):
        image(chairs / "data" / f"{i:05d}_img1.ppm")
        image(chairs / "data" / f"{i:05d}_img2.ppm")
        flows[("chairs", i)] = rng.normal(0, 3, (16, 24, 2)).astype(np.float32)
        write_flo(chairs / "data" / f"{i:05d}_flow.flo", flows[("chairs", i)])
    (chairs / "FlyingChairs_train_val.txt").write_text("1\n2\n1\n")
    sintel = tmp_path / "sintel"
    for n in range(1, 7):
        image(sintel / "training" / "clean" / "alley_1" / f"frame_{n:04d}.png")
    for n in range(1, 6):
        write_flo(
            sintel / "training" / "flow" / "alley_1" / f"frame_{n:04d}.flo", flows[("chairs", 1)]
        )
    kitti = tmp_path / "kitti"
    for n in range(5):
        image(kitti / "training" / "image_2" / f"{n:06d}_10.png")
        image(kitti / "training" / "image_2" / f"{n:06d}_11.png")
        valid = np.ones((16, 24), bool)
        valid[0] = False
        write_kitti_flow(
            kitti / "training" / "flow_occ" / f"{n:06d}_10.png", np.full((16, 24, 2), 1.5), valid
        )
    return tmp_path, flows


def test_folder_layouts_and_splits(folders):
    root, flows = folders
    assert [find_flow_layout(root / n) for n in ("chairs", "sintel", "kitti")] == [
        "chairs", "sintel", "kitti",
    ]  # fmt: skip
    train = flow_folder_dataset(root / "chairs", "train")
    assert len(train) == 2 and len(flow_folder_dataset(root / "chairs", "val")) == 1
    np.testing.assert_array_equal(train[1]["flow"].permute(1, 2, 0).numpy(), flows[("chairs", 3)])
    assert train[0]["image1"].shape == (3, 16, 24)
    assert len(flow_folder_dataset(root / "sintel", "train")) == 4
    assert len(flow_folder_dataset(root / "sintel", "val")) == 1
    kitti = flow_folder_dataset(root / "kitti", "val")[0]
    assert not kitti["valid"][0].any() and kitti["valid"][1:].all()
    assert torch.equal(kitti["flow"][:, 1:], torch.full((2, 15, 24), 1.5))


def test_random_crops_are_seeded_and_sized(folders):
    root, _ = folders
    ds = flow_folder_dataset(root / "kitti", "train", crop=(8, 16), seed=3)
    a = ds[0]
    assert a["image1"].shape == (3, 8, 16) and a["valid"].shape == (8, 16)
    assert torch.equal(ds[0]["image1"], a["image1"])
    with pytest.raises(ValueError, match="larger than"):
        flow_folder_dataset(root / "kitti", "train", crop=(32, 32))[0]


def test_unknown_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="FlyingChairs"):
        find_flow_layout(tmp_path)
    with pytest.raises(FileNotFoundError):
        find_flow_layout(tmp_path / "missing")
