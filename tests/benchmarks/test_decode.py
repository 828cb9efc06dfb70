"""Smoke run of `benchmarks/decode.py --quick`: the script runs and writes the JSON it promises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tubelet.io import torchcodec_error

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode.py"
TORCHCODEC_PEERS = ("torchcodec_exact", "torchcodec_approximate")
# torchcodec's peers run where FFmpeg's libraries load, and are listed as unavailable elsewhere.
PEERS = (*TORCHCODEC_PEERS, "pyav_loop") if torchcodec_error() is None else ("pyav_loop",)


@pytest.mark.slow
def test_quick_run_writes_times_ratios_and_frame_checks(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--repeats", "1", "--workdir", str(tmp_path)]
    command += ["--backend", "auto", "pyav"]  # PyAV also timed, as tubelet_pyav
    subprocess.run([*command, "--out", str(out)], check=True, capture_output=True, timeout=120)

    report = json.loads(out.read_text())
    meta = report["meta"]
    # decord is optional: it is either timed or listed as unavailable with the reason.
    assert ("decord" in meta["peers"]) != ("decord" in meta["unavailable_peers"])
    for name in TORCHCODEC_PEERS:
        assert (name in meta["peers"]) == (torchcodec_error() is None)
        assert meta["unavailable_peers"].get(name) == torchcodec_error()
    [info] = report["files"].values()
    assert info["num_frames_agree"] and info["num_frames"] == 60
    assert 0 < info["num_reference_frames"] < 60  # B-frames: some frames are non-reference
    [result] = report["results"]
    assert result["case"] == "uniform_8" and result["num_indices"] == 8
    seconds = result["seconds"]
    assert set(seconds) == {"tubelet", *meta["peers"]} and set(PEERS) <= set(seconds)
    assert all(len(result["all_seconds"][name]) == 1 and s > 0 for name, s in seconds.items())
    assert "tubelet_pyav" in meta["peers"] and result["frames_match"]["tubelet_pyav"] == "exact"
    peer_times = {n: s for n, s in seconds.items() if n not in ("tubelet", "tubelet_pyav")}
    assert result["best_peer"] == min(peer_times, key=peer_times.__getitem__)
    assert result["ratio_to_best_peer"] == pytest.approx(
        seconds["tubelet"] / min(peer_times.values())
    )
    assert result["speedup_vs_pyav_loop"] == pytest.approx(
        seconds["pyav_loop"] / seconds["tubelet"]
    )
    assert result["speedups_vs_pyav_loop"]["tubelet_pyav"] == pytest.approx(
        seconds["pyav_loop"] / seconds["tubelet_pyav"]
    )
    # One GOP: the loop decodes up to the last wanted frame, as a seeking decoder must; skipping
    # non-reference frames leaves fewer.
    assert result["frames_to_decode_loop"] == result["frames_to_decode_seeking"]
    assert result["frames_to_decode_skipping"] < result["frames_to_decode_seeking"]
    # Same FFmpeg, same frames: byte-equal; decord at most rounding away.
    assert all(result["frames_match"][name] == "exact" for name in PEERS)
    assert result["frames_match"].get("decord", "close").startswith(("exact", "close"))
    assert report["summary"]["frame_mismatches_or_errors"] == []
