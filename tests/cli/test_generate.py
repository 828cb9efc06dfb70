"""`tubelet train --task generation` and `tubelet generate`, measured by a classifier run."""

import json

import pytest
import torch
from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.jobs.generation import measure_samples
from tubelet.models.spec import read_spec

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_train_generate_and_measure(tiny_dataset, tmp_path):
    common = ["--data", tiny_dataset, "--size", "16", "--frames", "4", "--epochs", "1",
              "--batch-size", "4", "--workers", "0"]  # fmt: skip
    gen = tmp_path / "gen"
    result = invoke(
        "train", "--task", "generation", *common, "--sampling", "dense", "--precision", "bf16",
        "-m", "width=8", "-m", "channel_mults=[1,2]", "-m", "attention_levels=[false,true]",
        "-m", "num_heads=2", "--out", gen,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "val_loss" in result.output
    cls = tmp_path / "cls"
    result = invoke("train", *common, "--model", "r2plus1d_18", "-m", "width=8", "--out", cls)
    assert result.exit_code == 0, result.output

    out = tmp_path / "samples.gif"
    result = invoke(
        "generate", "--checkpoint", gen, "--num", "1", "--steps", "2", "--classifier", cls,
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0 and "class_acc" in result.output
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["num_generated"] == 10 and metrics["num_real"] == 10
    assert 0 <= metrics["class_acc"] <= 1 and set(metrics["per_class_acc"]) == set(
        read_spec(cls).classes
    )
    assert metrics["fd"] >= 0 and 0 <= metrics["frame_diff"] <= 1

    # The classifier must see clips like the samples.
    spec = read_spec(gen)
    frames = torch.zeros(2, 6, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="--frames 6"):
        measure_samples(frames, torch.tensor([0, 1]), spec, cls)

    result = invoke("generate", "--checkpoint", tmp_path / "nothing", "--out", out)
    assert result.exit_code == 2 and "no checkpoint" in result.output
    result = invoke("generate", "--checkpoint", gen, "--class", "fly", "--out", out)
    assert result.exit_code == 2 and "unknown class 'fly'" in result.output
