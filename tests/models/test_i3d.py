"""I3D-ResNet-50: the recipe's shape, inflation from torchvision's resnet50, the static-clip property."""

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from tubelet.models import create_model
from tubelet.models.i3d import ReplicateTimeConv3d


def randomised_2d(builder, seed: int = 0) -> nn.Module:
    """A torchvision 2D ResNet with random weights, norm affines, running stats and head.

    The last norm of each residual branch gets small scales, so the 16 residual sums keep
    activations and logits of order 1 and the 1e-4 bounds below are absolute in effect.
    """
    torch.manual_seed(seed)
    net = builder()
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                low, high = (0.05, 0.2) if name.endswith("bn3") else (0.5, 1.5)
                m.weight.uniform_(low, high)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, m.in_features**-0.5)
                m.bias.normal_(0.0, 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    """(the randomised torchvision resnet50, the path of its saved state dict)."""
    net = randomised_2d(torchvision.models.resnet50)
    path = tmp_path_factory.mktemp("r50") / "resnet50.pth"
    torch.save(net.state_dict(), path)
    return net, path


def features_2d(net: nn.Module, frame: torch.Tensor) -> torch.Tensor:
    """torchvision ResNet trunk: (B, 3, H, W) -> (B, D, H/32, W/32)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(frame))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def static_clip(frame: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, T, H, W): the frame repeated."""
    return frame.unsqueeze(2).expand(-1, -1, frames, -1, -1).contiguous()


def close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Max abs difference <= 1e-4 (the values are of order 1: see `randomised_2d`)."""
    assert expected.abs().max().item() < 10
    return (got - expected).abs().max().item() <= 1e-4


def test_recipe_kernels_and_feature_shape():
    model = create_model("i3d_r50", num_classes=3, width=8).eval()
    assert model.conv1.kernel_size == (5, 7, 7) and model.conv1.stride == (1, 2, 2)
    pattern = [
        [block.conv1.kernel_size[0] for block in getattr(model, n)] for n in model.stage_names
    ]
    assert pattern == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    for name in model.stage_names:  # only the first conv of a block spans time
        for block in getattr(model, name):
            assert block.conv2.kernel_size == (1, 3, 3) and block.conv3.kernel_size == (1, 1, 1)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 8, 64, 64))
    assert feats.shape == (1, 256, 4, 2, 2)  # time halved once, after layer1


def test_full_size_matches_resnet50_parameter_shapes():
    model = create_model("i3d_r50")
    peer = torchvision.models.resnet50(num_classes=400)
    own = model.state_dict()
    assert own.keys() == peer.state_dict().keys()
    for key, value in peer.state_dict().items():
        shape = own[key].shape
        assert shape == value.shape or shape[:2] + shape[3:] == value.shape, key
    assert model.num_features == 2048


def test_replicate_padding_only_where_kernels_span_time():
    model = create_model("i3d_r50", width=8, temporal_padding="replicate")
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            assert isinstance(m, ReplicateTimeConv3d) == (m.kernel_size[0] > 1)
    zeros = create_model("i3d_r50", width=8)
    assert not any(isinstance(m, ReplicateTimeConv3d) for m in zeros.modules())


def test_static_clip_with_replicate_padding_equals_resnet50(resnet50):
    net, path = resnet50
    model = create_model(
        "i3d_r50", num_classes=1000, inflate_from=str(path), temporal_padding="replicate"
    ).eval()
    frame = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected_feats = features_2d(net, frame)  # (2, 2048, 2, 2)
        expected = net(frame)
        feats = model.forward_features(static_clip(frame, 4))  # (2, 2048, 2, 2, 2)
        logits = model.forward_head(feats)
    assert feats.shape == (2, 2048, 2, 2, 2)
    for t in range(feats.shape[2]):  # every time step, the ends included
        assert close(feats[:, :, t], expected_feats)
    assert close(logits, expected)


def time_radius(modules: list[nn.Module]) -> int:
    """Frames either side that the convs in `modules` (applied in sequence) read: sum of kT // 2."""
    return sum(
        m.kernel_size[0] // 2 for mod in modules for m in mod.modules() if isinstance(m, nn.Conv3d)
    )


def test_static_clip_with_zero_padding_equals_resnet50_away_from_the_ends(resnet50):
    # Zero padding feeds zeros where replicate padding would feed the frame, so a time step is
    # exact when no conv reading towards it ever reaches past the clip. Before the 2x1x1 max-pool
    # a frame f is exact iff [f - r1, f + r1] lies in the clip; a pooled step p covers frames
    # 2p, 2p + 1; an output step j is exact iff pooled steps j - r2 .. j + r2 all are.
    net, path = resnet50
    model = create_model("i3d_r50", num_classes=1000, inflate_from=str(path)).eval()
    r1 = time_radius([model.conv1, model.layer1])
    r2 = time_radius([model.layer2, model.layer3, model.layer4])
    assert (r1, r2) == (5, 6)  # 5x7x7 stem + three 3x1x1; then 2 + 3 + 1 inflated blocks
    frames = 40
    exact_pooled = [p for p in range(frames // 2) if 2 * p - r1 >= 0 and 2 * p + 1 + r1 < frames]
    exact = [
        j for j in range(frames // 2) if all(j + d in exact_pooled for d in range(-r2, r2 + 1))
    ]
    assert exact == [9, 10]

    frame = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = features_2d(net, frame)  # (1, 2048, 1, 1)
        feats = model.forward_features(static_clip(frame, frames))  # (1, 2048, 20, 1, 1)
    for t in exact:
        assert close(feats[:, :, t], expected)
    assert not close(feats[:, :, 0], expected)  # the zeros do reach the ends


def test_inflation_report_lists_the_keys(resnet50):
    net, path = resnet50
    model = create_model("i3d_r50", num_classes=1000, inflate_from=str(path))
    report = model.inflation_report
    convs = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv3d)}
    assert set(report.inflated) == convs and len(convs) == 53
    assert "fc.weight" in report.copied and "layer4.2.bn3.running_var" in report.copied
    assert report.complete and report.skipped == ()
    expected = net.layer1[0].conv1.weight.unsqueeze(2).expand(-1, -1, 3, -1, -1) / 3
    torch.testing.assert_close(model.layer1[0].conv1.weight, expected)
    assert create_model("i3d_r50", width=8).inflation_report is None


def test_new_classes_need_new_head(resnet50):
    net, path = resnet50
    with pytest.raises(
        ValueError,
        match=r"(?s)fc\.weight: checkpoint \(1000, 2048\) vs model \(10, 2048\).*new_head",
    ):
        create_model("i3d_r50", num_classes=10, inflate_from=str(path))
    model = create_model("i3d_r50", num_classes=10, inflate_from=str(path), new_head=True)
    assert set(model.inflation_report.skipped) == {"fc.weight", "fc.bias"}
    assert model.fc.weight.shape == (10, 2048)
    assert torch.equal(model.bn1.running_mean, net.bn1.running_mean)
    with pytest.raises(ValueError, match="inflate_from"):
        create_model("i3d_r50", new_head=True)


def test_resnet18_is_refused_naming_the_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ValueError) as err:
        create_model("i3d_r50", num_classes=1000, inflate_from=str(path))
    message = str(err.value)
    assert str(path) in message
    assert "missing: layer1.0.conv3.weight" in message
    assert "layer1.0.conv1.weight: checkpoint (64, 64, 3, 3) vs model (64, 64, 3, 1, 1)" in message
    assert "resnet50" in message


def test_unknown_temporal_padding_is_refused():
    with pytest.raises(ValueError, match=r"\['replicate', 'zeros'\].*'reflect'"):
        create_model("i3d_r50", temporal_padding="reflect")


def test_tubelet_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("i3d_r50", num_classes=5, width=8, temporal_padding="replicate").eval()
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    again = create_model(
        "i3d_r50", num_classes=5, width=8, temporal_padding="replicate", checkpoint=str(path)
    ).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
