"""Every registered classifier keeps the model contract; the registry and tubelet checkpoints."""

import copy
import inspect

import pytest
import torch
from safetensors.torch import save_file
from torch.nn.modules.module import register_module_forward_pre_hook

from tubelet.models import create_model, list_models, model_kind, register_model
from tubelet.models.registry import KINDS, builder, model_args, translate_legacy_args, variant
from tubelet.models.swin3d import SwinTransformer3d

CLIP = (1, 3, 4, 32, 32)
# Models whose trunk needs a longer tiny clip than CLIP's 4 frames: name -> frames.
FRAMES = {"s3d": 5}
# Models whose head reads the class token, index 0 of (B, D, 1 + T*N) token features.
CLASS_TOKEN = {"timesformer_base", "timesformer_small", "frame2d_transformer"}
# Models whose head pools the tokens with learned attention, not their mean.
VJEPA2 = ["vjepa2_vitl", "vjepa2_vith", "vjepa2_vitg"]
PRISM = ["videoprism_b", "videoprism_l", "videoprism_lvt_b", "videoprism_lvt_l"]
ATTENTIVE = {*VJEPA2, *PRISM}
# Builder arguments of a tiny model besides its width (`width` = channels in these ViTs, whose
# heads need at least 6 channels for rotary positions).
_PRISM_TINY = {"num_heads": 2, "mlp_dim": 24, "spatial_depth": 1, "temporal_depth": 1,
               "patch_size": 8, "image_size": 32, "num_frames": 4}  # fmt: skip
_LVT_TINY = {**_PRISM_TINY, "aux_depth": 1, "text_depth": 1, "vocab_size": 30}
TINY = {
    **dict.fromkeys(VJEPA2, {"num_heads": 2, "depth": 2}),
    **dict.fromkeys(PRISM[:2], _PRISM_TINY),
    **dict.fromkeys(PRISM[2:], _LVT_TINY),
}
TINY_WIDTH = {**dict.fromkeys(VJEPA2, 12), **dict.fromkeys(PRISM, 16)}
# The argument that scales a model's channels: `width`, except the video ViTs' per-head size.
SCALE = dict.fromkeys(["vit_b_16_video", "vit_s_16_video", "vit_t_16_video"], "head_dim")


def tiny(name: str, width: int | None = None, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    scale = {SCALE.get(name, "width"): width or TINY_WIDTH.get(name, 8)}
    return create_model(name, num_classes=5, **scale, **{**TINY.get(name, {}), **kwargs})


def clip(shape=CLIP, seed: int = 0, name: str = "") -> torch.Tensor:
    batch, channels, frames, height, width = shape
    shape = (batch, channels, FRAMES.get(name, frames), height, width)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_registry_holds_the_first_families():
    assert {"frame2d_resnet18", "r2plus1d_18", "r3d_18", "mc3_18"} <= set(list_models("video"))
    assert list_models() == sorted(list_models())


def test_every_model_has_a_kind_and_kinds_partition_the_registry():
    by_kind = [name for kind in KINDS for name in list_models(kind)]
    assert sorted(by_kind) == list_models()
    assert model_kind("frame_transformer") == "features"
    assert model_kind("videomae_pretrain") == "pretrain"
    with pytest.raises(ValueError, match="kind must be one of"):
        register_model(lambda: None, kind="audio")


@pytest.mark.parametrize("name", list_models("video"))
def test_forward_shapes_and_head_split(name):
    model = tiny(name).eval()
    x = clip(name=name)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        assert torch.equal(model.forward_head(feats), logits)
    assert model.num_classes == 5
    assert logits.shape == (1, 5)
    assert feats.shape[:2] == (1, model.num_features)
    assert pooled.shape == (1, model.num_features)
    if name in CLASS_TOKEN:
        assert feats.ndim == 3 and torch.equal(pooled, feats[:, :, 0])
    elif name in ATTENTIVE:
        assert feats.ndim == 5 and not torch.allclose(pooled, feats.mean(dim=(2, 3, 4)))
    else:
        assert feats.ndim == 5 and torch.allclose(pooled, feats.mean(dim=(2, 3, 4)))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list_models("video"))
def test_width_scales_channels(name):
    small = tiny(name)
    assert tiny(name, width=2 * TINY_WIDTH.get(name, 8)).num_features == 2 * small.num_features


