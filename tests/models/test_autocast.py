"""Mixed precision reaches every matmul: a bf16-autocast training step of every registered model
runs no matrix product (mm, bmm, addmm, baddbmm, attention kernels, convolutions) on float32 inputs.

The CPU proxy of a GPU profile in which Swin's window attention ran float32 GEMMs under bf16
autocast: the inputs of each op are seen at the dispatcher (`TorchDispatchMode`), forward and
backward. Attention backward's `logsumexp` is float32 by design and is not counted.
"""

from collections import Counter

import pytest
import torch
from tiny_models import ALL_MODELS, has_tiny_case, scalar, tiny_case
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
MATMULS = {aten.mm, aten.bmm, aten.addmm, aten.baddbmm, aten.convolution, aten.convolution_backward}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny layers run fastest on one thread on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def is_matmul(func) -> bool:
    return func.overloadpacket in MATMULS or "attention" in func.overloadpacket.__name__


class Float32Matmuls(TorchDispatchMode):
    """Counts matmul-like ops by name (`seen`) and those given a float32 tensor (`float32`)."""

    def __init__(self):
        super().__init__()
        self.seen, self.float32 = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if is_matmul(func):
            name = func.overloadpacket.__name__
            self.seen[name] += 1
            named = zip(func._schema.arguments, args, strict=False)
            values = [v for a, v in named if a.name != "logsumexp"]
            values += [v for k, v in kwargs.items() if k != "logsumexp"]
            if any(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in values):
                self.float32[name] += 1
        return func(*args, **kwargs)


def count_float32_matmuls(name: str) -> Float32Matmuls:
    model, args = tiny_case(name)
    with Float32Matmuls() as counts:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(*args)
        scalar(out).backward()
    return counts


def test_every_registered_model_has_a_tiny_case():
    assert [name for name in ALL_MODELS if not has_tiny_case(name)] == []


@pytest.mark.parametrize("name", ALL_MODELS)
def test_no_float32_matmul_under_bf16_autocast(name, monkeypatch):
    # An RMSNorm whose float32 weight meets a bf16 input leaves torch's fused kernel for a
    # composite of five (a decomposition the dispatcher cannot tell apart): seen at the call.
    mixed, rms_norm = [], torch.rms_norm

    def checked(x, shape, weight=None, eps=None):
        mixed.extend([weight.dtype] if weight is not None and weight.dtype != x.dtype else [])
        return rms_norm(x, shape, weight, eps)

    monkeypatch.setattr(torch, "rms_norm", checked)
    counts = count_float32_matmuls(name)
    assert sum(counts.seen.values()) > 0  # the step did reach matmuls
    assert counts.float32 == Counter(), f"float32 matmuls in {name}: {dict(counts.float32)}"
    assert mixed == [], f"{len(mixed)} RMSNorms with a {mixed[:1]} weight on other inputs"


def test_the_counter_sees_a_float32_matmul():
    # SDPA with a mask that needs a gradient falls back to math attention, which computes bf16
    # inputs in float32: what Swin's window attention did before it wrote its matmuls out.
    q = torch.randn(2, 2, 8, 4, requires_grad=True)
    bias = torch.randn(1, 2, 8, 8, requires_grad=True)
    with Float32Matmuls() as counts, torch.autocast("cpu", dtype=torch.bfloat16):
        torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=bias).sum()
    assert counts.float32["bmm"] == 2
