"""`benchmarks/nvdec_check.py`: it skips cleanly without a GPU, and its comparison runs end to end
(here with the CPU standing in for the GPU: equal frames, a difference of 0)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from tubelet.io import torchcodec_error

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "nvdec_check.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_nvdec_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_writes_why_and_exits_cleanly(bench, tmp_path):
    out = tmp_path / "nvdec.json"
    bench.main(["--out", str(out)])
    assert json.loads(out.read_text())["skipped"] in (
        torchcodec_error(),
        "no CUDA GPU (torch.cuda.is_available() is False)",
    )


@pytest.mark.skipif(torchcodec_error() is not None, reason=str(torchcodec_error()))
def test_the_comparison_runs_with_the_cpu_for_the_gpu(bench, tmp_path):
    path = bench.make_clip(tmp_path / "clip.mp4", 96, 64, 24)
    report = bench.check(path, "cpu", frames=4, short_side=40, clips=2)
    assert report["num_frames"] == 24
    [full, resized] = report["cases"]
    assert full["gpu_shape"] == [4, 64, 96, 3] and resized["gpu_shape"] == [4, 40, 60, 3]
    for case in (full, resized):
        assert case["gpu_layout_ok"] and case["max_abs_pixel_diff"] == 0
        assert case["cpu_clips_per_s"] > 0 and case["gpu_clips_per_s"] > 0
    assert report["on_device"]["train_transform"] == "ok: (3, 16, 112, 112) torch.float32 on cpu"
    assert report["on_device"]["dataset_item"] == "ok: (3, 16, 112, 112) torch.float32 on cpu"
