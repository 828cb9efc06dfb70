import json

import pytest

from tubelet.models.spec import (
    ModelSpec,
    Preprocessing,
    WeightsSource,
    checkpoint_folders,
    read_spec,
    weights_file,
    write_spec,
)
from tubelet.normalization import IMAGENET_MEAN, IMAGENET_STD, SIGNED_MEAN, SIGNED_STD

CLIP = {"frames": 8, "sampling": "uniform", "stride": 2}

# model.json as each job wrote it before the spec was versioned (only two named their task).
UNVERSIONED = {
    "classification": {
        "model": "r2plus1d_18", "model_args": {"width": 8, "num_classes": 2},
        "classes": ["a", "b"], "reversal_pairs": [["a", "b"]], "clip": CLIP, "size": 112,
        "data": "/data/motion",
    },
    "pretrain": {
        "model": "videomae_pretrain_s", "model_args": {"mask_ratio": 0.9},
        "clip": {**CLIP, "sampling": "dense"}, "size": 112, "data": "/data/motion",
    },
    "generation": {
        "model": "video_unet", "model_args": {"num_classes": 2}, "classes": ["a", "b"],
        "clip": CLIP, "size": 32, "data": "/data/motion", "diffusion": {"prediction": "v"},
    },
    "flow": {
        "model": "raft_small", "model_args": {}, "task": "flow", "num_flow_updates": 12,
        "size": [64, 96], "data": "synthetic",
    },
    "detection": {
        "model": "actionformer_tiny", "model_args": {"input_dim": 8}, "task": "detection",
        "classes": ["jump"], "data": "/feats", "annotations": "/a.json",
        "subsets": {"train": "training", "val": "validation"}, "features": {"window": 4},
        "tiou_thresholds": [0.5], "decode": {"nms": True},
    },
    "features": {
        "model": "frame_mean", "model_args": {"in_dim": 4, "num_classes": 2},
        "classes": ["a", "b"], "reversal_pairs": [], "features": {"length": 6},
    },
}  # fmt: skip


def test_a_spec_survives_the_round_trip_through_its_file(tmp_path):
    spec = ModelSpec(
        model="r2plus1d_18", model_args={"width": 8, "num_classes": 2}, task="classification",
        classes=("a", "b"),
        preprocessing=Preprocessing(
            mean=IMAGENET_MEAN, std=IMAGENET_STD, crop=112, resize=128, frames=16,
            sampling="dense", stride=2,
        ),
        source=WeightsSource(format="torchvision", checkpoint="/w/r2plus1d_18.pth"),
        task_args={"reversal_pairs": [["a", "b"]]},
    )  # fmt: skip
    path = write_spec(tmp_path / "best", spec)
    assert json.loads(path.read_text())["format"] == 2
    assert read_spec(tmp_path) == spec  # the run folder finds best/
    assert read_spec(path) == spec
    assert not list((tmp_path / "best").glob("*.tmp"))


@pytest.mark.parametrize("task", sorted(UNVERSIONED))
def test_unversioned_specs_are_read_with_their_task(task):
    spec = ModelSpec.from_json(UNVERSIONED[task])
    assert spec.task == task
    assert spec.model == UNVERSIONED[task]["model"]
    assert spec.model_args == UNVERSIONED[task]["model_args"]
    assert spec.source == WeightsSource(data=UNVERSIONED[task].get("data"))


def test_unversioned_preprocessing_is_the_one_each_task_used():
    pre = ModelSpec.from_json(UNVERSIONED["classification"]).preprocessing
    assert pre == Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop=112, **CLIP)
    assert pre.resize_to == 112 and pre.crop_size == (112, 112)
    generation = ModelSpec.from_json(UNVERSIONED["generation"]).preprocessing
    assert (generation.mean, generation.std) == (SIGNED_MEAN, SIGNED_STD)
    flow = ModelSpec.from_json(UNVERSIONED["flow"]).preprocessing
    assert flow.crop_size == (64, 96) and flow.frames == 2
    assert ModelSpec.from_json(UNVERSIONED["detection"]).preprocessing is None
    assert ModelSpec.from_json(UNVERSIONED["features"]).preprocessing is None


def test_unversioned_task_settings_become_task_args():
    detection = ModelSpec.from_json(UNVERSIONED["detection"])
    assert detection.classes == ("jump",)
    assert set(detection.task_args) == {
        "annotations", "subsets", "features", "tiou_thresholds", "decode"
    }  # fmt: skip
    assert ModelSpec.from_json(UNVERSIONED["flow"]).task_args == {"num_flow_updates": 12}
    classification = ModelSpec.from_json(UNVERSIONED["classification"])
    assert classification.task_args == {"reversal_pairs": [["a", "b"]]}


def test_bad_specs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.json in"):
        read_spec(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a tubelet model spec"):
        read_spec(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({**UNVERSIONED["flow"], "format": 9}))
    with pytest.raises(ValueError, match="spec format 9"):
        read_spec(tmp_path)
    with pytest.raises(ValueError, match="task must be one of"):
        ModelSpec("r3d_18", {}, "segmentation")
    with pytest.raises(ValueError, match="sampling must be one of"):
        Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop=112, sampling="random")
    with pytest.raises(ValueError, match="3 values each"):
        Preprocessing(mean=(0.5,), std=IMAGENET_STD, crop=112)


def test_the_run_folder_layout_is_named_once(tmp_path):
    assert checkpoint_folders(tmp_path) == (tmp_path, tmp_path / "best", tmp_path / "last")
    write_spec(tmp_path / "last", ModelSpec("r3d_18", {}, "classification"))
    with pytest.raises(FileNotFoundError, match="expected model.json and model.safetensors"):
        weights_file(tmp_path)
    (tmp_path / "last" / "model.safetensors").write_bytes(b"")
    assert weights_file(tmp_path) == tmp_path / "last" / "model.safetensors"


def test_renamed_builder_arguments_are_read_under_their_new_names():
    # A generation run saved video_unet's base channels as `base_channels`, a ViT its per-head size
    # as `width`: both read under today's names, whatever the spec's format.
    unet = {"model": "video_unet", "model_args": {"base_channels": 8}, "diffusion": {}}
    assert ModelSpec.from_json(unet).model_args == {"width": 8}
    vit = ModelSpec(model="vit_s_16_video", model_args={"width": 8}, task="classification")
    assert ModelSpec.from_json(vit.to_json()).model_args == {"head_dim": 8}
