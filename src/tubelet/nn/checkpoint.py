"""Activation checkpointing that leaves a module's buffers as a plain forward leaves them.

Two levels, named by `checkpoint_level`:

- "full": the checkpointed module keeps only its inputs; backward runs its whole forward again.
- "selective": as "full", but the outputs of the fused attention kernels
  (`scaled_dot_product_attention`) are kept and not recomputed (PyTorch's selective activation
  checkpointing, `torch.utils.checkpoint.create_selective_checkpoint_contexts`). Attention over L
  tokens costs O(L^2 D) to compute and its output is only (L, D): for a ViT-B block at 1568 tokens
  it is a quarter of the forward's multiply-adds but one of the ~16 (L, D) tensors a plain block
  keeps. A module without attention (a CNN stage) recomputes everything, as under "full".
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

CHECKPOINT_LEVELS = ("full", "selective")

# The fused attention kernels `F.scaled_dot_product_attention` dispatches to (CPU flash, CUDA flash,
# memory-efficient, cuDNN). The math fallback decomposes into matmuls and softmax and is recomputed.
_ATTENTION_OPS = frozenset(
    {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
        torch.ops.aten._scaled_dot_product_flash_attention.default,
        torch.ops.aten._scaled_dot_product_efficient_attention.default,
        torch.ops.aten._scaled_dot_product_cudnn_attention.default,
    }
)

# Newer PyTorch can route the tensors selective checkpointing keeps through the surrounding
# saved-tensor hooks (off by default): `tubelet memory` counts saved tensors with such a hook.
_HOOKS_SEE_SAC = "respect_saved_tensors_hooks" in inspect.signature(checkpoint).parameters


def checkpoint_level(enable: bool | str) -> str | None:
    """The level `set_grad_checkpointing(enable)` asks for: None (off), "full" or "selective".

    True means "full". Anything else is refused with the accepted values.
    """
    if isinstance(enable, bool):
        return "full" if enable else None
    if enable in CHECKPOINT_LEVELS:
        return enable
    raise ValueError(
        f"unknown grad checkpointing level {enable!r}: use True, False or one of "
        f"{', '.join(CHECKPOINT_LEVELS)}"
    )


class _RestoreBuffers:
    """Context manager putting a module's buffers back to the values they had at `__enter__`."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.saved: list[tuple[Tensor, Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [(buf, buf.clone()) for buf in self.module.buffers()]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Also on an exception: the non-reentrant checkpoint ends a recomputation early by raising.
        with torch.no_grad():
            for buf, value in self.saved:
                buf.copy_(value)
        self.saved = []


@contextmanager
def _both(
    first: AbstractContextManager[Any], second: AbstractContextManager[Any]
) -> Iterator[None]:
    with first, second:
        yield


def _keep_attention(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """Selective checkpointing policy: keep the attention kernels' outputs, recompute the rest."""
    return CheckpointPolicy.MUST_SAVE if op in _ATTENTION_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _contexts(
    module: nn.Module, level: str
) -> tuple[AbstractContextManager[Any], AbstractContextManager[Any]]:
    """(context of the first forward, context of the recomputation in backward)."""
    if level == "full":
        return nullcontext(), _RestoreBuffers(module)
    forward, recompute = create_selective_checkpoint_contexts(_keep_attention)
    return forward, _both(_RestoreBuffers(module), recompute)


def checkpoint_module(module: nn.Module, *args: Any, level: str = "full", **kwargs: Any) -> Any:
    """`module(*args, **kwargs)` with activation checkpointing at `level` ("full" or "selective").

    The module's activations are not kept for backward (under "selective", the attention outputs
    are); backward runs its forward again to recompute them (less memory, up to one more forward).
    That second forward would update buffers a second time (BatchNorm's running statistics and
    batch counter), so the module's buffers are restored after it: outputs, gradients and buffers
    all equal those of a plain call. RNG state is replayed, so dropout draws the same mask both
    times.
    """
    if level not in CHECKPOINT_LEVELS:
        raise ValueError(
            f"unknown checkpoint level {level!r}: use {' or '.join(CHECKPOINT_LEVELS)}"
        )
    options = {"respect_saved_tensors_hooks": True} if _HOOKS_SEE_SAC and level != "full" else {}
    return checkpoint(
        module,
        *args,
        use_reentrant=False,
        context_fn=partial(_contexts, module, level),
        **options,
        **kwargs,
    )
