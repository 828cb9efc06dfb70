"""Video Swin: parity with torchvision's SwinTransformer3d through the torchvision importer, small
inputs and non-multiple sizes, mismatched checkpoints, checkpointing, and a tiny training run.

The full-size swin3d_t/s/b parity runs with the other torchvision peers in
tests/convert/test_torchvision.py; here small configs cover the window cases."""

import copy

import pytest
import torch
from peer_weights import randomise
from torch import nn
from torchvision.models.video.swin_transformer import SwinTransformer3d as PeerSwin

from tubelet.models import create_model
from tubelet.models.swin3d import WindowAttention3d
from tubelet.nn.attention import Attention

SMALL = {"width": 16, "depths": (2, 2), "num_heads": (2, 4)}


def _peer(
    width=16, depths=(2, 2), num_heads=(2, 4), window_size=(8, 7, 7), num_classes=5, **kwargs
):
    """torchvision's Swin3D with random weights everywhere: Linear layers and norms (so no
    LayerNorm is an identity) and the relative position bias tables (scaled up so a wrong offset
    lookup changes the output)."""
    torch.manual_seed(0)
    peer = PeerSwin(
        patch_size=[2, 4, 4],
        embed_dim=width,
        depths=list(depths),
        num_heads=list(num_heads),
        window_size=list(window_size),
        num_classes=num_classes,
        **kwargs,
    )
    randomise(peer)
    with torch.no_grad():
        for m in peer.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
            if hasattr(m, "relative_position_bias_table"):
                m.relative_position_bias_table.normal_(0.0, 1.0)
    return peer


def _imported(peer, tmp_path, name="swin3d_t", **kwargs):
    path = tmp_path / "peer.pth"
    torch.save(peer.state_dict(), path)
    return create_model(
        name, checkpoint=str(path), checkpoint_format="torchvision", **kwargs
    ).eval()


def _clip(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("window", "shape"),
    [
        ((8, 7, 7), (1, 3, 16, 64, 64)),  # stage 1: 8x16x16 tokens, shifted 8x7x7 windows + padding
        ((2, 7, 7), (2, 3, 6, 40, 40)),  # 3x10x10 tokens: no dim a multiple of the window
        ((8, 7, 7), (1, 3, 6, 40, 40)),  # time smaller than the window; stage 2 H, W too (5 < 7)
        ((2, 3, 3), (2, 3, 12, 44, 52)),  # many shifted windows, masks repeated over the batch
        ((4, 3, 5), (1, 3, 3, 20, 36)),  # odd T and H at patch merging, unequal window sides
        ((8, 7, 7), (1, 3, 2, 16, 16)),  # one window per stage: every dim clipped, no shift
    ],
)
def test_outputs_equal_torchvision(window, shape, tmp_path):
    peer = _peer(window_size=window)
    model = _imported(peer, tmp_path, num_classes=5, window_size=window, **SMALL)
    x = _clip(shape)
    with torch.no_grad():
        ours, theirs = model(x), peer(x)
    assert ours.shape == (shape[0], 5)
    assert (ours - theirs).abs().max() <= 1e-4 * max(1.0, theirs.abs().max().item())


