"""Smoke run of `benchmarks/decoder_rule.py --quick`: both backends timed per case, the ratio and
the rule's pick written to the JSON."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from tubelet.io import torchcodec_error
from tubelet.io.reader import auto_backend

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decoder_rule.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_decoder_rule", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(torchcodec_error() is not None, reason=str(torchcodec_error()))
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg program makes the files")
def test_quick_run_writes_a_ratio_per_case(bench, tmp_path):
    out = tmp_path / "rule.json"
    argv = ["--quick", "--repeats", "1", "--min-repeats", "1", "--workdir", str(tmp_path)]
    bench.main([*argv, "--out", str(out)])
    report = json.loads(out.read_text())
    assert [spec["num_frames"] for spec in report["files"].values()] == [60, 300]
    assert len(report["results"]) == 4  # 2 files x (uniform, dense) x 8 frames
    for result in report["results"]:
        seconds = result["seconds"]
        assert result["ratio_torchcodec_to_pyav"] == seconds["torchcodec"] / seconds["pyav"]
        assert result["auto_picks"] == auto_backend(resized=True) == "pyav"  # short side 129
        assert result["max_abs_pixel_diff"] <= 64  # two resamplers of the same frames
    summary = report["summary"]
    assert summary["cases"] == 4 and summary["auto_to_best_geomean"] >= 1.0
    assert summary["auto_to_best_geomean"] == summary["pyav_always_to_best_geomean"]


def test_codec_probe_policy_pays_the_probe_only_for_torchcodec(bench):
    h264 = {"codec": "h264", "seconds": {"pyav": 2.0, "torchcodec": 1.0}, "probe_seconds": 0.5}
    vp9 = {**h264, "codec": "vp9"}
    assert bench.by_codec_after_probe(h264) == 2.0
    assert bench.by_codec_after_probe(vp9) == 1.5
