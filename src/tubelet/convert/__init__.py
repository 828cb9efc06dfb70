"""Checkpoint importers, chosen by explicit format name (never guessed from the keys).

A format is a function `(model_name, state_dict) -> state_dict` that renames/reshapes a published
checkpoint's tensors into the tubelet model's keys. `load_checkpoint` then loads the result strictly
and names every missing, unexpected or mis-shaped key if it does not fit.

A format whose checkpoints describe their own architecture (a Hugging Face folder's config.json)
also registers an architecture reader `(model_name, path) -> builder arguments`;
`create_model` builds the model from those before loading.

A format may also name checkpoint tensors that carry nothing the model computes with (a drop rule
`(model_name, key) -> reason or None`): they are left out before conversion. And it may name model
tensors that a checkpoint may lack and that then keep their initialisation (a fresh rule
`(model_name, model_key, converted_keys) -> reason or None`: a new head on a backbone-only folder).
The `ImportReport` that `load_checkpoint` returns (and logs) names each such key with its reason.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from tubelet.models.spec import WEIGHTS_FILE, checkpoint_folders
from tubelet.nn.mlp import upgrade_mlp_keys

Converter = Callable[[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
ArchitectureReader = Callable[[str, Path], dict[str, Any]]
DropRule = Callable[[str, str], str | None]
FreshRule = Callable[[str, str, frozenset[str]], str | None]
_FORMATS: dict[str, Converter] = {}
_ARCHITECTURES: dict[str, ArchitectureReader] = {}
_DROP_RULES: dict[str, DropRule] = {}
_FRESH_RULES: dict[str, FreshRule] = {}
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportReport:
    """What `load_checkpoint` did: tensors loaded, each checkpoint key left out (`dropped`), each
    model key left at its initialisation (`initialised`) and each key of a layer's older layout
    loaded under today's name (`renamed`), with why."""

    source: str
    checkpoint_format: str
    loaded: int
    dropped: dict[str, str] = field(default_factory=dict)
    initialised: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        line = (
            f"imported {self.loaded} tensors from {self.source} ({self.checkpoint_format} format)"
        )
        parts = [line]
        for verb, keys_why in (
            ("dropped", self.dropped),
            ("initialised", self.initialised),
            ("renamed", self.renamed),
        ):
            by_reason: dict[str, list[str]] = {}
            for key, reason in keys_why.items():
                by_reason.setdefault(reason, []).append(key)
            parts += [
                f"{verb} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}): {why}"
                for why, keys in by_reason.items()
            ]
        return "; ".join(parts)


def register_format(
    name: str, *, drop: DropRule | None = None, fresh: FreshRule | None = None
) -> Callable[[Converter], Converter]:
    """Register a converter under a format name (`@register_format("torchvision")`); `drop`
    names the checkpoint keys to leave out and `fresh` the model keys a checkpoint may lack, each
    with the reason the report gives."""

    def wrap(fn: Converter) -> Converter:
        _FORMATS[name] = fn
        if drop is not None:
            _DROP_RULES[name] = drop
        if fresh is not None:
            _FRESH_RULES[name] = fresh
        return fn

    return wrap


def register_architecture_reader(name: str) -> Callable[[ArchitectureReader], ArchitectureReader]:
    """Register how format `name` reads builder arguments from a checkpoint path."""

    def wrap(fn: ArchitectureReader) -> ArchitectureReader:
        _ARCHITECTURES[name] = fn
        return fn

    return wrap


def architecture_from_checkpoint(
    name: str, path: str | Path, checkpoint_format: str | None
) -> dict[str, Any]:
    """The builder arguments a checkpoint states about itself (empty for formats that do not)."""
    reader = _ARCHITECTURES.get(checkpoint_format or "tubelet")
    return reader(name, Path(path)) if reader else {}


PreprocessingReader = Callable[[str, Path], dict[str, Any] | None]
_PREPROCESSING: dict[str, PreprocessingReader] = {}


def register_preprocessing_reader(
    name: str,
) -> Callable[[PreprocessingReader], PreprocessingReader]:
    """Register how format `name` reads a checkpoint's own preprocessing from its path."""

    def wrap(fn: PreprocessingReader) -> PreprocessingReader:
        _PREPROCESSING[name] = fn
        return fn

    return wrap


def preprocessing_from_checkpoint(
    name: str, path: str | Path, checkpoint_format: str | None
) -> dict[str, Any] | None:
    """How the checkpoint's model takes clips, as its source states it: `frames`, `size` (the
    crop side), `mean` and `std` of [0, 1] pixels; None when the format does not say."""
    reader = _PREPROCESSING.get(checkpoint_format or "tubelet")
    return reader(name, Path(path)) if reader else None


