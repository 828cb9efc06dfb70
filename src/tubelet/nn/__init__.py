"""Reusable layers and module utilities shared by the model families."""

from tubelet.nn.checkpoint import checkpoint_module
from tubelet.nn.factories import NormFactory
from tubelet.nn.init import init_conv_weights
from tubelet.nn.residual import BlockFactory, residual_stage

__all__ = [
    "BlockFactory",
    "NormFactory",
    "checkpoint_module",
    "init_conv_weights",
    "residual_stage",
]
