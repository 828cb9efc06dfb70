"""Importers for PyTorchVideo and PySlowFast state dicts of SlowFast-R50, Slow-R50 and I3D-R50.

Two formats, chosen by name (the layouts differ, and tubelet never guesses one from the keys):

- `"pytorchvideo"`: the `nn.Module` trees of PyTorchVideo's `create_slowfast` and `create_resnet`
  (its hub models `slowfast_r50`, `slow_r50` and `i3d_r50`), e.g. `blocks.1.multipathway_blocks.0.
  res_blocks.0.branch2.conv_a.weight`, head `blocks.6.proj` (SlowFast, I3D) or `blocks.5.proj`
  (Slow). I3D's `blocks.2` is the parameter-free temporal max-pool after stage 1, so its stages are
  `blocks.1, 3, 4, 5` (tubelet's `i3d_r50` keeps torchvision's `layer1..4` names).
- `"pyslowfast"`: PySlowFast's `SlowFast` and `ResNet` (configs `SLOWFAST_8x8_R50`, `SLOW_8x8_R50`;
  its `.pyth` files wrap the weights in {"model_state": ...}), e.g.
  `s2.pathway0_res0.branch2.a.weight`, fusions `s1_fuse.conv_f2s`, head `head.projection`.
  Caffe2 `.pkl` checkpoints are not read; convert them with PySlowFast first.

PyTorchVideo's head averages with a fixed `AvgPool3d` kernel ((8, 7, 7) for 8 Slow frames at 224
px) before the classifier; tubelet averages over the whole feature map, which is the same whenever
that kernel covers the map (the inputs the checkpoint was trained on).

Every key of the checkpoint must be one these layouts name; loading is strict (a 400-class head
into a 10-class model is refused naming `fc.weight`; load with `num_classes=400`, then call
`model.reset_classifier(10)`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from tubelet.convert import register_format

PATHWAYS = ("slow", "fast")

# A bottleneck block's layer names in each layout -> tubelet's (`Bottleneck3d`).
_PTV_BLOCK = {
    "branch1_conv": "downsample.0",
    "branch1_norm": "downsample.1",
    "branch2.conv_a": "conv1",
    "branch2.norm_a": "bn1",
    "branch2.conv_b": "conv2",
    "branch2.norm_b": "bn2",
    "branch2.conv_c": "conv3",
    "branch2.norm_c": "bn3",
}
_PYSF_BLOCK = {
    "branch1": "downsample.0",
    "branch1_bn": "downsample.1",
    "branch2.a": "conv1",
    "branch2.a_bn": "bn1",
    "branch2.b": "conv2",
    "branch2.b_bn": "bn2",
    "branch2.c": "conv3",
    "branch2.c_bn": "bn3",
}
_PTV_STEM = {"conv": "conv", "norm": "bn"}
_PYSF_STEM = {"conv": "conv", "bn": "bn"}
_PTV_FUSE = {"conv_fast_to_slow": "conv", "norm": "bn"}
_PTV_I3D_STAGES = {"1": "layer1", "3": "layer2", "4": "layer3", "5": "layer4"}
_PYSF_FUSE = {"conv_f2s": "conv", "bn": "bn"}

# One rule: a full-match pattern over a checkpoint key (without its parameter name) and a function
# of the match giving the tubelet module path.
Rule = tuple[str, Callable[[re.Match[str]], str]]


def _alternatives(names: dict[str, str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


def _stage(m: re.Match[str], offset: int, block_names: dict[str, str]) -> str:
    path = PATHWAYS[int(m["p"])]
    return f"{path}.stages.{int(m['s']) - offset}.{m['b']}.{block_names[m['layer']]}"


def _pytorchvideo_rules(two_pathways: bool) -> list[Rule]:
    block, stem = _alternatives(_PTV_BLOCK), _alternatives(_PTV_STEM)
    if not two_pathways:  # create_resnet: blocks.0 stem, blocks.1-4 stages, blocks.5 head
        return [
            (rf"blocks\.0\.(?P<layer>{stem})", lambda m: f"slow.stem.{_PTV_STEM[m['layer']]}"),
            (
                rf"blocks\.(?P<s>[1-4])\.res_blocks\.(?P<b>\d+)\.(?P<layer>{block})",
                lambda m: f"slow.stages.{int(m['s']) - 1}.{m['b']}.{_PTV_BLOCK[m['layer']]}",
            ),
            (r"blocks\.5\.proj", lambda m: "fc"),
        ]
    # create_slowfast: blocks.0 stems (+ fusion), blocks.1-4 stages (+ fusion but after the last),
    # blocks.5 pooling (no parameters), blocks.6 head; pathway 0 is Slow, 1 is Fast.
    return [
        (
            rf"blocks\.0\.multipathway_blocks\.(?P<p>[01])\.(?P<layer>{stem})",
            lambda m: f"{PATHWAYS[int(m['p'])]}.stem.{_PTV_STEM[m['layer']]}",
        ),
        (
            rf"blocks\.(?P<s>[1-4])\.multipathway_blocks\.(?P<p>[01])\.res_blocks\.(?P<b>\d+)"
            rf"\.(?P<layer>{block})",
            lambda m: _stage(m, 1, _PTV_BLOCK),
        ),
        (
            rf"blocks\.(?P<i>[0-3])\.multipathway_fusion\.(?P<layer>{_alternatives(_PTV_FUSE)})",
            lambda m: f"fusions.{m['i']}.{_PTV_FUSE[m['layer']]}",
        ),
        (r"blocks\.6\.proj", lambda m: "fc"),
    ]


def _pytorchvideo_i3d_rules() -> list[Rule]:
    """create_resnet with a stage-1 pool (hub `i3d_r50`) -> tubelet's torchvision-named I3D."""
    block, stem = _alternatives(_PTV_BLOCK), _alternatives(_PTV_STEM)
    return [
        (rf"blocks\.0\.(?P<layer>{stem})", lambda m: {"conv": "conv1", "norm": "bn1"}[m["layer"]]),
        (
            rf"blocks\.(?P<s>[1345])\.res_blocks\.(?P<b>\d+)\.(?P<layer>{block})",
            lambda m: f"{_PTV_I3D_STAGES[m['s']]}.{m['b']}.{_PTV_BLOCK[m['layer']]}",
        ),
        (r"blocks\.6\.proj", lambda m: "fc"),
    ]


