"""The 3D rotary tables (V-JEPA 2's and Wan's, from one builder) and the rotation they drive."""

import pytest
import torch

from tubelet.nn.rope import (
    apply_rope,
    axis_channels,
    grid_positions,
    rope_3d,
    vjepa_rope_3d,
    wan_rope_3d,
)


def test_grid_positions_follow_t_h_w_order():
    pos = grid_positions((2, 3, 4))
    assert pos.shape == (3, 24)
    assert pos[:, 0].tolist() == [0, 0, 0] and pos[:, 5].tolist() == [0, 1, 1]
    assert pos[:, 23].tolist() == [1, 2, 3]


def test_tables_split_the_head_into_three_axes_and_leave_the_rest():
    cos, sin = vjepa_rope_3d((2, 3, 4), 64)
    c = axis_channels(64)
    assert c == 20 and cos.shape == sin.shape == (24, 64)
    assert torch.equal(cos[:, 3 * c :], torch.ones(24, 4)) and not sin[:, 3 * c :].any()
    token = 1 * 12 + 2 * 4 + 3  # frame 1, row 2, column 3: each chunk's first angle is its index
    angles = torch.atan2(sin[token], cos[token])
    torch.testing.assert_close(angles[[0, c, 2 * c]], torch.tensor([1.0, 2.0, 3.0]))


def test_equal_angles_in_a_pair_rotate_it_as_complex_multiplication():
    x = torch.randn(2, 5, 8)
    theta = torch.randn(5, 4)
    cos, sin = theta.repeat_interleave(2, -1).cos(), theta.repeat_interleave(2, -1).sin()
    expected = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (4, 2))) * torch.polar(
        torch.ones_like(theta), theta
    )).flatten(-2)  # fmt: skip
    torch.testing.assert_close(apply_rope(x, cos, sin), expected)
    # A rotation keeps the norm; so q.k depends only on the offset between positions.
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_one_table_builder_lays_bands_out_tiled_or_interleaved():
    grid, bands = (2, 3, 4), (4, 2, 2)
    token = 1 * 12 + 2 * 4 + 3  # frame 1, row 2, column 3
    w = 100.0 ** -(torch.arange(0, 4, 2) / 4)  # a band of 4: frequencies 1, 1/10
    expected = {
        "interleaved": [1 * w[0], 1 * w[0], 1 * w[1], 1 * w[1], 2, 2, 3, 3, 0, 0],
        "tiled": [1 * w[0], 1 * w[1], 1 * w[0], 1 * w[1], 2, 2, 3, 3, 0, 0],
    }
    for layout, angles in expected.items():
        cos, sin = rope_3d(grid, bands, 10, base=100.0, layout=layout)
        assert cos.shape == sin.shape == (24, 10) and cos.dtype == torch.float32
        torch.testing.assert_close(torch.atan2(sin[token], cos[token]), torch.tensor(angles))
    with pytest.raises(ValueError, match="must be even"):
        rope_3d(grid, (3, 2, 2), 10)


def test_wan_tables_give_time_the_rest_and_turn_pairs_together():
    cos, sin = wan_rope_3d((2, 3, 4), 16)  # 2 * (16 // 6) = 4 channels per spatial axis, 8 to time
    assert cos.shape == (24, 16)
    torch.testing.assert_close(cos[:, 0::2], cos[:, 1::2])  # both channels of each pair
    angles = torch.atan2(sin[23], cos[23])  # frame 1, row 2, column 3
    torch.testing.assert_close(angles[[0, 8, 12]], torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="even head dim"):
        wan_rope_3d((1, 1, 1), 7)
