from pathlib import Path

import pytest

from tubelet.jobs import common
from tubelet.jobs.common import (
    DiffusionSettings,
    FlowSettings,
    TrainJob,
    builder_args,
    check_same_run,
    jsonable,
    logs_to_tensorboard,
    settings_of,
    split_task_args,
    task_settings,
)


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


def test_task_settings_are_typed_per_task():
    assert task_settings("flow", {"updates": "4"}) == FlowSettings(updates=4)
    generation = task_settings("generation", {"prediction": "epsilon", "cond_drop": 0})
    assert generation == DiffusionSettings(prediction="epsilon", cond_drop=0.0)
    assert isinstance(generation.cond_drop, float)
    assert task_settings("classification", {}) is None


def test_unknown_task_settings_name_the_known_ones():
    with pytest.raises(ValueError, match="unknown --task-arg steps for --task flow; .*: updates"):
        task_settings("flow", {"steps": 4})
    with pytest.raises(ValueError, match="--task classification has no settings"):
        task_settings("classification", {"updates": 4})


def test_old_model_arguments_that_were_task_settings_are_told_apart():
    assert split_task_args("flow", {"num_flow_updates": 4, "corr_levels": 2}) == (
        {"corr_levels": 2}, {"updates": 4}
    )  # fmt: skip
    assert split_task_args("generation", {"ema_decay": 0.9, "width": 8}) == (
        {"width": 8}, {"ema_decay": 0.9}
    )  # fmt: skip
    assert split_task_args("classification", {"width": 8}) == ({"width": 8}, {})


def test_a_job_keeps_builder_arguments_and_task_settings_apart():
    job = TrainJob(out=Path("r"), task="flow", model="raft_small", model_args={"dropout": 0.1})
    assert builder_args(job) == {"dropout": 0.1} and settings_of(job, FlowSettings).updates == 12
    old = TrainJob(out=Path("r"), task="flow", model="raft_small",
                   model_args={"num_flow_updates": 4})  # fmt: skip
    with pytest.raises(ValueError, match="pass --task-arg updates=4"):
        builder_args(old)
    other = TrainJob(out=Path("r"), task="flow", task_settings=DiffusionSettings())
    with pytest.raises(ValueError, match="takes FlowSettings, not DiffusionSettings"):
        settings_of(other, FlowSettings)


def test_task_settings_are_part_of_the_run_config():
    job = TrainJob(out=Path("r"), task="flow", task_settings=FlowSettings(updates=4))
    assert jsonable(job)["task_settings"] == {"updates": 4}


def test_settings_without_a_default_keep_their_value():
    settings = task_settings("generation", {"vae": "runs/vae", "objective": "flow"})
    assert settings.vae == "runs/vae" and settings.objective == "flow"
