import pytest
import torch

from tubelet.models import create_model
from tubelet.models.actionformer import (
    ActionFormer,
    DetectorOutput,
    WindowOutput,
    local_attention_mask,
)


def tiny(**kw):
    torch.manual_seed(0)
    args = {"input_dim": 6, "num_classes": 3, "width": 16, "num_heads": 2, "window": 3,
            "stem_layers": 1, "levels": 3, **kw}  # fmt: skip
    return ActionFormer(**args)


def test_local_attention_mask_is_a_band_over_real_keys():
    mask = torch.tensor([[True, True, True, True, False]])
    m = local_attention_mask(mask, window=3)[0, 0]
    assert m.shape == (5, 5)
    assert m[0].tolist() == [True, True, False, False, False]
    assert m[2].tolist() == [False, True, True, True, False]
    assert m[3].tolist() == [False, False, True, True, False]  # key 4 is padding
    assert m[4].tolist() == [False, False, False, True, True]  # a padded query: never an empty row


def test_output_shapes_strides_and_masks():
    model = tiny().eval()
    x = torch.randn(2, 6, 16)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 10:] = False
    out = model(x, mask)
    assert isinstance(out, DetectorOutput)
    assert out.strides == [1, 2, 4]
    assert [o.shape for o in out.cls_logits] == [(2, 16, 3), (2, 8, 3), (2, 4, 3)]
    assert [o.shape for o in out.offsets] == [(2, 16, 2), (2, 8, 2), (2, 4, 2)]
    assert out.masks[1][1].tolist() == [True] * 5 + [False] * 3
    assert all((o >= 0).all() for o in out.offsets)
    # The focal-loss prior: the classifier's bias starts every class at probability 0.01.
    bias = model.cls_head.out.conv.bias
    torch.testing.assert_close(torch.sigmoid(bias), torch.full_like(bias, 0.01))


def test_padding_does_not_change_the_real_steps():
    model = tiny().eval()
    x = torch.randn(1, 6, 12)
    short = model(torch.nn.functional.pad(x, (0, 4)), torch.arange(16)[None] < 12)
    junk = torch.nn.functional.pad(x, (0, 4))
    junk[..., 12:] = 50.0  # padding content must not leak into real steps
    leaked = model(junk, torch.arange(16)[None] < 12)
    torch.testing.assert_close(short.cls_logits[0][:, :12], leaked.cls_logits[0][:, :12])
    torch.testing.assert_close(short.offsets[0][:, :12], leaked.offsets[0][:, :12])
    torch.testing.assert_close(short.cls_logits[1][:, :6], leaked.cls_logits[1][:, :6])


def test_attention_is_local():
    # With no convolutions beyond the window reach, a change far away leaves a step's stem output.
    model = tiny(levels=1).eval()
    x = torch.randn(1, 6, 32)
    y = x.clone()
    y[..., 30] += 10
    mask = torch.ones(1, 32, dtype=torch.bool)
    a, b = model(x, mask), model(y, mask)
    # Receptive field at step 0: 2 embedding convs (+2), 1 block of window 3 (+1), head convs (+3).
    torch.testing.assert_close(a.cls_logits[0][:, :20], b.cls_logits[0][:, :20])
    assert not torch.allclose(a.cls_logits[0][:, 28:], b.cls_logits[0][:, 28:])


def test_bad_inputs_are_named():
    model = tiny()
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 5, 16), torch.ones(1, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.randn(1, 6, 10), torch.ones(1, 10, dtype=torch.bool))


def test_grad_checkpointing_keeps_output_and_gradients():
    model = tiny().train()
    x = torch.randn(2, 6, 16)
    mask = torch.ones(2, 16, dtype=torch.bool)
    ref = model(x, mask)
    ref_loss = sum(o.sum() for o in ref.cls_logits + ref.offsets)
    ref_loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing()
    out = model(x, mask)
    loss = sum(o.sum() for o in out.cls_logits + out.offsets)
    loss.backward()
    torch.testing.assert_close(loss, ref_loss)
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g)


def test_registered_builders():
    model = create_model("actionformer_tiny", num_classes=4, input_dim=8)
    assert model.num_classes == 4 and model.length_multiple == 16
    baseline = create_model("window_classifier", num_classes=4, input_dim=8, context=1)
    out = baseline(torch.randn(2, 8, 7), torch.ones(2, 7, dtype=torch.bool))
    assert isinstance(out, WindowOutput) and out.logits.shape == (2, 7, 5)
