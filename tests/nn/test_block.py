"""The shared pre-norm transformer block: its formula, key names, and the options the families
differ in."""

from functools import partial

import torch
from torch import nn

from tubelet.nn.block import Block
from tubelet.nn.rope import vjepa_rope_3d


def test_block_is_pre_norm_attention_then_mlp_with_timm_key_names():
    torch.manual_seed(0)
    block = Block(12, 2, mlp_dim=16).eval()
    assert [k.rsplit(".", 1)[0] for k in block.state_dict()][::2] == [
        "norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2",
    ]  # fmt: skip
    assert block.mlp.fc1.out_features == 16 and isinstance(block.drop_path, nn.Identity)
    x = torch.randn(2, 5, 12)
    mask = torch.rand(2, 1, 5, 5) > 0.3
    mask[..., 0] = True  # every query may attend somewhere
    rope = vjepa_rope_3d((1, 1, 5), 6)  # (cos, sin), (5, 6) each
    h = x + block.attn(block.norm1(x), mask, rope)
    torch.testing.assert_close(block(x, mask, rope), h + block.mlp(block.norm2(h)))


def test_options_reach_their_layers():
    block = Block(
        8, 2, mlp_dim=16, norm_layer=partial(nn.LayerNorm, eps=1e-3), act_layer=nn.ReLU,
        qkv_bias=False, softcap=50.0, attn_drop=0.1, proj_drop=0.2, drop_path=0.3,
    )  # fmt: skip
    assert block.norm1.eps == block.norm2.eps == 1e-3
    assert isinstance(block.mlp.act, nn.ReLU) and block.mlp.drop.p == 0.2
    assert block.attn.qkv.bias is None and block.attn.softcap == 50.0
    assert block.attn.attn_drop == 0.1 and block.attn.proj_drop.p == 0.2
    assert block.drop_path.p == 0.3


def test_stochastic_depth_drops_whole_samples_in_training_only():
    torch.manual_seed(0)
    block = Block(8, 2, mlp_dim=8, drop_path=0.5)
    x = torch.randn(64, 3, 8)
    block.eval()
    h = x + block.attn(block.norm1(x))
    torch.testing.assert_close(block(x), h + block.mlp(block.norm2(h)))
    out = block.train()(x)
    # A sample whose both branches were dropped comes out as it went in.
    same = (out == x).flatten(1).all(1)
    assert 0 < same.sum() < 64
