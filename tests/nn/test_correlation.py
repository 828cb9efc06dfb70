"""Correlation: the all-pairs volume and pyramid lookup, and the on-demand lookup that must equal it."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tubelet.nn.correlation import (
    AllPairsCorrelation,
    OnDemandCorrelation,
    all_pairs_volume,
    window_offsets,
)


def fmaps(b=2, c=5, h=8, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g), torch.randn(b, c, h, w, generator=g)


def test_volume_is_every_dot_product_over_sqrt_c():
    f1, f2 = fmaps()
    volume = all_pairs_volume(f1, f2).view(2, 8, 12, 8, 12)
    # pixel (y=3, x=7) of image 1 in batch 1 against pixel (y=5, x=2) of image 2
    expected = (f1[1, :, 3, 7] * f2[1, :, 5, 2]).sum() / 5**0.5
    torch.testing.assert_close(volume[1, 3, 7, 5, 2], expected)


def test_window_order_moves_x_in_the_outer_index():
    offsets = window_offsets(1)
    assert offsets.tolist() == [
        [-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 0], [0, 1], [1, -1], [1, 0], [1, 1],
    ]  # fmt: skip


def test_lookup_at_integer_positions_reads_the_volume():
    f1, f2 = fmaps(b=1)
    lookup = AllPairsCorrelation(num_levels=1, radius=1).build(f1, f2)
    coords = torch.zeros(1, 2, 8, 12)
    coords[:, 0], coords[:, 1] = 4.0, 3.0  # every pixel looks around (x=4, y=3)
    features = lookup(coords)  # (1, 9, 8, 12)
    volume = all_pairs_volume(f1, f2).view(8, 12, 8, 12)
    for k, (dx, dy) in enumerate(window_offsets(1).long().tolist()):
        torch.testing.assert_close(features[0, k], volume[:, :, 3 + dy, 4 + dx])


def test_second_level_is_the_pooled_volume():
    f1, f2 = fmaps(b=1)
    lookup = AllPairsCorrelation(num_levels=2, radius=0).build(f1, f2)
    coords = torch.zeros(1, 2, 8, 12)
    coords[:, 0], coords[:, 1] = 6.0, 2.0  # level 1 looks at (3, 1)
    volume = all_pairs_volume(f1, f2).view(8, 12, 8, 12)
    pooled = volume[:, :, 2:4, 6:8].mean(dim=(2, 3))
    torch.testing.assert_close(lookup(coords)[0, 1], pooled)


@pytest.mark.parametrize("chunk", [1, 2**24])
def test_on_demand_equals_all_pairs(chunk):
    f1, f2 = fmaps(c=7, h=16, w=20)
    g = torch.Generator().manual_seed(3)
    # fractional positions, some outside the map (zero padding must agree too)
    coords = torch.rand(2, 2, 16, 20, generator=g) * torch.tensor([26.0, 22.0])[None, :, None, None]
    coords -= 3
    stored = AllPairsCorrelation(num_levels=4, radius=3).build(f1, f2)(coords)
    on_demand = OnDemandCorrelation(num_levels=4, radius=3, chunk=chunk).build(f1, f2)(coords)
    assert stored.shape == on_demand.shape == (2, 4 * 49, 16, 20)
    torch.testing.assert_close(on_demand, stored, atol=1e-5, rtol=1e-5)


def test_too_small_maps_and_mismatched_maps_are_refused():
    f1, f2 = fmaps(h=4, w=12)
    with pytest.raises(ValueError, match="at least 64 pixels"):
        AllPairsCorrelation(num_levels=4).build(f1, f2)
    with pytest.raises(ValueError, match="one shape"):
        OnDemandCorrelation().build(f1, f2[:, :3])


class PointwiseOps(TorchDispatchMode):
    """Counts elementwise kernels but layout copies: at RAFT's sizes each is a GPU kernel launch,
    12 refinements times every level."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        layout = func in (torch.ops.aten.clone.default, torch.ops.aten.copy_.default)
        self.count += torch.Tag.pointwise in func.tags and not layout
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("block", [AllPairsCorrelation, OnDemandCorrelation])
def test_a_lookup_runs_one_elementwise_kernel_per_level(block):
    """The window's sampling grid of a level is one multiply-add of the positions (its scale and
    offsets are made once per pair, as is the on-demand query's scaling): before, each level ran
    8 small kernels per lookup."""
    f1, f2 = fmaps(h=16, w=16)
    lookup = block(num_levels=3, radius=2).build(f1, f2)
    coords = torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(0)) * 16
    with PointwiseOps() as ops:
        lookup(coords)
    assert ops.count == 3
