"""Sharded checkpoints: each process writes and reads only its own share of a sharded (FSDP) model.

A sharded checkpoint is a folder `sharded/` beside the usual `model.json`, written with
`torch.distributed.checkpoint` (DCP) in its safetensors storage: every process writes its shard of
every tensor to its own file `shard-0000R-model-00001-of-00001.safetensors`, with the shard's offset
in the file's header, so no process ever holds the whole model. Keys are `model.<name>` for the
weights and `optim.<name>.<slot>` for the optimizer's tensors (AdamW's moments); the optimizer's
settings and step counts go to `optimizer.json`. Nothing is pickled.

Reading reshards: DCP reads, for each tensor a process asks for, the slices of the saved shards that
overlap it, whatever the number of processes that wrote them. So a run saved by 2 processes resumes on
1 (each tensor read whole) or on 4, and `consolidate` (or `load_model`) turns the folder into the
usual `model.safetensors` for predict and export.
"""

from __future__ import annotations

import inspect
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from tubelet.models.spec import WEIGHTS_FILE as WEIGHTS
from tubelet.models.spec import checkpoint_folders

SHARDED = "sharded"
OPTIMIZER = "optimizer.json"


def supported() -> bool:
    """Whether this torch writes DCP checkpoints as per-process safetensors shards (torch >= 2.8)."""
    try:
        from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter
    except ImportError:
        return False
    return "save_distributed" in inspect.signature(HuggingFaceStorageWriter).parameters


def check_supported() -> None:
    """Refuse, in one line, a sharded run on a torch that cannot save it."""
    if not supported():
        raise ValueError(
            f"--fsdp over several processes saves sharded checkpoints with torch.distributed."
            f"checkpoint's safetensors storage, which torch {torch.__version__} lacks: install "
            "torch>=2.8, or train without --fsdp (DDP)"
        )


def is_sharded(folder: str | Path) -> bool:
    """Whether `folder` holds a sharded checkpoint."""
    return (Path(folder) / SHARDED).is_dir()


def save_sharded(
    folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Write `folder/sharded/` (collective: every process calls it and writes its own shards).

    The new files go to `sharded.tmp/` first and replace `sharded/` only once every process has
    finished, so an interrupted save leaves the previous checkpoint whole.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    from tubelet.engine import distributed as dist

    folder = Path(folder)
    final, tmp = folder / SHARDED, folder / f"{SHARDED}.tmp"
    env = dist.dist_env()
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    tensors = {f"model.{k}": v for k, v in get_model_state_dict(model).items()}
    settings: dict[str, Any] = {}
    if optimizer is not None:
        state = get_optimizer_state_dict(model, optimizer)
        steps = {}
        for name, slots in state["state"].items():
            for slot, value in slots.items():
                if slot == "step":  # one number, the same on every process
                    steps[name] = float(value)
                else:
                    tensors[f"optim.{name}.{slot}"] = value
        settings = {"param_groups": state["param_groups"], "step": steps}
    writer = HuggingFaceStorageWriter(str(tmp), save_distributed=env.world_size > 1)
    with warnings.catch_warnings():  # one process without a group is what is meant here
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.save(tensors, storage_writer=writer)
    if env.is_main:
        (tmp / OPTIMIZER).write_text(json.dumps(settings))
    dist.barrier()
    if env.is_main:
        old = folder / f"{SHARDED}.old"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def load_sharded(
    folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Load `folder/sharded/` into `model` (and `optimizer`), each process its own share, whatever
    the number of processes that saved it (collective when there is a process group)."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    source = Path(folder) / SHARDED
    weights = get_model_state_dict(model)
    tensors = {f"model.{k}": v for k, v in weights.items()}
    state = None
    if optimizer is not None:
        state = get_optimizer_state_dict(model, optimizer)  # its moments, made if not yet there
        for name, slots in state["state"].items():
            tensors.update(
                {f"optim.{name}.{slot}": v for slot, v in slots.items() if slot != "step"}
            )
    _read(source, tensors)
    set_model_state_dict(model, {k[len("model.") :]: v for k, v in tensors.items() if k[0] == "m"})
    if optimizer is not None and state is not None:
        settings = json.loads((source / OPTIMIZER).read_text())
        for name, slots in state["state"].items():
            for slot in slots:
                if slot == "step":
                    slots[slot] = torch.tensor(settings["step"][name], dtype=slots[slot].dtype)
                else:
                    slots[slot] = tensors[f"optim.{name}.{slot}"]
        for group, saved in zip(state["param_groups"], settings["param_groups"], strict=True):
            group.update({k: v for k, v in saved.items() if k != "params"})
            if "betas" in saved:
                group["betas"] = tuple(saved["betas"])
        set_optimizer_state_dict(model, optimizer, state)


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The whole weights of the sharded checkpoint in `folder`, read in this process alone (for
    predict and export: one process holds the whole model)."""
    source = Path(folder) / SHARDED
    tensors = {
        k: torch.empty(size, dtype=dtype)
        for k, (size, dtype) in _shapes(source).items()
        if k.startswith("model.")
    }
    if not tensors:
        raise FileNotFoundError(f"no model weights in {source}: not a sharded tubelet checkpoint")
    _read(source, tensors, no_dist=True)
    return {k[len("model.") :]: v for k, v in tensors.items()}


def consolidate(folder: str | Path) -> Path:
    """Write `folder/model.safetensors` (the whole weights) from its sharded checkpoint; returns it."""
    folder = Path(folder)
    weights = read_weights(folder)
    path = folder / WEIGHTS
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp))
    tmp.replace(path)
    return path


def _shapes(source: Path) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Each tensor's whole shape and dtype, from the shard files' headers (as DCP reads them)."""
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader

    metadata = HuggingFaceStorageReader(str(source)).read_metadata()
    return {
        k: (m.size, m.properties.dtype)
        for k, m in metadata.state_dict_metadata.items()
        if hasattr(m, "size")
    }


def _read(source: Path, tensors: dict[str, Any], *, no_dist: bool = False) -> None:
    """Fill `tensors` (plain or sharded) in place from the shard files in `source`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader

    with warnings.catch_warnings():  # one process without a group is what is meant here
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(source)), no_dist=no_dist)


def consolidate_run(path: str | Path) -> list[Path]:
    """`consolidate` every sharded checkpoint of a run folder (`best/`, `last/`) or the checkpoint
    folder `path` itself; returns the files written."""
    path = Path(path)
    folders = [f for f in checkpoint_folders(path) if is_sharded(f)]
    if not folders:
        raise FileNotFoundError(
            f"no sharded checkpoint in {path} or its best/ and last/ folders: only runs trained "
            "with --fsdp under torchrun have one (other runs already hold model.safetensors)"
        )
    return [consolidate(f) for f in folders]
