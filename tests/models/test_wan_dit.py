"""The Wan diffusion transformer: shapes, text conditioning, RoPE positions, checkpointing
(parity with diffusers: tests/convert/test_diffusers.py)."""

import pytest
import torch

from tubelet.models import create_model, model_kind
from tubelet.models.wan_dit import WanDiT

SMALL = {"in_channels": 4, "width": 24, "num_heads": 2, "ffn_dim": 32, "num_layers": 2,
         "text_dim": 8, "freq_dim": 16}  # fmt: skip


def small(**kwargs) -> WanDiT:
    torch.manual_seed(0)
    return create_model("wan_dit", **{**SMALL, **kwargs})


def inputs(b=2, grid=(3, 4, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 4, *grid, generator=g), torch.tensor([10.0, 900.0][:b]),
            torch.randn(b, 3, 8, generator=g))  # fmt: skip


def test_registered_variants_are_generation_models():
    for name in ("wan_dit", "wan2_1_t2v_1_3b", "wan2_1_t2v_14b"):
        assert model_kind(name) == "generation"


def test_output_has_the_input_shape_and_depends_on_the_text():
    model = small().eval()
    x, t, text = inputs()
    with torch.no_grad():
        out = model(x, t, text)
        other = model(x, t, text.flip(0))
        empty = model(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, other) and not torch.allclose(out, empty)


def test_masked_text_tokens_are_ignored():
    model = small().eval()
    x, t, text = inputs()
    mask = torch.tensor([[True, True, False], [True, False, False]])
    changed = text.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 8)
    with torch.no_grad():
        assert torch.allclose(model(x, t, text, mask), model(x, t, changed, mask), atol=1e-6)


def test_rope_makes_the_output_position_dependent():
    model = small().eval()
    x, t, text = inputs(b=1)
    rolled = x.roll(1, dims=4)
    with torch.no_grad():
        out, out_rolled = model(x, t, text), model(rolled, t, text)
    assert not torch.allclose(out.roll(1, dims=4), out_rolled, atol=1e-4)


@pytest.mark.parametrize("level", [True, "selective"])
def test_checkpointing_keeps_output_and_gradients(level):
    model = small().train()
    x, t, text = inputs()
    out = model(x, t, text)
    out.square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(level)
    again = model(x, t, text)
    again.square().mean().backward()
    assert torch.allclose(out, again, atol=1e-6)
    for g, p in zip(grads, model.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_bad_inputs_are_named():
    model = small()
    x, t, text = inputs()
    with pytest.raises(ValueError, match="divisible by the patch size"):
        model(x[..., :5], t, text)
    with pytest.raises(ValueError, match="text embeddings"):
        model(x, t, torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="unknown grad checkpointing level"):
        model.set_grad_checkpointing("half")
