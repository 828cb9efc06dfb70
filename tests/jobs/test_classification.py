import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from tubelet import jobs
from tubelet.engine.checkpoint import save_model
from tubelet.jobs import TrainJob, classification
from tubelet.jobs.common import ClassificationSettings, FlowSettings
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec


def _job(out, **kw):
    settings = dict(model="frame2d_resnet18", model_args={"width": 4}, frames=2, size=32, epochs=1,
                    batch_size=8, workers=0)  # fmt: skip
    return TrainJob(out=out, **{**settings, **kw})


@pytest.mark.slow
def test_without_data_the_built_in_dataset_is_used(tiny_dataset, tmp_path, monkeypatch):
    asked = []

    def fake_ensure(progress=None):
        asked.append(progress)
        return tiny_dataset

    monkeypatch.setattr(classification, "ensure_synthetic_dataset", fake_ensure)
    summary = jobs.train(_job(tmp_path / "run"), show_progress=False)
    assert len(asked) == 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"] == str(tiny_dataset)
    assert config["versions"]["torch"]
    assert len(summary["val_per_class_top1"]) == 10
    assert len(summary["val_confusion"]) == 10


@pytest.mark.slow
def test_evaluation_refuses_data_with_other_classes(tiny_dataset, tmp_path):
    jobs.train(_job(tmp_path / "run", data=tiny_dataset), show_progress=False)
    other = tmp_path / "other"
    shutil.copytree(tiny_dataset, other)
    names = (other / "classes.txt").read_text().splitlines()
    (other / "classes.txt").write_text("\n".join(["zoom_sideways", *names[1:]]) + "\n")
    pairs = (other / "reversal_pairs.txt").read_text().replace(names[0], "zoom_sideways")
    (other / "reversal_pairs.txt").write_text(pairs)
    with pytest.raises(ValueError, match="outside the 10 it must match .*: zoom_sideways"):
        classification.evaluate(tmp_path / "run", data=other, workers=0, show_progress=False)


def test_a_task_takes_its_own_settings_only(tmp_path):
    own = ClassificationSettings(init=tmp_path)
    with pytest.raises(ValueError, match="--task generation takes GenerationSettings, not Class"):
        TrainJob(out=tmp_path / "run", task="generation", model="video_unet", settings=own)
    with pytest.raises(ValueError, match="--task pretrain has no settings of its own"):
        TrainJob(out=tmp_path / "run", task="pretrain", settings=own)
    assert TrainJob(out=tmp_path / "run", task="flow").settings == FlowSettings()
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        jobs.train(
            TrainJob(out=tmp_path / "run", task="segmentation", model="x"), show_progress=False
        )


def test_a_run_folder_of_the_unversioned_format_still_predicts_and_evaluates(
    tiny_dataset, tmp_path
):
    # A run folder as `tubelet train` wrote it before the spec had a format and a task.
    classes = (tiny_dataset / "classes.txt").read_text().split()
    args = {"width": 4, "num_classes": len(classes)}
    torch.manual_seed(0)
    model = create_model("frame2d_resnet18", **args).eval()
    best = tmp_path / "run" / "best"
    best.mkdir(parents=True)
    save_file(model.state_dict(), str(best / "model.safetensors"))
    (best / "model.json").write_text(json.dumps({
        "model": "frame2d_resnet18", "model_args": args, "classes": classes,
        "reversal_pairs": [], "clip": {"frames": 2, "sampling": "uniform", "stride": 2},
        "size": 32, "data": str(tiny_dataset),
    }))  # fmt: skip
    (tmp_path / "run" / "config.json").write_text("{}")
    video = next((tiny_dataset / "videos").rglob("*.mp4"))
    top = classification.predict(tmp_path / "run", video, top_k=3)
    assert [row["class"] in classes for row in top] == [True] * 3
    assert sum(row["probability"] for row in top) <= 1 + 1e-6
    metrics = classification.evaluate(tmp_path / "run", workers=0, show_progress=False)
    assert metrics["num_videos"] > 0 and 0 <= metrics["top1"] <= 1


def test_predict_refuses_a_model_that_is_not_a_clip_classifier(tmp_path):
    best = tmp_path / "best"
    save_model(best, create_model("raft_small"), ModelSpec("raft_small", {}, "flow"))
    with pytest.raises(ValueError, match="holds a flow model .raft_small., not a clip classifier"):
        classification.predict(tmp_path, tmp_path / "v.mp4")


def test_a_refused_command_leaves_nothing_behind(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        jobs.train(_job(tmp_path / "new", data=tiny_dataset, model="r9d_99"), show_progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="frames"):
        jobs.train(_job(tmp_path / "kept", data=tiny_dataset, frames=0), show_progress=False)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [".lock", "notes.txt"]


def test_a_val_split_with_a_class_train_lacks_is_refused_before_training(tmp_path):
    for split, name in [("train", "a"), ("train", "b"), ("val", "a"), ("val", "zoom")]:
        (tmp_path / "data" / split / name).mkdir(parents=True)
        (tmp_path / "data" / split / name / "v.mp4").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"val split of .* outside the 2 it must match \(a, b\): zoom"
    ):
        jobs.train(_job(tmp_path / "run", data=tmp_path / "data"), show_progress=False)
    assert not (tmp_path / "run").exists()


def test_predict_decodes_at_the_model_input_size(list_dataset, tmp_path, monkeypatch):
    spec = {"model": "frame2d_resnet18", "model_args": {"num_classes": 2, "width": 4},
            "classes": ["rise", "fall"], "clip": {"frames": 2, "sampling": "uniform", "stride": 1},
            "size": 32, "data": str(list_dataset)}  # fmt: skip
    (tmp_path / "run").mkdir()
    model = create_model("frame2d_resnet18", num_classes=2, width=4)
    save_file(model.state_dict(), str(tmp_path / "run" / "model.safetensors"))
    (tmp_path / "run" / "model.json").write_text(json.dumps(spec))
    decoded = []

    class Recording(classification.VideoReader):
        def get_frames(self, indices):
            frames = super().get_frames(indices)
            decoded.append(tuple(frames.data.shape))
            return frames

    monkeypatch.setattr(classification, "VideoReader", Recording)
    top = classification.predict(tmp_path / "run", list_dataset / "v0.mp4", top_k=2)
    assert [row["class"] for row in top] in (["rise", "fall"], ["fall", "rise"])
    assert decoded == [(2, 32, 38, 3)]  # 40x48 frames, short side 32 from the decoder
