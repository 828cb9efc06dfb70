"""I3D inflation: 2D (image) network weights into the 3D (video) network of the same layout.

Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset",
CVPR 2017, sec. 2.2. Every 2D conv kernel (O, I, kH, kW) becomes (O, I, kT, kH, kW); norms, biases
and the classifier are copied. The surgery is audited: `InflationReport` names every key that was
inflated, copied, skipped, missing, unexpected or of the wrong shape, and `load_inflated` refuses
to load anything short of a complete match unless the caller names the exceptions in `skip`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from einops import repeat
from torch import Tensor, nn


def inflate_conv_weight(weight: Tensor, time: int) -> Tensor:
    """A 2D kernel (O, I, kH, kW) -> 3D kernel (O, I, time, kH, kW), repeated along time / time."""
    if weight.ndim != 4:
        raise ValueError(f"a 2D conv kernel is (O, I, kH, kW), got shape {tuple(weight.shape)}")
    if time < 1:
        raise ValueError(f"the temporal kernel size must be >= 1, got {time}")
    # / k_T: on a static clip (one frame repeated) the 3D conv then equals the 2D conv on the frame
    # (the "boring video" fixed point, Carreira & Zisserman 2017, sec. 2.2).
    return repeat(weight, "o i h w -> o i t h w", t=time) / time  # (O, I, kT, kH, kW)


@dataclass(frozen=True)
class InflationReport:
    """What inflation did with every key of the 2D checkpoint and of the 3D model.

    inflated: model keys whose 2D kernel was repeated along time (kT = 1 included: a reshape).
    copied: model keys taken unchanged (norm affines and statistics, biases, the classifier).
    skipped: keys named in `skip`: the model keeps its own tensors, the checkpoint's are dropped.
    missing: model keys that the checkpoint lacks.
    unexpected: checkpoint keys that the model lacks.
    mismatched: "key: checkpoint (shape) vs model (shape)" for tensors that neither copy nor inflate.
    """

    inflated: tuple[str, ...]
    copied: tuple[str, ...]
    skipped: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """True when every model key outside `skip` is filled and every checkpoint key is used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def raise_if_partial(self, source: str, hint: str = "") -> None:
        """Raise ValueError naming the missing, unexpected and mis-shaped keys, if there are any."""
        if self.complete:
            return
        lines = [f"2D checkpoint {source} does not inflate into the 3D model:"]
        for title, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape", self.mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (
                    f", ... ({len(keys)} in all)" if len(keys) > 8 else ""
                )
                lines.append(f"  {title}: {shown}")
        lines.append(
            "  Inflate the 2D twin of the model (same depth and width); name keys or modules in "
            "skip= to leave them out on purpose (skip=('fc',) for a new classifier)."
        )
        if hint:
            lines.append(f"  {hint}")
        raise ValueError("\n".join(lines))


def _named_in(key: str, names: Collection[str]) -> bool:
    """True when `key` is one of `names` or lies in a module named there ("fc" covers "fc.bias")."""
    return any(key == name or key.startswith(name + ".") for name in names)


def inflate_state_dict(
    state_2d: Mapping[str, Tensor], model_3d: nn.Module, *, skip: Collection[str] = ()
) -> tuple[dict[str, Tensor], InflationReport]:
    """Map a 2D network's state dict onto the keys and shapes of `model_3d`.

    A tensor whose shape equals the model's is copied; a 2D kernel (O, I, kH, kW) meeting a model
    kernel (O, I, kT, kH, kW) is inflated by `inflate_conv_weight`. Keys (or whole modules) named in
    `skip` are left out on both sides. Nothing is loaded and nothing raises here: the report says
    what fits, and `InflationReport.raise_if_partial` (or `load_inflated`) enforces it.
    Returns (the 3D state dict of the inflated and copied keys, the report).
    """
    own = model_3d.state_dict()
    out: dict[str, Tensor] = {}
    inflated, copied, skipped, missing, mismatched = [], [], [], [], []
    for key, target in own.items():
        if _named_in(key, skip):
            skipped.append(key)
        elif key not in state_2d:
            missing.append(key)
        elif state_2d[key].shape == target.shape:
            out[key] = state_2d[key]
            copied.append(key)
        elif (
            state_2d[key].ndim == 4
            and target.ndim == 5
            and state_2d[key].shape == target.shape[:2] + target.shape[3:]
        ):
            out[key] = inflate_conv_weight(state_2d[key], target.shape[2])
            inflated.append(key)
        else:
            mismatched.append(
                f"{key}: checkpoint {tuple(state_2d[key].shape)} vs model {tuple(target.shape)}"
            )
    extra = [key for key in state_2d if key not in own]
    report = InflationReport(
        inflated=tuple(inflated),
        copied=tuple(copied),
        skipped=tuple(skipped + [key for key in extra if _named_in(key, skip)]),
        missing=tuple(missing),
        unexpected=tuple(key for key in extra if not _named_in(key, skip)),
        mismatched=tuple(mismatched),
    )
    return out, report


def load_inflated(
    model_3d: nn.Module,
    state_2d: Mapping[str, Tensor],
    *,
    skip: Collection[str] = (),
    source: str = "(state dict)",
    hint: str = "",
) -> InflationReport:
    """Inflate `state_2d` into `model_3d` in place; refuses any load short of complete.

    Every model key outside `skip` must be filled and every checkpoint key outside `skip` used,
    else ValueError names the keys (`source` names the checkpoint and `hint` is added to the
    message). Returns the report.
    """
    state, report = inflate_state_dict(state_2d, model_3d, skip=skip)
    report.raise_if_partial(source, hint)
    model_3d.load_state_dict(state, strict=False)  # complete: only the skipped keys stay unloaded
    return report
