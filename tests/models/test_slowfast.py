"""SlowFast / Slow: which frames each pathway sees, lateral connections, features and arguments."""

import pytest
import torch

from tubelet.models import create_model
from tubelet.models.slowfast import slow_frame_indices


def clip(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("frames", "alpha", "expected"),
    [
        (32, 4, [0, 4, 8, 13, 17, 22, 26, 31]),  # the 8x8 recipe: spread from first to last frame
        (8, 4, [0, 7]),
        (4, 4, [0]),
        (8, 2, [0, 2, 4, 7]),
        (6, 1, [0, 1, 2, 3, 4, 5]),
    ],
)
def test_slow_frame_indices(frames, alpha, expected):
    assert slow_frame_indices(frames, alpha).tolist() == expected


def test_slow_frame_indices_refuse_too_few_frames():
    with pytest.raises(ValueError, match="at least alpha frames"):
        slow_frame_indices(3, 4)


def test_each_pathway_sees_its_frames():
    model = create_model("slowfast_r50", num_classes=3, width=8).eval()
    seen = {}
    for path in ("slow", "fast"):
        getattr(model, path).stem.register_forward_pre_hook(
            lambda module, args, path=path: seen.__setitem__(path, args[0])
        )
    x = clip((2, 3, 8, 32, 32))
    with torch.no_grad():
        model(x)
    assert torch.equal(seen["fast"], x)
    assert torch.equal(seen["slow"], x[:, :, [0, 7]])


def test_features_pool_to_both_pathways_means():
    model = create_model("slowfast_r50", num_classes=3, width=8).eval()
    outs = {}
    for path in ("slow", "fast"):
        getattr(model, path).stages[-1].register_forward_hook(
            lambda module, args, out, path=path: outs.__setitem__(path, out)
        )
    x = clip((2, 3, 8, 64, 64))
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
    assert outs["slow"].shape == (2, 256, 2, 2, 2)
    assert outs["fast"].shape == (2, 32, 8, 2, 2)
    assert feats.shape == (2, 288, 2, 2, 2) and model.num_features == 288
    expected = torch.cat([outs["slow"].mean(dim=(2, 3, 4)), outs["fast"].mean(dim=(2, 3, 4))], 1)
    torch.testing.assert_close(pooled, expected)


def test_fast_pathway_reaches_the_slow_one_through_the_lateral_connections():
    model = create_model("slowfast_r50", num_classes=3, width=8).eval()
    x = clip((1, 3, 8, 32, 32))
    y = x.clone()
    y[:, :, 3] += 1.0  # a frame only the Fast pathway sees
    with torch.no_grad():
        slow_a, slow_b = (model.forward_features(v)[:, :256] for v in (x, y))
    assert not torch.allclose(slow_a, slow_b)


def test_arguments_shape_the_lateral_connections():
    model = create_model("slowfast_r50", width=16, alpha=2, beta_inv=4, fusion_kernel=5)
    fuse = model.fusions[0].conv
    assert fuse.weight.shape == (8, 4, 5, 1, 1)  # fusion_ratio 2 x the Fast stem's 16 / 4 channels
    assert fuse.stride == (2, 1, 1)
    assert len(model.fusions) == 3 + 1  # after the stem and after every stage but the last
    assert model.slow.stages[0][0].conv1.in_channels == 16 + 8
    assert model.slow.stages[1][0].conv1.in_channels == 64 + 2 * 16
    assert model.num_features == 512 + 128
    with torch.no_grad():
        feats = model.eval().forward_features(clip((1, 3, 6, 32, 32)))
    assert feats.shape == (1, 640, 3, 1, 1)


def test_published_sizes():
    slowfast = create_model("slowfast_r50")
    slow = create_model("slow_r50")
    assert slowfast.num_features == 2048 + 256
    assert slow.num_features == 2048
    assert slowfast.slow.stem.conv.weight.shape == (64, 3, 1, 7, 7)
    assert slowfast.fast.stem.conv.weight.shape == (8, 3, 5, 7, 7)
    assert [len(stage) for stage in slow.slow.stages] == [3, 4, 6, 3]
    kernels = [stage[0].conv1.kernel_size[0] for stage in slowfast.slow.stages]
    assert kernels == [1, 1, 3, 3]
    assert [stage[0].conv1.kernel_size[0] for stage in slowfast.fast.stages] == [3, 3, 3, 3]


def test_slow_r50_uses_every_frame():
    model = create_model("slow_r50", num_classes=3, width=8).eval()
    with torch.no_grad():
        feats = model.forward_features(clip((1, 3, 5, 32, 32)))
    assert feats.shape == (1, 256, 5, 1, 1)


@pytest.mark.parametrize("name", ["slowfast_r50", "slow_r50"])
def test_channels_last_3d_changes_nothing(name):
    model = create_model(name, num_classes=3, width=8).eval()
    x = clip((2, 3, 8, 32, 32))
    with torch.no_grad():
        expected = model(x)
        got = model.to(memory_format=torch.channels_last_3d)(
            x.to(memory_format=torch.channels_last_3d)
        )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="multiple of 4, got T=6"):
        create_model("slowfast_r50", width=8)(clip((1, 3, 6, 32, 32)))
    with pytest.raises(ValueError, match="multiple of beta_inv"):
        create_model("slowfast_r50", width=12)
    with pytest.raises(ValueError, match="fusion_kernel odd"):
        create_model("slowfast_r50", width=8, fusion_kernel=4)
