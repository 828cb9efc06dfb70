"""Sine-cosine tables: VideoMAE's token positions and the DDPM timestep embedding."""

import math

import numpy as np
import pytest
import torch

from tubelet.nn.positions import sinusoid_positions, sinusoid_table


@pytest.mark.parametrize("dim", [6, 7])
def test_positions_equal_videomae_table(dim):
    # VideoMAE's numpy table (get_sinusoid_encoding_table), written out.
    length = 10
    angles = np.array(
        [[p / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for p in range(length)]
    )
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    torch.testing.assert_close(sinusoid_positions(length, dim), torch.tensor(angles).float())


@pytest.mark.parametrize("dim", [16, 9])
def test_cos_sin_layout_equals_the_ddpm_timestep_embedding(dim):
    # diffusers' get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0), written out.
    t = torch.tensor([0.0, 1.0, 17.0, 999.0])
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / half)
    angles = t[:, None] * freqs[None]
    expected = torch.cat([angles.cos(), angles.sin()], dim=-1)
    table = sinusoid_table(t, dim, layout="cos_sin")
    assert table.shape == (4, dim)
    if dim % 2 == 0:
        torch.testing.assert_close(table, expected, atol=1e-4, rtol=0)
    else:  # an odd channel count keeps a zero channel at the end; the rest are sinusoids
        assert torch.equal(table[:, -1], torch.zeros(4))


def test_every_position_gets_its_own_row_and_bad_layouts_are_refused():
    table = sinusoid_table(torch.arange(8), 16, layout="cos_sin")
    assert len({tuple(r.tolist()) for r in table}) == 8
    with pytest.raises(ValueError, match="layout"):
        sinusoid_table(torch.arange(8), 16, layout="halves")
