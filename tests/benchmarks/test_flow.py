"""Smoke runs of `benchmarks/flow.py`: the speed report on a small pair, the EPE report on a run."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from tubelet.engine.checkpoint import save_model
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec, Preprocessing
from tubelet.normalization import SIGNED_MEAN, SIGNED_STD

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "flow.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_flow", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_volume_size_by_hand(bench):
    # 1080x1920 -> 135x240 = 32400 pixels at 1/8: 32400^2 floats, times 1 + 1/4 + 1/16 + 1/64.
    assert bench.volume_bytes(1080, 1920) == int(32400**2 * 4 * 1.328125)
    assert bench.volume_bytes(368, 496, batch=2) == int(2 * (46 * 62) ** 2 * 4 * 1.328125)


@pytest.mark.slow
def test_speed_report(bench, tmp_path):
    out = tmp_path / "speed.json"
    bench.main(["speed", "--sizes", "128x128", "--updates", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    results = report["rows"][0]["results"]
    assert set(results) == {"torchvision/all_pairs", "tubelet/all_pairs", "tubelet/on_demand"}
    for key in ("tubelet/all_pairs", "tubelet/on_demand"):
        assert results[key]["max_abs_diff_vs_torchvision"] <= 1e-4
        assert results[key]["speed_ratio_vs_torchvision"] > 0
    bench.main(["speed", "--sizes", "128x128", "--updates", "1", "--max-volume-gib", "0"])


@pytest.mark.slow
def test_epe_report(bench, tmp_path):
    run = tmp_path / "run"
    save_model(
        run / "best",
        create_model("raft_small"),
        ModelSpec(
            model="raft_small",
            model_args={},
            task="flow",
            task_args={"num_flow_updates": 1},
            preprocessing=Preprocessing(
                mean=SIGNED_MEAN, std=SIGNED_STD, crop=(64, 96), frames=2, sampling="dense"
            ),
        ),
    )
    (run / "config.json").write_text(json.dumps({"seed": 0}))
    (run / "summary.json").write_text(json.dumps({"train_time_s": 1.0, "epochs": 1}))
    out = tmp_path / "epe.json"
    torch.manual_seed(0)
    bench.main(["epe", "--checkpoint", str(run), "--pairs", "2", "--out", str(out)])
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"raft", "farneback", "dis", "zero"}
    assert report["results"]["farneback"]["epe"] < report["results"]["zero"]["epe"]