def _pyslowfast_rules(two_pathways: bool) -> list[Rule]:
    block, stem = _alternatives(_PYSF_BLOCK), _alternatives(_PYSF_STEM)
    paths = "[01]" if two_pathways else "0"
    rules: list[Rule] = [
        (
            rf"s1\.pathway(?P<p>{paths})_stem\.(?P<layer>{stem})",
            lambda m: f"{PATHWAYS[int(m['p'])]}.stem.{_PYSF_STEM[m['layer']]}",
        ),
        (
            rf"s(?P<s>[2-5])\.pathway(?P<p>{paths})_res(?P<b>\d+)\.(?P<layer>{block})",
            lambda m: _stage(m, 2, _PYSF_BLOCK),
        ),
        (r"head\.projection", lambda m: "fc"),
    ]
    if two_pathways:  # s1_fuse .. s4_fuse: after the stem and after stages s2 .. s4
        rules.append(
            (
                rf"s(?P<i>[1-4])_fuse\.(?P<layer>{_alternatives(_PYSF_FUSE)})",
                lambda m: f"fusions.{int(m['i']) - 1}.{_PYSF_FUSE[m['layer']]}",
            )
        )
    return rules


# tubelet model name -> the renaming rules of each format that has the model.
RULES: dict[str, dict[str, Callable[[], list[Rule]]]] = {
    "pytorchvideo": {
        "slowfast_r50": lambda: _pytorchvideo_rules(True),
        "slow_r50": lambda: _pytorchvideo_rules(False),
        "i3d_r50": _pytorchvideo_i3d_rules,
    },
    "pyslowfast": {
        "slowfast_r50": lambda: _pyslowfast_rules(True),
        "slow_r50": lambda: _pyslowfast_rules(False),
    },
}


def _rename(
    name: str, state: dict[str, torch.Tensor], fmt: str, rules: list[Rule]
) -> dict[str, torch.Tensor]:
    """Rename every key of `state` by the first matching rule; refuse keys no rule names."""
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        for pattern, target in compiled:
            match = pattern.fullmatch(module)
            if match:
                out[f"{target(match)}.{param}"] = value
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:8]) + (
            f", ... ({len(unknown)} in all)" if len(unknown) > 8 else ""
        )
        raise ValueError(
            f"{len(unknown)} key(s) are not part of a {fmt} {name} state dict: {shown}. "
            f"Check checkpoint_format (known for these models: {', '.join(RULES)}) and the model name."
        )
    return out


def _convert(name: str, state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    if name not in RULES[fmt]:
        raise ValueError(
            f"no {fmt} importer for model {name!r}; supported: {', '.join(sorted(RULES[fmt]))}"
        )
    return _rename(name, state, fmt, RULES[fmt][name]())


@register_format("pytorchvideo")
def from_pytorchvideo(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a PyTorchVideo `create_slowfast` / `create_resnet` state dict onto tubelet `name`."""
    return _convert(name, state, "pytorchvideo")


@register_format("pyslowfast")
def from_pyslowfast(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a PySlowFast `SlowFast` / `ResNet` (Slow) state dict onto tubelet `name`."""
    return _convert(name, state, "pyslowfast")
