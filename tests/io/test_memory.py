"""Loader memory: random reads through a DataLoader with 2 workers do not grow the workers' memory.

A test-sized version of `benchmarks/decode.py --memory` (10,000 reads), with the benchmark's own
harness: each read opens a `VideoReader`, decodes a random clip and closes it, in a worker; the
workers' resident memory (VmRSS) after a warm-up is compared with the end of the run.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tubelet.io import VideoReader

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode.py"


def _benchmark() -> ModuleType:
    """benchmarks/decode.py, imported once (it is a script, not a package)."""
    if "decode_benchmark" not in sys.modules:
        spec = importlib.util.spec_from_file_location("decode_benchmark", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["decode_benchmark"] = module
        spec.loader.exec_module(module)
    return sys.modules["decode_benchmark"]


@pytest.fixture(scope="module")
def videos(sample_videos: dict, truncated_video: tuple[Path, int]) -> list[Path]:
    """Every codec of the io test files, and a truncated file (which the PyAV backend reads)."""
    return [video.path for video in sample_videos.values()] + [truncated_video[0]]


@pytest.mark.slow
def test_random_reads_do_not_grow_worker_memory(videos: list[Path]) -> None:
    bench = _benchmark()
    report = bench.loader_memory(bench.RandomReads(videos, 400), warmup=100)
    assert len(report["per_worker"]) == 2
    assert all(w["reads"] > 100 for w in report["per_worker"].values())
    assert report["growth"] < 0.05, report["per_worker"]


class _ReadsThatKeepTheirReaders:
    """A leaking dataset: every read leaves its reader open, holding its decoder and buffers."""

    def __init__(self, bench: ModuleType, videos: list[Path], num_reads: int) -> None:
        self.reads = bench.RandomReads(videos, num_reads)
        self.rss_kib = bench.rss_kib
        self.kept: list[VideoReader] = []

    def __len__(self) -> int:
        return len(self.reads)

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        reader = VideoReader(self.reads.readers[index % len(self.reads.readers)].path)
        reader.get_frames([0, reader.num_frames - 1])
        self.kept.append(reader)
        return self.reads[index]


@pytest.mark.slow
def test_the_check_catches_readers_that_are_never_freed(videos: list[Path]) -> None:
    # About 1.5 MiB per open reader of these tiny files: 80 kept per worker after the warm-up
    # grow a worker of about 420 MiB by some 25%.
    bench = _benchmark()
    leaky = _ReadsThatKeepTheirReaders(bench, videos, 200)
    report = bench.loader_memory(leaky, warmup=40, window=20)
    assert report["growth"] > 0.05, report["per_worker"]
