"""VideoReader(device=...): the CPU default unchanged, GPU decoding's refusals, and its code path.

No GPU here: the GPU path runs with torchcodec's decoder made to decode on the CPU whatever device
it is given (`cpu_decoder_for_any_device`), which checks everything but NVDEC itself; the real
GPU check is `benchmarks/nvdec_check.py` (in `benchmarks/gpu_suite.sh`).
"""

from __future__ import annotations

import pickle

import pytest
import torch

from tubelet.data.transforms import short_side_resize
from tubelet.io import VideoReader
from tubelet.io._size import resize_frames
from tubelet.io._torchcodec import load_error
from tubelet.io.reader import check_device

needs_torchcodec = pytest.mark.skipif(load_error() is not None, reason=str(load_error()))


def pyav_frames(path, indices: list[int]) -> torch.Tensor:
    """uint8 (N, H, W, 3) full-size frames decoded on the CPU by the other backend."""
    with VideoReader(path, "pyav") as reader:
        return reader.get_frames(indices).data


@pytest.fixture
def cpu_decoder_for_any_device(monkeypatch):
    """torchcodec's VideoDecoder decoding on the CPU whatever `device` it is given, and torch
    claiming a GPU: the reader's GPU path without a GPU. Returns the devices asked for."""
    import torchcodec.decoders

    real = torchcodec.decoders.VideoDecoder
    asked: list[str] = []

    def decoder(*args, device="cpu", **kwargs):
        asked.append(str(device))
        return real(*args, device="cpu", **kwargs)

    monkeypatch.setattr(torchcodec.decoders, "VideoDecoder", decoder)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return asked


@pytest.mark.parametrize(
    "backend", ["auto", "pyav", pytest.param("torchcodec", marks=needs_torchcodec)]
)
def test_cpu_is_the_default_and_pickles(sample_videos, backend):
    with VideoReader(sample_videos["h264_gop12"].path, backend) as reader:
        assert reader.device == "cpu"
        frames = reader.get_frames([3, 1])
        copy = pickle.loads(pickle.dumps(reader))
    assert frames.data.device.type == "cpu" and frames.data.dtype == torch.uint8
    assert copy.device == "cpu" and torch.equal(copy.get_frames([3, 1]).data, frames.data)


@pytest.mark.parametrize("device", ["tpu", "gpu", "", 3, None])
def test_unknown_device_names_the_choices(sample_videos, device):
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda' or 'cuda:N'"):
        VideoReader(sample_videos["h264_gop12"].path, device=device)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_pyav_refuses_a_gpu(sample_videos, device):
    with pytest.raises(ValueError, match="PyAV decodes on the CPU only.*backend='torchcodec'"):
        VideoReader(sample_videos["h264_gop12"].path, backend="pyav", device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@needs_torchcodec
def test_no_gpu_is_a_clear_error(sample_videos):
    with pytest.raises(ValueError, match=r"torch.cuda.is_available\(\) is False.*device='cpu'"):
        VideoReader(sample_videos["h264_gop12"].path, device="cuda")


def test_gpu_without_torchcodec_names_the_fix(sample_videos, monkeypatch):
    monkeypatch.setattr(
        "tubelet.io.reader.load_error",
        lambda: "torchcodec does not import: `pip install torchcodec`",
    )
    with pytest.raises(ValueError, match="decodes with torchcodec.*pip install torchcodec"):
        VideoReader(sample_videos["h264_gop12"].path, device="cuda")


@needs_torchcodec
def test_torchcodec_without_cuda_names_the_fix(sample_videos, monkeypatch):
    import torchcodec.decoders

    def cpu_only_build(*args, device="cpu", **kwargs):
        raise RuntimeError(f"Unsupported device: {device}")

    monkeypatch.setattr(torchcodec.decoders, "VideoDecoder", cpu_only_build)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(
        ValueError, match="needs a torchcodec built with CUDA.*pip install torchcodec"
    ):
        VideoReader(sample_videos["h264_gop12"].path, device="cuda")


def test_check_device_keeps_the_index():
    assert check_device("cpu", "pyav") == "cpu"
    with pytest.raises(ValueError, match="PyAV"):
        check_device("cuda:0", "pyav")


@needs_torchcodec
@pytest.mark.parametrize("backend", ["auto", "torchcodec"])
def test_gpu_path_decodes_with_torchcodec_on_that_device(
    sample_videos, cpu_decoder_for_any_device, backend
):
    indices = [30, 2, 47, 2]
    with VideoReader(sample_videos["h264_gop12"].path, backend, device="cuda:0") as reader:
        assert reader.backend == "torchcodec" and reader.device == "cuda:0"
        frames = reader.get_frames(indices)
        copy = pickle.loads(pickle.dumps(reader))
    assert cpu_decoder_for_any_device == ["cuda:0"]  # one exact open, on the asked device
    assert frames.data.shape == (4, 48, 64, 3) and frames.data.is_contiguous()
    assert torch.equal(frames.data, pyav_frames(sample_videos["h264_gop12"].path, indices))
    assert frames.pts_s.dtype == torch.float64 and frames.pts_s.device.type == "cpu"
    assert copy.device == "cuda:0"


@needs_torchcodec
@pytest.mark.parametrize(("name", "short_side"), [("h264_gop12", 32), ("h264_bframes", 96)])
def test_gpu_path_resizes_after_decoding(
    sample_videos, cpu_decoder_for_any_device, name, short_side
):
    indices = [30, 2, 47]
    path = sample_videos[name].path
    with VideoReader(path, "torchcodec", short_side=short_side, device="cuda") as reader:
        frames = reader.get_frames(indices).data
        at_times = reader.get_frames_at([0.0]).data
        size = (reader.height, reader.width)
    # torchcodec's decoder transforms run on the CPU only: the GPU path opens without them.
    assert cpu_decoder_for_any_device == ["cuda"]
    expected = short_side_resize(pyav_frames(path, indices), short_side)
    assert frames.shape == expected.shape and size == expected.shape[1:3]
    assert at_times.shape == (1, *size, 3)
    assert (frames.int() - expected.int()).abs().max() <= 1  # the same resampling, on the device


def test_resize_frames_matches_the_transform():
    frames = torch.randint(0, 256, (3, 48, 64, 3), dtype=torch.uint8)
    resized = resize_frames(frames, (24, 32))
    assert resized.shape == (3, 24, 32, 3) and resized.dtype == torch.uint8
    assert resized.is_contiguous()
    assert (resized.int() - short_side_resize(frames, 24).int()).abs().max() <= 1
    assert resize_frames(frames, (48, 64)) is frames


def test_the_cuda_build_fix_names_the_wheel_index(monkeypatch):
    from tubelet.io._torchcodec import cuda_build_fix

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert "--index-url https://download.pytorch.org/whl/cu128" in cuda_build_fix("x")
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CUDA build that matches torch's CUDA" in cuda_build_fix("x")
