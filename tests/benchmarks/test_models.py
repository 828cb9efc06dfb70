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


def test_op_counts_see_copies_casts_strided_writes_and_float32_matmuls(bench) -> None:
    import torch

    a = torch.randn(4, 8)
    with bench.OpCounts() as counts:
        b = a.t().contiguous()  # a layout copy: 128 bytes
        c = a.t() + 1  # an elementwise op writing a transposed output
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a.mm(b)  # autocast casts both inputs to bf16: 64 + 64 bytes
        a.mm(b)  # float32 inputs reach the matmul itself
    totals = counts.as_dict()
    assert (totals["copy_ops"], totals["copy_bytes"]) == (1, 128)
    assert (totals["cast_ops"], totals["cast_bytes"]) == (2, 128)
    assert totals["elementwise_ops"] == 1 and totals["elementwise_strided_ops"] == 1
    assert not c.is_contiguous()
    assert (totals["matmuls"], totals["float32_matmuls"]) == (2, 1)
    assert totals["float32_matmul_ops"] == {"mm": 1}


@pytest.mark.slow
def test_transformers_copy_no_more_than_their_peers_and_run_no_float32_matmul(bench, tmp_path):
    # The CPU proxy of the H200 profile (vit_b_16_video: 2x HF VideoMAE's copy_ time and
    # elementwise kernels HF does not run; swin3d_t: float32 attention GEMMs under bf16 autocast).
    # 64 px: at 32 px Swin's last stage is one token, and its patch merging's backward is a view
    # that hands stage 3 a transposed gradient (a tiny-input effect; larger grids copy it once).
    out = tmp_path / "counts.json"
    bench.main(
        ["--models", "vit_s_16_video", "swin3d_t", "timesformer_small", "--batch", "1",
         "--frames", "4", "--size", "64", "--dtype", "bf16", "--threads", "1", "--counts",
         "--no-timing", "--out", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["summary"]["outputs_differ"] == []
    for r in report["results"]:
        ours, peer = r["counts"]["tubelet"], r["counts"]["peer"]
        assert "seconds" not in r
        assert ours["float32_matmuls"] == 0, r["model"]
        assert ours["copy_bytes"] <= peer["copy_bytes"], r["model"]
        if r["model"] != "swin3d_t":  # its attention scales q in q's strided layout, as the peer
            assert ours["elementwise_strided_ops"] <= peer["elementwise_strided_ops"], r["model"]
