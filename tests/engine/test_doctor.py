import av
import torch

from tubelet.engine import doctor
from tubelet.io import torchcodec_error


def test_diagnose_reports_what_a_bug_report_needs():
    checks = {check.name: check for check in doctor.diagnose()}
    assert {"tubelet", "torch", "torchvision", "torchcodec", "PyAV", "FFmpeg for torchcodec",
            "decoder of backend='auto'", "CPUs", "GPUs", "NVDEC"} <= set(checks)  # fmt: skip
    assert checks["torch"].found.startswith(torch.__version__)
    assert checks["PyAV"].found.startswith(av.__version__)
    auto = "torchcodec" if torchcodec_error() is None else "pyav"  # full frames
    picks = "pyav for clips resized in decoding, torchcodec for full frames"
    assert checks["decoder of backend='auto'"].found == (picks if auto == "torchcodec" else "pyav")
    assert checks["write and read a video"].ok and auto in checks["write and read a video"].found
    assert checks["FFmpeg for torchcodec"].ok == (torchcodec_error() is None)
    assert not checks["FFmpeg for torchcodec"].needed  # PyAV stands in
    assert doctor.problems(list(checks.values())) == []


def test_a_decoder_that_fails_is_a_problem_with_its_fix(monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("libavcodec.so: cannot open shared object file")

    monkeypatch.setattr("tubelet.io.write_video", broken)
    [check] = [c for c in doctor.diagnose() if c.name == "write and read a video"]
    assert not check.ok and check.needed
    assert "libavcodec.so" in check.found and "pip install" in check.fix
    assert doctor.problems([check]) == [check]
