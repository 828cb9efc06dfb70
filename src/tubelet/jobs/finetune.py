"""Fine-tuning from a pre-training run (`tubelet train --init RUN`): the pre-trained encoder goes
into a video ViT classifier with a new head, trained with layer-wise learning-rate decay.

Layer-wise decay (BEiT, section 2.4; VideoMAE's fine-tuning recipe): with L blocks, the head and
final norms learn at the peak rate, block i (0-based) at `decay ** (L - i)` of it and the tubelet
embedding at `decay ** (L + 1)`, so the early layers, which pre-training made most general, move
least. The encoder's final LayerNorm of pre-training is not used (the classifier mean-pools and
applies a new `fc_norm`, as VideoMAE fine-tunes with mean pooling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tubelet.convert import load_state_dict_strict
from tubelet.engine.checkpoint import load_model
from tubelet.models.videomae import CLASSIFIER_OF, VideoMAEPretrain
from tubelet.models.vit_video import VideoViT, VideoViTEncoder

# VideoMAE fine-tunes ViT-B with 0.75 (ViT-S 0.7 or 0.75); one value for every size here.
LAYER_DECAY = 0.75


def load_encoder(run: str | Path) -> tuple[VideoViTEncoder, str]:
    """The encoder of the pre-training model saved in `run`, and that model's name."""
    model, spec = load_model(run)
    if not isinstance(model, VideoMAEPretrain):
        raise ValueError(
            f"--init {run} holds a {spec.model} model, not a pre-training run; pass a run "
            "folder written by `tubelet pretrain`"
        )
    return model.encoder, spec.model


def encoder_args(encoder: VideoViTEncoder) -> dict[str, Any]:
    """The builder arguments of a video ViT classifier whose encoder has `encoder`'s shape."""
    block = encoder.blocks[0]
    heads = block.attn.num_heads
    return {
        "head_dim": encoder.dim // heads,
        "depth": len(encoder.blocks),
        "num_heads": heads,
        "mlp_ratio": block.mlp.fc1.out_features / encoder.dim,
        "tubelet_size": encoder.tubelet_size,
        "patch_size": encoder.patch_size,
        "in_channels": encoder.patch_embed.proj.in_channels,
        "qkv_bias": block.attn.qkv.bias is not None,
        "norm_eps": block.norm1.eps,
    }


def pretrained_classifier(run: str | Path) -> str:
    """The classifier name that a pre-training run's encoder initialises (`vit_s_16_video`, ...)."""
    return CLASSIFIER_OF[load_encoder(run)[1]]


def init_from_pretraining(model: nn.Module, run: str | Path) -> dict[str, Any]:
    """Copy the encoder of pre-training run `run` into classifier `model` (strictly: every encoder
    weight must fit); returns what was loaded and what was left out."""
    if not isinstance(model, VideoViT):
        raise ValueError(_not_a_vit(type(model).__name__))
    encoder, name = load_encoder(run)
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("norm.")}
    load_state_dict_strict(model.encoder, state, f"--init {run} ({name} encoder)")
    skipped = sorted(k for k in encoder.state_dict() if k.startswith("norm."))
    return {"loaded": len(state), "skipped": skipped, "from": name}


def layer_decay_groups(
    model: VideoViT, *, lr: float, weight_decay: float, decay: float = LAYER_DECAY
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning rates (see the module docstring); biases
    and normalisation weights (1-D) get no weight decay. The head's group comes first."""
    depth = len(model.encoder.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("encoder.patch_embed."):
            layer = 0
        elif name.startswith("encoder.blocks."):
            layer = int(name.split(".")[2]) + 1
        else:  # fc_norm, fc
            layer = depth + 1
        no_decay = param.ndim <= 1
        group = groups.setdefault(
            (layer, no_decay),
            {
                "params": [],
                "lr": lr * decay ** (depth + 1 - layer),
                "weight_decay": 0.0 if no_decay else weight_decay,
            },
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups, key=lambda k: (-k[0], k[1]))]


def finetune_groups(
    model: nn.Module, run: str | Path, *, lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Load run `run`'s encoder into `model` and return its layer-wise decayed parameter groups."""
    init_from_pretraining(model, run)
    return layer_decay_groups(model, lr=lr, weight_decay=weight_decay)


def init_model_args(run: str | Path, model: str) -> dict[str, Any]:
    """The builder arguments of classifier `model` that match pre-training run `run`'s encoder."""
    if model not in CLASSIFIER_OF.values():
        raise ValueError(_not_a_vit(model))
    return encoder_args(load_encoder(run)[0])


def _not_a_vit(model: str) -> str:
    return (
        f"--init loads a VideoMAE encoder into a video ViT classifier, not into {model}; pass "
        f"--model {' or '.join(sorted(CLASSIFIER_OF.values()))} (or leave --model out)"
    )
