"""`tubelet flow`: an image pair to a picture or .flo file, a video to a colour-wheel mp4."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.engine.checkpoint import save_model
from tubelet.io import VideoReader, write_video
from tubelet.io.flow import read_flo
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec, Preprocessing
from tubelet.normalization import SIGNED_MEAN, SIGNED_STD

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowcli")
    torch.manual_seed(0)
    model = create_model("raft_small")
    save_model(
        root / "run" / "best",
        model,
        ModelSpec(
            model="raft_small",
            model_args={},
            task="flow",
            task_args={"num_flow_updates": 1},
            preprocessing=Preprocessing(
                mean=SIGNED_MEAN, std=SIGNED_STD, crop=(64, 96), frames=2, sampling="dense"
            ),
        ),
    )
    torch.save(model.state_dict(), root / "tv.pth")
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (9, 12, 3)).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    Image.fromarray(texture).save(root / "a.png")
    Image.fromarray(np.roll(texture, 3, axis=1)).save(root / "b.png")
    Image.fromarray(texture[:40]).save(root / "small.png")
    frames = np.stack([np.roll(texture, 2 * t, axis=1) for t in range(4)])
    write_video(root / "clip.mp4", frames, fps=8)
    return root


def test_image_pair_to_png_and_flo(files, tmp_path):
    result = invoke("flow", files / "a.png", files / "b.png", "--checkpoint", files / "run",
                    "--out", tmp_path / "f.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    picture = np.asarray(Image.open(tmp_path / "f.png"))
    assert picture.shape == (72, 96, 3) and picture.dtype == np.uint8
    # A torchvision weights file with --model/--checkpoint-format, written as .flo.
    result = invoke("flow", files / "a.png", files / "b.png", "--checkpoint", files / "tv.pth",
                    "--model", "raft_small", "--checkpoint-format", "torchvision",
                    "--out", tmp_path / "f.flo", "--updates", 1, "--corr-mode", "on_demand")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert read_flo(tmp_path / "f.flo").shape == (72, 96, 2)


def test_video_to_mp4_and_npy(files, tmp_path):
    result = invoke("flow", files / "clip.mp4", "--checkpoint", files / "run",
                    "--out", tmp_path / "flow.mp4", "--save-npy", tmp_path / "npy")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 flow frames of 96x72" in result.output
    with VideoReader(tmp_path / "flow.mp4") as reader:
        assert reader.num_frames == 3
    assert len(list((tmp_path / "npy").glob("flow_*.npy"))) == 3


def test_errors_are_one_line_and_exit_2(files, tmp_path):
    result = invoke("flow", files / "a.png", files / "small.png", "--checkpoint", files / "run",
                    "--out", tmp_path / "f.png")  # fmt: skip
    assert result.exit_code == 2 and "one size" in result.output
    result = invoke("flow", files / "a.png", files / "missing.png", "--checkpoint", files / "run",
                    "--out", tmp_path / "f.png")  # fmt: skip
    assert result.exit_code == 2 and "missing.png" in result.output
    result = invoke(
        "flow", files / "clip.mp4", "--checkpoint", tmp_path, "--out", tmp_path / "x.mp4"
    )
    assert result.exit_code == 2 and "no checkpoint" in result.output
    result = invoke("flow", files / "a.png", files / "b.png", "--checkpoint", files / "run",
                    "--out", tmp_path / "f.jpg")  # fmt: skip
    assert result.exit_code == 2 and ".png" in result.output


def test_task_settings_have_their_own_option(tmp_path):
    train = ["train", "--task", "flow", "--out", str(tmp_path / "run")]
    result = runner.invoke(app, [*train, "-t", "steps=2"])
    assert result.exit_code == 2 and "unknown --task-arg steps for --task flow" in result.output
    # Commands written before --task-arg still name the setting's new home.
    with pytest.warns(
        FutureWarning, match="task settings go in --task-arg now: --task-arg updates=2"
    ):
        result = runner.invoke(app, [*train, "-m", "num_flow_updates=2", "-t", "steps=2"])
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
