"""One flat registry: a registered name is a function that builds one model variant.

Each model has a kind, which says what its `forward` takes and gives: "video" (a clip classifier
following the `VideoClassifier` contract, the default), "features" (a classifier over per-frame
feature sequences), "pretrain" (self-supervised pre-training), "flow" (optical flow between two
images), "detection" (temporal action detection over feature sequences), "generation" (a video
denoiser), "autoencoder" (a video VAE: `encode` to latents, `decode` back).
"""

from __future__ import annotations

import inspect
import os
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

ModelFn = Callable[..., nn.Module]
M = TypeVar("M", bound=nn.Module)
_MODELS: dict[str, ModelFn] = {}
_WEIGHT_INIT_ARGS: dict[str, tuple[str, ...]] = {}
_KINDS: dict[str, str] = {}
_RENAMED_ARGS: dict[str, dict[str, str]] = {}
KINDS = ("video", "features", "pretrain", "flow", "detection", "generation", "autoencoder")


def register_model(
    fn: ModelFn | None = None,
    *,
    weight_init_args: tuple[str, ...] = (),
    kind: str = "video",
    renamed_args: dict[str, str] | None = None,
) -> ModelFn | Callable[[ModelFn], ModelFn]:
    """Register a builder under its function name (`@register_model def r2plus1d_18(*, ...)`), as a
    model of `kind` (one of `KINDS`).

    `weight_init_args` names builder arguments that only choose initial weights (such as
    `inflate_from=PATH`); a saved model's spec leaves them out (`architecture_args`), so reloading it
    needs only its own weights file. `renamed_args` maps an argument's former name to its current
    one, so that runs saved before the rename still load (`translate_legacy_args`).
    """

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")

    def add(builder: ModelFn) -> ModelFn:
        if builder.__name__ in _MODELS:
            raise ValueError(f"model {builder.__name__!r} is already registered")
        _MODELS[builder.__name__] = builder
        _WEIGHT_INIT_ARGS[builder.__name__] = weight_init_args
        _KINDS[builder.__name__] = kind
        _RENAMED_ARGS[builder.__name__] = dict(renamed_args or {})
        return builder

    return add if fn is None else add(fn)


def variant(
    builder: Callable[..., M], **defaults: Any
) -> Callable[[Callable[[], Any]], Callable[..., M]]:
    """Decorator making a registered name for one variant of `builder`: the decorated function
    gives the name and the docstring, `defaults` the variant's own defaults.

        @register_model
        @variant(_build, num_heads=6)
        def vit_s_16_video() -> VideoViT:
            '''ViT-S/16 ...'''

    The result takes `builder`'s keyword-only, typed arguments (its signature is the builder's with
    these defaults, so `tubelet models NAME` lists them) and calls `builder` with them.
    """
    signature = _signature(builder)
    unknown = sorted(set(defaults) - set(signature.parameters))
    if unknown:
        raise ValueError(f"{builder.__name__} has no argument {', '.join(unknown)}")
    params = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=defaults.get(p.name, p.default))
        for p in signature.parameters.values()
    ]

    def name_it(named: Callable[[], Any]) -> Callable[..., M]:
        def build(**kwargs: Any) -> M:
            return builder(**{**defaults, **kwargs})

        build.__name__ = build.__qualname__ = named.__name__
        build.__doc__ = named.__doc__
        build.__module__ = named.__module__
        build.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return build

    return name_it


@dataclass(frozen=True)
class ModelArg:
    """One builder argument: its name, its type as written, and its default (`REQUIRED` if none)."""

    name: str
    type: str
    default: Any


REQUIRED = inspect.Parameter.empty


def model_args(name: str) -> list[ModelArg]:
    """The arguments of registered model `name`'s builder, in signature order."""
    _check_name(name)
    out = []
    for p in _signature(_MODELS[name]).parameters.values():
        if p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        out.append(ModelArg(p.name, _type_name(p.annotation), p.default))
    return out


