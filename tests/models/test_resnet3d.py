"""R3D / MC3 / R(2+1)D: how each variant treats time, and the (2+1)D factorisation."""

import pytest
import torch
from torch import nn

from tubelet.models import create_model
from tubelet.models.resnet3d import (
    FACTORISED_2PLUS1D,
    FULL_3D,
    SPATIAL_ONLY,
    BlockConv,
    factorised_channels,
)


@pytest.mark.parametrize(
    ("name", "frames_out"),
    [("r3d_18", 1), ("r2plus1d_18", 1), ("mc3_18", 8)],  # stages 2-4 stride time, except MC3's
)
def test_feature_map_shapes(name, frames_out):
    model = create_model(name, num_classes=3, width=8).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, 8, 64, 64))
    assert feats.shape == (2, 64, frames_out, 4, 4)


@pytest.mark.parametrize(("in_ch", "out_ch"), [(64, 64), (64, 128), (128, 256), (8, 16), (3, 5)])
def test_factorisation_keeps_the_parameter_count(in_ch, out_ch):
    mid = factorised_channels(in_ch, out_ch)
    full = 27 * in_ch * out_ch  # one 3x3x3 kernel
    factorised = mid * (9 * in_ch + 3 * out_ch)  # 1x3x3 to mid, then 3x1x1 to out
    assert full - (9 * in_ch + 3 * out_ch) < factorised <= full


def test_factorisation_widths_at_full_size():
    # The values torchvision's R(2+1)D-18 has: layer1 144, layer2.0 230, layer3.0 460, layer4.0 921.
    pairs = [(64, 64), (64, 128), (128, 256), (256, 512)]
    assert [factorised_channels(a, b) for a, b in pairs] == [144, 230, 460, 921]
    model = create_model("r2plus1d_18")
    block = model.layer2[0]
    assert block.conv1[0][0].out_channels == 230
    assert block.conv2[0][0].out_channels == 230  # the block's (in, out) sets both convs' width
    assert model.layer2[1].conv1[0][0].out_channels == factorised_channels(128, 128)
    assert model.stem[0].out_channels == 45


def test_stem_hidden_channels_scale_with_width():
    assert create_model("r2plus1d_18", width=16).stem[0].out_channels == 11
    assert create_model("r2plus1d_18", width=2).stem[0].out_channels == 1


@pytest.mark.parametrize(
    ("conv", "kernels", "time_stride"),
    [
        (FULL_3D, [(3, 3, 3)], 2),
        (SPATIAL_ONLY, [(1, 3, 3)], 1),
        (FACTORISED_2PLUS1D, [(1, 3, 3), (3, 1, 1)], 2),
    ],
)
def test_block_convs(conv, kernels, time_stride):
    module = conv.build(4, 6, 5, 2, nn.BatchNorm3d)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv3d)]
    assert [c.kernel_size for c in convs] == kernels
    assert conv.time_stride(2) == time_stride
    out = module(torch.randn(1, 4, 4, 8, 8))
    assert out.shape == (1, 6, 4 // time_stride, 4, 4)


def test_spatial_only_factorisation_is_refused():
    with pytest.raises(ValueError, match="temporal=True"):
        BlockConv(temporal=False, factorised=True)


def test_custom_norm_layer_reaches_every_norm():
    model = create_model("r2plus1d_18", width=8, norm_layer=lambda ch: nn.GroupNorm(1, ch))
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) > 20
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 400)


def test_temporal_model_sees_frame_order():
    # Unlike the per-frame baseline, reversing time changes a 3D model's prediction.
    torch.manual_seed(0)
    model = create_model("r2plus1d_18", num_classes=4, width=8).eval()
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x.flip(2)), atol=1e-5)