def test_training_step_equals_torchvisions_outputs_and_gradients(tmp_path):
    # Training takes the plain-matmul attention (the bias is trained); eval takes SDPA.
    window = (2, 3, 3)
    peer = _peer(window_size=window, stochastic_depth_prob=0.0).train()
    model = _imported(
        peer, tmp_path, num_classes=5, window_size=window, stochastic_depth_prob=0.0, **SMALL
    ).train()
    x = _clip((2, 3, 4, 24, 24))  # 2x6x6 tokens: shifted windows in stage 1
    ours, theirs = model(x), peer(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    ours.square().sum().backward()
    theirs.square().sum().backward()
    peer_grads = {k.replace("head.", "fc.", 1): p.grad for k, p in peer.named_parameters()}
    for key, p in model.named_parameters():
        torch.testing.assert_close(p.grad, peer_grads[key], rtol=1e-4, atol=1e-4, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ours.detach(), rtol=1e-5, atol=1e-5)


def test_three_stages_import_into_another_variant(tmp_path):
    peer = _peer(width=8, depths=(1, 2, 1), num_heads=(1, 2, 4), window_size=(2, 3, 3))
    model = _imported(
        peer, tmp_path, "swin3d_b", num_classes=5, width=8, depths=(1, 2, 1),
        num_heads=(1, 2, 4), window_size=(2, 3, 3),
    )  # fmt: skip
    x = _clip((1, 3, 8, 48, 48))
    with torch.no_grad():
        torch.testing.assert_close(model(x), peer(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["swin3d_t", "swin3d_s", "swin3d_b"])
def test_variants_have_torchvisions_keys_and_shapes(name):
    import torchvision.models.video as tvv

    with torch.device("meta"):  # no memory, no initialisation work
        peer = getattr(tvv, name)()
        ours = create_model(name)
    theirs = {k: v.shape for k, v in peer.state_dict().items()}
    assert {k.replace("fc.", "head.", 1): v.shape for k, v in ours.state_dict().items()} == theirs
    assert [m.num_heads for m in ours.modules() if isinstance(m, WindowAttention3d)] == [
        m.num_heads for m in peer.modules() if hasattr(m, "relative_position_bias_table")
    ]


def test_every_attention_is_the_shared_layer():
    model = create_model("swin3d_t", num_classes=3, **SMALL)
    attns = [m for m in model.modules() if isinstance(m, WindowAttention3d)]
    assert len(attns) == 4 and all(isinstance(m, Attention) for m in attns)
    assert [m.shift_size for m in attns] == [(0, 0, 0), (4, 3, 3)] * 2


def test_default_heads_are_one_per_32_channels():
    model = create_model("swin3d_t", num_classes=3, width=64, depths=(1, 1, 1))
    heads = [m.num_heads for m in model.modules() if isinstance(m, WindowAttention3d)]
    assert heads == [2, 4, 8]
    assert create_model("swin3d_t", width=8).num_features == 64


def test_mismatched_checkpoints_are_refused_with_the_keys(tmp_path):
    peer = _peer(window_size=(2, 7, 7))
    with pytest.raises(
        ValueError,
        match=r"features\.0\.0\.attn\.relative_position_bias_table: checkpoint \(507, 2\) vs "
        r"model \(2535, 2\)",
    ):
        _imported(peer, tmp_path, num_classes=5, **SMALL)  # the default 8x7x7 window
    with pytest.raises(ValueError, match=r"unexpected: features\.1\.norm\.bias"):
        _imported(
            peer, tmp_path, num_classes=5, width=16, depths=(2,), num_heads=(2,),
            window_size=(2, 7, 7),
        )  # fmt: skip


def test_bad_arguments_and_inputs_are_named():
    with pytest.raises(ValueError, match="depths"):
        create_model("swin3d_t", depths=(2, 2), num_heads=(2,))
    with pytest.raises(ValueError, match="window_size"):
        create_model("swin3d_t", window_size=(7, 7))
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        create_model("swin3d_t", width=16, depths=(1,), num_heads=(3,))
    model = create_model("swin3d_t", num_classes=3, **SMALL)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        model(torch.randn(3, 8, 32, 32))


def test_grad_checkpointing_with_stochastic_depth_changes_nothing():
    torch.manual_seed(0)
    plain = create_model(
        "swin3d_t", num_classes=3, stochastic_depth_prob=0.5, block_dropout=0.1, **SMALL
    ).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    x = _clip((2, 3, 4, 32, 32))
    for model in (plain, ckpt):
        torch.manual_seed(1)  # the same drop decisions in both
        model(x).square().sum().backward()
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=key)
    torch.manual_seed(1)
    torch.testing.assert_close(ckpt(x), (torch.manual_seed(1), plain(x))[1])


@pytest.mark.slow
def test_a_tiny_swin3d_trains_one_epoch_and_reloads(tiny_dataset, tmp_path):
    from tubelet import jobs
    from tubelet.engine.checkpoint import load_model

    job = jobs.TrainJob(
        out=tmp_path / "run", data=tiny_dataset, model="swin3d_t",
        model_args={"width": 8, "depths": [1, 1], "window_size": [2, 4, 4]},
        frames=4, size=32, epochs=1, batch_size=8, workers=0,
    )  # fmt: skip
    summary = jobs.train(job, show_progress=False)
    assert summary["model"] == "swin3d_t" and summary["epochs"] == 1
    assert 0.0 <= summary["val_top1"] <= 1.0
    model, spec = load_model(tmp_path / "run")  # the JSON spec's lists rebuild the same model
    assert spec.model_args["window_size"] == [2, 4, 4]
    assert model.features[0][0].attn.window_size == (2, 4, 4)
    with torch.no_grad():
        logits = model.eval()(_clip((1, 3, 4, 32, 32)))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()
