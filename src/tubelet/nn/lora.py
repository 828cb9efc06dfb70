"""LoRA adapters (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models") on a
model's Linear projections, through PEFT.

Each targeted Linear W gets W x + (alpha / r) B A x with A (r, in) random and B (out, r) zero, so
an adapted model starts as the base model; only A and B train. PEFT's `inject_adapter_in_model`
puts its LoRA layers into the model in place (no wrapper class), so the model keeps its own
`forward`, `set_grad_checkpointing` and registry name, and PEFT's state-dict helpers give the
adapter tensors alone under the model's own key names (`blocks.0.self_attn.qkv.lora_A.weight`).

An adapter file is safetensors with the rank, alpha and target pattern in its metadata:
`save_adapter` / `load_adapter` round-trip it onto freshly built base weights, and `merge_lora`
folds the adapters into the base weights (W + (alpha / r) B A) and removes the LoRA layers, so
sampling runs the plain model at the base model's speed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft import set_peft_model_state_dict as _set_peft_state
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn.modules.module import _IncompatibleKeys

# The attention and MLP projections of the diffusion transformers (wan_dit's names).
DIT_TARGETS = r".*\.(self_attn\.(qkv|proj)|cross_attn\.(q|k|v|proj)|mlp\.(fc1|fc2))$"


@dataclass(frozen=True)
class LoraSpec:
    """An adapter's shape: rank r, scale numerator alpha, and the regex of targeted modules."""

    rank: int
    alpha: float
    targets: str = DIT_TARGETS

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")


def add_lora(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Put LoRA layers on the modules of `model` whose names match `spec.targets`, and freeze
    every other parameter; returns the adapted modules' names. Refuses a pattern matching none."""
    config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, target_modules=spec.targets, lora_dropout=0.0
    )
    try:
        inject_adapter_in_model(config, model)
    except ValueError as err:
        raise ValueError(
            f"LoRA targets {spec.targets!r} match no Linear layer of {type(model).__name__}"
        ) from err
    for name, p in model.named_parameters():
        p.requires_grad = ".lora_" in name
    return [name for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The LoRA tensors of `model` alone, under the model's key names."""
    return get_peft_model_state_dict(model)


def set_adapter_state_dict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load adapter tensors into a model with the same LoRA layers; refuses any that do not fit."""
    own = adapter_state_dict(model)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"adapter {source} does not fit {type(model).__name__}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, other shapes {shapes[:3]}; load it onto the base model "
            "it was trained on"
        )
    _set_peft_state(model, state)


def save_adapter(model: nn.Module, spec: LoraSpec, path: str | Path) -> None:
    """Write the adapter tensors to `path` (safetensors) with `spec` in the metadata."""
    state = {k: v.detach().contiguous() for k, v in adapter_state_dict(model).items()}
    metadata = {
        "lora_rank": str(spec.rank),
        "lora_alpha": str(spec.alpha),
        "lora_targets": spec.targets,
    }
    save_file(state, str(path), metadata=metadata)


def read_adapter(path: str | Path) -> tuple[LoraSpec, dict[str, Tensor]]:
    """(spec, tensors) of an adapter file written by `save_adapter`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter {path} does not exist")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    if "lora_rank" not in meta:
        raise ValueError(f"{path} is not a tubelet LoRA adapter (no lora_rank in its metadata)")
    spec = LoraSpec(int(meta["lora_rank"]), float(meta["lora_alpha"]), meta["lora_targets"])
    return spec, state


def load_adapter(model: nn.Module, path: str | Path) -> LoraSpec:
    """Add the LoRA layers the adapter file at `path` describes to the base `model` and load them."""
    spec, state = read_adapter(path)
    add_lora(model, spec)
    set_adapter_state_dict(model, state, str(path))
    return spec


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base Linear (W + (alpha / r) B A) and put the base Linear
    back in its place; the model then has its original modules and state-dict keys."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    for p in model.parameters():
        p.requires_grad = True
    return model


class AdapterOnly(nn.Module):
    """Trains `denoiser` (with LoRA layers added) and checkpoints its adapters alone.

    Calling it calls the denoiser; `state_dict()` holds only the LoRA tensors (as `denoiser.*`),
    and `load_state_dict` loads them back, so a run's checkpoints stay the adapter's size and the
    base weights come from where the run built its model.
    """

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.denoiser(*args, **kwargs)

    def set_grad_checkpointing(self, enable: bool | str = True) -> None:
        self.denoiser.set_grad_checkpointing(enable)

    def state_dict(  # type: ignore[override]
        self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False
    ) -> dict[str, Tensor]:
        state = adapter_state_dict(self.denoiser)
        return {f"{prefix}denoiser.{k}": v if keep_vars else v.detach() for k, v in state.items()}

    def load_state_dict(  # type: ignore[override]
        self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False
    ) -> Any:
        inner = {k.removeprefix("denoiser."): v for k, v in state_dict.items()}
        set_adapter_state_dict(self.denoiser, inner, "checkpoint")
        return _IncompatibleKeys([], [])
