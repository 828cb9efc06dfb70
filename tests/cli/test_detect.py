import json

import pytest
from detection_data import make_detection_data
from typer.testing import CliRunner

from tubelet.cli.main import app

runner = CliRunner()


@pytest.mark.slow
def test_train_eval_and_detect_commands(tmp_path):
    data, _, features = make_detection_data(tmp_path)
    run = tmp_path / "run"
    result = runner.invoke(app, [
        "train", "--task", "detection", "--data", str(features), "--model", "actionformer_tiny",
        "-m", "width=16", "-m", "levels=3", "--epochs", "1", "--batch-size", "2", "--out", str(run),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "val_average_mAP" in result.output

    result = runner.invoke(app, ["eval", "--checkpoint", str(run)])
    assert result.exit_code == 0, result.output
    assert "mAP@0.3" in result.output and "mAP@0.7" in result.output

    png = tmp_path / "timeline.png"
    video = data / "videos" / "video_0002.mp4"
    args = ["detect", str(video), "--checkpoint", str(run), "--json", "--timeline", str(png)]
    result = runner.invoke(app, [*args, "--min-score", "0"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["timeline"] == str(png) and png.is_file()
    assert out["segments"] and set(out["segments"][0]) == {"start", "end", "label", "score"}

    result = runner.invoke(app, ["detect", str(tmp_path / "nope.mp4"), "--checkpoint", str(run)])
    assert result.exit_code == 2 and "no video file" in result.output
