"""checkpoint_format="raft": the original princeton-vl/RAFT key layout, renamed onto tubelet's RAFT.

The test writes a torchvision RAFT's weights under the original release's names, following the
original `core/extractor.py` and `core/update.py` (including the downsample norm registered twice and
the `module.` prefix of DataParallel checkpoints), then checks the imported model's flow.
"""

import re

import pytest
import torch
from peer_weights import randomise
from torchvision.models import optical_flow

from tubelet.convert import list_formats
from tubelet.convert.raft import from_raft
from tubelet.models import create_model

# torchvision name -> original name, for the update block (core/update.py).
UPDATE = {
    "update_block.motion_encoder.convcorr1.0": "update_block.encoder.convc1",
    "update_block.motion_encoder.convcorr2.0": "update_block.encoder.convc2",
    "update_block.motion_encoder.convflow1.0": "update_block.encoder.convf1",
    "update_block.motion_encoder.convflow2.0": "update_block.encoder.convf2",
    "update_block.motion_encoder.conv.0": "update_block.encoder.conv",
    "mask_predictor.convrelu.0": "update_block.mask.0",
    "mask_predictor.conv": "update_block.mask.2",
}


def original_layout(state, small):
    """A torchvision RAFT state dict under the original release's names."""
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        name = None
        if m := re.fullmatch(r"(feature|context)_encoder\.(.+)", module):
            net = "fnet" if m[1] == "feature" else "cnet"
            rest = m[2]
            rest = {"convnormrelu.0": "conv1", "convnormrelu.1": "norm1", "conv": "conv2"}.get(
                rest, rest
            )
            rest = re.sub(r"convnormrelu(\d)\.0$", r"conv\1", rest)
            rest = re.sub(r"convnormrelu(\d)\.1$", r"norm\1", rest)
            name = f"{net}.{rest}"
            if rest.endswith("downsample.1"):  # the same norm module as norm3 / norm4
                twin = "norm4" if small else "norm3"
                out[f"module.{net}.{rest[: -len('downsample.1')]}{twin}.{leaf}"] = value
        elif module in UPDATE:
            name = UPDATE[module]
        elif m := re.fullmatch(r"update_block\.recurrent_block\.convgru(\d)\.conv([zrq])", module):
            name = f"update_block.gru.conv{m[2]}" + ("" if small else m[1])
        else:
            name = module  # update_block.flow_head.*
        out[f"module.{name}.{leaf}"] = value
    return out


@pytest.mark.parametrize("name", ["raft_small", "raft_large"])
def test_original_release_layout_gives_torchvisions_flow(name, tmp_path):
    peer = randomise(getattr(optical_flow, name)(), seed=2)
    original = original_layout(peer.state_dict(), small=name == "raft_small")
    if name == "raft_large":  # BatchNorm context encoder: its downsample norm appears twice
        assert "module.cnet.layer2.0.norm3.weight" in original
        assert "module.cnet.layer2.0.downsample.1.weight" in original
    path = tmp_path / "raft-original.pth"
    torch.save(original, path)
    model = create_model(name, checkpoint=str(path), checkpoint_format="raft").eval()
    g = torch.Generator().manual_seed(0)
    x1, x2 = (torch.rand(1, 3, 128, 128, generator=g) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        expected, got = peer(x1, x2, num_flow_updates=2), model(x1, x2, num_flow_updates=2)
    for e, o in zip(expected, got, strict=True):
        assert (e - o).abs().max() <= 1e-4


def test_registered_and_refuses_other_models_and_unknown_keys():
    assert "raft" in list_formats()
    with pytest.raises(ValueError, match="raft_large"):
        from_raft("r2plus1d_18", {})
    with pytest.raises(ValueError, match="unexpected key"):
        from_raft("raft_small", {"fnet.layer1.0.attention.weight": torch.zeros(1)})
