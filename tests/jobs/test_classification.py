import json
import shutil

import pytest

from tubelet import jobs
from tubelet.jobs import TrainJob, classification


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
    (other / "classes.txt").write_text("\n".join(reversed(names)) + "\n")
    with pytest.raises(ValueError, match="do not match the model's 10 classes"):
        classification.evaluate(tmp_path / "run", data=other, workers=0, show_progress=False)


def test_init_is_refused_where_no_task_uses_it(tmp_path):
    job = TrainJob(out=tmp_path / "run", task="generation", model="video_unet", init=tmp_path)
    with pytest.raises(ValueError, match="not --task generation: leave --init out"):
        jobs.train(job, show_progress=False)
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        jobs.train(
            TrainJob(out=tmp_path / "run", task="segmentation", model="x"), show_progress=False
        )
