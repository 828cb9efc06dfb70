"""Types of the layer factories that builders pass down to the modules that use them."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

NormFactory = Callable[[int], nn.Module]
"""Builds a normalisation layer over `channels` (`nn.BatchNorm3d`, `nn.LayerNorm`, ...)."""
