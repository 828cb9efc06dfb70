"""Reusable layers and module utilities shared by the model families."""

from tubelet.nn.bottleneck import Bottleneck3d, zero_padded_conv
from tubelet.nn.checkpoint import checkpoint_module
from tubelet.nn.factories import NormFactory
from tubelet.nn.inflate import InflationReport, inflate_state_dict, load_inflated
from tubelet.nn.init import init_conv_weights
from tubelet.nn.residual import BlockFactory, residual_stage

__all__ = [
    "BlockFactory",
    "Bottleneck3d",
    "InflationReport",
    "NormFactory",
    "checkpoint_module",
    "inflate_state_dict",
    "init_conv_weights",
    "load_inflated",
    "residual_stage",
    "zero_padded_conv",
]
