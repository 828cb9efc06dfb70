"""3D window helpers: clipping, padding, partition/reverse, shift mask, relative position index."""

import itertools

import pytest
import torch
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

from tubelet.nn.windows import (
    MASKED,
    clip_window,
    pad_to_windows,
    relative_position_index,
    shifted_window_mask,
    window_bias,
    window_partition,
    window_reverse,
)


def test_clip_window_shrinks_to_small_inputs_and_drops_their_shift():
    assert clip_window((16, 56, 56), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 3, 3))
    # T fits in one window (4 <= 8); H and W equal the window (7 <= 7): one window, no shift.
    assert clip_window((4, 7, 9), (8, 7, 7), (4, 3, 3)) == ((4, 7, 7), (0, 0, 3))
    with pytest.raises(ValueError, match="window must be three"):
        clip_window((4, 7, 9), (8, 7), (4, 3, 3))


def test_pad_to_windows_pads_the_end_with_zeros():
    x = torch.randn(2, 3, 5, 7, 4)
    padded = pad_to_windows(x, (2, 3, 7))
    assert padded.shape == (2, 4, 6, 7, 4)
    assert torch.equal(padded[:, :3, :5], x)
    assert padded[:, 3:].abs().sum() == 0 and padded[:, :, 5:].abs().sum() == 0
    assert pad_to_windows(x, (1, 1, 7)) is x  # nothing to pad: no copy


def test_partition_groups_each_window_and_reverse_undoes_it():
    b, size, window = 2, (4, 6, 9), (2, 3, 3)
    # Each token's channels are its own (b, t, h, w) coordinates.
    grid = torch.stack(
        torch.meshgrid(*(torch.arange(n) for n in (b, *size)), indexing="ij"), dim=-1
    )  # (B, T, H, W, 4)
    windows = window_partition(grid, window)
    assert windows.shape == (b * 2 * 2 * 3, 18, 4)
    # Window 4 of batch 0 is (t, h, w) window index (0, 1, 1): tokens t 0-1, h 3-5, w 3-5,
    # ordered t, then h, then w.
    expected = [(0, t, h, w) for t, h, w in itertools.product(range(2), range(3, 6), range(3, 6))]
    assert windows[4].tolist() == [list(c) for c in expected]
    assert windows[12, 0].tolist() == [1, 0, 0, 0]  # windows are batch-major
    assert torch.equal(window_reverse(windows, window, size), grid)


def _reference_mask(size, window, shift):
    """Brute force from the definition: after rolling by -shift, a token at p along a dim came from
    (p + shift) mod n; two tokens of one window may attend unless, along some dim, exactly one of
    them wrapped around the border (p + shift >= n)."""
    coords = list(itertools.product(*(range(n) for n in size)))

    def window_of(c):
        return tuple(p // w for p, w in zip(c, window, strict=True))

    def wrapped(c):
        return tuple(s > 0 and p + s >= n for p, s, n in zip(c, shift, size, strict=True))

    by_window: dict = {}
    for c in coords:  # (t, h, w) order inside each window, windows in (t, h, w) order
        by_window.setdefault(window_of(c), []).append(c)
    masks = []
    for key in sorted(by_window):
        tokens = by_window[key]
        masks.append(
            [[0.0 if wrapped(a) == wrapped(b) else MASKED for b in tokens] for a in tokens]
        )
    return torch.tensor(masks)


@pytest.mark.parametrize(
    ("size", "window", "shift"),
    [
        ((4, 6, 6), (2, 3, 3), (1, 1, 1)),
        ((2, 6, 9), (2, 3, 3), (0, 1, 1)),
        ((6, 4, 8), (3, 2, 4), (1, 1, 2)),
    ],
)
def test_shifted_window_mask_equals_the_definition(size, window, shift):
    mask = shifted_window_mask(size, window, shift)
    torch.testing.assert_close(mask, _reference_mask(size, window, shift), rtol=0, atol=0)
    assert (mask[0] == 0).all()  # the first window never holds wrapped tokens


def test_mask_follows_device_and_dtype():
    mask = shifted_window_mask((4, 4, 4), (2, 2, 2), (1, 1, 1), dtype=torch.float64)
    assert mask.dtype == torch.float64 and mask.shape == (8, 8, 8)


@pytest.mark.parametrize("window", [(8, 7, 7), (2, 3, 5)])
def test_relative_position_index_equals_torchvision(window):
    peer = ShiftedWindowAttention3d(8, list(window), [0, 0, 0], num_heads=2)
    index = relative_position_index(window)
    assert torch.equal(index, peer.relative_position_index)
    rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
    assert int(index.min()) == 0 and int(index.max()) == rows - 1
    assert (index.diagonal() == (rows - 1) // 2).all()  # offset (0, 0, 0): the middle row


def test_relative_position_index_is_one_row_per_offset():
    window = (2, 3, 2)
    index = relative_position_index(window)
    coords = list(itertools.product(*(range(w) for w in window)))
    row_of: dict = {}
    for i, a in enumerate(coords):
        for j, b in enumerate(coords):
            offset = tuple(p - q for p, q in zip(a, b, strict=True))
            assert row_of.setdefault(offset, int(index[i, j])) == int(index[i, j])
    assert len(set(row_of.values())) == len(row_of) == 3 * 5 * 3


def test_window_bias_reads_the_table_per_head():
    window = (2, 2, 3)
    table = torch.randn(3 * 3 * 5, 4)
    index = relative_position_index(window)
    bias = window_bias(table, index, window)
    assert bias.shape == (1, 4, 12, 12)
    assert torch.equal(bias[0, 2, 5, 7], table[index[5, 7], 2])
    # A window clipped along time reads the first rows of the full window's index.
    clipped = window_bias(table, index, (1, 2, 3))
    assert torch.equal(clipped, bias[:, :, :6, :6])
