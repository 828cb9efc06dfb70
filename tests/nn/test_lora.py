"""LoRA through PEFT: an adapted model starts as its base, trains only the adapters, saves them
alone, loads them onto fresh base weights, and merges into the base exactly."""

import pytest
import torch

from tubelet.models import create_model
from tubelet.nn.lora import (
    AdapterOnly,
    LoraSpec,
    adapter_state_dict,
    add_lora,
    load_adapter,
    merge_lora,
    read_adapter,
    save_adapter,
)

SMALL = {"in_channels": 4, "width": 24, "num_heads": 2, "ffn_dim": 32, "num_layers": 2,
         "text_dim": 8, "freq_dim": 16}  # fmt: skip


def base():
    torch.manual_seed(0)
    return create_model("wan_dit", **SMALL).eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, 4, 2, 4, 4, generator=g), torch.tensor([5.0, 500.0]),
            torch.randn(2, 3, 8, generator=g))  # fmt: skip


def randomise_adapters(model):
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_adapted_model_starts_as_the_base_and_trains_only_adapters():
    model, reference = base(), base()
    names = add_lora(model, LoraSpec(rank=4, alpha=8))
    assert len(names) == 2 * 8  # qkv, proj, q, k, v, proj, fc1, fc2 per block
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".lora_" in n for n in trained)
    x, t, text = inputs()
    with torch.no_grad():
        assert torch.allclose(model(x, t, text), reference(x, t, text), atol=1e-6)
    model.train().set_grad_checkpointing(True)
    model(x, t, text).square().mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if ".lora_B" in n)


def test_adapter_saves_alone_loads_onto_fresh_base_and_merges(tmp_path):
    spec = LoraSpec(rank=3, alpha=6)
    model = base()
    add_lora(model, spec)
    randomise_adapters(model)
    x, t, text = inputs()
    with torch.no_grad():
        adapted = model(x, t, text)
    path = tmp_path / "adapter.safetensors"
    save_adapter(model, spec, path)
    saved_spec, tensors = read_adapter(path)
    assert saved_spec == spec and all(".lora_" in k for k in tensors)
    assert sum(v.numel() for v in tensors.values()) < 0.2 * sum(
        p.numel() for p in base().parameters()
    )

    fresh = base()
    assert load_adapter(fresh, path) == spec
    with torch.no_grad():
        assert torch.allclose(fresh(x, t, text), adapted, atol=1e-5)
        merged = merge_lora(fresh)
        assert set(merged.state_dict()) == set(base().state_dict())
        assert torch.allclose(merged(x, t, text), adapted, atol=1e-5)


def test_adapter_only_checkpoints_the_adapters():
    model = base()
    add_lora(model, LoraSpec(rank=2, alpha=2))
    randomise_adapters(model)
    wrapper = AdapterOnly(model)
    state = wrapper.state_dict()
    assert state and all(k.startswith("denoiser.") and ".lora_" in k for k in state)
    other = base()
    add_lora(other, LoraSpec(rank=2, alpha=2))
    AdapterOnly(other).load_state_dict(state)
    for k, v in adapter_state_dict(other).items():
        assert torch.equal(v, state[f"denoiser.{k}"])
    with pytest.raises(ValueError, match="does not fit"):
        AdapterOnly(other).load_state_dict({"denoiser.nothing": torch.zeros(1)})


def test_bad_targets_and_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="match no Linear"):
        add_lora(base(), LoraSpec(rank=2, alpha=2, targets=r".*\.nothing$"))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoraSpec(rank=0, alpha=1)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a tubelet LoRA adapter"):
        read_adapter(tmp_path / "plain.safetensors")
