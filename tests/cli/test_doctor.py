from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.engine.doctor import Check


def test_doctor_exits_0_when_everything_needed_works():
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "everything tubelet needs works" in result.output
    for name in ("torchvision", "torchcodec", "PyAV", "CPUs", "GPUs", "NVDEC"):
        assert name in result.output


def test_doctor_exits_1_and_prints_the_fix(monkeypatch):
    checks = [
        Check("PyAV", "does not import", ok=False, fix="pip install 'av>=14'"),
        Check("GPUs", "none", ok=False, needed=False, fix="a GPU"),
    ]
    monkeypatch.setattr("tubelet.engine.doctor.diagnose", lambda: checks)
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "120"})
    assert result.exit_code == 1
    assert "fix (PyAV): pip install 'av>=14'" in result.output
    assert "to enable (GPUs): a GPU" in result.output
    assert "1 problem(s)" in result.output
