from pathlib import Path

import pytest

from tubelet.jobs import common
from tubelet.jobs.common import TrainJob, check_same_run, logs_to_tensorboard


def test_log_is_checked_before_anything_runs(monkeypatch):
    assert logs_to_tensorboard(TrainJob(out=Path("r"))) is False
    assert logs_to_tensorboard(TrainJob(out=Path("r"), log="tensorboard")) is True
    with pytest.raises(ValueError, match="unknown --log 'wandb'; choose one of files, tensorboard"):
        logs_to_tensorboard(TrainJob(out=Path("r"), log="wandb"))
    monkeypatch.setattr(common, "tensorboard_error", lambda: "needs tensorboard: pip install it")
    with pytest.raises(ValueError, match="pip install it"):
        logs_to_tensorboard(TrainJob(out=Path("r"), log="tensorboard"))


def test_a_run_may_resume_with_another_log():
    previous = {"model": "r2plus1d_18", "log": "files"}
    check_same_run(previous, {**previous, "log": "tensorboard"}, Path("r"))
