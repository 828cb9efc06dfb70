"""Every registered model at a tiny size, with inputs for one call and a scalar to train on.

`tiny_case(name)` builds the model (seeded) and its inputs; `scalar(output)` turns whatever a model
returns (logits, a flow list, a dataclass of tensors) into one number to call backward on. Tests that
must cover the whole registry (mixed precision, torch.compile) loop over `list_models()` with it, and
`test_every_registered_model_has_a_tiny_case` fails when a new model has no case here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from tubelet.models import create_model, list_models, model_kind


class TinyCase(NamedTuple):
    model: torch.nn.Module
    args: tuple[Any, ...]


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clip(frames: int = 4, size: int = 32, batch: int = 2) -> tuple[torch.Tensor]:
    return (torch.randn(batch, 3, frames, size, size, generator=_g()),)


def _sequence() -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    return torch.randn(2, 5, 6, generator=_g()), mask


def _detection() -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 11:] = False
    return torch.randn(2, 6, 16, generator=_g()), mask


def _flow() -> tuple[torch.Tensor, torch.Tensor, int]:
    g = _g()
    return torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, torch.rand(1, 3, 64, 64, generator=g), 2


def _denoiser() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(2, 3, 4, 8, 8, generator=_g()), torch.tensor([3, 700]), torch.tensor([0, 2])


def _dit() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _g()
    return (torch.randn(2, 4, 3, 4, 6, generator=g), torch.tensor([10.0, 900.0]),
            torch.randn(2, 3, 8, generator=g))  # fmt: skip


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 3:] = False
    return torch.randn(2, 5, 8, generator=_g()), mask


_SEQ = {"in_dim": 6, "num_classes": 3}
_DET = {"input_dim": 6, "num_classes": 3}
_ACTIONFORMER = {**_DET, "width": 16, "num_heads": 2, "window": 3, "levels": 3}
_MAE = {"head_dim": 8, "depth": 2, "decoder_depth": 1, "patch_size": 8}
_DIT = {"in_channels": 4, "width": 24, "num_heads": 2, "ffn_dim": 32, "num_layers": 2,
        "text_dim": 8, "freq_dim": 16}  # fmt: skip
_VJEPA2 = {"num_classes": 5, "width": 12, "num_heads": 2, "depth": 2}
_PRISM = {"num_classes": 5, "width": 16, "num_heads": 2, "mlp_dim": 24, "spatial_depth": 1,
          "temporal_depth": 1, "patch_size": 8, "image_size": 32, "num_frames": 4}  # fmt: skip
_LVT = {**_PRISM, "aux_depth": 1, "text_depth": 1, "vocab_size": 30}
_VAE = {"width": 8, "dim_mult": (1, 2, 2), "num_res_blocks": 1, "temporal_downsample": (True, True)}
_UNET = {"num_classes": 4, "width": 8, "channel_mults": (1, 2),
         "attention_levels": (False, True), "num_heads": 2}  # fmt: skip
# name -> (builder arguments, inputs). Video classifiers not named here take width 8 and _clip().
_CASES: dict[str, tuple[dict[str, Any], Callable[[], tuple[Any, ...]]]] = {
    "s3d": ({"width": 8}, lambda: _clip(frames=5)),
    **dict.fromkeys(
        ["vit_b_16_video", "vit_s_16_video", "vit_t_16_video"],
        ({"head_dim": 8, "num_classes": 5}, _clip),
    ),
    "frame_mean": (_SEQ, _sequence),
    "frame_transformer": (
        {**_SEQ, "width": 8, "depth": 2, "num_heads": 2, "max_len": 10},
        _sequence,
    ),
    "videomae_pretrain": (_MAE, lambda: _clip(size=16)),
    "videomae_pretrain_s": (_MAE, lambda: _clip(size=16)),
    "videomae_pretrain_t": (_MAE, lambda: _clip(size=16)),
    "raft_small": ({}, _flow),
    "raft_large": ({}, _flow),
    "actionformer": (_ACTIONFORMER, _detection),
    "actionformer_tiny": (_ACTIONFORMER, _detection),
    "window_classifier": ({**_DET, "context": 1}, _detection),
    "attentive_probe": ({"in_dim": 8, "num_classes": 3, "depth": 1}, _tokens),
    "linear_probe": ({"in_dim": 8, "num_classes": 3, "num_tokens": 5}, _tokens),
    "vjepa2_vitl": (_VJEPA2, _clip),
    "vjepa2_vith": (_VJEPA2, _clip),
    "vjepa2_vitg": (_VJEPA2, _clip),
    "videoprism_b": (_PRISM, _clip),
    "videoprism_l": (_PRISM, _clip),
    "videoprism_lvt_b": (_LVT, _clip),
    "videoprism_lvt_l": (_LVT, _clip),
    "wan_dit": (_DIT, _dit),
    "wan2_1_t2v_1_3b": (_DIT, _dit),
    "wan2_1_t2v_14b": (_DIT, _dit),
    "wan_vae": (_VAE, lambda: _clip(frames=5, size=16)),
    "video_unet": (_UNET, _denoiser),
}


def has_tiny_case(name: str) -> bool:
    return name in _CASES or model_kind(name) == "video"


def tiny_signature(name: str) -> tuple[str, ...]:
    """The classes of the tiny model's modules: names with equal signatures run the same code
    (size variants such as vit_s/vit_b differ only in widths and depths)."""
    return tuple(sorted({type(m).__qualname__ for m in tiny_case(name).model.modules()}))


def tiny_case(name: str, seed: int = 0) -> TinyCase:
    """Model `name` at a tiny size (seeded weights, train mode) and the inputs of one call."""
    if name in _CASES:
        kwargs, inputs = _CASES[name]
    elif model_kind(name) == "video":
        kwargs, inputs = {"width": 8, "num_classes": 5}, _clip
    else:
        raise KeyError(f"no tiny case for {name!r}: add one to tests/tiny_models.py")
    torch.manual_seed(seed)
    return TinyCase(create_model(name, **kwargs).train(), inputs())


def scalar(output: Any) -> torch.Tensor:
    """The sum of the means of every floating-point tensor in `output`, in float32."""
    tensors = list(float_tensors(output))
    if not tensors:
        raise TypeError(f"no floating-point tensor in a {type(output).__name__}")
    return sum(t.float().mean() for t in tensors)


def float_tensors(value: Any):
    """Every floating-point tensor in `value` (a tensor, dataclass, list, tuple or dict), in order."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            yield from float_tensors(getattr(value, field.name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from float_tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from float_tensors(item)


ALL_MODELS = list_models()