def list_formats() -> list[str]:
    """Every checkpoint format `create_model(checkpoint_format=...)` accepts."""
    return sorted(_FORMATS)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, a `torch.save` file (`.pt`/`.pth`/`.bin`), or a folder
    holding `model.safetensors` (or a Hugging Face `pytorch_model.bin`, or a diffusers
    `diffusion_pytorch_model.safetensors`, whole or in shards listed by its `.index.json`). Wrappers
    such as {"state_dict": ...} or {"model": ...} are unwrapped."""
    path = Path(path)
    index = path / "diffusion_pytorch_model.safetensors.index.json"
    if path.is_dir() and index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(path / shard)))
        return state
    if path.is_dir():
        # A tubelet checkpoint or run folder (`tubelet.models.spec`), else a Hugging Face folder.
        candidates = [f / WEIGHTS_FILE for f in checkpoint_folders(path)] + [
            path / "pytorch_model.bin",
            path / "diffusion_pytorch_model.safetensors",
        ]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"no model.safetensors (or pytorch_model.bin) in checkpoint folder {path}"
            )
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        # weights_only: tensors and plain containers; a pickle that asks for anything else (code
        # to run) is refused by torch before it runs.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"{path} cannot be read as a checkpoint ({load_error_reason(error)}); it is truncated, "
            "not a weights file, or holds more than tensors (nothing in it was run): use the "
            "original file"
        ) from None
    for key in ("state_dict", "model_state", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return state


def load_error_reason(error: BaseException) -> str:
    """One short line saying why `torch.load(weights_only=True)` or safetensors refused a file
    (for a pickle: the global it asked for, e.g. "it asks for builtins.exec")."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    wanted = re.search(r"Unsupported (?:global|operand)[^A-Za-z]*(?:GLOBAL )?([\w.]+)", text)
    if wanted:
        return f"it asks for {wanted.group(1)}"
    first = (text.strip().splitlines() or [type(error).__name__])[0]
    return first[:200]


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`, refusing any partial load with a message naming the keys.

    Keys of a layer's older layout that the layer itself still loads (an `nn.Sequential` MLP's
    `mlp.0.weight`: `tubelet.nn.mlp.upgrade_mlp_keys`) are renamed before the names are compared.
    """
    state = upgrade_mlp_keys(model, state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {source} does not fit {type(model).__name__}:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if keys:
                shown = ", ".join(keys[:8]) + (
                    f", ... ({len(keys)} in all)" if len(keys) > 8 else ""
                )
                lines.append(f"  {title}: {shown}")
        lines.append(
            "  Check the model name, its arguments (num_classes, width, ...) and checkpoint_format."
        )
        raise ValueError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def load_checkpoint(
    model: nn.Module,
    name: str,
    path: str | Path,
    checkpoint_format: str | None = None,
    *,
    head: tuple[str, ...] = (),
    new_head: bool = False,
) -> ImportReport:
    """Import the checkpoint at `path`, written in `checkpoint_format`, into `model` (named `name`).

    `head` names top-level modules (a classifier's `head_modules`) whose tensors load only where
    they fit (none with `new_head`); the rest keeps its initialisation: a new head on the
    checkpoint's backbone.
    Returns (and logs) the report: how many tensors were loaded, which keys the format's drop rule
    (or a head that does not fit) left out and which model keys were left at their initialisation,
    and why. Anything else that does not fit is refused.
    """
    fmt = checkpoint_format or "tubelet"
    if fmt not in _FORMATS:
        raise ValueError(f"unknown checkpoint_format {fmt!r}; known formats: {list_formats()}")
    state = read_state_dict(path)
    drop = _DROP_RULES.get(fmt)
    dropped = {k: why for k in state if drop is not None and (why := drop(name, k)) is not None}
    converted = _FORMATS[fmt](name, {k: v for k, v in state.items() if k not in dropped})
    state = upgrade_mlp_keys(model, converted)  # before the fresh and head rules compare names
    renamed = dict.fromkeys(
        sorted(set(converted) - set(state)),
        "an nn.Sequential MLP's key (saved before tubelet.nn.Mlp): loaded as fc1/fc2",
    )
    own = model.state_dict()
    fresh, have = _FRESH_RULES.get(fmt), frozenset(state)
    initialised = {
        k: why
        for k in own
        if k not in state and fresh is not None and (why := fresh(name, k, have)) is not None
    }
    if head:  # the checkpoint's head where it fits the model's; a new one elsewhere
        in_head = [k for k in {*state, *own} if k.split(".")[0] in head]
        for key in in_head:
            if key in state and new_head:
                dropped[key] = "the checkpoint's head: a new head trains on its backbone"
                del state[key]
            elif key in state and (key not in own or state[key].shape != own[key].shape):
                dropped[key] = "the checkpoint's head does not fit the model's: a new head trains"
                del state[key]
        for key in in_head:
            if key in own and key not in state:
                initialised.setdefault(key, "a new head: it starts from its initialisation")
    load_state_dict_strict(
        model, {**state, **{k: own[k] for k in initialised}}, f"{path} ({fmt} format)"
    )
    report = ImportReport(str(path), fmt, len(state), dropped, initialised, renamed)
    logger.info("%s", report)
    return report


@register_format("tubelet")
def _tubelet(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return state


from tubelet.convert import diffusers as _diffusers  # noqa: E402,F401  (registers its format)
from tubelet.convert import pytorchvideo as _pytorchvideo  # noqa: E402,F401  (registers its formats)
from tubelet.convert import raft as _raft  # noqa: E402,F401  (registers its format)
from tubelet.convert import torchvision as _torchvision  # noqa: E402,F401  (registers its format)
from tubelet.convert import transformers as _transformers  # noqa: E402,F401  (registers its format)
