"""Frozen-backbone probes, layer-wise learning rates and starting from a published checkpoint."""

import pytest
import torch

from tubelet.data.transforms import BatchNormalize
from tubelet.engine.checkpoint import load_model
from tubelet.jobs.classification import train
from tubelet.jobs.common import ClassificationSettings, TrainJob
from tubelet.jobs.probe import (
    clip_defaults,
    freeze_backbone,
    layer_decay_groups,
    start_from_checkpoint,
)
from tubelet.models import create_model

TINY = {"width": 24, "depth": 3, "num_heads": 2, "patch_size": 8, "num_classes": 3}


def test_freeze_backbone_trains_the_pooler_and_fc_only():
    model = create_model("vjepa2_vitl", **TINY)
    trainable = freeze_backbone(model)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("pooler.", "fc.")) for n in names)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in names)
    # The frozen backbone records nothing for backward: only the head gets gradients.
    model(torch.randn(2, 3, 4, 16, 16)).sum().backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())
    linear = create_model("vit_t_16_video", head_dim=8, depth=1, num_classes=3)
    freeze_backbone(linear)
    assert {n for n, p in linear.named_parameters() if p.requires_grad} == {
        "fc_norm.weight", "fc_norm.bias", "fc.weight", "fc.bias"
    }  # fmt: skip
    with pytest.raises(ValueError, match="names no head"):
        freeze_backbone(create_model("frame_mean", in_dim=4))


@pytest.mark.parametrize("name", ["vjepa2_vitl", "videoprism_lvt_b"])
def test_layer_decay_gives_each_depth_its_rate(name):
    args = TINY if name.startswith("vjepa2") else {
        "width": 16, "num_heads": 2, "mlp_dim": 24, "spatial_depth": 2, "temporal_depth": 1,
        "aux_depth": 1, "text_depth": 1, "vocab_size": 30, "num_classes": 3,
    }  # fmt: skip
    model = create_model(name, **args)
    groups = layer_decay_groups(model, lr=1.0, weight_decay=0.05, decay=0.5)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    top = groups[0]["lr"]
    assert top == 1.0 and min(g["lr"] for g in groups) == 0.5 ** (len(groups) // 2 - 1)
    by_param = {id(p): g for g in groups for p in g["params"]}
    first = next(p for n, p in model.named_parameters() if "patch_embed" in n)
    assert by_param[id(first)]["lr"] == min(g["lr"] for g in groups)
    assert all(g["weight_decay"] == 0.0 for g in groups if g["params"][0].ndim <= 1)
    with pytest.raises(ValueError, match="made of blocks"):
        layer_decay_groups(create_model("r3d_18", width=8), lr=1.0, weight_decay=0.0, decay=0.5)


def test_start_from_a_classifier_folder_keeps_the_pooler_and_replaces_fc(tmp_path):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "VJEPA2ForVideoClassification"):
        pytest.skip("this transformers has no V-JEPA 2")
    config = transformers.VJEPA2Config(
        hidden_size=24, num_attention_heads=2, num_hidden_layers=1, patch_size=8, crop_size=16,
        frames_per_clip=4, num_pooler_layers=1, pred_hidden_size=12, pred_num_attention_heads=2,
        pred_num_hidden_layers=1, num_labels=5,
    )  # fmt: skip
    transformers.VJEPA2ForVideoClassification(config).save_pretrained(tmp_path)
    model, args = start_from_checkpoint(
        "vjepa2_vitl", tmp_path, "transformers", num_classes=3, model_args={}
    )
    assert model.num_classes == 3 and args["num_classes"] == 3 and args["width"] == 24
    rebuilt = create_model("vjepa2_vitl", **args)  # the spec's arguments rebuild it
    rebuilt.load_state_dict(model.state_dict())
    # The clip comes from the checkpoint (frames per clip, crop) unless the options say otherwise.
    assert clip_defaults("vjepa2_vitl", tmp_path, "transformers", frames=None, size=None) == (4, 16)
    assert clip_defaults("vjepa2_vitl", tmp_path, "transformers", frames=6, size=None) == (6, 16)
    assert clip_defaults("vjepa2_vitl", None, None, frames=None, size=None) == (8, 112)


def test_a_probe_normalises_with_the_checkpoint_s_own_pixel_statistics(tmp_path, tiny_dataset):
    """VideoPrism takes [0, 1] pixels (mean 0, std 1): the probe trains on them, and the saved
    model says so, so predict and eval feed it the same."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "VideoPrismVisionModel"):
        pytest.skip("this transformers has no VideoPrism")
    config = transformers.VideoPrismVisionConfig(
        hidden_size=16, num_attention_heads=2, intermediate_size=24, num_spatial_layers=1,
        num_temporal_layers=1, tubelet_size=[1, 8, 8], image_size=16, num_frames=2,
    )  # fmt: skip
    folder = tmp_path / "videoprism"
    transformers.VideoPrismVisionModel(config).save_pretrained(folder)
    assert clip_defaults("videoprism_b", folder, "transformers", frames=None, size=None) == (2, 16)
    settings = ClassificationSettings(checkpoint=folder, checkpoint_format="transformers",
                                      freeze_backbone=True)  # fmt: skip
    job = TrainJob(out=tmp_path / "run", data=tiny_dataset, model="videoprism_b", frames=2,
                   size=16, epochs=1, batch_size=4, workers=0, settings=settings)  # fmt: skip
    seen = []
    normalize = BatchNormalize.__call__

    def spy(self, batch):
        seen.append((self.mean, self.std))
        return normalize(self, batch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BatchNormalize, "__call__", spy)
        train(job, show_progress=False)
    assert seen and set(seen) == {((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))}
    _, spec = load_model(tmp_path / "run")
    assert spec.preprocessing.mean == (0.0, 0.0, 0.0) and spec.preprocessing.std == (1.0, 1.0, 1.0)


def test_a_run_of_another_head_gives_its_backbone_to_a_new_probe(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    trained = create_model("vjepa2_vitl", **{**TINY, "head": "linear"})
    save_file(trained.state_dict(), str(tmp_path / "model.safetensors"))
    args = {k: v for k, v in TINY.items() if k != "num_classes"}
    for head, classes in (("attentive", 3), ("linear", 4)):
        model, rebuilt = start_from_checkpoint(
            "vjepa2_vitl", tmp_path, None, num_classes=classes, model_args={**args, "head": head}
        )
        assert rebuilt["head"] == head and model.num_classes == classes
        for key, value in trained.state_dict().items():
            if key.startswith("blocks."):
                assert torch.equal(model.state_dict()[key], value)
    # Same classes and head: the head loads too, unless a probe asks for a new one.
    kept, _ = start_from_checkpoint("vjepa2_vitl", tmp_path, None, num_classes=3,
                                    model_args={**args, "head": "linear"})  # fmt: skip
    assert torch.equal(kept.fc.weight, trained.fc.weight)
    new, _ = start_from_checkpoint("vjepa2_vitl", tmp_path, None, num_classes=3,
                                   model_args={**args, "head": "linear"}, new_head=True)  # fmt: skip
    assert not torch.equal(new.fc.weight, trained.fc.weight)
    with pytest.raises(ValueError, match="does not fit"):  # the backbone itself must fit
        start_from_checkpoint(
            "vjepa2_vitl", tmp_path, None, num_classes=3, model_args={**args, "depth": 2}
        )
