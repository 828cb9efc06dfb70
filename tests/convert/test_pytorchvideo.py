"""The PyTorchVideo and PySlowFast importers: tubelet's SlowFast/Slow reproduce PyTorchVideo's."""

import re

import pytest
import torch
from peer_weights import randomise
from pytorchvideo.models.resnet import create_resnet
from pytorchvideo.models.slowfast import create_slowfast

from tubelet.convert import list_formats
from tubelet.convert.pytorchvideo import from_pyslowfast, from_pytorchvideo
from tubelet.models import create_model

T, SIZE = 8, 64  # the final feature map is (T / alpha or T) x 2 x 2


def peer_slowfast(num_classes, width, alpha=4, beta_inv=8, fusion_kernel=7, seed=0):
    torch.manual_seed(seed)
    side = SIZE // 32
    peer = create_slowfast(
        model_num_class=num_classes,
        slowfast_channel_reduction_ratio=(beta_inv,),
        slowfast_fusion_conv_kernel_size=(fusion_kernel, 1, 1),
        slowfast_fusion_conv_stride=(alpha, 1, 1),
        stem_dim_outs=(width, width // beta_inv),
        # The head's fixed average pool must cover the whole feature map of our small clips.
        head_pool_kernel_sizes=((T // alpha, side, side), (T, side, side)),
    )
    return randomise(peer, seed)


def peer_slow(num_classes, width, seed=0):
    torch.manual_seed(seed)
    side = SIZE // 32
    peer = create_resnet(  # hub `slow_r50`: a 1x7x7 stem, the rest create_resnet's defaults
        model_num_class=num_classes,
        stem_dim_out=width,
        stem_conv_kernel_size=(1, 7, 7),
        head_pool_kernel_size=(T, side, side),
    )
    return randomise(peer, seed)


def peer_i3d(num_classes, width, seed=0):
    torch.manual_seed(seed)
    side = SIZE // 32
    peer = create_resnet(  # hub `i3d_r50`: 5x7x7 stem, time pool after stage 1, 3x1x1 conv_a mix
        model_num_class=num_classes,
        stem_dim_out=width,
        stem_conv_kernel_size=(5, 7, 7),
        stage1_pool=torch.nn.MaxPool3d,
        stage_conv_a_kernel_size=(
            (3, 1, 1),
            [(3, 1, 1), (1, 1, 1)],
            [(3, 1, 1), (1, 1, 1)],
            [(1, 1, 1), (3, 1, 1)],
        ),
        head_pool_kernel_size=(T // 2, side, side),
    )
    return randomise(peer, seed)


def pack_pathway(x, alpha):
    """PyTorchVideo's PackPathway: the Slow input is T // alpha frames spread over the clip."""
    num = x.shape[2]
    return [x.index_select(2, torch.linspace(0, num - 1, num // alpha).long()), x]


def clip(batch=2):
    return torch.randn(batch, 3, T, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def assert_close_to_peer(got, expected):
    scale = max(1.0, expected.abs().max().item())  # random BN stats give large logits
    assert (got - expected).abs().max().item() <= 1e-4 * scale


def test_formats_are_registered():
    assert {"pytorchvideo", "pyslowfast"} <= set(list_formats())


@pytest.mark.parametrize(
    "args",
    [{}, {"alpha": 2, "beta_inv": 4, "fusion_kernel": 5}],
    ids=["8x8-recipe", "alpha2-beta4-kernel5"],
)
def test_slowfast_reproduces_pytorchvideo(args, tmp_path):
    peer = peer_slowfast(7, 8, **args)
    path = tmp_path / "slowfast.pth"
    torch.save(peer.state_dict(), path)
    model = create_model(
        "slowfast_r50",
        num_classes=7,
        width=8,
        checkpoint=str(path),
        checkpoint_format="pytorchvideo",
        **args,
    ).eval()
    x = clip()
    with torch.no_grad():
        expected = peer(pack_pathway(x, args.get("alpha", 4)))
        got = model(x)
    assert got.shape == (2, 7)
    assert_close_to_peer(got, expected)


def test_slow_reproduces_pytorchvideo(tmp_path):
    peer = peer_slow(7, 8)
    path = tmp_path / "slow.pth"
    torch.save(peer.state_dict(), path)
    model = create_model(
        "slow_r50", num_classes=7, width=8, checkpoint=str(path), checkpoint_format="pytorchvideo"
    ).eval()
    x = clip()
    with torch.no_grad():
        assert_close_to_peer(model(x), peer(x))


def test_i3d_names_map_to_torchvision_layers():
    names = {
        "blocks.0.conv.weight": "conv1.weight",
        "blocks.3.res_blocks.1.branch2.conv_a.weight": "layer2.1.conv1.weight",
        "blocks.5.res_blocks.0.branch1_norm.running_var": "layer4.0.downsample.1.running_var",
        "blocks.6.proj.bias": "fc.bias",
    }
    out = from_pytorchvideo("i3d_r50", {k: torch.zeros(1) for k in names})
    assert sorted(out) == sorted(names.values())
    with pytest.raises(ValueError, match="blocks.2.weight"):
        from_pytorchvideo("i3d_r50", {"blocks.2.weight": torch.zeros(1)})  # the pool has none


def test_i3d_reproduces_pytorchvideo(tmp_path):
    peer = peer_i3d(7, 8)
    path = tmp_path / "i3d.pth"
    torch.save(peer.state_dict(), path)
    model = create_model(
        "i3d_r50", num_classes=7, width=8, checkpoint=str(path), checkpoint_format="pytorchvideo"
    ).eval()
    x = clip()
    with torch.no_grad():
        assert_close_to_peer(model(x), peer(x))


@pytest.mark.parametrize("name", ["slowfast_r50", "slow_r50"])
def test_full_size_checkpoints_load_every_tensor(name, tmp_path):
    peer = (
        create_slowfast()
        if name == "slowfast_r50"
        else create_resnet(stem_conv_kernel_size=(1, 7, 7))
    )
    state = peer.state_dict()
    path = tmp_path / "full.pth"
    torch.save(state, path)
    model = create_model(name, checkpoint=str(path), checkpoint_format="pytorchvideo")
    own = model.state_dict()
    renamed = from_pytorchvideo(name, state)
    assert len(renamed) == len(own) == len(state)
    for key, value in renamed.items():
        assert torch.equal(own[key], value), key


# PySlowFast's module names for the same layers (slowfast/models/{video_model_builder,
# resnet_helper,stem_helper,head_helper}.py), written from PyTorchVideo's side.
PTV_TO_PYSF = [
    (r"blocks\.0\.multipathway_blocks\.(\d)\.conv\.", r"s0.pathway\1_stem.conv."),
    (r"blocks\.0\.multipathway_blocks\.(\d)\.norm\.", r"s0.pathway\1_stem.bn."),
    (r"blocks\.0\.conv\.", r"s0.pathway0_stem.conv."),
    (r"blocks\.0\.norm\.", r"s0.pathway0_stem.bn."),
    (r"blocks\.(\d)\.multipathway_fusion\.conv_fast_to_slow\.", r"s\1_fuse.conv_f2s."),
    (r"blocks\.(\d)\.multipathway_fusion\.norm\.", r"s\1_fuse.bn."),
    (r"blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.", r"s\1.pathway\2_res\3."),
    (r"blocks\.(\d)\.res_blocks\.(\d+)\.", r"s\1.pathway0_res\2."),
    (r"blocks\.[56]\.proj\.", "head.projection."),
]
LAYER_TO_PYSF = {
    "branch1_conv": "branch1",
    "branch1_norm": "branch1_bn",
    "branch2.conv_a": "branch2.a",
    "branch2.norm_a": "branch2.a_bn",
    "branch2.conv_b": "branch2.b",
    "branch2.norm_b": "branch2.b_bn",
    "branch2.conv_c": "branch2.c",
    "branch2.norm_c": "branch2.c_bn",
}


def to_pyslowfast(state):
    """A PyTorchVideo state dict under PySlowFast's names (stages and fusions count from s1)."""
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in PTV_TO_PYSF:
            new, hits = re.subn("^" + pattern, repl, new)
            if hits:
                break
        # PyTorchVideo numbers the stem and stages 0-4, PySlowFast s1-s5.
        new = re.sub(r"^s(\d)", lambda m: f"s{int(m[1]) + 1}", new)
        for ptv, pysf in LAYER_TO_PYSF.items():
            new = new.replace(f".{ptv}.", f".{pysf}.")
        out[new] = value
    return out


def test_pyslowfast_names_map_to_the_same_layers():
    state = to_pyslowfast(peer_slowfast(3, 8).state_dict())
    assert "s1.pathway1_stem.conv.weight" in state and "s2.pathway0_res0.branch1.weight" in state
    assert "s1_fuse.conv_f2s.weight" in state and "s4_fuse.bn.running_var" in state
    assert "s5.pathway1_res2.branch2.c_bn.weight" in state and "head.projection.bias" in state


@pytest.mark.parametrize("name", ["slowfast_r50", "slow_r50"])
def test_pyslowfast_checkpoint_reproduces_the_peer(name, tmp_path):
    peer = peer_slowfast(5, 8) if name == "slowfast_r50" else peer_slow(5, 8)
    path = tmp_path / "checkpoint.pyth"
    torch.save({"model_state": to_pyslowfast(peer.state_dict()), "epoch": 196}, path)
    model = create_model(
        name, num_classes=5, width=8, checkpoint=str(path), checkpoint_format="pyslowfast"
    ).eval()
    x = clip()
    with torch.no_grad():
        expected = peer(pack_pathway(x, 4) if name == "slowfast_r50" else x)
        assert_close_to_peer(model(x), expected)


def test_class_count_mismatch_is_named(tmp_path):
    path = tmp_path / "k400.pth"
    torch.save(peer_slow(400, 8).state_dict(), path)
    with pytest.raises(
        ValueError, match=r"fc\.weight: checkpoint \(400, 256\) vs model \(10, 256\)"
    ):
        create_model(
            "slow_r50",
            num_classes=10,
            width=8,
            checkpoint=str(path),
            checkpoint_format="pytorchvideo",
        )
    model = create_model(
        "slow_r50", num_classes=400, width=8, checkpoint=str(path), checkpoint_format="pytorchvideo"
    )
    model.reset_classifier(10)  # the documented route to a new head
    assert model.fc.out_features == 10


def test_wrong_format_or_model_is_refused_with_the_keys():
    slowfast = peer_slowfast(3, 8).state_dict()
    with pytest.raises(ValueError, match=r"not part of a pyslowfast slowfast_r50.*blocks\.0\."):
        from_pyslowfast("slowfast_r50", slowfast)
    # A SlowFast checkpoint is not a Slow one: its fusions and Fast pathway have no place there.
    with pytest.raises(ValueError, match=r"pytorchvideo slow_r50 state dict: blocks\.0\.multi"):
        from_pytorchvideo("slow_r50", slowfast)
    with pytest.raises(ValueError, match="slow_r50, slowfast_r50"):
        from_pytorchvideo("r3d_18", slowfast)
