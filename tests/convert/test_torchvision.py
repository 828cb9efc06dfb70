"""The torchvision importer: tubelet models reproduce their torchvision peers' outputs."""

from collections.abc import Callable

import pytest
import torch
import torchvision
from peer_weights import randomise
from torch import nn

from tubelet.convert import list_formats, load_checkpoint
from tubelet.convert.torchvision import PEERS, from_torchvision
from tubelet.models import create_model, list_models

PEER_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "frame2d_resnet18": torchvision.models.resnet18,
    "mc3_18": torchvision.models.video.mc3_18,
    "r2plus1d_18": torchvision.models.video.r2plus1d_18,
    "r3d_18": torchvision.models.video.r3d_18,
    "s3d": torchvision.models.video.s3d,
    "swin3d_t": torchvision.models.video.swin3d_t,
    "swin3d_s": torchvision.models.video.swin3d_s,
    "swin3d_b": torchvision.models.video.swin3d_b,
}
# The smallest clip torchvision's S3D takes (its 2x7x7 average pool needs a (2, 7, 7) map); the
# width 241 gives a (2, 7, 8) map, so its stride-1 windows overlap instead of covering it once.
PARITY_CLIPS = {"s3d": (1, 3, 13, 209, 241)}
# Swin3D at full size (28M-88M parameters, slow to initialise): 2x16x16 tokens in stage 1, so the
# 8x7x7 windows are clipped in time, padded and shifted in space.
PARITY_CLIPS |= dict.fromkeys(("swin3d_t", "swin3d_s", "swin3d_b"), (1, 3, 4, 64, 64))


def randomised_peer(name: str, num_classes: int, seed: int = 0) -> nn.Module:
    """The torchvision model with random weights, norm affines, running stats and head."""
    torch.manual_seed(seed)
    peer = PEER_BUILDERS[name](num_classes=num_classes)
    return randomise(peer, seed)


def peer_logits(name: str, peer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The peer's logits for a clip (B, 3, T, H, W); the 2D peer runs per frame, averaged over T."""
    if name == "frame2d_resnet18":
        return torch.stack([peer(x[:, :, t]) for t in range(x.shape[2])]).mean(0)
    return peer(x)


def test_every_peer_has_a_registered_model():
    assert set(PEERS) - set(list_models("flow")) == set(PEER_BUILDERS)  # RAFT: test_raft.py
    assert set(PEERS) <= set(list_models())
    assert "torchvision" in list_formats()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in PARITY_CLIPS else name
        for name in sorted(PEER_BUILDERS)
    ],
)
def test_torchvision_weights_reproduce_the_peer(name, tmp_path):
    peer = randomised_peer(name, num_classes=7)
    path = tmp_path / "peer.pth"
    torch.save(peer.state_dict(), path)
    model = create_model(name, num_classes=7, checkpoint=str(path), checkpoint_format="torchvision")
    model.eval()
    shape = PARITY_CLIPS.get(name, (2, 3, 4, 32, 32))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = peer_logits(name, peer, x)
        got = model(x)
    assert got.shape == (shape[0], 7)
    scale = max(1.0, expected.abs().max().item())
    assert (got - expected).abs().max().item() <= 1e-4 * scale
    own = model.state_dict()
    imported = from_torchvision(name, peer.state_dict())
    assert imported.keys() == own.keys()
    for key, value in imported.items():  # every buffer arrives, batch counters included
        assert torch.equal(own[key], value), key


def test_s3d_small_clip_matches_the_peer_with_its_pool_cut_to_the_map(tmp_path):
    # Below 13x209x209 torchvision's S3D cannot pool; tubelet's cuts the 2x7x7 window to the map
    # (here 1x2x2). The peer with that window is the reference: same trunk, same conv classifier.
    peer = randomised_peer("s3d", num_classes=5)
    peer.avgpool = nn.AvgPool3d((1, 2, 2), stride=1)
    path = tmp_path / "s3d.pth"
    torch.save(peer.state_dict(), path)
    model = create_model(
        "s3d", num_classes=5, checkpoint=str(path), checkpoint_format="torchvision"
    )
    x = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = peer(x)
        got = model.eval()(x)
    assert (got - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())
    assert torch.equal(model.fc.weight, peer.classifier[1].weight.flatten(1))


def test_s3d_conv_classifier_becomes_the_linear_head():
    state = {"classifier.1.weight": torch.randn(4, 6, 1, 1, 1), "classifier.1.bias": torch.ones(4)}
    out = from_torchvision("s3d", state)
    assert sorted(out) == ["fc.bias", "fc.weight"]
    assert torch.equal(out["fc.weight"], state["classifier.1.weight"].reshape(4, 6))
    assert "classifier.1.weight" in state  # the input is not mutated


def test_checkpoints_without_batch_counters_load(tmp_path):
    # Checkpoints saved before PyTorch 0.4.1 have no `num_batches_tracked`.
    peer = randomised_peer("r2plus1d_18", num_classes=3)
    state = {k: v for k, v in peer.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    model = create_model("r2plus1d_18", num_classes=3)
    load_checkpoint(model, "r2plus1d_18", path, "torchvision")
    assert torch.equal(model.stem[1].running_var, peer.stem[1].running_var)
    assert model.stem[1].num_batches_tracked.item() == 0


def test_converter_adds_only_missing_counters():
    state = {
        "bn.running_mean": torch.zeros(2),
        "bn.running_var": torch.ones(2),
        "bn.num_batches_tracked": torch.tensor(5),
        "other.running_mean": torch.zeros(2),
    }
    out = from_torchvision("r3d_18", state)
    assert out["bn.num_batches_tracked"].item() == 5
    assert out["other.num_batches_tracked"].item() == 0
    assert "other.num_batches_tracked" not in state  # the input is not mutated


def test_unknown_model_lists_the_supported_names():
    with pytest.raises(ValueError, match="i3d_r50") as err:
        from_torchvision("i3d_r50", {})
    for name in PEERS:
        assert name in str(err.value)


def test_imagenet_head_into_other_class_count_is_refused_with_the_keys(tmp_path):
    peer = randomised_peer("frame2d_resnet18", num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(peer.state_dict(), path)
    with pytest.raises(
        ValueError, match=r"fc\.weight: checkpoint \(1000, 512\) vs model \(400, 512\)"
    ):
        create_model("frame2d_resnet18", checkpoint=str(path), checkpoint_format="torchvision")
    # The documented route: load with the checkpoint's classes, then replace the head.
    model = create_model(
        "frame2d_resnet18", num_classes=1000, checkpoint=str(path), checkpoint_format="torchvision"
    )
    model.reset_classifier(10)
    assert torch.equal(model.conv1.weight, peer.conv1.weight)
    assert model(torch.randn(1, 3, 2, 32, 32)).shape == (1, 10)


def test_narrow_model_refuses_full_width_weights(tmp_path):
    path = tmp_path / "r3d.pth"
    torch.save(randomised_peer("r3d_18", num_classes=4).state_dict(), path)
    with pytest.raises(ValueError, match=r"stem\.0\.weight"):
        create_model(
            "r3d_18", num_classes=4, width=16, checkpoint=str(path), checkpoint_format="torchvision"
        )
