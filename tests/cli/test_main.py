import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tubelet.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_models_lists_the_registry():
    result = invoke("models")
    assert result.exit_code == 0
    assert {"frame2d_resnet18", "r2plus1d_18"} <= set(result.output.split())


def test_python_dash_m_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "tubelet", "models"], capture_output=True, text=True, check=True
    )
    assert "r2plus1d_18" in result.stdout.split()


def test_unknown_model_is_a_clear_error(tiny_dataset, tmp_path):
    result = invoke(
        "train", "--data", tiny_dataset, "--model", "r2plus1d_81", "--out", tmp_path / "x"
    )
    assert result.exit_code == 2
    assert "unknown model 'r2plus1d_81'" in result.output
    assert "r2plus1d_18" in result.output


def test_data_synth_writes_a_dataset_that_inspect_reads(tmp_path):
    out = tmp_path / "synth"
    result = invoke("data", "synth", out, "--videos-per-class", 2, "--frames", 6, "--size", 32)
    assert result.exit_code == 0, result.output
    assert (out / "train.csv").is_file() and (out / "reversal_pairs.txt").is_file()
    (out / "videos" / "move_left" / "cut.mp4").write_bytes(b"\x00" * 100)
    with open(out / "train.csv", "a") as f:
        f.write("videos/move_left/cut.mp4 0\n")
    result = invoke("data", "inspect", out)
    assert result.exit_code == 0, result.output
    assert "list layout, 10 classes" in result.output
    assert "move_left" in result.output and "zoom_out" in result.output
    assert "1 unreadable video(s)" in result.output
    assert "cut.mp4" in result.output


@pytest.mark.slow
def test_train_eval_predict_compare_end_to_end(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    (data / "videos" / "broken.mp4").write_bytes(b"not a video at all")
    with open(data / "train.csv", "a") as f:
        f.write("videos/broken.mp4 3\n")
    run = tmp_path / "run"
    train_args = [
        "train", "--data", data, "--model", "r2plus1d_18", "-m", "width=8", "--frames", 4,
        "--size", 32, "--epochs", 2, "--batch-size", 4, "--workers", 0, "--out", run,
        "--log", "tensorboard",
    ]  # fmt: skip
    result = invoke(*train_args)
    assert result.exit_code == 0, result.output
    for picture in ("curves.png", "confusion.png"):
        assert (run / picture).stat().st_size > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert 0.0 <= summary["val_top1"] <= 1.0
    assert summary["val_reversal_acc"] is not None
    assert [b["path"].endswith("broken.mp4") for b in summary["bad_files"]] == [True]
    assert "val_top1" in result.output and "1 unreadable video(s)" in result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model_args"] == {"width": 8} and config["seed"] == 0

    # A finished run is not trained again; a different model in the same folder is refused.
    again = invoke(*train_args)
    assert again.exit_code == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    other = invoke(*[a if a != "r2plus1d_18" else "frame2d_resnet18" for a in train_args])
    assert other.exit_code == 2
    assert "already holds a run with other settings" in " ".join(other.output.split())

    result = invoke("eval", "--checkpoint", run, "--views", "2x3", "--workers", 0)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval-2x3.json").read_text())
    assert metrics["views"] == "2x3"
    assert metrics["num_videos"] == len((data / "val.csv").read_text().splitlines())

    video = data / (data / "val.csv").read_text().split()[0]
    result = invoke("predict", video, "--checkpoint", run, "--top-k", 3, "--json")
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.output)["predictions"]
    assert len(predictions) == 3
    assert predictions[0]["probability"] >= predictions[-1]["probability"]
    assert predictions[0]["class"] in (data / "classes.txt").read_text().split()

    result = invoke("compare", run)
    assert result.exit_code == 0
    assert "r2plus1d_18" in result.output and "reversal" in result.output


def test_predict_on_a_broken_file_names_it(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    run = tmp_path / "nothing"
    result = invoke("predict", bad, "--checkpoint", run)
    assert result.exit_code == 2
    assert "no checkpoint in" in result.output


def test_an_option_the_task_does_not_read_is_refused(tmp_path):
    train = ["train", "--out", str(tmp_path / "run")]
    for options, message in [
        (["--task", "flow", "--frames", "4"], "--frames is not used by --task flow"),
        (
            ["--task", "flow", "--head", "linear"],
            "--head is for --task classification, not --task flow",
        ),
        (["--task", "detection", "--features", "f"], "--features is for --task classification"),
        (["--task", "generation", "--init", "r"], "--init is for --task classification or flow"),
        (["--lora-rank", "4"], "--lora-rank is for --task generation, not --task classification"),
        (["--features", "f", "--size", "64"], "--size is not used by a head on cached features"),
    ]:
        result = runner.invoke(app, [*train, *options])
        assert result.exit_code == 2 and message in result.output, (options, result.output)
    assert not (tmp_path / "run").exists()
