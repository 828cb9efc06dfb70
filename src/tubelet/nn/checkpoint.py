"""Activation checkpointing that leaves a module's buffers as a plain forward leaves them."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


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


def _contexts(module: nn.Module) -> tuple[nullcontext[None], _RestoreBuffers]:
    """(context of the first forward, context of the recomputation in backward)."""
    return nullcontext(), _RestoreBuffers(module)


def checkpoint_module(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """`module(*args, **kwargs)` with activation checkpointing.

    The module's activations are not kept for backward; backward runs its forward again to
    recompute them (less memory, one more forward). That second forward would update buffers
    a second time (BatchNorm's running statistics and batch counter), so the module's buffers are
    restored after it: outputs, gradients and buffers all equal those of a plain call. RNG state is
    replayed, so dropout draws the same mask both times.
    """
    return checkpoint(
        module, *args, use_reentrant=False, context_fn=partial(_contexts, module), **kwargs
    )
