"""Published checkpoints from the command line: `tubelet predict|eval|extract --model NAME
--checkpoint FILE_OR_FOLDER --checkpoint-format FORMAT`, each format built here with random weights.
The checks: the class names are the checkpoint's, and the pixels reach the model normalised with
the checkpoint's statistics, at its frame count and crop."""

import json

import numpy as np
import pytest
import torch
from peer_weights import randomise
from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.convert.published import kinetics400_classes
from tubelet.io import VideoReader, write_video
from tubelet.jobs import classification

COLOUR = (200, 120, 40)


@pytest.fixture(scope="module")
def flat_video(tmp_path_factory):
    """64 frames of one colour, and that colour as decoded (H.264 rounds it a little)."""
    path = tmp_path_factory.mktemp("flat") / "flat.mp4"
    write_video(path, np.full((64, 48, 64, 3), COLOUR, np.uint8), fps=30)
    with VideoReader(path) as reader:
        decoded = reader.get_frames([0]).data[0, 24, 32].double() / 255  # (3,)
    return path, decoded


@pytest.fixture
def model_inputs(monkeypatch):
    """Every clip batch the model built by the job receives."""
    seen = []
    build = classification.create_model

    def create_and_watch(*args, **kwargs):
        net = build(*args, **kwargs)
        net.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach()))
        return net

    monkeypatch.setattr(classification, "create_model", create_and_watch)
    return seen


def predict(video, *options):
    result = CliRunner().invoke(app, ["predict", str(video), *map(str, options), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["predictions"]


def assert_normalised(batch, decoded, mean, std, frames, crop):
    assert batch.shape[1:] == (3, frames, crop, crop)
    expected = (decoded - torch.tensor(mean, dtype=torch.float64)) / torch.tensor(std).double()
    got = batch.double().mean(dim=(0, 2, 3, 4))  # (3,) one flat colour per channel
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)


@pytest.mark.slow
def test_torchvision_weights_name_kinetics_classes_and_use_its_transforms(
    flat_video, model_inputs, tmp_path
):
    from torchvision.models.video import R3D_18_Weights, r3d_18

    path = tmp_path / "r3d_18.pth"
    torch.save(randomise(r3d_18(), seed=0).state_dict(), path)
    video, decoded = flat_video
    top = predict(video, "--model", "r3d_18", "--checkpoint", path,
                  "--checkpoint-format", "torchvision", "--top-k", 3)  # fmt: skip
    names = kinetics400_classes()
    assert [p["class"] for p in top] == [names[p["index"]] for p in top]
    preset = R3D_18_Weights.KINETICS400_V1.transforms()
    [batch] = model_inputs
    assert_normalised(batch, decoded, preset.mean, preset.std, frames=16, crop=112)


@pytest.mark.slow
def test_transformers_folder_gives_id2label_and_its_processor(flat_video, model_inputs, tmp_path):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEImageProcessor

    labels = ["archery", "bowling", "surfing"]
    config = VideoMAEConfig(
        image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=3,
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
    )  # fmt: skip
    folder = tmp_path / "videomae"
    VideoMAEForVideoClassification(config).save_pretrained(folder)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    VideoMAEImageProcessor(
        size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, image_mean=mean,
        image_std=std,
    ).save_pretrained(folder)  # fmt: skip
    video, decoded = flat_video
    top = predict(video, "--model", "vit_s_16_video", "--checkpoint", folder,
                  "--checkpoint-format", "transformers")  # fmt: skip
    assert sorted(p["class"] for p in top) == labels
    [batch] = model_inputs
    assert_normalised(batch, decoded, mean, std, frames=4, crop=32)


@pytest.mark.slow
def test_pytorchvideo_checkpoint_uses_its_documented_statistics_and_clip(
    flat_video, model_inputs, tmp_path
):
    from pytorchvideo.models.resnet import create_resnet

    torch.manual_seed(0)
    peer = create_resnet(  # hub slow_r50's layout at 1/8 of its width
        model_num_class=400, stem_dim_out=8, stem_conv_kernel_size=(1, 7, 7),
        head_pool_kernel_size=(8, 8, 8),
    )  # fmt: skip
    path = tmp_path / "SLOW_8x8_R50.pyth"
    torch.save({"model_state": randomise(peer, 0).state_dict()}, path)
    video, decoded = flat_video
    top = predict(video, "--model", "slow_r50", "--checkpoint", path,
                  "--checkpoint-format", "pytorchvideo", "-m", "width=8", "--top-k", 2)  # fmt: skip
    assert {p["class"] for p in top} <= set(kinetics400_classes())
    [batch] = model_inputs
    assert_normalised(batch, decoded, (0.45,) * 3, (0.225,) * 3, frames=8, crop=256)


@pytest.mark.slow
def test_eval_and_extract_take_a_published_checkpoint(tiny_dataset, tmp_path):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    classes = (tiny_dataset / "classes.txt").read_text().split()
    config = VideoMAEConfig(
        image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=len(classes),
        id2label=dict(enumerate(classes)), label2id={n: i for i, n in enumerate(classes)},
    )  # fmt: skip
    folder = tmp_path / "videomae"
    VideoMAEForVideoClassification(config).save_pretrained(folder)
    published = ["--model", "vit_s_16_video", "--checkpoint", str(folder),
                 "--checkpoint-format", "transformers"]  # fmt: skip
    result = CliRunner().invoke(
        app, ["eval", *published, "--data", str(tiny_dataset), "--workers", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "top1" in result.output

    out = tmp_path / "feats"
    result = CliRunner().invoke(
        app, ["extract", *published, "--data", str(tiny_dataset), "--level", "clip",
              "--window", "4", "--stride", "4", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["size"] == 32 and meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["checkpoint_format"] == "transformers"


def test_a_published_checkpoint_needs_its_format(flat_video, tmp_path):
    video, _ = flat_video
    result = CliRunner().invoke(
        app, ["predict", str(video), "--model", "r3d_18", "--checkpoint", str(tmp_path / "x.pth")]
    )
    assert result.exit_code == 2
    assert "--checkpoint-format" in result.output
