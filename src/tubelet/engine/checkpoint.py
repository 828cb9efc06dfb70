"""Checkpoints: safetensors weights plus the model's spec (`tubelet.models.spec`), so one path
reloads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tubelet.convert import load_error_reason
from tubelet.engine.atomic import atomic_write, atomic_write_json
from tubelet.models import create_model
from tubelet.models.spec import SPEC_FILE as SPEC
from tubelet.models.spec import WEIGHTS_FILE as WEIGHTS
from tubelet.models.spec import ModelSpec, checkpoint_folders, read_spec, write_spec

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
LEGACY_STATE = "trainer_state.pt"  # pickled by tubelet before trainer states were safetensors


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
    atomic_write(folder / WEIGHTS, lambda p: save_file(state, str(p)))
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
    """Optimizer, scheduler, counters and random states for resuming, written without pickle:
    `trainer_state.safetensors` holds every tensor and array, `trainer_state.json` everything else
    (with each tensor's place in it), so a shared run folder can hold no code."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors, set())
    atomic_write(folder / STATE_TENSORS, lambda p: save_file(tensors, str(p)))
    atomic_write_json(folder / STATE_JSON, {"format": 1, "state": skeleton})


def load_trainer_state(folder: str | Path) -> dict[str, Any] | None:
    """The state written by `save_trainer_state`, or None when the folder has none.

    A `trainer_state.pt` of an older tubelet is read with `torch.load(weights_only=True)` (tensors,
    containers and NumPy arrays only; nothing in it can run); one that needs more is refused.
    """
    folder = Path(folder)
    if (folder / STATE_JSON).is_file():
        try:
            skeleton = json.loads((folder / STATE_JSON).read_text())["state"]
            return _decode(skeleton, load_file(str(folder / STATE_TENSORS)))
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
            raise ValueError(
                f"{folder}: the trainer state cannot be read ({error}); delete {folder} to restart "
                "the run, or pass another --out"
            ) from None
    legacy = folder / LEGACY_STATE
    if not legacy.is_file():
        return None
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core  # renamed in NumPy 2
    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), core.multiarray._reconstruct]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(legacy, map_location="cpu", weights_only=True)
    except Exception as error:  # an UnpicklingError names what the file wanted to load
        raise ValueError(
            f"{legacy} is not read: an old trainer state may hold only tensors and plain values "
            f"({load_error_reason(error)}; nothing in it was run); delete {folder} to restart the "
            "run, or pass another --out"
        ) from None


def _encode(value: Any, tensors: dict[str, torch.Tensor], seen: set[int]) -> Any:
    """`value` as JSON, its tensors and arrays moved to `tensors` under "t<n>" and referenced by name.

    Containers are tagged where JSON would lose them: tuples, dicts whose keys are not all strings
    (an optimizer's parameter ids), and NumPy arrays (with their dtype)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        # safetensors refuses tensors that share memory (one state can hold the same one twice).
        if tensor.untyped_storage().data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        name = f"t{len(tensors)}"
        tensors[name] = tensor
        return {"tensor": name}
    if type(value).__module__ == "numpy" and hasattr(value, "dtype"):
        if getattr(value, "ndim", 0) == 0:  # a NumPy scalar: its Python value
            return value.item()
        name = f"t{len(tensors)}"
        tensors[name] = torch.from_numpy(
            value.astype("int64" if value.dtype.kind == "u" else value.dtype)
        )
        return {"ndarray": name, "dtype": str(value.dtype)}
    if isinstance(value, list):
        return [_encode(v, tensors, seen) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, tensors, seen) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"dict": {k: _encode(v, tensors, seen) for k, v in value.items()}}
        return {
            "pairs": [
                [_encode(k, tensors, seen), _encode(v, tensors, seen)] for k, v in value.items()
            ]
        }
    raise TypeError(f"cannot save a {type(value).__name__} in the trainer state")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `_encode`."""
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "tensor" in value:
        return tensors[value["tensor"]]
    if "ndarray" in value:
        return tensors[value["ndarray"]].numpy().astype(value["dtype"])
    if "tuple" in value:
        return tuple(_decode(v, tensors) for v in value["tuple"])
    if "pairs" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["pairs"]}
    return {k: _decode(v, tensors) for k, v in value["dict"].items()}


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
