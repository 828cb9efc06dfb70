"""`tubelet pretrain` end to end on a tiny data set, then `tubelet train --init` from its run."""

import pytest
from PIL import Image
from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.engine.checkpoint import load_model

TINY = ["-m", "head_dim=8", "-m", "depth=2", "-m", "decoder_depth=1", "-m", "patch_size=8"]
CLIP = ["--frames", "4", "--size", "32", "--batch-size", "4", "--workers", "0"]


@pytest.mark.slow
def test_pretrain_then_finetune_from_the_command_line(tmp_path, tiny_dataset):
    runner = CliRunner()
    run = tmp_path / "pretrain"
    args = ["pretrain", "--data", str(tiny_dataset), "--model", "videomae_pretrain_t", *TINY]
    args += [*CLIP, "--epochs", "1", "--mask-ratio", "0.75", "--out", str(run)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "val_loss" in result.output
    png = Image.open(run / "reconstruction.png")
    assert png.size[0] > png.size[1] / 12  # 4 frames a row, 3 rows per clip
    model, spec = load_model(run)
    assert spec.model_args["mask_ratio"] == 0.75 and model.mask_ratio == 0.75
    assert spec.task == "pretrain" and spec.preprocessing.frames == 4
    again = runner.invoke(app, args)  # finished: resumes with nothing left to do
    assert again.exit_code == 0, again.output

    tuned = tmp_path / "finetune"
    ft = ["train", "--data", str(tiny_dataset), "--init", str(run), *CLIP, "--epochs", "1"]
    result = runner.invoke(app, [*ft, "--out", str(tuned)])
    assert result.exit_code == 0, result.output
    classifier, spec = load_model(tuned)
    assert spec.model == "vit_t_16_video" and spec.model_args["head_dim"] == 8

    bad = runner.invoke(app, [*ft, "--model", "r3d_18", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "video ViT classifier" in bad.output
    bad = runner.invoke(app, ["pretrain", "--model", "r3d_18", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2


def test_pretrain_takes_the_training_options_of_train():
    from typer.main import get_command

    commands = get_command(app).commands
    shared = {
        "--model-arg", "--sampling", "--stride", "--epochs", "--batch-size", "--lr", "--precision",
        "--accumulate", "--grad-checkpointing", "--channels-last", "--compile", "--fsdp", "--flip",
        "--bad-files", "--workers", "--seed", "--out", "--log",
    }  # fmt: skip
    for name in ("train", "pretrain"):
        options = {o for p in commands[name].params for o in (*p.opts, *p.secondary_opts)}
        assert shared | {"--no-flip"} <= options, name
    help_of = {n: {p.name: p.help for p in commands[n].params} for n in ("train", "pretrain")}
    assert all(help_of["train"][n] == help_of["pretrain"][n] for n in ("fsdp", "flip", "log"))
