"""Patch and tubelet embeddings: the strided convolutions that turn pixels into tokens."""

from __future__ import annotations

from collections.abc import Sequence

from einops import rearrange
from torch import Tensor, nn

from tubelet.nn.factories import NormFactory


class PatchEmbed3d(nn.Module):
    """(B, C, T, H, W) -> tokens (B, T', H', W', D), channels last: one Conv3d with kernel = stride
    = `patch_size` (T, H, W) (`proj`), then `norm_layer(D)` if given (`norm`).

    With `pad=True` the clip is zero-padded at the end to patch multiples (Video Swin's embedding,
    T' = ceil(T / pt)); with `pad=False` a remainder is dropped by the convolution, so callers that
    need whole tubes check the size first (VideoMAE's tubelet embedding).
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        in_channels: int,
        dim: int,
        *,
        norm_layer: NormFactory | None = None,
        pad: bool = False,
    ) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.pad = pad
        self.proj = nn.Conv3d(in_channels, dim, self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.pad:
            t, h, w = x.shape[2:]
            pt, ph, pw = ((-n) % p for n, p in zip((t, h, w), self.patch_size, strict=True))
            if pt or ph or pw:
                x = nn.functional.pad(x, (0, pw, 0, ph, 0, pt))
        x = rearrange(self.proj(x), "b d t h w -> b t h w d")  # (B, T', H', W', D)
        return self.norm(x)


class FramePatchEmbed(nn.Module):
    """Each frame cut into non-overlapping `patch_size` patches, projected to `dim` by one Conv2d
    (`proj`): the per-frame embedding of TimeSformer and of image ViTs applied frame by frame."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(B, C, T, H, W) -> tokens (B, T, h*w, D) and the patch grid (h, w) = (H//p, W//p)."""
        batch = x.shape[0]
        x = self.proj(rearrange(x, "b c t h w -> (b t) c h w"))  # (B*T, D, h, w)
        grid = (x.shape[2], x.shape[3])
        return rearrange(x, "(b t) d h w -> b t (h w) d", b=batch), grid
