"""The transformer feed-forward block shared by the ViT-style models, the temporal transformer,
ActionFormer and the Wan DiT (its blocks and its timestep and text embedders)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn


class Mlp(nn.Module):
    """Token-wise feed-forward (..., dim) -> (..., out_dim): `fc1` (dim -> hidden), `act`, `fc2`
    (hidden -> out_dim; `out_dim` is `dim` unless given, as in Wan's timestep and text embedders).

    The parameter names (`fc1`, `fc2`) are those of timm's, VideoMAE's and Hugging Face's MLPs, so
    their state dicts map key for key. `act_layer` builds the activation (GELU by default); `drop`
    is the dropout after the activation and after `fc2`, as timm's and ActionFormer's (none by
    default).

    Weights saved when the temporal transformer's and ActionFormer's MLPs were an `nn.Sequential`
    (`mlp.0` ... `mlp.3`) still load, through `load_state_dict` and through the strict loader of
    `tubelet.convert` (which renames them first with `upgrade_mlp_keys`): the first Linear is
    `fc1`, the last `fc2`.
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        out_dim: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim if out_dim is None else out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))  # (..., out_dim)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        _rename_sequential_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)


def upgrade_mlp_keys(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` (a state dict for `model`) with the keys of each `Mlp` of `model` saved when it was
    an `nn.Sequential` (`blocks.0.mlp.0.weight`) under today's names (`blocks.0.mlp.fc1.weight`);
    other keys unchanged. For loaders that compare key names before loading."""
    state = dict(state)
    for name, module in model.named_modules():
        if isinstance(module, Mlp):
            _rename_sequential_keys(state, f"{name}." if name else "")
    return state


def _rename_sequential_keys(state: dict[str, Any], prefix: str) -> None:
    """Rename in place the numbered keys of an `nn.Sequential` MLP at `prefix` (`mlp.0.weight`,
    `mlp.3.bias`) to `fc1` (the first Linear) and `fc2` (the last); nothing if `fc1` is there."""
    indices = sorted({int(k[len(prefix) :].split(".")[0]) for k in state if _indexed(k, prefix)})
    if indices and f"{prefix}fc1.weight" not in state:
        for index, name in ((indices[0], "fc1"), (indices[-1], "fc2")):
            for param in ("weight", "bias"):
                if f"{prefix}{index}.{param}" in state:
                    state[f"{prefix}{name}.{param}"] = state.pop(f"{prefix}{index}.{param}")


def _indexed(key: str, prefix: str) -> bool:
    """Whether `key` is a parameter of a numbered child of the module at `prefix` (`mlp.0.weight`)."""
    return key.startswith(prefix) and key[len(prefix) :].split(".")[0].isdigit()
