"""Smoke run of `benchmarks/videomae_masking.py`: fewer encoder tokens, less activation memory."""

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "videomae_masking.py"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_videomae_masking", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_masked_steps_see_fewer_tokens_and_save_memory(tmp_path):
    out = tmp_path / "masking.json"
    args = ["--model", "videomae_pretrain_t", "--batch", "1", "--frames", "4", "--size", "32"]
    args += ["--patch", "8", "--warmup", "0", "--repeats", "1", "--out", str(out)]
    load_script().main(args)
    result = json.loads(out.read_text())
    rows = {row["mask_ratio"]: row for row in result["rows"]}
    assert [rows[r]["encoder_tokens"] for r in (0.0, 0.75, 0.9)] == [32, 8, 4]
    assert rows[0.9]["memory_bytes"] < rows[0.75]["memory_bytes"] < rows[0.0]["memory_bytes"]
    assert rows[0.0]["speedup"] == 1.0 and rows[0.9]["step_s"] > 0
