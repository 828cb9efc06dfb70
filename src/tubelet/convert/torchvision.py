"""Importer for torchvision state dicts (`checkpoint_format="torchvision"`).

tubelet's ResNets and S3D keep torchvision's module names, so a torchvision state dict needs no
renaming except S3D's classifier (a 1x1x1 conv `classifier.1`, here the linear `fc`); this importer
checks that the model has a torchvision peer and fills the BatchNorm `num_batches_tracked` counters
that checkpoints saved before PyTorch 0.4.1 lack.

Loading stays strict: the checkpoint's classifier must match `num_classes`. To fine-tune ImageNet
or Kinetics weights on other classes, load with the checkpoint's class count, then replace the head:

    model = create_model("frame2d_resnet18", num_classes=1000, checkpoint="resnet18.pth",
                         checkpoint_format="torchvision")
    model.reset_classifier(10)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange

from tubelet.convert import register_format

# tubelet model name -> the torchvision builder whose state dict it takes (at width=64).
PEERS: dict[str, str] = {
    "frame2d_resnet18": "torchvision.models.resnet18",
    "mc3_18": "torchvision.models.video.mc3_18",
    "r2plus1d_18": "torchvision.models.video.r2plus1d_18",
    "r3d_18": "torchvision.models.video.r3d_18",
    "raft_large": "torchvision.models.optical_flow.raft_large",
    "raft_small": "torchvision.models.optical_flow.raft_small",
    "s3d": "torchvision.models.video.s3d",
    "swin3d_t": "torchvision.models.video.swin3d_t",
    "swin3d_s": "torchvision.models.video.swin3d_s",
    "swin3d_b": "torchvision.models.video.swin3d_b",
}


def _conv_head_to_linear(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """S3D's classifier: conv `classifier.1` (N, D, 1, 1, 1) -> linear `fc` (N, D)."""
    out = dict(state)
    if "classifier.1.weight" in out:
        out["fc.weight"] = rearrange(out.pop("classifier.1.weight"), "n d 1 1 1 -> n d")
    if "classifier.1.bias" in out:
        out["fc.bias"] = out.pop("classifier.1.bias")
    return out


def _head_to_fc(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Swin3D's classifier: `head` -> `fc` (the name every tubelet classifier uses)."""
    return {("fc." + k[5:] if k.startswith("head.") else k): v for k, v in state.items()}


# Key surgery beyond the shared steps, for the models whose peer names differ.
RENAMES: dict[str, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "s3d": _conv_head_to_linear,
    "swin3d_t": _head_to_fc,
    "swin3d_s": _head_to_fc,
    "swin3d_b": _head_to_fc,
}


@register_format("torchvision")
def from_torchvision(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the state dict of `PEERS[name]` onto the keys of tubelet model `name`."""
    if name not in PEERS:
        raise ValueError(
            f"no torchvision importer for model {name!r}; supported: {', '.join(sorted(PEERS))}"
        )
    out = RENAMES.get(name, dict)(state)
    for key in state:
        if key.endswith(".running_mean"):
            counter = key.removesuffix("running_mean") + "num_batches_tracked"
            # What BatchNorm's own loader assumes for pre-0.4.1 checkpoints: no batches counted.
            out.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return out
