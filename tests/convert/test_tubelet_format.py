"""tubelet's own weights format: files of an older layout load through `create_model(checkpoint=)`
(the strict loader of `tubelet.convert`) as through `load_model`."""

import re

import pytest
import torch

from tubelet.convert import load_checkpoint
from tubelet.engine.checkpoint import load_model, save_model
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec

OLD_MLPS = [
    # (model, builder arguments, task): the temporal transformer's MLP was
    # Sequential(Linear, GELU, Linear, Dropout), ActionFormer's Sequential(Linear, GELU, Dropout, Linear)
    ("frame_transformer", {"in_dim": 6, "width": 8, "depth": 2, "num_heads": 2, "max_len": 10,
                           "num_classes": 3}, "features", 2),
    ("actionformer_tiny", {"input_dim": 6, "num_classes": 3, "width": 16, "num_heads": 2,
                           "window": 3, "levels": 2}, "detection", 3),
]  # fmt: skip


def _old_layout(state: dict[str, torch.Tensor], last: int) -> dict[str, torch.Tensor]:
    """`state` as it was saved when each MLP was an nn.Sequential: `mlp.fc1` -> `mlp.0`, `mlp.fc2`
    -> `mlp.{last}`."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"\bmlp\.fc1\.", "mlp.0.", key)
        out[re.sub(r"\bmlp\.fc2\.", f"mlp.{last}.", key)] = value
    return out


@pytest.mark.parametrize(("name", "args", "task", "last"), OLD_MLPS)
def test_old_mlp_weights_load_both_ways(tmp_path, name, args, task, last):
    torch.manual_seed(0)
    model = create_model(name, **args)
    old = _old_layout(model.state_dict(), last)
    assert any(".mlp.0." in k for k in old) and not any(".mlp.fc1." in k for k in old)
    save_model(tmp_path / "run" / "best", model, ModelSpec(name, args, task), state=old)

    by_file = create_model(name, checkpoint=str(tmp_path / "run" / "best" / "model.safetensors"),
                           **args)  # fmt: skip
    by_run, _ = load_model(tmp_path / "run")
    for again in (by_file, by_run):
        assert again.state_dict().keys() == model.state_dict().keys()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)
    # The import report names each key it renamed.
    report = load_checkpoint(create_model(name, **args), name, tmp_path / "run")
    assert set(report.renamed) == set(old) - set(model.state_dict())
    assert report.loaded == len(old) and "renamed" in str(report)


def test_a_file_that_does_not_fit_is_still_refused(tmp_path):
    name, args, task, last = OLD_MLPS[0]
    model = create_model(name, **args)
    old = _old_layout(model.state_dict(), last)
    old.pop("encoder.blocks.0.mlp.0.bias")
    save_model(tmp_path / "best", model, ModelSpec(name, args, task), state=old)
    with pytest.raises(ValueError, match=r"missing: .*blocks\.0\.mlp\.fc1\.bias"):
        create_model(name, checkpoint=str(tmp_path / "best" / "model.safetensors"), **args)
