"""V-JEPA 2's 3D rotary tables and the rotation they drive."""

import torch

from tubelet.nn.rope import apply_rope, axis_channels, grid_positions, vjepa_rope_3d


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
