"""VideoMAE pre-training: mask most tubes, encode the visible ones, reconstruct the hidden pixels.

Tong et al., "VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised Video
Pre-Training" (NeurIPS 2022). With N tubes (in (t, h, w) order) and a boolean mask M (B, N), True =
masked:

1. encoder (`VideoViTEncoder`, ending with a LayerNorm) on the N - |M| visible tokens only;
2. `encoder_to_decoder` maps them to the decoder width; each gets its tube's fixed position;
3. the decoder input is [visible tokens + their positions, mask_token + positions of the masked
   tubes]: attention has no notion of order, so this equals un-shuffling into tube order;
4. light decoder blocks, `decoder_norm`, `decoder_head` -> pred (B, |M|, tubelet * patch^2 * C) for
   the masked tubes, in ascending tube order;
5. target: the clip mapped back to [0, 1] pixels (`pixel_mean`, `pixel_std`: the normalisation of the
   input), cut into tubes; with `norm_pix_loss`, each tube's values are normalised per channel by
   their mean and (unbiased) standard deviation + 1e-6 (section 4.1 of MAE: "normalized pixels");
6. loss = mean squared error over the masked tubes only.

This is what Hugging Face's `VideoMAEForPreTraining` computes (same mask -> same loss and pred);
its folders import with `checkpoint_format="transformers"`.

| name | encoder (heads x head_dim, depth) | decoder (heads x head_dim, depth) |
|---|---|---|
| `videomae_pretrain` | 12 x 64 = 768, 12 (ViT-B) | 6 x 64 = 384, 4 |
| `videomae_pretrain_s` | 6 x 64 = 384, 12 (ViT-S) | 3 x 64 = 192, 4 |
| `videomae_pretrain_t` | 3 x 64 = 192, 12 (ViT-Ti) | 2 x 64 = 128, 4 |

`head_dim` scales encoder and decoder together (channels per head). The encoder's weights load into
the classifier of the same size (`vit_b_16_video`, `vit_s_16_video`, `vit_t_16_video`) for
fine-tuning: see `tubelet.jobs.finetune`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tubelet.models.registry import register_model, variant
from tubelet.models.vit_video import VideoViTEncoder, vit_block
from tubelet.nn.checkpoint import checkpoint_level, checkpoint_module
from tubelet.nn.masking import check_mask, masking_fn, patchify, unpatchify
from tubelet.nn.positions import sinusoid_positions
from tubelet.normalization import IMAGENET_MEAN, IMAGENET_STD

# Pre-training model -> the classifier its encoder initialises.
CLASSIFIER_OF = {
    "videomae_pretrain": "vit_b_16_video",
    "videomae_pretrain_s": "vit_s_16_video",
    "videomae_pretrain_t": "vit_t_16_video",
}


@dataclass
class MaskedVideoOutput:
    """What `VideoMAEPretrain.forward` returns.

    loss: scalar, mean squared error over the masked tubes.
    pred: (B, M, tubelet * patch^2 * C), the predicted (normalised) pixels of the M masked tubes of
        each clip in ascending tube order, values laid out (frame, row, column, channel).
    mask: (B, N) bool, True = masked: the mask given, or the one drawn.
    """

    loss: Tensor
    pred: Tensor
    mask: Tensor


class VideoMAEPretrain(nn.Module):
    """Masked autoencoder for video: `forward(clip (B, C, T, H, W), mask=None) -> MaskedVideoOutput`.

    Without `mask`, one is drawn with `masking` ("tube" or "random") at `mask_ratio`.

    Encoder: `num_heads` heads of `head_dim` channels, `depth` blocks, ending with a LayerNorm when
    `encoder_norm` (VideoMAE's; Hugging Face's `use_mean_pooling=False`). Decoder: `decoder_heads`
    heads of `decoder_head_dim` channels (default `head_dim`), `decoder_depth` blocks. `pixel_mean` /
    `pixel_std` undo the input's normalisation for the targets (None: targets are the input
    values); `norm_pix_loss` normalises each target tube. `norm_eps` is the blocks' LayerNorm eps,
    `head_norm_eps` the decoder's final one (Hugging Face uses 1e-12 and 1e-5).
    `set_grad_checkpointing()` checkpoints every block without changing loss or gradients.
    """

    def __init__(
        self,
        *,
        head_dim: int,
        depth: int,
        num_heads: int,
        decoder_depth: int,
        decoder_heads: int,
        decoder_head_dim: int | None = None,
        mlp_ratio: float = 4.0,
        decoder_mlp_ratio: float = 4.0,
        tubelet_size: int = 2,
        patch_size: int = 16,
        in_channels: int = 3,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        head_norm_eps: float = 1e-6,
        encoder_norm: bool = True,
        norm_pix_loss: bool = True,
        pixel_mean: Sequence[float] | None = IMAGENET_MEAN,
        pixel_std: Sequence[float] | None = IMAGENET_STD,
        mask_ratio: float = 0.9,
        masking: str = "tube",
    ) -> None:
        super().__init__()
        if min(head_dim, depth, num_heads, decoder_depth, decoder_heads) < 1:
            raise ValueError("head sizes, depths and head counts must all be >= 1")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.mask_fn = masking_fn(masking)
        if (pixel_mean is None) != (pixel_std is None):
            raise ValueError("give both pixel_mean and pixel_std, or neither")
        if pixel_mean is not None and not len(pixel_mean) == len(pixel_std) == in_channels:
            raise ValueError(
                f"pixel_mean and pixel_std need {in_channels} values (one per channel)"
            )
        dim = head_dim * num_heads
        decoder_dim = (decoder_head_dim or head_dim) * decoder_heads
        self.mask_ratio = mask_ratio
        self.tubelet_size = tubelet_size
        self.patch_size = patch_size
        self.norm_pix_loss = norm_pix_loss
        self.encoder = VideoViTEncoder(
            dim=dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            tubelet_size=tubelet_size, patch_size=patch_size, in_channels=in_channels,
            qkv_bias=qkv_bias, drop_path=drop_path, norm_eps=norm_eps, final_norm=encoder_norm,
        )  # fmt: skip
        self.encoder_to_decoder = nn.Linear(dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            vit_block(
                decoder_dim,
                decoder_heads,
                mlp_ratio=decoder_mlp_ratio,
                qkv_bias=qkv_bias,
                norm_eps=norm_eps,
            )  # fmt: skip
            for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=head_norm_eps)
        self.decoder_head = nn.Linear(decoder_dim, tubelet_size * patch_size**2 * in_channels)
        # Not weights: the input's normalisation, undone to get [0, 1] pixel targets.
        for name, value in (("pixel_mean", pixel_mean), ("pixel_std", pixel_std)):
            tensor = None if value is None else torch.tensor(value, dtype=torch.float32)
            self.register_buffer(name, tensor, persistent=False)
        self.grad_checkpointing = False
        init_pretrain_weights(self)

    # -- masks and targets -------------------------------------------------------------------------
    def draw_mask(self, clip: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A (B, N) bool mask for `clip` drawn with this model's masking and ratio, on the clip's
        device (drawn on the generator's device, so a CPU generator reproduces it anywhere)."""
        grid = self.encoder.grid(clip.shape)
        device = generator.device if generator is not None else clip.device
        mask = self.mask_fn(
            clip.shape[0], grid, self.mask_ratio, generator=generator, device=device
        )
        return mask.to(clip.device)

    def pixels(self, clip: Tensor) -> Tensor:
        """The clip with the input normalisation undone (values in [0, 1] for image input)."""
        if self.pixel_mean is None:
            return clip
        shape = (1, -1, 1, 1, 1)  # (1, C, 1, 1, 1)
        return clip * self.pixel_std.view(shape).to(clip) + self.pixel_mean.view(shape).to(clip)

    @torch.no_grad()
    def targets(self, clip: Tensor) -> Tensor:
        """(B, C, T, H, W) -> (B, N, tubelet * patch^2 * C): the reconstruction target of every tube."""
        tubes = patchify(self.pixels(clip), self.tubelet_size, self.patch_size)  # (B, N, P*C)
        if not self.norm_pix_loss:
            return tubes
        b, n, _ = tubes.shape
        tubes = tubes.view(b, n, -1, clip.shape[1])  # (B, N, P, C)
        mean = tubes.mean(dim=2, keepdim=True)
        std = tubes.var(dim=2, unbiased=True, keepdim=True).sqrt()
        return ((tubes - mean) / (std + 1e-6)).view(b, n, -1)  # (B, N, P*C)

    @torch.no_grad()
    def reconstruct(self, clip: Tensor, out: MaskedVideoOutput) -> Tensor:
        """The clip in pixel units (B, C, T, H, W), its masked tubes replaced by `out.pred`.

        With `norm_pix_loss` the predictions are normalised tubes; they are mapped back with each
        tube's true mean and standard deviation, as VideoMAE's visualisation does.
        """
        tubes = patchify(self.pixels(clip), self.tubelet_size, self.patch_size).float()
        b, _, size = tubes.shape
        c = clip.shape[1]
        pred = out.pred.float().reshape(b, -1, size // c, c)  # (B, M, P, C)
        if self.norm_pix_loss:
            hidden = tubes[out.mask].view(b, -1, size // c, c)  # (B, M, P, C)
            std = hidden.var(dim=2, unbiased=True, keepdim=True).sqrt()
            pred = pred * (std + 1e-6) + hidden.mean(dim=2, keepdim=True)
        tubes[out.mask] = pred.reshape(-1, size)
        return unpatchify(tubes, self.encoder.grid(clip.shape), self.tubelet_size, self.patch_size)

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, clip: Tensor, mask: Tensor | None = None) -> MaskedVideoOutput:
        """Reconstruct the masked tubes of `clip`; see the module docstring for the steps."""
        n = self.encoder.grid(clip.shape)
        num_tubes = n[0] * n[1] * n[2]
        if mask is None:
            mask = self.draw_mask(clip)
        check_mask(mask, clip.shape[0], num_tubes)
        visible = self.encoder_to_decoder(self.encoder(clip, mask))  # (B, V, Dd)
        b, _, dd = visible.shape
        pos = sinusoid_positions(num_tubes, dd).to(visible).expand(b, -1, -1)  # (B, N, Dd)
        pos_visible = pos[~mask].reshape(b, -1, dd)  # (B, V, Dd)
        pos_masked = pos[mask].reshape(b, -1, dd)  # (B, M, Dd)
        x = torch.cat([visible + pos_visible, self.mask_token + pos_masked], dim=1)  # (B, N, Dd)
        for block in self.decoder_blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint_module(block, x, level=self.grad_checkpointing)
            else:
                x = block(x)
        num_masked = pos_masked.shape[1]
        pred = self.decoder_head(self.decoder_norm(x[:, -num_masked:]))  # (B, M, P*C)
        target = self.targets(clip)[mask].reshape(b, num_masked, -1)  # (B, M, P*C)
        loss = F.mse_loss(pred.float(), target.float())
        return MaskedVideoOutput(loss=loss, pred=pred, mask=mask)

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Checkpoint every encoder and decoder block while training (outputs unchanged);
        "selective" keeps the attention outputs (`tubelet.nn.checkpoint`)."""
        self.grad_checkpointing = checkpoint_level(enable) or False
        self.encoder.grad_checkpointing = self.grad_checkpointing


def init_pretrain_weights(model: VideoMAEPretrain) -> None:
    """VideoMAE's pre-training initialisation (`modeling_pretrain.py` of MCG-NJU/VideoMAE).

    Every Linear of encoder and decoder: Xavier-uniform weights, zero biases; LayerNorms 1 / 0;
    `encoder_to_decoder` and the tubelet Conv3d keep PyTorch's default; `mask_token` is a truncated
    normal(0.02). Not the fixed normal(0.02) of VideoMAE's fine-tuning code and of Hugging Face's
    `_init_weights`: 0.02 is about Xavier's scale at 768 channels, but at the 48 channels of a
    CPU-sized model it is 7x too small, each of the ~5 Linears between a visible token and a
    prediction shrinks the signal, and the loss sat at its trivial value (README, "Why the loss
    stayed at 127/128"). Xavier scales with the width, so both regimes start alike.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    model.encoder_to_decoder.reset_parameters()
    nn.init.trunc_normal_(model.mask_token, std=0.02)


# Old runs saved the per-head sizes as `width` / `decoder_width` and the channels as `in_chans`.
_RENAMED = {"width": "head_dim", "decoder_width": "decoder_head_dim", "in_chans": "in_channels"}
_VIT = {"head_dim": 64, "depth": 12, "decoder_depth": 4}  # 64-wide heads, 12 + 4 blocks


@register_model(kind="pretrain", renamed_args=_RENAMED)
@variant(VideoMAEPretrain, **_VIT, num_heads=12, decoder_heads=6)
def videomae_pretrain() -> VideoMAEPretrain:
    """VideoMAE ViT-B/16 pre-training model (decoder 384 wide, 4 blocks), 90% tube masking."""


@register_model(kind="pretrain", renamed_args=_RENAMED)
@variant(VideoMAEPretrain, **_VIT, num_heads=6, decoder_heads=3)
def videomae_pretrain_s() -> VideoMAEPretrain:
    """VideoMAE ViT-S/16 pre-training model (decoder 192 wide, 4 blocks), 90% tube masking."""


@register_model(kind="pretrain", renamed_args=_RENAMED)
@variant(VideoMAEPretrain, **_VIT, num_heads=3, decoder_heads=2)
def videomae_pretrain_t() -> VideoMAEPretrain:
    """ViT-Ti/16 pre-training model (encoder 192 wide, decoder 128 wide, 4 blocks)."""
