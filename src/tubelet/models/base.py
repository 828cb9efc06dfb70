"""`VideoClassifier`: the classifier contract and head that every video classifier shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from tubelet.nn import checkpoint_module
from tubelet.nn.checkpoint import checkpoint_level


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")


class VideoClassifier(nn.Module, ABC):
    """Base of the video classifiers: owns the head and the model contract.

    A subclass calls `super().__init__(...)`, builds its trunk and implements `forward_features`,
    (B, C, T, H, W) -> un-pooled features (B, num_features, *dims). The head averages them over
    every dim after the channel dim, then applies dropout (`head_drop`) and the linear `fc`; these
    names match torchvision's, so its checkpoints load key for key. A subclass with an
    attention-pooling head (V-JEPA 2, VideoPrism) sets `pooler`, a module taking the tokens
    (B, N, D) to (B, D), which then pools in place of the mean; a subclass whose features are not
    laid out channel-first (tokens, a class token) overrides `pool_features`.

    `head_modules` names the child modules that make up the head (what a frozen-backbone probe
    trains); every other parameter belongs to the backbone.
    """

    head_modules: tuple[str, ...] = ("fc",)

    def __init__(self, *, num_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        _check_num_classes(num_classes)
        self.num_features = num_features
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(dropout)
        self.pooler: nn.Module | None = None
        self.fc = nn.Linear(num_features, num_classes)
        self.init_head(self.fc)
        self.grad_checkpointing: bool | str = False  # or "full" / "selective" (checkpoint_level)

    @abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> un-pooled features (B, num_features, *dims)."""

    def init_head(self, fc: nn.Linear) -> None:
        """Initialise a new classifier layer: weights N(0, 0.01), zero bias (torchvision's)."""
        nn.init.normal_(fc.weight, 0.0, 0.01)
        nn.init.zeros_(fc.bias)

    def pool_features(self, feats: Tensor) -> Tensor:
        """(B, D, *dims) -> (B, D): `pooler` over the N = prod(dims) tokens when the model has
        one, else the mean over every dim after the channel dim."""
        if feats.ndim < 3:
            raise ValueError(
                f"features must be (B, D, *dims) with at least one dim to pool, got shape "
                f"{tuple(feats.shape)}; pass the output of forward_features"
            )
        if self.pooler is not None:
            return self.pooler(feats.flatten(2).transpose(1, 2))  # (B, N, D) -> (B, D)
        # The mean in the order the features are stored: transformers hand out their (B, N, D)
        # tokens as a (B, D, ...) view, channels-last CNNs too. Pooling that view as (B, D, ...)
        # would copy it, and backward would give every layer a gradient in the transposed layout
        # (a copy per reshape and strided elementwise kernels in each block).
        if feats.stride(1) == 1 and feats.shape[1] > 1:
            return feats.movedim(1, -1).mean(dim=tuple(range(1, feats.ndim - 1)))
        return feats.mean(dim=tuple(range(2, feats.ndim)))

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Features (B, D, *dims) -> logits (B, num_classes), or the pooled (B, D) if `pre_logits`."""
        pooled = self.pool_features(feats)  # (B, D)
        if pre_logits:
            return pooled
        return self.fc(self.head_drop(pooled))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace `fc` by a freshly initialised one with `num_classes` outputs, same device and dtype."""
        _check_num_classes(num_classes)
        old = self.fc.weight
        self.fc = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)
        self.init_head(self.fc)
        self.num_classes = num_classes

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Checkpoint the trunk's stages or blocks while training (less memory, one more forward).

        `enable`: True or "full"; "selective" also keeps the attention outputs, which are costly to
        recompute and small (`tubelet.nn.checkpoint`); False turns checkpointing off.
        """
        self.grad_checkpointing = checkpoint_level(enable) or False

    def maybe_checkpoint(self, module: nn.Module, *args: Any) -> Any:
        """`module(*args)`, checkpointed when checkpointing is on and a training graph is recorded.

        Subclasses run each stage or block of their trunk through this in `forward_features`.
        """
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            level = checkpoint_level(self.grad_checkpointing)  # a subclass may have set True
            return checkpoint_module(module, *args, level=level)
        return module(*args)