@pytest.mark.parametrize("name", list_models("video"))
def test_reset_classifier(name):
    model = tiny(name).eval()
    model.reset_classifier(11)
    assert model.num_classes == 11
    assert model(clip(name=name)).shape == (1, 11)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(0)
    model.double().reset_classifier(2)  # the new head follows the model's dtype and device
    assert model(clip(name=name).double()).dtype == torch.float64


@pytest.mark.parametrize("name", list_models("video"))
def test_dropout_acts_only_in_training(name):
    model = tiny(name, dropout=0.5)
    x = clip((2, 3, 4, 32, 32), name=name)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        feats = model.forward_features(x)
        model.train()
        dropped = model.forward_head(feats)
    assert not torch.allclose(dropped, model.eval().forward_head(feats))


@pytest.mark.parametrize("name", list_models("video"))
def test_grad_checkpointing_changes_nothing(name):
    plain = tiny(name).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    x = clip((2, 3, 4, 32, 32), name=name)
    target = torch.tensor([1, 3])

    outs, recomputed = [], []
    for model in (plain, ckpt):
        calls = []  # one entry per module call, recomputations in backward included
        handle = register_module_forward_pre_hook(lambda module, args, calls=calls: calls.append(1))
        try:
            torch.manual_seed(1)  # the same dropout masks for both runs
            out = model(x)
            in_forward = len(calls)
            torch.nn.functional.cross_entropy(out, target).backward()
        finally:
            handle.remove()
        outs.append(out.detach())
        recomputed.append(len(calls) - in_forward)
    assert recomputed[0] == 0 and recomputed[1] > 0  # checkpointing really took place
    torch.testing.assert_close(outs[1], outs[0])
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=key)
    # The recomputation in backward must not update BatchNorm statistics a second time.
    for (key, b), c in zip(plain.named_buffers(), ckpt.buffers(), strict=True):
        torch.testing.assert_close(c, b, msg=key)
    # Off again: eval and no-grad paths never checkpoint.
    ckpt.set_grad_checkpointing(False)
    assert not ckpt.grad_checkpointing


@pytest.mark.parametrize("name", list_models("video"))
def test_channels_last_changes_nothing(name):
    model = tiny(name).eval()
    x = clip(name=name)
    # 3D convolutions take channels_last_3d; the per-frame 2D trunk takes channels_last.
    is_2d = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    layout = torch.channels_last if is_2d else torch.channels_last_3d
    with torch.no_grad():
        expected = model(x)
        fast = copy.deepcopy(model).to(memory_format=layout)
        got = fast(x if is_2d else x.contiguous(memory_format=layout))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_unknown_name_suggests_a_close_match():
    with pytest.raises(ValueError, match="r2plus1d_18"):
        create_model("r2plus1d-18")


def test_unknown_argument_is_refused_naming_it_and_the_accepted_ones():
    with pytest.raises(
        ValueError, match=r"model r3d_18 has no argument 'depth'; it takes: .*width"
    ):
        create_model("r3d_18", depth=50)
    with pytest.raises(ValueError, match=r"vit_t_16_video has no argument 'dim'.*head_dim"):
        create_model("vit_t_16_video", dim=16)


def test_an_old_argument_name_is_read_as_the_new_one_with_a_warning():
    # A per-head size is `head_dim`; `width` (its old name on the ViTs) is read as it, said aloud.
    with pytest.warns(FutureWarning, match="vit_t_16_video: width is now head_dim"):
        model = create_model("vit_t_16_video", num_classes=2, width=8, depth=1)
    assert model.num_features == 3 * 8


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("frame_transformer", {"dim": 8}, {"width": 8}),
        ("frame2d_transformer", {"dim": 8, "width": 4}, {"temporal_width": 8, "width": 4}),
        ("actionformer_tiny", {"dim": 16}, {"width": 16}),
        ("wan_dit", {"dim": 32}, {"width": 32}),
        ("wan_vae", {"dim": 8, "decoder_dim": 4}, {"width": 8, "decoder_width": 4}),
    ],
)
def test_an_embedding_width_is_width_and_dim_its_old_name(name, old, new):
    # Old specs and `-m dim=` read through the registry's translation (`create_model` says so).
    assert translate_legacy_args(name, old) == new
    assert translate_legacy_args(name, new) == new


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("r3d_18", {"width": "16"}, "'width' takes int, not '16'"),
        ("r3d_18", {"width": 16.0}, "'width' takes int"),
        ("r3d_18", {"dropout": True}, "'dropout' takes float"),
        ("swin3d_t", {"depths": 2}, r"'depths' takes Sequence\[int\]"),
        ("swin3d_t", {"depths": [1, "a"]}, "'depths' takes"),
        ("timesformer_small", {"attention": "spatial"}, r"attention must be one of \['divided'"),
        ("video_unet", {"temporal": "no"}, "'temporal' takes bool"),
    ],
)
def test_values_of_the_wrong_type_are_refused_naming_the_argument(name, args, expected):
    with pytest.raises(ValueError, match=expected):
        create_model(name, **args)


