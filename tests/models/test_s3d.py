"""S3D: the separable Inception layout, its channel table, width scaling and the smallest clip."""

import pytest
import torch
from torch import nn

from tubelet.models import create_model
from tubelet.models.s3d import MIN_FRAMES, MIN_SIZE, InceptionSpec, SepInception3d


def inception_blocks(model: nn.Module) -> list[SepInception3d]:
    return [m for m in model.features if isinstance(m, SepInception3d)]


def test_published_size_has_the_papers_channels_and_parameter_count():
    model = create_model("s3d")
    outs = [block.branch3[1][0].in_channels for block in inception_blocks(model)]
    assert outs == [192, 256, 480, 512, 512, 512, 528, 832, 832]  # each block's input
    assert model.num_features == 1024
    assert sum(p.numel() for p in model.parameters()) == 8_320_048  # torchvision's S3D
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert all(m.eps == 1e-3 and m.momentum == 1e-3 for m in norms)


def test_every_large_conv_is_separable():
    model = create_model("s3d", width=8)
    kernels = {m.kernel_size for m in model.modules() if isinstance(m, nn.Conv3d)}
    assert kernels == {(1, 1, 1), (1, 7, 7), (7, 1, 1), (1, 3, 3), (3, 1, 1)}


def test_width_scales_every_branch():
    assert InceptionSpec(64, 96, 128, 16, 32, 32).scaled(8) == InceptionSpec(8, 12, 16, 2, 4, 4)
    assert InceptionSpec(64, 96, 128, 16, 32, 32).scaled(2).b2_mid == 1  # never below one channel
    model = create_model("s3d", width=8)
    assert model.num_features == 128
    assert inception_blocks(model)[0].branch0[0].in_channels == 24


def test_features_pool_with_the_2x7x7_window_cut_to_the_map():
    model = create_model("s3d", num_classes=3, width=8).eval()
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        trunk = model.features(x)  # (1, 128, 1, 2, 2): smaller than the window
        feats = model.forward_features(x)
    assert trunk.shape == (1, 128, 1, 2, 2)
    assert feats.shape == (1, 128, 1, 1, 1)
    torch.testing.assert_close(feats.flatten(1), trunk.mean(dim=(2, 3, 4)))


def test_features_at_a_map_larger_than_the_window():
    model = create_model("s3d", num_classes=3, width=8).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 24, 224, 256))  # trunk map (3, 7, 8)
    assert feats.shape == (1, 128, 2, 1, 2)  # stride-1 2x7x7 windows


def test_smallest_clip_and_a_clear_error_below_it():
    model = create_model("s3d", num_classes=3, width=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, MIN_FRAMES, MIN_SIZE, MIN_SIZE)).shape == (1, 3)
        with pytest.raises(ValueError, match=r"at least 5 frames of 17x17 pixels.*got 4 frames"):
            model(torch.randn(1, 3, MIN_FRAMES - 1, 32, 32))
        with pytest.raises(ValueError, match=r"got 8 frames of 32x16"):
            model(torch.randn(1, 3, 8, 32, MIN_SIZE - 1))


def test_s3d_sees_frame_order():
    torch.manual_seed(0)
    model = create_model("s3d", num_classes=4, width=8).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x.flip(2)), atol=1e-5)