def check_model_args(name: str, args: dict[str, Any]) -> None:
    """Refuse, with one line naming the argument, a key that `name`'s builder does not take or a
    value not of its type (values as JSON gives them: lists for sequences)."""
    _check_name(name)
    params = _signature(_MODELS[name]).parameters
    for key, value in args.items():
        if key not in params:
            accepted = ", ".join(p for p in params if p not in _WEIGHT_INIT_ARGS.get(name, ()))
            raise ValueError(f"model {name} has no argument {key!r}; it takes: {accepted}")
        annotation = params[key].annotation
        if not _fits(value, annotation) and typing.get_origin(annotation) is typing.Literal:
            choices = sorted(typing.get_args(annotation), key=str)
            raise ValueError(f"model {name}: {key} must be one of {choices}, not {value!r}")
        if not _fits(value, annotation):
            raise ValueError(
                f"model {name}: argument {key!r} takes {_type_name(annotation)}, "
                f"not {value!r} ({type(value).__name__})"
            )


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    """`fn`'s signature with its string annotations (`from __future__ import annotations`)
    evaluated; an annotation that cannot be evaluated stays a string (and is not checked)."""
    try:
        return inspect.signature(fn, eval_str=True)
    except NameError:
        return inspect.signature(fn)


def _fits(value: Any, annotation: Any) -> bool:
    """Whether `value` is of type `annotation`, for the types builders take (int, float, bool,
    str, None, unions, Literal, sequences and tuples of those); anything else is not checked."""
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, str):
        return True
    origin, type_args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in type_args)
    if origin is typing.Literal:
        return value in type_args
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str | os.PathLike)
    if origin in (Sequence, tuple, list):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and type_args and type_args[-1] is not Ellipsis:
            return len(value) == len(type_args) and all(map(_fits, value, type_args))
        return all(_fits(v, type_args[0]) for v in value) if type_args else True
    return True


def _type_name(annotation: Any) -> str:
    """An annotation as written in code (`int`, `Sequence[int] | None`, `Callable[[int], Module]`)."""
    if annotation is inspect.Parameter.empty:
        return "-"
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = str(annotation)
    for prefix in ("typing.", "collections.abc.", "torch.nn.modules.module."):
        text = text.replace(prefix, "")
    return text


def _check_name(name: str) -> None:
    if name not in _MODELS:
        from difflib import get_close_matches

        close = get_close_matches(name, _MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Run `tubelet models` to list the {len(_MODELS)} models."
        )


def translate_legacy_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """A saved run's builder arguments for `name` under today's names: each renamed argument
    (`register_model(renamed_args=)`, e.g. ViT's per-head `width` -> `head_dim`, video_unet's
    `base_channels` -> `width`) takes its new name; current arguments pass unchanged, so
    translating twice changes nothing. A spec naming an argument both ways is refused."""
    renamed = _RENAMED_ARGS.get(name, {})
    out = {}
    for key, value in args.items():
        new = renamed.get(key, key)
        if new != key and new in args:
            raise ValueError(
                f"model {name}: arguments {key!r} and {new!r} are the same argument (renamed); "
                f"keep {new!r}"
            )
        out[new] = value
    return out


def architecture_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """`args` without the ones that only choose initial weights: what rebuilds the architecture."""
    drop = _WEIGHT_INIT_ARGS.get(name, ())
    return {k: v for k, v in args.items() if k not in drop}


def list_models(kind: str | None = None) -> list[str]:
    """Every registered model name (of `kind`, if given), sorted."""
    return sorted(name for name in _MODELS if kind is None or _KINDS[name] == kind)


def builder(name: str) -> ModelFn:
    """The registered function that builds model `name`."""
    _check_name(name)
    return _MODELS[name]


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
    _check_name(name)
    renamed = {k: v for k, v in _RENAMED_ARGS[name].items() if k in overrides}
    if renamed:
        # Until every documented command uses the new names: read the old one, say so once.
        said = ", ".join(f"{old} is now {new}" for old, new in renamed.items())
        warnings.warn(f"model {name}: {said}; pass the new name", FutureWarning, stacklevel=2)
        overrides = translate_legacy_args(name, overrides)
    check_model_args(name, overrides)
    kwargs = dict(overrides)
    if checkpoint is not None:
        from tubelet.convert import architecture_from_checkpoint

        kwargs = {**architecture_from_checkpoint(name, checkpoint, checkpoint_format), **kwargs}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    check_model_args(name, kwargs)
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
