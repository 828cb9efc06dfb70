"""Patch and tubelet embeddings: token grids, padding and the parameter names peers use."""

import pytest
import torch
from torch import nn

from tubelet.nn.embed import FramePatchEmbed, PatchEmbed3d


def test_tubelet_embedding_is_one_strided_conv3d_channels_last():
    embed = PatchEmbed3d((2, 4, 4), 3, 8)
    x = torch.randn(2, 3, 4, 8, 12)
    out = embed(x)
    assert out.shape == (2, 2, 2, 3, 8)  # (B, T', H', W', D)
    expected = embed.proj(x).permute(0, 2, 3, 4, 1)
    torch.testing.assert_close(out, expected)
    assert set(embed.state_dict()) == {"proj.weight", "proj.bias"}


def test_padding_embedding_rounds_the_grid_up_and_norms():
    embed = PatchEmbed3d((2, 4, 4), 3, 8, norm_layer=nn.LayerNorm, pad=True)
    out = embed(torch.randn(1, 3, 3, 9, 8))
    assert out.shape == (1, 2, 3, 2, 8)
    torch.testing.assert_close(out.mean(-1), torch.zeros(1, 2, 3, 2), atol=1e-5, rtol=0)
    assert {"norm.weight", "norm.bias"} <= set(embed.state_dict())


@pytest.mark.parametrize("size", [(8, 8), (9, 13)])
def test_frame_patches_are_embedded_frame_by_frame(size):
    embed = FramePatchEmbed(3, 6, 4)
    x = torch.randn(2, 3, 5, *size)
    tokens, grid = embed(x)
    assert grid == (size[0] // 4, size[1] // 4)
    assert tokens.shape == (2, 5, grid[0] * grid[1], 6)
    frame = embed.proj(x[:, :, 3]).flatten(2).transpose(1, 2)  # frame 3 alone, (B, h*w, D)
    torch.testing.assert_close(tokens[:, 3], frame)