def test_values_as_json_gives_them_are_accepted():
    model = create_model(
        "swin3d_t", num_classes=3, width=8, depths=[1, 1], window_size=[2, 2, 2], num_heads=None,
        stochastic_depth_prob=0,
    )  # fmt: skip
    assert model.num_features == 16
    assert (
        create_model("video_unet", width=8, channel_mults=[1], attention_levels=[True]).width == 8
    )


def test_every_builder_takes_typed_keyword_only_arguments():
    for name in list_models():
        params = inspect.signature(builder(name)).parameters.values()
        assert params, name
        for p in params:
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, (name, p.name)
            assert p.annotation is not inspect.Parameter.empty, (name, p.name)
        assert [a.name for a in model_args(name)] == [p.name for p in params]


def test_variants_change_only_their_defaults():
    def vit(name):
        return {a.name: a.default for a in model_args(name)}

    small, tiny_ = vit("vit_s_16_video"), vit("vit_t_16_video")
    assert small["num_heads"] == 6 and tiny_["num_heads"] == 3
    assert {k: v for k, v in small.items() if k != "num_heads"} == {
        k: v for k, v in tiny_.items() if k != "num_heads"
    }
    assert builder("swin3d_b").__doc__.startswith("Swin3D-B")
    with pytest.raises(ValueError, match="no argument depht"):
        variant(SwinTransformer3d, depht=3)


def test_legacy_arguments_translate_to_the_current_names():
    old = {"width": 16, "decoder_width": 8, "in_chans": 3, "depth": 4}
    new = translate_legacy_args("videomae_pretrain_t", old)
    assert new == {"head_dim": 16, "decoder_head_dim": 8, "in_channels": 3, "depth": 4}
    assert translate_legacy_args("videomae_pretrain_t", new) == new  # current names pass unchanged
    assert translate_legacy_args("vit_s_16_video", {"width": 8}) == {"head_dim": 8}
    assert translate_legacy_args("video_unet", {"base_channels": 8}) == {"width": 8}
    assert translate_legacy_args("timesformer_base", {"layer_norm_eps": 1e-5}) == {"norm_eps": 1e-5}
    assert translate_legacy_args("r3d_18", {"width": 8}) == {"width": 8}  # width was always width
    with pytest.raises(ValueError, match="same argument"):
        translate_legacy_args("vit_s_16_video", {"width": 8, "head_dim": 8})


def test_tubelet_checkpoint_round_trip(tmp_path):
    model = tiny("r3d_18").eval()
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    again = create_model("r3d_18", num_classes=5, width=8, checkpoint=str(path)).eval()
    x = clip()
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_mismatched_tubelet_checkpoint_names_the_keys(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(tiny("frame2d_resnet18").state_dict(), str(path))
    with pytest.raises(ValueError, match=r"fc\.weight: checkpoint \(5, 64\) vs model \(7, 64\)"):
        create_model("frame2d_resnet18", num_classes=7, width=8, checkpoint=str(path))
    with pytest.raises(
        ValueError, match=r"(?s)missing: layer1\.0\.conv1\.0\.weight.*unexpected: bn1"
    ):
        create_model("r3d_18", num_classes=5, width=8, checkpoint=str(path))


def test_architecture_args_leave_out_weight_initialisation():
    from tubelet.models import architecture_args

    args = {"inflate_from": "resnet50.pth", "new_head": True, "width": 8, "num_classes": 3}
    assert architecture_args("i3d_r50", args) == {"width": 8, "num_classes": 3}
    assert architecture_args("r2plus1d_18", {"width": 8}) == {"width": 8}


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_on_the_meta_device(name):
    # `tubelet memory --count-only` builds the model without memory: nothing may read a value.
    with torch.device("meta"):
        model = create_model(name)
    assert all(p.is_meta for p in model.parameters())
