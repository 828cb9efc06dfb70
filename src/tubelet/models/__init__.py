"""Model families (one file each) and the flat registry (`list_models(kind)`, `model_kind`).

Every clip classifier (kind "video") subclasses `tubelet.models.base.VideoClassifier` and so follows
one contract:

- `forward(x)` with `x` of shape (B, C, T, H, W) float returns logits (B, num_classes);
- `forward_features(x)` returns the un-pooled features, `forward_head(feats, pre_logits=False)` pools
  them and applies the classifier (or stops before it with `pre_logits=True`, giving (B, num_features));
- `reset_classifier(num_classes)` replaces the head; `num_classes` and `num_features` are attributes;
- `set_grad_checkpointing(enable=True)` trades compute for memory without changing the output.
"""

# Importing a family's module registers its models (one line each, so families are added apart).
from tubelet.models import (
    actionformer,  # noqa: F401
    frame2d,  # noqa: F401
    i3d,  # noqa: F401
    probes,  # noqa: F401
    raft,  # noqa: F401
    resnet3d,  # noqa: F401
    s3d,  # noqa: F401
    slowfast,  # noqa: F401
    swin3d,  # noqa: F401
    temporal,  # noqa: F401
    timesformer,  # noqa: F401
    video_unet,  # noqa: F401
    videomae,  # noqa: F401
    videoprism,  # noqa: F401
    vit_video,  # noqa: F401
    vjepa2,  # noqa: F401
    wan_dit,  # noqa: F401
    wan_vae,  # noqa: F401
)
from tubelet.models.registry import (
    architecture_args,
    check_model_args,
    create_model,
    list_models,
    model_args,
    model_kind,
    register_model,
    translate_legacy_args,
)

__all__ = [
    "architecture_args",
    "check_model_args",
    "create_model",
    "list_models",
    "model_args",
    "model_kind",
    "register_model",
    "translate_legacy_args",
]
