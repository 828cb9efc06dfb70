import torch

from tubelet.nn.attention import (
    Attention,
    joint_attention,
    spatial_attention,
    temporal_attention,
)


def reference(attn: Attention, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Attention written out: softmax(q k^T / sqrt(d) + bias) v, per head."""
    b, n, d = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-1, -2) / (d // h) ** 0.5
    if bias is not None:
        scores = scores + bias
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
    return attn.proj(out)


def test_attention_equals_the_written_out_formula_with_and_without_a_bias() -> None:
    torch.manual_seed(0)
    attn = Attention(32, 4).eval()
    x = torch.randn(2, 10, 32)
    bias = torch.randn(4, 10, 10)
    torch.testing.assert_close(attn(x), reference(attn, x), atol=1e-5, rtol=0)
    torch.testing.assert_close(attn(x, bias), reference(attn, x, bias), atol=1e-5, rtol=0)


def test_factorisations_group_the_tokens_as_documented() -> None:
    torch.manual_seed(0)
    attn = Attention(16, 2).eval()
    x = torch.randn(2, 3, 5, 16)  # B, T, N, D
    joint = joint_attention(attn, x)
    torch.testing.assert_close(joint[1], reference(attn, x[1].reshape(1, 15, 16)).view(3, 5, 16))
    temporal = temporal_attention(attn, x)
    torch.testing.assert_close(temporal[1, :, 4], reference(attn, x[1:2, :, 4])[0])
    spatial = spatial_attention(attn, x)
    torch.testing.assert_close(spatial[0, 2], reference(attn, x[0:1, 2])[0])


def test_a_boolean_mask_blocks_attention() -> None:
    torch.manual_seed(0)
    attn = Attention(8, 1).eval()
    x = torch.randn(1, 4, 8)
    alone = torch.eye(4, dtype=torch.bool)  # each token sees only itself
    expected = attn.proj(attn.qkv(x)[..., 16:])  # its own value
    torch.testing.assert_close(attn(x, alone), expected, atol=1e-5, rtol=0)
