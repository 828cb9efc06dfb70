"""checkpoint_module: same outputs, gradients and buffers as a plain call, with recomputation;
the selective level keeps the attention outputs."""

import copy
from functools import partial

import pytest
import torch
from torch import nn

from tubelet.nn import checkpoint_module
from tubelet.nn.attention import Attention
from tubelet.nn.checkpoint import checkpoint_level


def block() -> nn.Module:
    """BatchNorm (EMA and cumulative-average counters) and dropout, so replay errors show."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(8, 4, 3, padding=1),
        nn.BatchNorm2d(4, momentum=None),
    ).train()


def count_calls(module: nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_pre_hook(lambda mod, args: calls.append(1))
    return calls


@pytest.mark.parametrize("steps", [1, 3])
def test_matches_a_plain_call(steps):
    plain, ckpt = block(), block()
    plain_calls, ckpt_calls = count_calls(plain), count_calls(ckpt)
    for step in range(steps):
        x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(step))
        x_plain, x_ckpt = x.clone().requires_grad_(), x.clone().requires_grad_()
        torch.manual_seed(100 + step)  # same dropout mask for both
        out_plain = plain(x_plain)
        torch.manual_seed(100 + step)
        out_ckpt = checkpoint_module(ckpt, x_ckpt)
        out_plain.square().sum().backward()
        out_ckpt.square().sum().backward()
        torch.testing.assert_close(out_ckpt, out_plain)
        torch.testing.assert_close(x_ckpt.grad, x_plain.grad)
    assert len(plain_calls) == steps and len(ckpt_calls) == 2 * steps  # recomputed in backward
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=key)
    # Running statistics and batch counters as if each batch had been seen once.
    for (key, b), c in zip(plain.named_buffers(), ckpt.buffers(), strict=True):
        torch.testing.assert_close(c, b, msg=key)
    assert int(ckpt[1].num_batches_tracked) == steps


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, y: torch.Tensor, *, scale: float) -> torch.Tensor:
        self.calls += 1
        return self.linear(x) * y * scale


def test_passes_positional_and_keyword_arguments():
    torch.manual_seed(0)
    plain = Scaled()
    ckpt = copy.deepcopy(plain)
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    plain(x, y, scale=2.0).sum().backward()
    out = checkpoint_module(ckpt, x, y, scale=2.0)
    torch.testing.assert_close(out, plain(x, y, scale=2.0))
    out.sum().backward()
    torch.testing.assert_close(ckpt.linear.weight.grad, plain.linear.weight.grad)
    assert int(ckpt.calls) == 1  # the recomputation's increment was undone


class AttentionBlock(nn.Module):
    """x + proj(attention(norm(x))) with dropout after the projection (so RNG replay matters)."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, proj_drop=0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


def saved_bytes(fn, *args):
    """fn(*args) and the bytes of the distinct non-parameter storages autograd saves meanwhile."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return out, seen


@pytest.mark.parametrize("level", ["full", "selective"])
def test_both_levels_match_a_plain_call_with_attention_and_dropout(level):
    torch.manual_seed(0)
    plain = AttentionBlock().train()
    ckpt = copy.deepcopy(plain)
    x = torch.randn(2, 6, 16)
    x_plain, x_ckpt = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(1)
    out_plain = plain(x_plain)
    torch.manual_seed(1)
    out_ckpt = checkpoint_module(ckpt, x_ckpt, level=level)
    out_plain.square().sum().backward()
    out_ckpt.square().sum().backward()
    torch.testing.assert_close(out_ckpt, out_plain)
    torch.testing.assert_close(x_ckpt.grad, x_plain.grad)
    for (key, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=key)


def test_selective_keeps_the_attention_output_and_nothing_else():
    torch.manual_seed(0)
    block = AttentionBlock().train()
    params = {p.untyped_storage()._cdata for p in block.parameters()}
    x = torch.randn(2, 6, 16, requires_grad=True)  # (B, L, D), 2 heads of 8
    kept = {}
    for level in ("full", "selective"):
        _, seen = saved_bytes(partial(checkpoint_module, block, level=level), x)
        kept[level] = sum(n for key, n in seen.items() if key not in params)
    x_bytes = 2 * 6 * 16 * 4
    assert kept["full"] == x_bytes  # only the input
    # + the attention output (B, heads, L, 8) and its log-sum-exp (B, heads, L), float32
    assert kept["selective"] == x_bytes + 2 * 2 * 6 * 8 * 4 + 2 * 2 * 6 * 4


def test_levels_are_named_and_bad_ones_refused():
    assert checkpoint_level(True) == "full" and checkpoint_level("full") == "full"
    assert checkpoint_level(False) is None
    assert checkpoint_level("selective") == "selective"
    with pytest.raises(ValueError, match="unknown grad checkpointing level 'half'"):
        checkpoint_level("half")
    with pytest.raises(ValueError, match="unknown checkpoint level 'half'"):
        checkpoint_module(nn.Linear(2, 2), torch.randn(1, 2), level="half")
