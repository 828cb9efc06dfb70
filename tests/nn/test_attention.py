import pytest
import torch

from tubelet.nn.attention import (
    Attention,
    AttentionCost,
    attention_cost,
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


def test_attention_cost_reproduces_the_timesformer_arithmetic() -> None:
    # ViT-B/16 at 224 px, 8 frames: N = 14 * 14 = 196 patches per frame, width 768.
    cost = attention_cost(8, 196, 768, window=(8, 7, 7))
    assert cost["joint"].tokens_attended == 1568  # 8 * 196
    assert cost["divided"].tokens_attended == 204  # 8 + 196
    assert cost["space_only"].tokens_attended == 196
    assert cost["windowed"].tokens_attended == 392  # 8 * 7 * 7
    assert cost["joint"].tokens_attended / cost["divided"].tokens_attended == pytest.approx(
        7.686, abs=1e-3
    )
    assert cost["joint"].qk_macs_per_token == 1568 * 768 == 1_204_224
    assert cost["divided"].av_macs_per_token == 204 * 768 == 156_672
    assert cost["joint"].qk_macs_per_clip == 1_888_223_232  # 1568^2 * 768
    assert cost["divided"].qk_macs_per_clip == 245_661_696  # 1568 * 204 * 768
    assert cost["windowed"].av_macs_per_clip == 472_055_808  # 1568 * 392 * 768


def test_attention_cost_small_case_by_hand_and_window_clipping() -> None:
    cost = attention_cost(2, 3, 4, window=4)
    assert set(cost) == {"joint", "divided", "space_only", "windowed"}
    assert cost["joint"] == AttentionCost(6, 24, 24, 144, 144)
    assert cost["divided"] == AttentionCost(5, 20, 20, 120, 120)
    assert cost["space_only"] == AttentionCost(3, 12, 12, 72, 72)
    assert cost["windowed"] == AttentionCost(4, 16, 16, 96, 96)
    # A window larger than the clip covers the clip: the same work as joint attention.
    assert attention_cost(2, 3, 4, window=(4, 7, 7))["windowed"] == cost["joint"]
    assert "windowed" not in attention_cost(2, 3, 4)


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 3, 4), "frames"), ((2, 0, 4), "patches"), ((2, 3, 0), "dim")],
)
def test_attention_cost_rejects_empty_sizes(args, match) -> None:
    with pytest.raises(ValueError, match=match):
        attention_cost(*args)
    with pytest.raises(ValueError, match="window"):
        attention_cost(2, 3, 4, window=(2, 0, 7))


def test_softcapped_attention_bounds_scores_and_is_plain_attention_for_a_large_cap():
    from tubelet.nn.attention import softcapped_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    mask = torch.rand(2, 1, 5, 5) > 0.3
    mask[..., 0] = True  # every query keeps one key
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(softcapped_attention(q, k, v, 1e6, mask=mask), plain)
    capped = softcapped_attention(q * 100, k, v, 1.0)  # scores in (-1, 1): weights within e^2
    expected = torch.softmax(torch.tanh(q * 100 @ k.transpose(-2, -1) / 2), -1) @ v
    torch.testing.assert_close(capped, expected)
    attn = Attention(12, 3, softcap=1e6).eval()
    x = torch.randn(2, 5, 12)
    reference = Attention(12, 3).eval()
    reference.load_state_dict(attn.state_dict())
    torch.testing.assert_close(attn(x), reference(x))


def test_cross_attention_equals_its_formula():
    from tubelet.nn.attention import CrossAttention

    torch.manual_seed(0)
    attn = CrossAttention(8, 2, inner_dim=12, out_proj=False)
    queries, tokens = torch.randn(2, 1, 8), torch.randn(2, 7, 8)
    gain = torch.rand(6) + 0.5
    q = attn.q(queries).view(2, 1, 2, 6).transpose(1, 2) * gain
    k = attn.k(tokens).view(2, 7, 2, 6).transpose(1, 2)
    v = attn.v(tokens).view(2, 7, 2, 6).transpose(1, 2)
    expected = (
        (torch.softmax(q @ k.transpose(-2, -1) * 0.5, -1) @ v).transpose(1, 2).reshape(2, 1, 12)
    )
    torch.testing.assert_close(attn(queries, tokens, scale=0.5, query_gain=gain), expected)
