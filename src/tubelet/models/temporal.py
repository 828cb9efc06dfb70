"""Temporal models over per-frame features: mean pooling and a small temporal transformer.

Two ways to use them, one architecture:

- On cached features (`tubelet extract`, then `tubelet train --features FEATS`): `frame_mean` and
  `frame_transformer` are `SequenceClassifier`s. Contract: `forward(x, mask=None)` takes features
  (B, T, D) with an optional boolean `mask` (B, T) (True = a real feature, False = padding) and
  returns logits (B, num_classes); `forward_features(x, mask)` gives the encoder's tokens
  (B, L, num_features); `forward_head(tokens, pre_logits=False, mask=None)` pools them (and applies
  the classifier); `reset_classifier`, `set_grad_checkpointing` as for video classifiers.
- End to end from video, on a frozen 2D backbone: `frame2d_transformer` is a `VideoClassifier`
  (input (B, C, T, H, W)) that runs a per-frame backbone (`frame2d_resnet18`), averages its
  features over space and feeds the (B, T, D) sequence to the temporal transformer; it trains with
  `tubelet train --model frame2d_transformer -m width=16 -m backbone_checkpoint=RUN_DIR` like any
  video model. (Mean pooling end to end is `frame2d_resnet18` itself: its head averages the
  per-frame features over time.)
  `backbone_checkpoint=RUN_DIR` starts the backbone from a trained tubelet run; `freeze_backbone`
  (default) keeps its weights and BatchNorm statistics fixed, so only the temporal head learns.

Mean pooling sees the set of frames, not their order: it cannot tell an action from its time
reversal. The transformer adds learned temporal positions, so it can.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from tubelet.models.base import VideoClassifier
from tubelet.models.registry import create_model, register_model
from tubelet.models.spec import read_spec, weights_file
from tubelet.nn.block import Block
from tubelet.nn.checkpoint import checkpoint_level, checkpoint_module

POOLS = ("cls", "mean")


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over dim 1 of (B, L, D), counting only positions where `mask` (B, L) is True."""
    if mask is None:
        return x.mean(1)
    weights = mask.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)


def _check_sequence(x: Tensor, mask: Tensor | None, dim: int) -> None:
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f"expected features (B, T, {dim}), got shape {tuple(x.shape)}")
    if mask is not None and (mask.shape != x.shape[:2] or mask.dtype != torch.bool):
        raise ValueError(
            f"mask must be bool (B, T) = {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
        )


class MeanEncoder(nn.Module):
    """No parameters: tokens are the features themselves; pooling is their (masked) mean."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.num_features = in_dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_sequence(x, mask, self.in_dim)
        return x  # (B, T, D)

    def pool(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        return masked_mean(tokens, mask)  # (B, D)

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Nothing to checkpoint."""
        checkpoint_level(enable)  # still refuses an unknown level


