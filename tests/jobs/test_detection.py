import json
import shutil

import pytest
from detection_data import make_detection_data
from PIL import Image

from tubelet.jobs import TrainJob
from tubelet.jobs.detection import (
    detect,
    evaluate,
    is_detection_run,
    pick_subsets,
    resolve_data,
    timeline_png,
    train,
)
from tubelet.models.spec import read_spec
from tubelet.tasks.detection import THUMOS14_TIOUS

TINY = {"width": 16, "num_heads": 2, "levels": 3}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection")
    data, backbone, features = make_detection_data(root)
    job = TrainJob(out=root / "run", task="detection", data=features, model="actionformer_tiny",
                   model_args=TINY, epochs=2, batch_size=2, lr=1e-3)  # fmt: skip
    summary = train(job, show_progress=False)
    return data, backbone, features, job, summary


@pytest.mark.slow
def test_train_evaluate_and_detect(setup, tmp_path):
    data, _, features, job, summary = setup
    assert summary["epochs"] == 2 and summary["model"] == "actionformer_tiny"
    assert {f"val_mAP@{t:g}" for t in THUMOS14_TIOUS} <= set(summary)
    assert 0 <= summary["val_average_mAP"] <= 1
    spec = read_spec(job.out)
    assert spec.task == "detection" and spec.task_args["features"]["window"] == 4
    assert spec.task_args["subsets"] == {"train": "training", "val": "validation"}
    assert is_detection_run(job.out)

    metrics = evaluate(job.out, show_progress=False)
    assert metrics["num_videos"] == 1 and metrics["subset"] == "validation"
    saved = json.loads((job.out / "eval-detection.json").read_text())
    assert saved["average_mAP"] == metrics["average_mAP"]
    assert len(saved["predictions"]) == metrics["num_predictions"]

    video = data / "videos" / "video_0002.mp4"
    result = detect(job.out, video, min_score=0.0)
    assert result["duration"] == pytest.approx(json.loads(
        (data / "annotations.json").read_text())["database"]["video_0002"]["duration"])  # fmt: skip
    assert result["segments"], "min_score=0 keeps every decoded segment"
    for seg in result["segments"]:
        assert 0 <= seg["start"] < seg["end"] <= result["duration"] and 0 <= seg["score"] <= 1
    png = timeline_png(tmp_path / "t.png", result, list(spec.classes))
    assert Image.open(png).size[0] == 900


@pytest.mark.slow
def test_resume_refuses_other_settings_and_baseline_trains(setup):
    _, _, features, job, _ = setup
    with pytest.raises(ValueError, match="other settings"):
        train(TrainJob(**{**job.__dict__, "lr": 0.5}), show_progress=False)
    baseline = TrainJob(out=job.out.parent / "baseline", task="detection", data=features,
                        model="window_classifier", epochs=1, batch_size=2)  # fmt: skip
    summary = train(baseline, show_progress=False)
    assert summary["model"] == "window_classifier" and "val_mAP@0.5" in summary


@pytest.mark.slow
def test_bad_data_and_models_are_named(setup, tmp_path):
    data, _, features, job, _ = setup
    with pytest.raises(FileNotFoundError, match="not a features folder"):
        resolve_data(data)
    (tmp_path / "meta.json").write_text(json.dumps({"data": None}))
    with pytest.raises(FileNotFoundError, match="no annotations.json"):
        resolve_data(tmp_path)
    assert resolve_data(features) == (features, data / "annotations.json")
    wrong = TrainJob(out=tmp_path / "r", task="detection", data=features, model="r3d_18")
    with pytest.raises(ValueError, match="not a detector"):
        train(wrong, show_progress=False)
    with pytest.raises(FileNotFoundError, match="no video file"):
        detect(job.out, tmp_path / "missing.mp4")
    # A detector whose backbone checkpoint is gone cannot make features from a video.
    moved = tmp_path / "moved"
    shutil.copytree(job.out / "best", moved)
    spec = json.loads((moved / "model.json").read_text())
    spec["task_args"]["features"]["checkpoint"] = str(tmp_path / "gone")
    (moved / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="not available here"):
        detect(moved, data / "videos" / "video_0002.mp4")


def test_subsets_of_both_benchmarks():
    from tubelet.data.untrimmed import DetectionAnnotations, UntrimmedVideo

    def ann(*subsets):
        return DetectionAnnotations({s: UntrimmedVideo(s, s, 1.0, None, ()) for s in subsets}, ())

    assert pick_subsets(ann("training", "validation", "testing")) == ("training", "validation")
    assert pick_subsets(ann("Validation", "Test")) == ("Validation", "Test")
    with pytest.raises(ValueError, match="subsets are"):
        pick_subsets(ann("only"))
