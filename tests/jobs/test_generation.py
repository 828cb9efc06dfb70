"""The generation jobs: train with EMA checkpoints and resume, sample a grid video, measure samples."""

import pytest
import torch
from safetensors.torch import load_file

from tubelet.io import VideoReader
from tubelet.jobs import TrainJob, check_task, default_model
from tubelet.jobs.common import GenerationSettings
from tubelet.jobs.generation import (
    generate,
    grid,
    load_denoiser,
    to_uint8,
    train,
)
from tubelet.models.spec import ModelSpec, read_spec
from tubelet.normalization import SIGNED_MEAN, SIGNED_STD

TINY_UNET = {"width": 8, "channel_mults": [1, 2], "attention_levels": [False, True],
             "num_heads": 2}  # fmt: skip


def job(out, data, **kwargs):
    settings = dict(
        out=out, task="generation", data=data, model="video_unet",
        model_args=TINY_UNET, frames=4, size=16,
        settings=GenerationSettings(ema_decay=0.9, prediction="epsilon"),
        epochs=1, batch_size=4, lr=2e-3, workers=0, sampling="dense", stride=2,
    )  # fmt: skip
    return TrainJob(**{**settings, **kwargs})


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "run"
    summary = train(job(out, tiny_dataset), show_progress=False)
    return out, summary


def test_generation_is_a_train_task():
    assert check_task("generation") == "generation"
    assert default_model("generation") == "video_unet"


def test_diffusion_settings_in_the_model_arguments_are_refused(tiny_dataset, tmp_path):
    bad = job(tmp_path / "x", tiny_dataset, model_args={**TINY_UNET, "prediction": "epsilon"})
    with pytest.raises(ValueError, match="--task-arg prediction=epsilon"):
        train(bad, show_progress=False)


@pytest.mark.slow
def test_train_writes_ema_and_trained_weights_and_resumes(run, tiny_dataset):
    out, summary = run
    assert summary["epochs"] == 1 and summary["val_loss"] > 0
    weights = load_file(str(out / "best" / "model.safetensors"))
    assert any(k.startswith("ema.model.") for k in weights)
    assert any(k.startswith("denoiser.") for k in weights)
    spec = read_spec(out)
    assert spec.task == "generation" and spec.task_args["diffusion"]["prediction"] == "epsilon"
    assert spec.model_args["num_classes"] == 10 and "ema_decay" not in spec.model_args
    assert spec.preprocessing.mean == SIGNED_MEAN and spec.preprocessing.std == SIGNED_STD
    ema, _ = load_denoiser(out)
    trained, _ = load_denoiser(out, ema=False)
    assert not torch.equal(ema.conv_in.weight, trained.conv_in.weight)
    assert weights["ema.num_updates"].item() == summary["epochs"] * 5  # 20 clips / batch 4
    # Resume: a second epoch on the same folder continues from last/ (EMA included).
    resumed = train(job(out.parent / "run", tiny_dataset, epochs=2), show_progress=False)
    assert resumed["epochs"] == 2
    last = load_file(str(out / "last" / "model.safetensors"))
    assert last["ema.num_updates"].item() == 10
    with pytest.raises(ValueError, match="other settings"):
        train(job(out, tiny_dataset, epochs=3, size=32), show_progress=False)


@pytest.mark.slow
def test_generate_writes_a_grid_video_per_class(run, tmp_path):
    out, _ = run
    steps = []
    result = generate(
        out, tmp_path / "s.mp4", class_name="move_left", num=2, steps=3, guidance=2.0, zoom=2,
        on_step=lambda done, total: steps.append((done, total)),
    )  # fmt: skip
    assert result["classes"] == ["move_left"] and steps[-1] == (3, 3)
    with VideoReader(tmp_path / "s.mp4") as reader:
        frames = reader.get_frames(list(range(reader.num_frames))).data
    # 1 row x 2 clips of 16 px zoomed twice, 1 px gaps: (1 + 32 + 1) x (1 + 2 * 33).
    assert frames.shape == (4, 34, 68, 3)
    again = generate(out, tmp_path / "t.gif", class_name="move_left", num=2, steps=3, seed=0)
    assert again["seed"] == 0 and (tmp_path / "t.gif").stat().st_size > 0
    with pytest.raises(ValueError, match="unknown class"):
        generate(out, tmp_path / "x.mp4", class_name="jump")
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        generate(out, tmp_path / "x.avi")


def test_load_denoiser_refuses_a_classification_run(tmp_path):
    from tubelet.engine.checkpoint import save_model
    from tubelet.models import create_model

    model = create_model("r2plus1d_18", num_classes=2, width=8)
    save_model(tmp_path / "best", model, ModelSpec("r2plus1d_18", {"width": 8}, "classification"))
    with pytest.raises(ValueError, match="not a generation run"):
        load_denoiser(tmp_path)


def test_grid_tiles_clips_row_by_row_with_gaps():
    frames = torch.stack([torch.full((2, 3, 3, 3), 10 * i, dtype=torch.uint8) for i in range(6)])
    canvas = grid(frames, rows=2, zoom=2)
    assert canvas.shape == (2, 1 + 2 * 7, 1 + 3 * 7, 3)
    assert canvas[0, 0, 0, 0] == 255  # gap
    assert canvas[0, 1, 1, 0] == 0 and canvas[0, 8, 15, 0] == 50  # clip 0 and clip 5
    with pytest.raises(ValueError, match="rows"):
        grid(frames[:5], rows=2)


def test_to_uint8_maps_minus_one_to_black_and_one_to_white():
    clips = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 4, 1, 1).expand(1, 3, 4, 1, 1)
    frames = to_uint8(clips)
    assert frames.shape == (1, 4, 1, 1, 3)
    assert frames[0, :, 0, 0, 0].tolist() == [0, 128, 255, 255]