class TransformerEncoder(nn.Module):
    """Features (B, T, in_dim) -> tokens (B, L, width): a linear projection, learned temporal
    positions (up to `max_len` steps), a class token when `pool="cls"` (L = T + 1, else L = T),
    `depth` pre-norm blocks (`tubelet.nn.block.Block`) with padding masked out of the keys,
    and a final LayerNorm. Pooling takes the class token, or the masked mean of the frame tokens."""

    def __init__(
        self,
        in_dim: int,
        *,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 2.0,
        max_len: int = 64,
        pool: str = "cls",
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, not {pool!r}")
        if min(in_dim, width, depth, num_heads, max_len) < 1:
            raise ValueError("in_dim, width, depth, num_heads and max_len must be >= 1")
        self.in_dim = in_dim
        self.num_features = width
        self.max_len = max_len
        self.pool_mode = pool
        self.grad_checkpointing = False
        self.proj = nn.Linear(in_dim, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        self.blocks = nn.ModuleList(
            Block(
                width,
                num_heads,
                mlp_dim=int(width * mlp_ratio),
                attn_drop=attn_drop,
                proj_drop=proj_drop,
            )  # fmt: skip
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        # ViT's initialisation (timm `vision_transformer.py`): N(0, 0.02) positions and class
        # token, truncated-normal linear weights, zero biases.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_sequence(x, mask, self.in_dim)
        b, t = x.shape[:2]
        if t > self.max_len:
            raise ValueError(
                f"{t} features exceed the {self.max_len} learned positions; build the model with "
                f"max_len >= {t} (-m max_len={t}) or take fewer features per video"
            )
        x = self.proj(x) + self.pos_embed[:, :t]  # (B, T, width)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)  # (B, 1 + T, width)
            if mask is not None:
                mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)  # (B, 1 + T)
        attn_mask = None if mask is None else rearrange(mask, "b l -> b 1 1 l")  # keys only
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint_module(block, x, attn_mask, level=self.grad_checkpointing)
            else:
                x = block(x, attn_mask)
        return self.norm(x)  # (B, L, width)

    def pool(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.cls_token is not None:
            return tokens[:, 0]  # (B, width)
        return masked_mean(tokens, mask)  # (B, width)

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Checkpoint each block while training (outputs unchanged); "selective" keeps the attention
        outputs (`tubelet.nn.checkpoint`)."""
        self.grad_checkpointing = checkpoint_level(enable) or False


def _init_head(fc: nn.Linear) -> None:
    nn.init.normal_(fc.weight, 0.0, 0.01)
    nn.init.zeros_(fc.bias)


class SequenceClassifier(nn.Module):
    """A temporal `encoder` (duties: `forward(x (B, T, D), mask) -> tokens`, `pool(tokens, mask)
    -> (B, num_features)`, `num_features`, `set_grad_checkpointing`) plus dropout and a linear
    classifier `fc`. Contract in the module docstring."""

    def __init__(self, encoder: nn.Module, *, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder = encoder
        self.num_features = encoder.num_features
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        _init_head(self.fc)

    def forward_features(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Features (B, T, D) -> tokens (B, L, num_features)."""
        return self.encoder(x, mask)

    def forward_head(
        self, tokens: Tensor, pre_logits: bool = False, mask: Tensor | None = None
    ) -> Tensor:
        """Tokens -> logits (B, num_classes), or the pooled (B, num_features) if `pre_logits`."""
        pooled = self.encoder.pool(tokens, mask)
        return pooled if pre_logits else self.fc(self.head_drop(pooled))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Features (B, T, D) (and padding mask (B, T)) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x, mask), mask=mask)

    def reset_classifier(self, num_classes: int) -> None:
        """A freshly initialised `fc` with `num_classes` outputs, same device and dtype."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        old = self.fc.weight
        self.fc = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)
        _init_head(self.fc)
        self.num_classes = num_classes

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Checkpoint the encoder's blocks while training (outputs unchanged)."""
        self.encoder.set_grad_checkpointing(enable)


class FrameTemporalClassifier(VideoClassifier):
    """Video (B, C, T, H, W) -> a per-frame `backbone` -> features averaged over space (B, T, D)
    -> temporal `encoder` -> pooled -> `fc`.

    The backbone must map (B, C, T, H, W) to (B, D, T, h, w) (a per-frame model); its own classifier
    is removed. With `freeze_backbone` its parameters do not train and it stays in eval mode (fixed
    BatchNorm statistics) even when the model trains. `forward_features` returns the encoder's tokens
    channel-first, (B, num_features, L), the class token at index 0 of L when it pools by class
    token (the layout of the other token models' features).
    """

    def __init__(
        self,
        backbone: VideoClassifier,
        encoder: nn.Module,
        *,
        num_classes: int,
        dropout: float = 0.0,
        freeze_backbone: bool = True,
    ) -> None:
        super().__init__(
            num_features=encoder.num_features, num_classes=num_classes, dropout=dropout
        )
        backbone.fc = nn.Identity()  # only its features are used
        self.backbone = backbone
        self.encoder = encoder
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> FrameTemporalClassifier:
        """Set training mode; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> the encoder's tokens, channel-first (B, num_features, L)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            feats = self.backbone.forward_features(x)  # (B, D, T, h, w)
        if feats.ndim != 5 or feats.shape[2] != x.shape[2]:
            raise ValueError(
                f"the backbone must keep time ((B, D, T, h, w) for T={x.shape[2]} frames), got "
                f"{tuple(feats.shape)}: use a per-frame backbone such as frame2d_resnet18"
            )
        tokens = self.encoder(rearrange(feats.mean((3, 4)), "b d t -> b t d"))  # (B, L, width)
        return rearrange(tokens, "b l d -> b d l")

    def pool_features(self, feats: Tensor) -> Tensor:
        """Tokens (B, num_features, L) -> (B, num_features) by the encoder's pooling."""
        return self.encoder.pool(rearrange(feats, "b d l -> b l d"))

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Checkpoint the encoder's blocks and, when it trains, the backbone's stages."""
        super().set_grad_checkpointing(enable)
        self.encoder.set_grad_checkpointing(enable)
        self.backbone.set_grad_checkpointing(enable and not self.freeze_backbone)


def load_backbone(
    name: str, *, width: int, checkpoint: str | Path | None = None
) -> VideoClassifier:
    """A registered per-frame classifier, from random weights or a tubelet checkpoint.

    `checkpoint` is a run folder of `tubelet train` (its `best/`, else `last/`) or a folder with
    `model.json` and `model.safetensors`; the saved model must be `name` at `width`.
    """
    if checkpoint is None:
        return create_model(name, num_classes=1, width=width)
    weights = weights_file(checkpoint)
    spec = read_spec(weights.parent)
    args = spec.model_args
    if spec.model != name or args.get("width", 64) != width:
        raise ValueError(
            f"backbone_checkpoint {checkpoint} holds {spec.model} with width={args.get('width', 64)}; "
            f"the backbone is {name} with width={width}: pass -m width={args.get('width', 64)}"
        )
    return create_model(name, checkpoint=str(weights), **args)


@register_model(kind="features")
def frame_mean(*, num_classes: int = 400, in_dim: int = 512, dropout: float = 0.0) -> nn.Module:
    """Mean of the per-frame features (B, T, in_dim), then a linear classifier."""
    return SequenceClassifier(MeanEncoder(in_dim), num_classes=num_classes, dropout=dropout)


@register_model(kind="features", renamed_args={"dim": "width"})
def frame_transformer(
    *,
    num_classes: int = 400,
    in_dim: int = 512,
    width: int = 256,
    depth: int = 2,
    num_heads: int = 4,
    mlp_ratio: float = 2.0,
    max_len: int = 64,
    pool: str = "cls",
    dropout: float = 0.0,
    attn_drop: float = 0.0,
    proj_drop: float = 0.0,
) -> nn.Module:
    """A small transformer over per-frame features (B, T, in_dim), `width` wide, learned temporal
    positions."""
    encoder = TransformerEncoder(
        in_dim, width=width, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, max_len=max_len,
        pool=pool, attn_drop=attn_drop, proj_drop=proj_drop,
    )  # fmt: skip
    return SequenceClassifier(encoder, num_classes=num_classes, dropout=dropout)


@register_model(weight_init_args=("backbone_checkpoint",), renamed_args={"dim": "temporal_width"})
def frame2d_transformer(
    *,
    num_classes: int = 400,
    backbone: str = "frame2d_resnet18",
    width: int = 64,
    backbone_checkpoint: str | None = None,
    freeze_backbone: bool = True,
    temporal_width: int | None = None,
    depth: int = 2,
    num_heads: int = 4,
    mlp_ratio: float = 2.0,
    max_len: int = 64,
    pool: str = "cls",
    dropout: float = 0.0,
) -> FrameTemporalClassifier:
    """A per-frame backbone (`backbone` with base channels `width`, frozen by default) and a
    temporal transformer over its features, `temporal_width` wide (the backbone's feature size if
    None)."""
    net = load_backbone(backbone, width=width, checkpoint=backbone_checkpoint)
    encoder = TransformerEncoder(
        net.num_features, width=temporal_width or net.num_features, depth=depth,
        num_heads=num_heads, mlp_ratio=mlp_ratio, max_len=max_len, pool=pool,
    )  # fmt: skip
    return FrameTemporalClassifier(
        net, encoder, num_classes=num_classes, dropout=dropout, freeze_backbone=freeze_backbone
    )
