"""Flow jobs: `tubelet train --task flow` on synthetic pairs, and streaming flow over a video."""

import numpy as np
import pytest
import torch

import tubelet.jobs.flow as flow_job
from tubelet.io import VideoReader, write_video
from tubelet.jobs import TASKS, TrainJob, train
from tubelet.jobs.common import FlowSettings
from tubelet.models import create_model
from tubelet.models.spec import read_spec


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """6 frames of a texture sliding 2 px right per frame."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (8, 12, 3)).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    frames = np.stack([np.roll(texture, 2 * t, axis=1) for t in range(6)])[:, :, :90]
    return write_video(tmp_path_factory.mktemp("video") / "slide.mp4", frames, fps=10)


def test_flow_is_a_training_task():
    assert TASKS["flow"] is flow_job and flow_job.DEFAULT_MODEL == "raft_small"
    assert flow_job.frame_size(64) == (64, 96)
    assert flow_job.frame_size(112) == (112, 168)


@pytest.mark.slow
def test_train_resume_and_use(tmp_path, monkeypatch, video):
    monkeypatch.setattr(flow_job, "SYNTHETIC_TRAIN_PAIRS", 4)
    monkeypatch.setattr(flow_job, "SYNTHETIC_VAL_PAIRS", 2)
    job = TrainJob(
        out=tmp_path / "run", task="flow", model="raft_small",
        settings=FlowSettings(updates=2), size=64, epochs=1, batch_size=2, workers=0,
    )  # fmt: skip
    summary = train(job, show_progress=False)
    assert summary["epochs"] == 1 and summary["val_epe"] > 0
    assert {"val_px1", "val_px3", "val_px5", "val_fl_all"} <= set(summary)
    spec = read_spec(tmp_path / "run")
    assert spec.task == "flow" and spec.task_args["num_flow_updates"] == 2
    assert spec.preprocessing.crop == (64, 96) and spec.preprocessing.frames == 2
    assert spec.model_args == {}  # num_flow_updates is the task's, not the builder's
    assert train(job, show_progress=False)["val_epe"] == summary["val_epe"]  # finished: no retrain
    with pytest.raises(ValueError, match="other settings"):
        train(TrainJob(**{**job.__dict__, "lr": 0.5}), show_progress=False)

    model, updates = flow_job.load_flow_model(tmp_path / "run")
    assert updates == 2
    fresh = create_model("raft_small")  # --init: the next stage starts from these weights
    flow_job.start_from(fresh, tmp_path / "run", "raft_small")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a flow run of raft_large"):
        flow_job.start_from(create_model("raft_large"), tmp_path / "run", "raft_large")
    out = tmp_path / "flow.mp4"
    result = flow_job.flow_video(model, video, out, num_flow_updates=1, save_npy=tmp_path / "npy")
    assert result.pairs == 5 and (result.height, result.width) == (64, 90)
    with VideoReader(out) as reader:
        assert reader.num_frames == 5
    saved = sorted((tmp_path / "npy").glob("*.npy"))
    assert len(saved) == 5 and np.load(saved[0]).shape == (2, 64, 90)


def test_video_flows_stream_in_chunks_with_warm_start(video, monkeypatch):
    torch.manual_seed(0)
    model = create_model("raft_small").eval()
    seen_init, decoded = [], []
    estimate = model.estimate

    def spy(image1, image2, updates, flow_init=None):
        seen_init.append(flow_init)
        result = estimate(image1, image2, updates, flow_init=flow_init)
        seen_init[-1] = (flow_init, result.flow_low)
        return result

    monkeypatch.setattr(model, "estimate", spy)
    with VideoReader(video) as reader:
        get_frames = reader.get_frames
        reader.get_frames = lambda indices: decoded.append(len(indices)) or get_frames(indices)
        flows = list(flow_job.video_flows(model, reader, num_flow_updates=1, chunk=4))
    assert len(flows) == 5 and flows[0].shape == (2, 64, 90)
    assert decoded == [4, 2]  # never more than `chunk` frames decoded at once
    assert seen_init[0][0] is None
    for (_, previous_low), (init, _) in zip(seen_init, seen_init[1:], strict=False):
        torch.testing.assert_close(init, flow_job.forward_interpolate(previous_low))


def test_cold_start_and_bad_inputs(video, tmp_path):
    model = create_model("raft_small").eval()
    with VideoReader(video) as reader:
        for _ in flow_job.video_flows(model, reader, num_flow_updates=1, warm_start=False):
            pass
    with pytest.raises(ValueError, match=".mp4"):
        flow_job.flow_video(model, video, tmp_path / "flow.gif")
    with pytest.raises(ValueError, match="one size"):
        flow_job.flow_pair(model, torch.zeros(3, 8, 8), torch.zeros(3, 8, 16))
    with pytest.raises(FileNotFoundError):
        flow_job.load_flow_model(tmp_path / "nothing")
