"""`tubelet data validate`: table of bad videos, CSV report, exit code 0 or 1."""

from __future__ import annotations

import csv

import numpy as np
from typer.testing import CliRunner

from tubelet.cli import main
from tubelet.cli.main import app
from tubelet.io import write_video

runner = CliRunner()


def test_validate_reports_bad_videos_and_exits_1(tmp_path, monkeypatch):
    monkeypatch.setattr(main.console, "width", 400)  # table rows on one line each
    root = tmp_path / "data"
    (root / "walk").mkdir(parents=True)
    (root / "run").mkdir()
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), np.uint8)
    for name in ("walk/a.mp4", "walk/b.mp4", "run/c.mp4"):
        write_video(root / name, frames, fps=8)
    report = tmp_path / "bad.csv"

    result = runner.invoke(app, ["data", "validate", str(root), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "all 3 videos decode" in result.output
    assert list(csv.reader(report.open())) == [["path", "splits", "reason"]]

    (root / "run" / "broken.mp4").write_bytes(b"not a video at all")
    result = runner.invoke(
        app, ["data", "validate", str(root), "--report", str(report), "--workers", "2"]
    )
    assert result.exit_code == 1, result.output
    assert "1 of 4 videos are bad" in result.output
    assert "broken.mp4" in result.output and "not a video container" in result.output
    rows = list(csv.DictReader(report.open()))
    assert [row["path"] for row in rows] == [str(root / "run" / "broken.mp4")]


def test_validate_of_a_missing_folder_exits_2(tmp_path):
    result = runner.invoke(app, ["data", "validate", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "does not exist" in " ".join(result.output.split())  # rich may wrap the line
