"""Tube and random masks, and the tube <-> pixel rearranges."""

import pytest
import torch

from tubelet.nn.masking import (
    check_mask,
    keep_visible,
    masking_fn,
    patchify,
    random_mask,
    tube_grid,
    tube_mask,
    unpatchify,
)


def test_tube_mask_hides_the_same_positions_in_every_slice():
    grid = (4, 3, 5)  # t, h, w
    mask = tube_mask(6, grid, 0.9, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (6, 60) and mask.dtype == torch.bool
    slices = mask.view(6, 4, 15)  # (B, t, h*w)
    assert (slices == slices[:, :1]).all()  # every slice equals the first
    assert (slices[:, 0].sum(1) == int(0.9 * 15)).all()  # 13 of 15 spatial positions
    assert len({tuple(m.tolist()) for m in mask}) > 1  # clips get different masks


def test_random_mask_counts_and_differs_across_slices():
    mask = random_mask(8, (4, 3, 5), 0.75, generator=torch.Generator().manual_seed(0))
    assert (mask.sum(1) == 45).all()
    slices = mask.view(8, 4, 15)
    assert not (slices == slices[:, :1]).all()


def test_masks_are_reproducible_and_validate_the_ratio():
    a = tube_mask(2, (2, 4, 4), generator=torch.Generator().manual_seed(3))
    b = tube_mask(2, (2, 4, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not tube_mask(2, (2, 4, 4), 0.0).any()
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="mask ratio"):
            tube_mask(2, (2, 4, 4), bad)
    assert masking_fn("random") is random_mask
    with pytest.raises(ValueError, match="tube, random"):
        masking_fn("block")


def test_keep_visible_keeps_order_and_checks_the_mask():
    tokens = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1)
    mask = torch.tensor([[1, 0, 0, 1, 1, 0], [0, 1, 1, 0, 0, 1]], dtype=torch.bool)
    assert keep_visible(tokens, mask).squeeze(-1).tolist() == [[1, 2, 5], [6, 9, 10]]
    with pytest.raises(ValueError, match="same number"):
        keep_visible(tokens, torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]]).bool())
    with pytest.raises(ValueError, match=r"\(2, 6\)"):
        keep_visible(tokens, mask.int())
    with pytest.raises(ValueError, match="every tube"):
        check_mask(torch.ones(2, 6, dtype=torch.bool), 2, 6)


def test_patchify_orders_tubes_t_h_w_and_values_frame_row_col_channel():
    clip = torch.randn(2, 3, 4, 8, 12)
    patches = patchify(clip, 2, 4)
    assert patches.shape == (2, 2 * 2 * 3, 2 * 4 * 4 * 3)
    # Tube (t=1, h=0, w=2) is number 1*6 + 0*3 + 2 = 8; its value (frame 1, row 2, col 3, ch 1).
    tube = patches[1, 8].view(2, 4, 4, 3)
    assert tube[1, 2, 3, 1] == clip[1, 1, 2 + 1, 0 + 2, 8 + 3]
    assert torch.equal(unpatchify(patches, tube_grid(clip.shape, 2, 4), 2, 4), clip)
    with pytest.raises(ValueError, match="divisible by 4"):
        patchify(torch.randn(1, 3, 4, 10, 8), 2, 4)
