"""Checkpoints: safetensors weights plus the model's spec (`tubelet.models.spec`), so one path
reloads it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from tubelet.models import create_model
from tubelet.models.spec import SPEC_FILE as SPEC
from tubelet.models.spec import WEIGHTS_FILE as WEIGHTS
from tubelet.models.spec import ModelSpec, checkpoint_folders, read_spec, write_spec


def save_model(
    folder: str | Path, model: nn.Module, spec: ModelSpec, *, state: dict | None = None
) -> Path:
    """Write `folder/model.safetensors` and `folder/model.json` (`spec`).

    Files are written beside and renamed into place, so an interrupted save never leaves a torn file.
    `state` replaces the model's own state dict (e.g. the gathered weights of a sharded model).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = _unwrap(model).state_dict() if state is None else state
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    _atomic(folder / WEIGHTS, lambda p: save_file(state, str(p)))
    save_spec(folder, spec)
    return folder


def save_spec(folder: str | Path, spec: ModelSpec) -> None:
    """Write `folder/model.json` alone (beside the weights of a sharded checkpoint)."""
    write_spec(folder, spec)


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for a run folder (its `best/`, else `last/`) or a checkpoint folder
    (whole weights, or sharded ones: see `tubelet.engine.sharded`)."""
    from tubelet.engine.sharded import is_sharded

    for folder in checkpoint_folders(path):
        if (folder / SPEC).is_file() and ((folder / WEIGHTS).is_file() or is_sharded(folder)):
            return folder
    raise FileNotFoundError(
        f"no checkpoint in {path}: expected {SPEC} and {WEIGHTS} in it or in its best/ or last/ folder "
        "(a run folder written by `tubelet train`)"
    )


def load_model(path: str | Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model saved at `path` (run folder or checkpoint folder); returns it and its spec.

    A sharded checkpoint without `model.safetensors` is read whole into this process.
    """
    from tubelet.engine.sharded import read_weights

    folder = find_checkpoint(path)
    spec = read_spec(folder)
    if (folder / WEIGHTS).is_file():
        model = create_model(spec.model, checkpoint=str(folder / WEIGHTS), **spec.model_args)
    else:
        model = create_model(spec.model, **spec.model_args)
        model.load_state_dict(read_weights(folder))
    return model, spec


def save_trainer_state(folder: str | Path, state: dict[str, Any]) -> None:
    """Optimizer, scheduler, epoch and random states for resuming (torch.save; not for sharing)."""
    _atomic(Path(folder) / "trainer_state.pt", lambda p: torch.save(state, p))


def load_trainer_state(folder: str | Path) -> dict[str, Any] | None:
    """The state written by `save_trainer_state`, or None when the folder has none."""
    path = Path(folder) / "trainer_state.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
