"""RAFT: parity with torchvision's RAFT on shared random weights, both correlation modes, warm
start, the injected parts, convex upsampling and the forward-interpolated warm start."""

import copy

import pytest
import torch
from peer_weights import randomise
from torchvision.models import optical_flow

from tubelet.models import create_model
from tubelet.models.raft import (
    RAFT,
    FlowEstimate,
    UpdateBlock,
    forward_interpolate,
    upsample_flow,
)


def images(shape=(1, 3, 128, 136), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1, torch.rand(shape, generator=g) * 2 - 1


@pytest.fixture(scope="module", params=["raft_small", "raft_large"])
def pair(request, tmp_path_factory):
    """(name, torchvision peer with random weights, path of its saved state dict)."""
    name = request.param
    peer = randomise(getattr(optical_flow, name)(), seed=1)
    path = tmp_path_factory.mktemp(name) / "peer.pth"
    torch.save(peer.state_dict(), path)
    return name, peer, path


@pytest.mark.parametrize("corr_mode", ["all_pairs", "on_demand"])
def test_torchvision_weights_give_torchvisions_flow_at_every_update(pair, corr_mode):
    name, peer, path = pair
    model = create_model(
        name, checkpoint=str(path), checkpoint_format="torchvision", corr_mode=corr_mode
    ).eval()
    x1, x2 = images()
    with torch.no_grad():
        expected = peer(x1, x2, num_flow_updates=3)
        got = model(x1, x2, num_flow_updates=3)
    assert len(got) == 3
    assert expected[-1].abs().max() > 0.5  # a real flow, not a degenerate zero
    for e, g in zip(expected, got, strict=True):
        assert (e - g).abs().max() <= 1e-4


def test_parameter_names_and_counts_match_torchvision(pair):
    name, peer, _ = pair
    model = create_model(name)
    assert list(model.state_dict()) == list(peer.state_dict())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in peer.parameters())


def test_switching_the_correlation_mode_keeps_the_flow():
    torch.manual_seed(0)
    model = create_model("raft_small").eval()
    x1, x2 = images((2, 3, 64, 96))  # smaller than torchvision accepts: 1x1 coarsest level
    with torch.no_grad():
        stored = model(x1, x2, num_flow_updates=2)
        model.set_corr_mode("on_demand", chunk=1000)
        on_demand = model(x1, x2, num_flow_updates=2)
    assert stored[-1].shape == (2, 2, 64, 96)
    torch.testing.assert_close(on_demand[-1], stored[-1], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="corr_mode"):
        model.set_corr_mode("sparse")


class _Still(UpdateBlock):
    """An update block that never moves the flow: the output is the initial flow, upsampled."""

    def forward(self, hidden, context, corr_features, flow):
        hidden, delta = super().forward(hidden, context, corr_features, flow)
        return hidden, torch.zeros_like(delta)


def test_flow_init_is_where_the_updates_start():
    torch.manual_seed(0)
    model = create_model("raft_small").eval()
    still = _Still(
        motion_encoder=model.update_block.motion_encoder,
        recurrent_block=model.update_block.recurrent_block,
        flow_head=model.update_block.flow_head,
    )
    parts = {
        "feature_encoder": model.feature_encoder,
        "context_encoder": model.context_encoder,
        "corr_block": model.corr_block,
    }
    stub = RAFT(update_block=still, **parts).eval()
    x1, x2 = images((1, 3, 64, 96))
    init = torch.randn(1, 2, 8, 12)
    with torch.no_grad():
        out = stub.estimate(x1, x2, 2, flow_init=init)
        zero = stub.estimate(x1, x2, 2)
        plain = model(x1, x2, 2)
        warm = model(x1, x2, 2, flow_init=torch.zeros(1, 2, 8, 12))
    assert isinstance(out, FlowEstimate)
    torch.testing.assert_close(out.flows[-1], upsample_flow(init))
    torch.testing.assert_close(out.flow_low, init)
    assert zero.flows[-1].abs().max() == 0
    torch.testing.assert_close(warm[-1], plain[-1])  # a zero initial flow is no initial flow
    with pytest.raises(ValueError, match="1/8-resolution"):
        model(x1, x2, 2, flow_init=torch.zeros(1, 2, 64, 96))


def test_convex_upsampling_of_a_constant_flow_is_constant_times_eight():
    flow = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1).expand(1, 2, 3, 4)
    mask = torch.randn(1, 9 * 64, 3, 4)
    up = upsample_flow(flow, mask)
    # Interior pixels mix 9 equal neighbours; border ones also mix zero padding, so check inside.
    torch.testing.assert_close(up[:, :, 8:16, 8:24], flow[:, :, :1, :1].expand(1, 2, 8, 16) * 8)


def test_forward_interpolate_moves_vectors_to_where_they_point():
    constant = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 6, 8).contiguous()
    torch.testing.assert_close(forward_interpolate(constant), constant)
    flow = torch.zeros(1, 2, 6, 8)
    flow[0, :, 1:3, 1:3] = torch.tensor([3.0, 2.0]).view(2, 1, 1)  # a 2x2 patch moving (+3, +2)
    carried = forward_interpolate(flow)
    # Each destination also keeps its own (zero) vector: the splats average to half the motion.
    torch.testing.assert_close(carried[0, :, 3:5, 4:6], flow[0, :, 1:3, 1:3] / 2)
    # The patch's old place receives no vector and keeps its own; far pixels are untouched.
    torch.testing.assert_close(carried[0, :, 1:3, 1:3], flow[0, :, 1:3, 1:3])
    assert carried[0, :, 0, 7].abs().max() == 0


def test_grad_checkpointing_keeps_outputs_and_gradients():
    torch.manual_seed(0)
    plain = create_model("raft_small").train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    assert ckpt.grad_checkpointing and not plain.grad_checkpointing
    x1, x2 = images((1, 3, 64, 64))
    for model in (plain, ckpt):
        sum(f.abs().mean() for f in model(x1, x2, num_flow_updates=2)).backward()
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=key, atol=1e-5, rtol=1e-4)


def test_bad_inputs_are_named():
    model = create_model("raft_small").eval()
    with pytest.raises(ValueError, match="divisible by 8"):
        model(*images((1, 3, 64, 90)))
    with pytest.raises(ValueError, match="one shape"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 72))
    with pytest.raises(ValueError, match="at least 64 pixels"):
        model(*images((1, 3, 32, 64)))
    with pytest.raises(ValueError, match="corr_mode"):
        create_model("raft_large", corr_mode="dense")
