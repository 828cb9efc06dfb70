"""Importer for Hugging Face transformers folders (`checkpoint_format="transformers"`).

A folder written by `save_pretrained` holds `config.json` and `model.safetensors` (or
`pytorch_model.bin`). Each supported tubelet model has two entries here: `CONFIG_READERS[name]`
turns the config dict into the builder's arguments (so the architecture comes from the checkpoint),
and `CONVERTERS[name]` maps the peer's state dict onto the tubelet model's keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tubelet.convert import register_architecture_reader, register_format

# tubelet model name -> (Hugging Face config dict -> builder arguments).
CONFIG_READERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
# tubelet model name -> (Hugging Face state dict -> tubelet state dict).
CONVERTERS: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {}


def _supported(name: str) -> None:
    if name not in CONVERTERS:
        raise ValueError(
            f"no transformers importer for model {name!r}; supported: {', '.join(sorted(CONVERTERS))}"
        )


def read_config(path: Path) -> dict[str, Any]:
    """The `config.json` of a Hugging Face model folder."""
    config = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{path} has no config.json; pass the folder written by the model's save_pretrained()"
        )
    return json.loads(config.read_text())


@register_architecture_reader("transformers")
def architecture(name: str, path: Path) -> dict[str, Any]:
    """Builder arguments for tubelet model `name` from the folder's config.json."""
    _supported(name)
    return CONFIG_READERS[name](read_config(path))


@register_format("transformers")
def from_transformers(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Hugging Face state dict onto the keys of tubelet model `name`."""
    _supported(name)
    return CONVERTERS[name](state)
