import json
import math

import numpy as np
import pytest
import torch
from planted import Plant
from safetensors.torch import save_file

from tubelet.convert import list_formats, read_state_dict
from tubelet.engine.checkpoint import (
    find_checkpoint,
    load_model,
    load_trainer_state,
    save_model,
    save_trainer_state,
)
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


def test_trainer_state_round_trips_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    state = {"epoch": 2, "optimizer": optimizer.state_dict(), "rng": rng, "rng_by_rank": [rng],
             "best": {"epoch": 1, "top1": float("nan")}, "scaler": {}}  # fmt: skip
    save_trainer_state(tmp_path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "trainer_state.json",
        "trainer_state.safetensors",
    ]
    back = load_trainer_state(tmp_path)
    assert list(back["optimizer"]["state"]) == [0, 1]  # parameter ids stay ints
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    torch.testing.assert_close(back["optimizer"]["state"][0]["exp_avg"],
                               optimizer.state_dict()["state"][0]["exp_avg"], rtol=0, atol=0)  # fmt: skip
    assert back["rng"]["numpy"][0] == "MT19937"
    np.testing.assert_array_equal(back["rng"]["numpy"][1], rng["numpy"][1])
    assert back["rng"]["numpy"][1].dtype == np.uint32
    assert torch.equal(back["rng_by_rank"][0]["torch"], rng["torch"])
    assert math.isnan(back["best"]["top1"])
    optimizer.load_state_dict(back["optimizer"])
    np.random.set_state(back["rng"]["numpy"])


def test_an_old_pickled_trainer_state_of_plain_values_is_still_read(tmp_path):
    torch.save({"epoch": 3, "rng": {"numpy": np.random.get_state()}}, tmp_path / "trainer_state.pt")
    state = load_trainer_state(tmp_path)
    assert state["epoch"] == 3 and state["rng"]["numpy"][1].dtype == np.uint32


def test_no_loader_runs_a_planted_pickle(tmp_path):
    marker = tmp_path / "code-ran"
    planted = {"state_dict": {"conv.weight": torch.zeros(1)}, "extra": Plant(marker)}
    files = []
    for name in ("weights.pt", "weights.pth", "weights.bin", "hf/pytorch_model.bin"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        torch.save(planted, tmp_path / name)
        files.append(tmp_path / name)
    for path in [*files, tmp_path / "hf"]:
        with pytest.raises(ValueError, match="cannot be read as a checkpoint .it asks for .*open"):
            read_state_dict(path)
    for fmt in list_formats():
        if fmt == "transformers":  # reads config.json first; its weights go through read_state_dict
            continue
        # Either read (and refused) or refused for the model before reading: never unpickled.
        with pytest.raises(ValueError, match="nothing in it was run|importer for model 'r3d_18'"):
            create_model("r3d_18", width=4, checkpoint=str(files[1]), checkpoint_format=fmt)
    torch.save({"epoch": 1, "extra": Plant(marker)}, tmp_path / "trainer_state.pt")
    with pytest.raises(ValueError, match="trainer_state.pt is not read.*asks for .*open"):
        load_trainer_state(tmp_path)
    assert not marker.exists()


def test_a_run_saved_under_the_old_argument_names_still_loads(tmp_path):
    # model.json as runs wrote it before the renames (and before the spec had a format): the
    # ViT's per-head size was `width`, its input channels `in_chans`.
    torch.manual_seed(0)
    model = create_model("vit_t_16_video", num_classes=3, head_dim=8, depth=1, patch_size=8).eval()
    folder = tmp_path / "best"
    folder.mkdir()
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    old_args = {"num_classes": 3, "width": 8, "depth": 1, "patch_size": 8, "in_chans": 3}
    old_spec = {"model": "vit_t_16_video", "model_args": old_args, "classes": ["a", "b", "c"],
                "clip": {"frames": 2, "sampling": "uniform"}, "size": 16}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(old_spec))
    again, spec = load_model(tmp_path)
    assert spec.model_args == {
        "num_classes": 3, "head_dim": 8, "depth": 1, "patch_size": 8, "in_channels": 3
    }  # fmt: skip
    x = torch.randn(1, 3, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), model(x))
