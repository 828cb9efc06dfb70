import json

import pytest
import torch

from tubelet.engine.checkpoint import find_checkpoint, load_model, save_model
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec


def test_saved_model_reloads_from_its_run_folder(tmp_path):
    torch.manual_seed(0)
    model = create_model("r2plus1d_18", num_classes=3, width=8).eval()
    spec = ModelSpec(
        "r2plus1d_18", {"num_classes": 3, "width": 8}, "classification", ("a", "b", "c")
    )
    save_model(tmp_path / "run" / "best", model, spec)
    (tmp_path / "run" / "config.json").write_text("{}")

    loaded, loaded_spec = load_model(tmp_path / "run")
    assert loaded_spec == spec
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x), rtol=0, atol=0)
    assert not list((tmp_path / "run" / "best").glob("*.tmp"))


def test_last_is_used_when_there_is_no_best(tmp_path):
    save_model(tmp_path / "last", create_model("frame2d_resnet18", num_classes=2, width=4),
               ModelSpec("frame2d_resnet18", {"num_classes": 2, "width": 4}, "classification"))  # fmt: skip
    assert find_checkpoint(tmp_path) == tmp_path / "last"


def test_missing_checkpoint_says_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected model.json and model.safetensors"):
        find_checkpoint(tmp_path)


def test_spec_that_does_not_fit_the_weights_is_refused(tmp_path):
    model = create_model("r2plus1d_18", num_classes=3, width=8)
    save_model(
        tmp_path, model, ModelSpec("r2plus1d_18", {"num_classes": 3, "width": 8}, "classification")
    )
    spec = json.loads((tmp_path / "model.json").read_text())
    spec["model_args"]["num_classes"] = 5
    (tmp_path / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="does not fit"):
        load_model(tmp_path)
