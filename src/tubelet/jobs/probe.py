"""Frozen-backbone probes and fine-tuning from a published checkpoint (`tubelet train
--checkpoint FOLDER --checkpoint-format FORMAT [--freeze-backbone] [--head H] [--layer-decay D]`).

- `start_from_checkpoint`: the model built from an imported checkpoint (the architecture from the
  checkpoint, the head replaced when the classes differ) and the builder arguments that rebuild it.
- `freeze_backbone`: only the head (`head_modules` of a `VideoClassifier`: `fc`, or the attentive
  pooler and `fc`) trains; the frozen backbone's activations are not recorded for backward, so a
  probe costs a forward pass of the backbone per step.
- `layer_decay_groups`: for full fine-tuning, layer-wise learning rates (BEiT, section 2.4; the
  recipe of VideoMAE and V-JEPA 2): a model's `layer_of(name)` gives each parameter's depth l of
  L + 1, which learns at `decay ** (L + 1 - l)` of the peak rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tubelet.convert import (
    architecture_from_checkpoint,
    load_checkpoint,
    preprocessing_from_checkpoint,
)
from tubelet.models import create_model

# `tubelet train`'s clip when neither the options nor a checkpoint say otherwise.
DEFAULT_FRAMES, DEFAULT_SIZE = 8, 112


def clip_defaults(
    model: str,
    checkpoint: Path | None,
    checkpoint_format: str | None,
    *,
    frames: int | None,
    size: int | None,
) -> tuple[int, int]:
    """(frames, size) of the training clips: the options when given, else the checkpoint's own
    (a published model's frames per clip and crop), else 8 frames of 112 px. (The checkpoint's
    pixel statistics are the training job's: `tubelet.jobs.classification.train`.)
    """
    pre = None
    if checkpoint is not None:
        pre = preprocessing_from_checkpoint(model, checkpoint, checkpoint_format)
    # None is "not given"; a given 0 stays, to be refused with the option's name (ClipSpec).
    frames = frames if frames is not None else (pre["frames"] if pre else DEFAULT_FRAMES)
    size = size if size is not None else (pre["size"] if pre else DEFAULT_SIZE)
    return frames, size


def start_from_checkpoint(
    name: str,
    checkpoint: Path,
    checkpoint_format: str | None,
    *,
    num_classes: int,
    model_args: dict[str, Any],
    new_head: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Model `name` on the backbone of `checkpoint`, and the builder arguments that rebuild it
    (the checkpoint's own architecture, `model_args` over it, `num_classes`).

    The backbone must fit exactly; the checkpoint's head (pooler, `fc`) loads where it fits the
    model's (same kind of head, same classes) and the rest starts new, so a probe or a fine-tuning
    run may change the head (`--head`) and the classes; with `new_head` (a probe) none of it
    loads. What was loaded and left is logged.
    """
    args = {**architecture_from_checkpoint(name, checkpoint, checkpoint_format), **model_args}
    args["num_classes"] = num_classes
    model = create_model(name, **args)
    load_checkpoint(
        model, name, checkpoint, checkpoint_format, head=getattr(model, "head_modules", ()),
        new_head=new_head,
    )  # fmt: skip
    return model, args


def freeze_backbone(model: nn.Module) -> int:
    """Freeze every parameter outside the model's `head_modules`; return how many values train."""
    heads = getattr(model, "head_modules", None)
    if heads is None:
        raise ValueError(
            f"{type(model).__name__} names no head (head_modules): --freeze-backbone needs a "
            "video classifier"
        )
    trainable = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name.split(".")[0] in heads)
        trainable += param.numel() if param.requires_grad else 0
    return trainable


def layer_decay_groups(
    model: nn.Module, *, lr: float, weight_decay: float, decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning rates from `model.layer_of`; biases and
    normalisation weights (1-D) get no weight decay. The top layer's groups come first."""
    if not hasattr(model, "layer_of"):
        raise ValueError(
            f"--layer-decay needs a model made of blocks (layer_of); {type(model).__name__} is not"
        )
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"--layer-decay must be in (0, 1], got {decay}")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    top = max(model.layer_of(n) for n, _ in params)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in params:
        layer = model.layer_of(name)
        no_decay = param.ndim <= 1
        group = groups.setdefault(
            (layer, no_decay),
            {"params": [], "lr": lr * decay ** (top - layer),
             "weight_decay": 0.0 if no_decay else weight_decay},
        )  # fmt: skip
        group["params"].append(param)
    return [groups[key] for key in sorted(groups, key=lambda k: (-k[0], k[1]))]
