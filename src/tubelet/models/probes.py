"""Probes: classifiers over the frozen token features of a backbone (kind "features"), trained on
a `tubelet extract --level tokens` folder with `tubelet train --features DIR --head ...`.

Each takes a sequence of tokens (B, L, D) with a padding mask (B, L), as every features model:

| name | pooling | token order |
|---|---|---|
| `attentive_probe` | V-JEPA 2's pooler: self-attention blocks, one learned query | via the features |
| `linear_probe` | none: one linear layer over `num_tokens` tokens concatenated | yes |
| `frame_mean` (`tubelet.models.temporal`) | the mean of the tokens | no |

Assran et al. (V-JEPA 2, 2025, section 4) evaluate frozen encoders with the attentive probe; a
linear layer on mean-pooled tokens is the common "linear probe" of image and video SSL papers.
"""

from __future__ import annotations

from torch import Tensor, nn

from tubelet.models.registry import register_model
from tubelet.models.temporal import SequenceClassifier, _check_sequence
from tubelet.models.vjepa2 import AttentivePooler
from tubelet.nn.checkpoint import checkpoint_level


class AttentiveEncoder(nn.Module):
    """Tokens stay as they are; pooling is V-JEPA 2's `AttentivePooler` (`SequenceClassifier`'s
    encoder duties)."""

    def __init__(self, in_dim: int, *, num_heads: int, depth: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.num_features = in_dim
        self.pooler = AttentivePooler(in_dim, num_heads, depth=depth)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_sequence(x, mask, self.in_dim)
        return x  # (B, L, D)

    def pool(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.pooler(tokens, mask)  # (B, D)

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """The pooler is small: nothing to checkpoint."""
        checkpoint_level(enable)  # still refuses an unknown level


class FlatEncoder(nn.Module):
    """Pooling concatenates the first `num_tokens` tokens (padding and missing ones as zeros):
    (B, L, D) -> (B, num_tokens * D)."""

    def __init__(self, in_dim: int, *, num_tokens: int) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        self.in_dim = in_dim
        self.num_tokens = num_tokens
        self.num_features = in_dim * num_tokens

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_sequence(x, mask, self.in_dim)
        return x  # (B, L, D)

    def pool(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            tokens = tokens * mask[..., None].to(tokens.dtype)
        tokens = tokens[:, : self.num_tokens]
        missing = self.num_tokens - tokens.shape[1]
        return nn.functional.pad(tokens, (0, 0, 0, missing)).flatten(1)  # (B, num_tokens * D)

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        """Nothing to checkpoint."""
        checkpoint_level(enable)


@register_model(kind="features")
def attentive_probe(
    *,
    num_classes: int = 400,
    in_dim: int = 1024,
    num_heads: int | None = None,
    depth: int = 3,
    dropout: float = 0.0,
) -> SequenceClassifier:
    """V-JEPA 2's attentive probe over tokens (B, L, in_dim): `depth` self-attention blocks and a
    cross-attention query (`num_heads` heads; default: 64-channel heads, or 1 when in_dim is not
    a multiple of 64), then a linear classifier."""
    heads = num_heads or (in_dim // 64 if in_dim % 64 == 0 else 1)
    encoder = AttentiveEncoder(in_dim, num_heads=heads, depth=depth)
    return SequenceClassifier(encoder, num_classes=num_classes, dropout=dropout)


@register_model(kind="features")
def linear_probe(
    *, num_classes: int = 400, in_dim: int = 1024, num_tokens: int = 8, dropout: float = 0.0
) -> SequenceClassifier:
    """One linear layer over `num_tokens` tokens (B, L, in_dim) concatenated in their order."""
    encoder = FlatEncoder(in_dim, num_tokens=num_tokens)
    return SequenceClassifier(encoder, num_classes=num_classes, dropout=dropout)
