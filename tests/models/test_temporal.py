"""Temporal heads: masked pooling, padding that changes nothing, order sensitivity, the frozen
per-frame backbone, checkpointing, learning a toy order task."""

import copy

import pytest
import torch

from tubelet.engine.checkpoint import load_model, save_model
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec
from tubelet.models.temporal import FrameTemporalClassifier, SequenceClassifier, masked_mean

TINY = {"in_dim": 6, "width": 8, "depth": 2, "num_heads": 2, "max_len": 10}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny layers run fastest on one thread on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _features(b=2, t=5, d=6, seed=0):
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed))


def test_frame_mean_is_the_mean_then_linear():
    model = create_model("frame_mean", in_dim=6, num_classes=3).eval()
    x = _features()
    assert isinstance(model, SequenceClassifier) and model.num_features == 6
    torch.testing.assert_close(model(x), model.fc(x.mean(1)))
    assert torch.equal(model.forward_head(model.forward_features(x), pre_logits=True), x.mean(1))
    # Any order of the frames gives the same logits.
    torch.testing.assert_close(model(x.flip(1)), model(x))


@pytest.mark.parametrize("name, args", [("frame_mean", {"in_dim": 6}),
                                        ("frame_transformer", TINY),
                                        ("frame_transformer", {**TINY, "pool": "mean"})])  # fmt: skip
def test_padding_changes_nothing(name, args):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **args).eval()
    x = _features(t=4)
    padded = torch.cat([x, torch.randn(2, 3, 6) * 100], dim=1)  # (B, 7, D) garbage past the end
    mask = torch.tensor([[True] * 4 + [False] * 3] * 2)
    torch.testing.assert_close(model(padded, mask), model(x), rtol=1e-5, atol=1e-5)


def test_masked_mean():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0
    assert masked_mean(x, None).item() == pytest.approx(104 / 3)


def test_transformer_sees_order_and_checks_its_input():
    torch.manual_seed(0)
    model = create_model("frame_transformer", num_classes=3, **TINY).eval()
    x = _features()
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 6, 8)  # class token + 5 frames
    assert torch.equal(model.forward_head(tokens, pre_logits=True), tokens[:, 0])
    assert not torch.allclose(model(x.flip(1)), model(x), atol=1e-4)
    with pytest.raises(ValueError, match="max_len >= 11"):
        model(_features(t=11))
    with pytest.raises(ValueError, match=r"\(B, T, 6\)"):
        model(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="mask must be bool"):
        model(x, torch.ones(2, 5))
    with pytest.raises(ValueError, match="pool"):
        create_model("frame_transformer", pool="max")


@pytest.mark.parametrize("level", [True, "selective"])
def test_transformer_head_contract_and_checkpointing(level):
    torch.manual_seed(0)
    model = create_model("frame_transformer", num_classes=3, dropout=0.2, **TINY).train()
    model.reset_classifier(4)
    x = _features(b=3)
    target = torch.tensor([0, 1, 3])
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(level)
    for net in (model, ckpt):
        torch.manual_seed(1)
        torch.nn.functional.cross_entropy(net(x), target).backward()
    for (key, p), q in zip(model.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=key)
    assert ckpt.encoder.grad_checkpointing == ("full" if level is True else level)
    with pytest.raises(ValueError, match="unknown grad checkpointing level 'some'"):
        ckpt.set_grad_checkpointing("some")


def test_transformer_learns_an_order_task_mean_pooling_cannot():
    # Two classes: each sequence of class 0 has a partner of class 1 with its features reversed.
    torch.manual_seed(0)
    base = torch.randn(32, 6, 6) * 0.3 + torch.linspace(-1, 1, 6)[None, :, None]  # (N, T, D)
    x = torch.stack([base, base.flip(1)], dim=1).flatten(0, 1)  # (2N, T, D): pairs side by side
    labels = torch.arange(64) % 2
    results = {}
    for name, args in (("frame_mean", {"in_dim": 6}), ("frame_transformer", {**TINY, "width": 16})):
        torch.manual_seed(0)
        model = create_model(name, num_classes=2, **args)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(80):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), labels).backward()
            opt.step()
        with torch.no_grad():
            results[name] = (model.eval()(x).argmax(1) == labels).float().mean().item()
    assert results["frame_transformer"] == 1.0
    assert results["frame_mean"] == 0.5  # partners have equal means: one of each pair is wrong


def test_frame2d_transformer_runs_a_frozen_backbone(tmp_path):
    torch.manual_seed(0)
    backbone = create_model("frame2d_resnet18", width=4, num_classes=3)
    save_model(
        tmp_path / "f2d" / "best",
        backbone.eval(),
        ModelSpec("frame2d_resnet18", {"width": 4, "num_classes": 3}, "classification"),
    )
    model = create_model("frame2d_transformer", width=4, num_classes=5, num_heads=2,
                         backbone_checkpoint=str(tmp_path / "f2d"))  # fmt: skip
    assert isinstance(model, FrameTemporalClassifier) and model.num_features == 32
    clip = torch.randn(2, 3, 4, 32, 32)
    model.train()
    assert not model.backbone.training  # frozen: BatchNorm statistics stay
    with torch.no_grad():
        expected = backbone.forward_features(clip).mean((3, 4)).transpose(1, 2)  # (B, T, D)
        torch.testing.assert_close(
            model.eval().forward_features(clip).transpose(1, 2), model.encoder(expected)
        )
    feats = model.forward_features(clip)
    assert feats.shape == (2, 32, 5)  # channel-first tokens, class token first
    assert torch.equal(model.forward_head(feats, pre_logits=True), feats[:, :, 0])
    model.train()
    torch.nn.functional.cross_entropy(model(clip), torch.tensor([0, 4])).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.encoder.proj.weight.grad is not None
    # A saved model reloads from its own weights, without the backbone checkpoint.
    save_model(
        tmp_path / "run" / "best",
        model,
        ModelSpec(
            "frame2d_transformer", {"width": 4, "num_classes": 5, "num_heads": 2}, "classification"
        ),
    )
    again, _ = load_model(tmp_path / "run")
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(clip), model.eval()(clip))
    with pytest.raises(ValueError, match="-m width=4"):
        create_model("frame2d_transformer", width=8, backbone_checkpoint=str(tmp_path / "f2d"))
    with pytest.raises(FileNotFoundError, match="no tubelet checkpoint"):
        create_model("frame2d_transformer", width=4, backbone_checkpoint=str(tmp_path))


def test_frame2d_transformer_needs_a_per_frame_backbone():
    model = create_model("frame2d_transformer", backbone="r2plus1d_18", width=4, num_heads=2)
    with pytest.raises(ValueError, match="per-frame backbone"):
        model(torch.randn(1, 3, 8, 32, 32))
