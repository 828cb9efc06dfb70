import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.engine.checkpoint import load_model, save_spec
from tubelet.engine.sharded import save_sharded
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec

runner = CliRunner()


def test_consolidate_writes_whole_weights_that_load_model_reads(tmp_path):
    args = {"num_classes": 3, "width": 4}
    model = create_model("r2plus1d_18", **args)
    best = tmp_path / "run" / "best"
    save_sharded(best, model)  # one process: what load_model must read without consolidating
    save_spec(best, ModelSpec("r2plus1d_18", args, "classification"))
    loaded, _ = load_model(tmp_path / "run")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    result = runner.invoke(app, ["consolidate", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    weights = load_file(best / "model.safetensors")
    assert weights.keys() == model.state_dict().keys()
    assert torch.equal(weights["stem.0.weight"], model.state_dict()["stem.0.weight"])


def test_consolidate_without_shards_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["consolidate", str(tmp_path)])
    assert result.exit_code == 2
    assert "no sharded checkpoint in" in result.output and "--fsdp" in result.output
