"""Smoke run of `benchmarks/train_loop.py`: a tiny model on a few tiny mp4 files writes the JSON it
promises, with the ratio computed from what it measured."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_loop.py"


@pytest.mark.slow
def test_tiny_run_writes_bare_step_decoder_train_and_their_ratio(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("benchmark_train_loop", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "loop.json"
    small = ["-m", "width=4", "--frames", "4", "--size", "32", "--batch", "4", "--epochs", "2"]
    files = ["--videos", "20", "--video-size", "48", "--video-frames", "12", "--steps", "2"]
    bench.main([*small, *files, "--workdir", str(tmp_path), "--out", str(out)])
    result = json.loads(out.read_text())
    assert [e["epoch"] for e in result["train"]["epochs"]] == [1, 2]
    assert result["train"]["clips_per_s"] == result["train"]["epochs"][1]["clips_per_s"]
    for part in ("bare_step", "decoder", "loop_in_memory", "train"):
        assert result[part]["clips_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["train"]["clips_per_s"] / result["bare_step"]["clips_per_s"]
    )
    assert result["goal_applies"] == (
        result["decoder"]["clips_per_s"] > result["bare_step"]["clips_per_s"]
    )
    assert result["decoder"]["batch_bytes_float32"] == 4 * result["decoder"]["batch_bytes_uint8"]
    assert 0 <= result["train"]["data_wait_share"] <= 1
