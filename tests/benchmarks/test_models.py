"""Smoke run of `benchmarks/models.py`: one model pair on a tiny clip writes the JSON it promises."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "models.py"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_script()


@pytest.mark.slow
def test_quick_run_writes_speed_memory_and_output_check(bench, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    bench.main(["--quick", "--frames", "2", "--size", "32", "--out", str(out)])

    report = json.loads(out.read_text())
    meta = report["meta"]
    assert meta["input"] == [1, 3, 2, 32, 32] and meta["device"] == "cpu"
    assert meta["torch_threads"] >= 1 and meta["repeats"] == 1 and "torch" in meta["versions"]
    [r] = report["results"]
    assert r["model"] == "r3d_18" and r["peer"] == "torchvision.models.video.r3d_18"
    # Same weights through the importer: the same computation, up to float rounding.
    assert r["same_param_count"] and r["outputs_agree"]
    assert r["output_check"]["max_abs_diff"] <= 1e-4 * max(1.0, r["output_check"]["logit_scale"])
    assert all(len(r["seconds"][impl]) == 1 for impl in ("tubelet", "peer"))
    clips = r["clips_per_s"]
    assert r["speed_ratio"] == pytest.approx(clips["tubelet"] / clips["peer"])
    assert clips["tubelet"] == pytest.approx(1 / r["seconds"]["tubelet"][0])
    for impl in ("tubelet", "peer"):
        mem = r["memory"][impl]
        assert mem["param_bytes"] == mem["grad_bytes"] == 4 * r["params"][impl]
        assert mem["total_bytes"] == mem["saved_activation_bytes"] + 2 * mem["param_bytes"]
        assert mem["saved_activation_bytes"] > 0
    totals = {impl: r["memory"][impl]["total_bytes"] for impl in ("tubelet", "peer")}
    assert r["memory_ratio"] == pytest.approx(totals["tubelet"] / totals["peer"])
    assert set(report["summary"]) >= {"never_slower", "never_heavier", "outputs_differ"}


def test_saved_activation_bytes_count_each_storage_once_without_parameters(bench) -> None:
    import torch

    weight = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(8, 4, requires_grad=True)  # 128 bytes
    with bench.saved_storages({weight.untyped_storage().data_ptr()}) as seen:
        y = x @ weight  # saves x and weight
        z = (x * x).sum() + y.sum()  # saves x twice more: still one storage
    z.backward()
    assert sum(seen.values()) == x.numel() * 4
