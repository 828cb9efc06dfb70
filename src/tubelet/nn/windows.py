"""3D (shifted) window helpers for window attention: pure functions on (B, T, H, W, C) tokens.

Video Swin (Liu et al., 2022, https://arxiv.org/abs/2106.13230) attends within non-overlapping
windows of Wt x Wh x Ww tokens, and in every other block shifts the windows by half a window so
information crosses window borders. The shift is a cyclic `torch.roll` of the token grid; tokens
that the roll brings together from opposite borders are kept apart by an additive mask
(`shifted_window_mask`). A module holds the parameters and calls, in order:

    window, shift = clip_window(size, window, shift)     # small inputs: one window, no shift
    x = pad_to_windows(x, window)                        # (B, T', H', W', C), multiples of window
    x = torch.roll(x, [-s for s in shift], dims=(1, 2, 3))
    windows = window_partition(x, window)                # (B * nW, Wt * Wh * Ww, C)
    ... attention with bias + shifted_window_mask(...) ...
    x = window_reverse(windows, window, x.shape[1:4])    # (B, T', H', W', C)
    x = torch.roll(x, shift, dims=(1, 2, 3))[:, :T, :H, :W]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

Size3d = tuple[int, int, int]

# The value added between tokens of different shifted-window regions: the original Swin code's,
# kept (rather than -inf) so the softmax equals torchvision's and the reference implementation's.
MASKED = -100.0


def _triple(values: Sequence[int], name: str) -> Size3d:
    if len(values) != 3 or any(int(v) < 0 for v in values):
        raise ValueError(f"{name} must be three non-negative ints (T, H, W), got {tuple(values)}")
    return int(values[0]), int(values[1]), int(values[2])


def clip_window(
    size: Sequence[int], window: Sequence[int], shift: Sequence[int]
) -> tuple[Size3d, Size3d]:
    """The window and shift used on a token grid of `size` (T, H, W).

    Along a dim where the whole input fits in one window (size <= window), the window shrinks to the
    input and there is no shift (a roll inside one window would only mix its borders). This is
    Video Swin's rule, so a model trained on 32x224x224 clips also runs on short or small ones.
    """
    size, window, shift = (
        _triple(size, "size"),
        _triple(window, "window"),
        _triple(shift, "shift"),
    )
    pairs = [
        (s, w, sh) if s > w else (s, s, 0) for s, w, sh in zip(size, window, shift, strict=True)
    ]
    return (
        (pairs[0][1], pairs[1][1], pairs[2][1]),
        (pairs[0][2], pairs[1][2], pairs[2][2]),
    )


def pad_to_windows(x: Tensor, window: Sequence[int]) -> Tensor:
    """Zero-pad (B, T, H, W, C) at the end of T, H and W up to multiples of `window`."""
    t, h, w = x.shape[1:4]
    pt, ph, pw = ((-n) % k for n, k in zip((t, h, w), window, strict=True))
    if pt or ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph, 0, pt))
    return x


def window_partition(x: Tensor, window: Sequence[int]) -> Tensor:
    """(B, T, H, W, C) with T, H, W multiples of `window` -> (B * nW, Wt * Wh * Ww, C).

    Windows are ordered batch first, then (t, h, w) window index; tokens inside a window are ordered
    (t, h, w), the order `relative_position_index` assumes.
    """
    wt, wh, ww = window
    return rearrange(
        x, "b (nt wt) (nh wh) (nw ww) c -> (b nt nh nw) (wt wh ww) c", wt=wt, wh=wh, ww=ww
    )


def window_reverse(windows: Tensor, window: Sequence[int], size: Sequence[int]) -> Tensor:
    """(B * nW, Wt * Wh * Ww, C) -> (B, T, H, W, C) for the padded grid `size` (T, H, W)."""
    wt, wh, ww = window
    nt, nh, nw = (n // k for n, k in zip(size, window, strict=True))
    return rearrange(
        windows,
        "(b nt nh nw) (wt wh ww) c -> b (nt wt) (nh wh) (nw ww) c",
        nt=nt, nh=nh, nw=nw, wt=wt, wh=wh, ww=ww,
    )  # fmt: skip


def shifted_window_mask(
    size: Sequence[int],
    window: Sequence[int],
    shift: Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Additive mask (nW, N, N), N = Wt * Wh * Ww, for attention in windows of a rolled grid.

    After rolling the padded grid `size` by -`shift`, the last window along each shifted dim holds
    tokens from two (or, at a corner, up to eight) regions that were not neighbours before the roll.
    Each dim splits into regions [0, size - window), [size - window, size - shift),
    [size - shift, size); a dim with no shift is one region. Pairs of tokens in different regions
    get `MASKED`, others 0.
    """
    regions = []
    for n, w, s in zip(size, window, shift, strict=True):
        idx = torch.arange(n, device=device)
        if s == 0:
            regions.append(torch.zeros_like(idx))
        else:
            regions.append((idx >= n - w).long() + (idx >= n - s).long())
    rt, rh, rw = regions
    label = rt[:, None, None] * 9 + rh[None, :, None] * 3 + rw[None, None, :]  # (T, H, W)
    label = window_partition(label[None, ..., None], window)[..., 0]  # (nW, N)
    mask = torch.zeros(label.shape[0], label.shape[1], label.shape[1], device=device, dtype=dtype)
    return mask.masked_fill_(label[:, :, None] != label[:, None, :], MASKED)


def relative_position_index(window: Sequence[int]) -> Tensor:
    """(N, N) long, N = Wt * Wh * Ww: the row of the relative position bias table for each pair.

    The table has (2Wt - 1)(2Wh - 1)(2Ww - 1) rows, one per 3D offset between two tokens of a
    window; offset (dt, dh, dw) of query minus key is row
    (dt + Wt - 1) * (2Wh - 1)(2Ww - 1) + (dh + Wh - 1) * (2Ww - 1) + (dw + Ww - 1).
    """
    wt, wh, ww = window
    coords = torch.stack(
        torch.meshgrid(torch.arange(wt), torch.arange(wh), torch.arange(ww), indexing="ij")
    ).flatten(1)  # (3, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (3, N, N)
    dt, dh, dw = rel[0] + wt - 1, rel[1] + wh - 1, rel[2] + ww - 1
    return (dt * (2 * wh - 1) + dh) * (2 * ww - 1) + dw


def window_bias(table: Tensor, index: Tensor, window: Sequence[int]) -> Tensor:
    """Relative position bias (1, heads, N, N) for windows of `window` tokens, N = Wt * Wh * Ww.

    `table` is (rows, heads) and `index` the full window's `relative_position_index`. For a window
    clipped to a small input, the bias is read from the first N rows and columns of the full
    window's index, as the original Video Swin code and torchvision do (so their checkpoints give
    the same outputs); this is the exact sub-window bias when only time is clipped.
    """
    n = window[0] * window[1] * window[2]
    bias = table[index[:n, :n].reshape(-1)]  # (N * N, heads)
    return rearrange(bias, "(q k) h -> 1 h q k", q=n)
