"""Fine-tuning from a pre-training run: encoder copied, shapes read from the run, layer-wise lr."""

import pytest
import torch

from tubelet.engine.checkpoint import save_model
from tubelet.jobs.finetune import (
    LAYER_DECAY,
    init_from_pretraining,
    init_model_args,
    layer_decay_groups,
    pretrained_classifier,
)
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec

PRETRAIN_ARGS = {"head_dim": 8, "depth": 3, "decoder_depth": 1, "patch_size": 8}


@pytest.fixture
def pretrain_run(tmp_path):
    torch.manual_seed(0)
    model = create_model("videomae_pretrain_s", **PRETRAIN_ARGS)
    save_model(
        tmp_path / "best", model, ModelSpec("videomae_pretrain_s", PRETRAIN_ARGS, "pretrain")
    )
    return tmp_path, model


def test_encoder_weights_are_copied_into_the_classifier(pretrain_run):
    run, pretrained = pretrain_run
    assert pretrained_classifier(run) == "vit_s_16_video"
    args = init_model_args(run, "vit_s_16_video")
    assert args["head_dim"] == 8 and args["depth"] == 3 and args["num_heads"] == 6
    model = create_model("vit_s_16_video", num_classes=4, **args)
    report = init_from_pretraining(model, run)
    assert report["skipped"] == ["norm.bias", "norm.weight"]  # the classifier has fc_norm instead
    for key, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, pretrained.encoder.state_dict()[key], msg=key)


def test_mismatched_models_are_refused(pretrain_run, tmp_path):
    run, _ = pretrain_run
    with pytest.raises(ValueError, match="encoder"):
        init_from_pretraining(create_model("vit_s_16_video", num_classes=4, head_dim=16), run)
    with pytest.raises(ValueError, match="video ViT classifier"):
        init_from_pretraining(create_model("r3d_18", num_classes=4, width=8), run)
    other = tmp_path / "classifier"
    save_model(
        other,
        create_model("r3d_18", num_classes=4, width=8),
        ModelSpec("r3d_18", {"num_classes": 4, "width": 8}, "classification"),
    )
    with pytest.raises(ValueError, match="not a pre-training run"):
        init_model_args(other, "vit_s_16_video")
    with pytest.raises(ValueError, match="vit_b_16_video or vit_s_16_video or vit_t_16_video"):
        init_model_args(run, "r3d_18")


def test_layer_decay_groups_cover_every_parameter_once():
    model = create_model("vit_t_16_video", num_classes=4, head_dim=8, depth=3, patch_size=8)
    groups = layer_decay_groups(model, lr=1.0, weight_decay=0.05)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert groups[0]["lr"] == 1.0  # the head's group first
    assert lr_of[id(model.fc.weight)] == 1.0
    assert lr_of[id(model.encoder.blocks[2].mlp.fc1.weight)] == pytest.approx(LAYER_DECAY)
    assert lr_of[id(model.encoder.blocks[0].attn.qkv.weight)] == pytest.approx(LAYER_DECAY**3)
    assert lr_of[id(model.encoder.patch_embed.proj.weight)] == pytest.approx(LAYER_DECAY**4)
    assert decay_of[id(model.encoder.blocks[0].norm1.weight)] == 0.0
    assert decay_of[id(model.encoder.blocks[0].attn.qkv.weight)] == 0.05


def test_trainer_keeps_the_decayed_rates_under_its_schedule(tmp_path):
    from tubelet.engine.run import RunDir
    from tubelet.engine.trainer import OptimConfig, Trainer
    from tubelet.tasks import ClassificationTask

    model = create_model("vit_t_16_video", num_classes=4, head_dim=8, depth=2, patch_size=8)
    groups = layer_decay_groups(model, lr=0.01, weight_decay=0.05)
    trainer = Trainer(
        model, ClassificationTask(4), train_loader=[{}] * 4, val_loader=[], run=RunDir(tmp_path),
        config=OptimConfig(epochs=2, lr=0.01, warmup_epochs=0.5), groups=groups,
        spec=ModelSpec("tiny", {}, "classification"),
        device=torch.device("cpu"),
    )  # fmt: skip
    for _ in range(3):
        trainer.optimizer.step()  # no gradients: parameters stay; only the schedule advances
        trainer.scheduler.step()
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    factor = lrs[0] / 0.01  # the schedule's factor, the same for every group
    assert 0 < factor < 1
    assert lrs == pytest.approx([g["initial_lr"] * factor for g in trainer.optimizer.param_groups])
    assert min(lrs) == pytest.approx(0.01 * factor * LAYER_DECAY**3)  # the tubelet embedding
