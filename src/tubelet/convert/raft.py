"""Importer for the original RAFT release (`checkpoint_format="raft"`, princeton-vl/RAFT `.pth`).

The original names its parts `fnet` (feature encoder), `cnet` (context encoder) and `update_block`
(with the upsampling mask inside it), and its checkpoints were saved from `nn.DataParallel`, so keys
start with `module.`. The correspondence (tubelet keeps torchvision's names):

- `fnet.` / `cnet.` -> `feature_encoder.` / `context_encoder.`; inside an encoder:
  `conv1`, `norm1` -> `convnormrelu.0`, `convnormrelu.1`; `conv2` -> `conv`;
  a block's `convK`, `normK` (K = 1, 2 residual; 1, 2, 3 bottleneck) -> `convnormreluK.0`, `.1`;
  `downsample.0/1` keep their names, and the same norm registered again as `norm3` (residual) /
  `norm4` (bottleneck) is dropped.
- `update_block.encoder.convc1/convc2/convf1/convf2/conv` ->
  `update_block.motion_encoder.convcorr1.0/convcorr2.0/convflow1.0/convflow2.0/conv.0`.
- `update_block.gru.convz1/convr1/convq1` and `...2` (large, separable GRU) ->
  `update_block.recurrent_block.convgru1.convz/convr/convq` and `convgru2.*`;
  `update_block.gru.convz/convr/convq` (small) -> `...convgru1.*`.
- `update_block.flow_head.*` keeps its names; `update_block.mask.0` / `.2` ->
  `mask_predictor.convrelu.0` / `mask_predictor.conv`.

The original scales images to [-1, 1] inside its forward; tubelet's RAFT takes them already scaled,
as torchvision's does.
"""

from __future__ import annotations

import re

import torch

from tubelet.convert import register_format

# Convolutions per encoder block: residual blocks (raft_large) have 2, bottlenecks (raft_small) 3.
_BLOCK_CONVS = {"raft_large": 2, "raft_small": 3}

_UPDATE = [
    (r"update_block\.encoder\.convc1\.", "update_block.motion_encoder.convcorr1.0."),
    (r"update_block\.encoder\.convc2\.", "update_block.motion_encoder.convcorr2.0."),
    (r"update_block\.encoder\.convf1\.", "update_block.motion_encoder.convflow1.0."),
    (r"update_block\.encoder\.convf2\.", "update_block.motion_encoder.convflow2.0."),
    (r"update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"update_block\.gru\.conv([zrq])([12])\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"update_block\.gru\.conv([zrq])\.", r"update_block.recurrent_block.convgru1.conv\1."),
    (r"update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"update_block\.mask\.2\.", "mask_predictor.conv."),
]


def _encoder_key(rest: str, convs: int) -> str | None:
    """An encoder-relative original key -> tubelet's, or None for the duplicate downsample norm."""
    if m := re.fullmatch(r"conv1\.(.+)", rest):
        return f"convnormrelu.0.{m[1]}"
    if m := re.fullmatch(r"norm1\.(.+)", rest):
        return f"convnormrelu.1.{m[1]}"
    if m := re.fullmatch(r"conv2\.(.+)", rest):
        return f"conv.{m[1]}"
    if m := re.fullmatch(r"(layer\d\.\d)\.conv(\d)\.(.+)", rest):
        return f"{m[1]}.convnormrelu{m[2]}.0.{m[3]}"
    if m := re.fullmatch(r"(layer\d\.\d)\.norm(\d)\.(.+)", rest):
        if int(m[2]) > convs:  # the downsample's norm, registered twice in the original
            return None
        return f"{m[1]}.convnormrelu{m[2]}.1.{m[3]}"
    if re.fullmatch(r"layer\d\.\d\.downsample\.[01]\..+", rest):
        return rest
    raise ValueError(f"unexpected key in an original RAFT encoder: {rest!r}")


@register_format("raft")
def from_raft(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original-release RAFT state dict onto tubelet's `raft_large` / `raft_small`."""
    if name not in _BLOCK_CONVS:
        raise ValueError(
            f"checkpoint_format 'raft' holds RAFT weights; model {name!r} is not one of "
            f"{', '.join(sorted(_BLOCK_CONVS))}"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        prefix, _, rest = key.partition(".")
        if prefix in ("fnet", "cnet"):
            new = _encoder_key(rest, _BLOCK_CONVS[name])
            if new is None:
                continue
            encoder = "feature_encoder" if prefix == "fnet" else "context_encoder"
            out[f"{encoder}.{new}"] = value
            continue
        for pattern, replacement in _UPDATE:
            if re.match(pattern, key):
                out[re.sub(pattern, replacement, key, count=1)] = value
                break
        else:
            out[key] = value  # left as it is: the strict load names it if it does not belong
    for key in list(out):
        if key.endswith(".running_mean"):
            counter = key.removesuffix("running_mean") + "num_batches_tracked"
            out.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return out
