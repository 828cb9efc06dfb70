"""One flat registry: a registered name is a function that builds one model variant.

Each model has a kind, which says what its `forward` takes and gives: "video" (a clip classifier
following the `VideoClassifier` contract, the default), "features" (a classifier over per-frame
feature sequences), "pretrain" (self-supervised pre-training), "flow" (optical flow between two
images), "detection" (temporal action detection over feature sequences), "generation" (a video
denoiser), "autoencoder" (a video VAE: `encode` to latents, `decode` back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

ModelFn = Callable[..., nn.Module]
_MODELS: dict[str, ModelFn] = {}
_WEIGHT_INIT_ARGS: dict[str, tuple[str, ...]] = {}
_KINDS: dict[str, str] = {}
KINDS = ("video", "features", "pretrain", "flow", "detection", "generation", "autoencoder")


def register_model(
    fn: ModelFn | None = None, *, weight_init_args: tuple[str, ...] = (), kind: str = "video"
) -> ModelFn | Callable[[ModelFn], ModelFn]:
    """Register a builder under its function name (`@register_model def r2plus1d_18(*, ...)`), as a
    model of `kind` (one of `KINDS`).

    `weight_init_args` names builder arguments that only choose initial weights (such as
    `inflate_from=PATH`); a saved model's spec leaves them out (`architecture_args`), so reloading it
    needs only its own weights file.
    """

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")

    def add(builder: ModelFn) -> ModelFn:
        if builder.__name__ in _MODELS:
            raise ValueError(f"model {builder.__name__!r} is already registered")
        _MODELS[builder.__name__] = builder
        _WEIGHT_INIT_ARGS[builder.__name__] = weight_init_args
        _KINDS[builder.__name__] = kind
        return builder

    return add if fn is None else add(fn)


def architecture_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """`args` without the ones that only choose initial weights: what rebuilds the architecture."""
    drop = _WEIGHT_INIT_ARGS.get(name, ())
    return {k: v for k, v in args.items() if k not in drop}


def list_models(kind: str | None = None) -> list[str]:
    """Every registered model name (of `kind`, if given), sorted."""
    return sorted(name for name in _MODELS if kind is None or _KINDS[name] == kind)


def model_kind(name: str) -> str:
    """The kind of registered model `name` (see `KINDS`)."""
    return _KINDS[name]


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    checkpoint: str | None = None,
    checkpoint_format: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model, optionally loading a checkpoint.

    `checkpoint_format=None` (or "tubelet") reads tubelet's own safetensors weights; other formats
    ("torchvision", ...) go through the explicit importers in `tubelet.convert`. A format that reads
    the architecture from the checkpoint (a Hugging Face config.json) supplies the builder
    arguments; explicit `overrides` still win.
    """
    if name not in _MODELS:
        from difflib import get_close_matches

        close = get_close_matches(name, _MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Run `tubelet models` to list the {len(_MODELS)} models."
        )
    kwargs = dict(overrides)
    if checkpoint is not None:
        from tubelet.convert import architecture_from_checkpoint

        kwargs = {**architecture_from_checkpoint(name, checkpoint, checkpoint_format), **kwargs}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = _MODELS[name](**kwargs)
    except (TypeError, RuntimeError) as error:  # an unknown argument, or a value it cannot use
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "no arguments"
        raise ValueError(
            f"model {name!r} cannot be built with {given}: {error}; check the names and values "
            "of its arguments (-m KEY=VALUE)"
        ) from error
    if checkpoint is not None:
        from tubelet.convert import load_checkpoint

        load_checkpoint(model, name, checkpoint, checkpoint_format)
    return model
