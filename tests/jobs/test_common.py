import dataclasses
import json
from pathlib import Path

import pytest

from tubelet import jobs
from tubelet.jobs import common
from tubelet.jobs.common import (
    TASK_SETTINGS,
    AutoencoderSettings,
    ClassificationSettings,
    FlowSettings,
    GenerationSettings,
    TrainJob,
    builder_args,
    check_same_run,
    job_settings,
    jsonable,
    logs_to_tensorboard,
    saved_config,
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
    assert generation == GenerationSettings(prediction="epsilon", cond_drop=0.0)
    assert isinstance(generation.cond_drop, float)
    assert task_settings("autoencoder", {"kl_weight": 0}) == AutoencoderSettings(kl_weight=0.0)
    own = task_settings("classification", {"label_smoothing": 0, "init": "runs/pt"})
    assert own == ClassificationSettings(label_smoothing=0.0, init=Path("runs/pt"))
    assert task_settings("classification", {}) == ClassificationSettings()
    assert task_settings("pretrain", {}) is None and task_settings("detection", {}) is None
    with pytest.raises(ValueError, match="setting freeze_backbone takes bool, not 'yes'"):
        task_settings("classification", {"freeze_backbone": "yes"})
    with pytest.raises(ValueError, match="setting updates takes int, not 'many'"):
        task_settings("flow", {"updates": "many"})
    with pytest.raises(ValueError, match="setting updates takes int, not 4.5"):
        task_settings("flow", {"updates": 4.5})


def test_unknown_task_settings_name_the_known_ones():
    with pytest.raises(ValueError, match="unknown --task-arg steps for --task flow; .*: updates"):
        task_settings("flow", {"steps": 4})
    with pytest.raises(ValueError, match="--task pretrain has no settings"):
        task_settings("pretrain", {"updates": 4})


def test_an_option_of_another_task_is_refused_by_name():
    with pytest.raises(ValueError, match="--init is for --task classification or flow, not --task "
                       "generation: leave it out"):  # fmt: skip
        task_settings("generation", {}, {"init": Path("runs/pt")})
    with pytest.raises(ValueError, match="--lora-rank is for --task generation, not --task flow"):
        task_settings("flow", {}, {"lora_rank": 4})
    with pytest.raises(ValueError, match="--head and --task-arg head= give one setting twice"):
        task_settings("classification", {"head": "linear"}, {"head": "attentive"})
    # An option left at its default (None, False) is not given.
    assert task_settings("flow", {}, {"head": None, "freeze_backbone": False}) == FlowSettings()
    own = task_settings("generation", {"vae": "v"}, {"lora_rank": 4})
    assert own.lora_rank == 4 and own.vae == "v" and "lora_rank" not in own.diffusion()


def test_a_run_setting_the_task_does_not_read_is_refused():
    jobs.check_options("classification", ["stride", "size", "init"])
    with pytest.raises(ValueError, match="--stride is not used by --task detection"):
        jobs.check_options("detection", ["epochs", "stride"])
    with pytest.raises(ValueError, match="--size is not used by a head on cached features"):
        jobs.check_options("classification", ["features", "size"], features=True)
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        jobs.check_options("segmentation", [])


def test_old_model_arguments_that_were_task_settings_are_told_apart():
    assert split_task_args("flow", {"num_flow_updates": 4, "corr_levels": 2}) == (
        {"corr_levels": 2}, {"updates": 4}
    )  # fmt: skip
    assert split_task_args("generation", {"ema_decay": 0.9, "width": 8}) == (
        {"width": 8}, {"ema_decay": 0.9}
    )  # fmt: skip
    assert split_task_args("autoencoder", {"kl_weight": 0.1, "z_dim": 4}) == (
        {"z_dim": 4}, {"kl_weight": 0.1}
    )  # fmt: skip
    # `head` is a builder argument of a classifier (vjepa2_*), whatever --head sets.
    assert split_task_args("classification", {"head": "linear"}) == ({"head": "linear"}, {})


def test_old_model_arguments_still_set_the_task_settings_with_a_future_warning():
    with pytest.warns(FutureWarning, match="task settings go in --task-arg now: --task-arg "
                      "kl_weight=0.1"):  # fmt: skip
        model_args, own = job_settings("autoencoder", {"kl_weight": 0.1, "z_dim": 4}, {}, {})
    assert model_args == {"z_dim": 4} and own == AutoencoderSettings(kl_weight=0.1)


def test_a_job_keeps_builder_arguments_and_task_settings_apart():
    job = TrainJob(out=Path("r"), task="flow", model="raft_small", model_args={"dropout": 0.1})
    assert builder_args(job) == {"dropout": 0.1} and settings_of(job, FlowSettings).updates == 12
    old = TrainJob(out=Path("r"), task="flow", model="raft_small",
                   model_args={"num_flow_updates": 4})  # fmt: skip
    with pytest.raises(ValueError, match="pass --task-arg updates=4"):
        builder_args(old)
    with pytest.raises(ValueError, match="takes FlowSettings, not GenerationSettings"):
        TrainJob(out=Path("r"), task="flow", settings=GenerationSettings())
    with pytest.raises(ValueError, match="--task flow has no GenerationSettings"):
        settings_of(TrainJob(out=Path("r"), task="flow"), GenerationSettings)


def test_task_settings_sit_beside_the_run_settings_in_the_config():
    job = TrainJob(out=Path("r"), task="flow", settings=FlowSettings(updates=4, init=Path("a")))
    config = jsonable(job)
    assert config["updates"] == 4 and config["init"] == "a" and "settings" not in config
    for kind in TASK_SETTINGS.values():  # no name means two things in one config
        shared = {f.name for f in dataclasses.fields(TrainJob)}
        assert not shared & {f.name for f in dataclasses.fields(kind)}


def test_configs_saved_before_task_settings_had_a_home_still_resume(tmp_path):
    # flow: `task_settings` entry (one step back) or `-m num_flow_updates` (two steps back).
    job = TrainJob(out=tmp_path, task="flow", settings=FlowSettings(updates=4))
    config = jsonable(job)
    nested = {**config, "task_settings": {"updates": 4}}
    del nested["updates"], nested["init"]
    flat = {k: v for k, v in nested.items() if k != "task_settings"}
    for previous in (
        nested, {**flat, "init": None, "model_args": {"num_flow_updates": 4}}, config
    ):  # fmt: skip
        check_same_run(saved_config(previous), config, tmp_path)
    with pytest.raises(ValueError, match=r"updates: 12 -> 4"):
        check_same_run(saved_config(flat), config, tmp_path)  # saved without: the default
    # generation: no `task_settings` (its defaults), `lora_rank` beside the run settings.
    job = TrainJob(out=tmp_path, task="generation")
    config = jsonable(job)
    previous = {k: v for k, v in config.items() if k not in GenerationSettings.__annotations__}
    check_same_run(saved_config({**previous, "task_settings": None, "lora_rank": None}), config,
                   tmp_path)  # fmt: skip
    # autoencoder: kl_weight among the model arguments, or not given at all.
    config = jsonable(TrainJob(out=tmp_path, task="autoencoder", model_args={"z_dim": 4}))
    previous = {**config, "model_args": {"z_dim": 4, "kl_weight": 1e-3}}
    del previous["kl_weight"]
    check_same_run(saved_config(previous), config, tmp_path)
    check_same_run(saved_config({**previous, "model_args": {"z_dim": 4}}), config, tmp_path)


def test_settings_without_a_default_keep_their_value():
    settings = task_settings("generation", {"vae": "runs/vae", "objective": "flow"})
    assert settings.vae == "runs/vae" and settings.objective == "flow"


def test_a_renamed_builder_argument_is_the_same_run_under_either_name(tmp_path):
    config = jsonable(TrainJob(out=tmp_path, task="autoencoder", model="wan_vae",
                               model_args={"width": 4}))  # fmt: skip
    previous = {**config, "model_args": {"dim": 4, "kl_weight": 0.001}}  # as a run saved then
    del previous["kl_weight"]
    check_same_run(saved_config(previous), config, tmp_path)
    # A new run records the new name whichever the command used.
    common.open_run(TrainJob(out=tmp_path / "r", task="autoencoder", model="wan_vae",
                             model_args={"dim": 4}), config={"model_args": {"dim": 4}})  # fmt: skip
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["model_args"] == {"width": 4}


def test_clips_decoded_on_the_gpu_are_loaded_in_the_training_process():
    on_cpu = TrainJob(out=Path("run"), workers=3)
    assert common.loader_workers(on_cpu) == {"num_workers": 3}
    on_gpu = dataclasses.replace(on_cpu, decode_device="cuda")
    assert common.loader_workers(on_gpu) == {"num_workers": 0, "pin_memory": False}
    assert "decode_device" in common.RUNTIME_FIELDS  # a run may resume decoding elsewhere
    for task in ("flow", "detection", "generation", "autoencoder"):
        with pytest.raises(ValueError, match="--decode-device is not used"):
            jobs.check_options(task, ["decode_device"])
    jobs.check_options("pretrain", ["decode_device"])
