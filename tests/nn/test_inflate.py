"""I3D inflation: kernels repeated over time / kT, and an audited load that refuses partial fits."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tubelet.nn import InflationReport, inflate_state_dict, load_inflated
from tubelet.nn.inflate import inflate_conv_weight


class Net2d(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, classes)


class Net3d(nn.Module):
    def __init__(self, classes: int = 4, time: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 5, (time, 3, 3), padding=(time // 2, 1, 1), bias=False)
        self.bn = nn.BatchNorm3d(5)
        self.fc = nn.Linear(5, classes)


def state_2d(classes: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = Net2d(classes)
    with torch.no_grad():
        net.bn.running_mean.normal_()
    return net.state_dict()


def test_kernel_is_repeated_over_time_and_divided_by_its_length():
    weight = torch.randn(2, 3, 3, 3)
    inflated = inflate_conv_weight(weight, 5)
    assert inflated.shape == (2, 3, 5, 3, 3)
    for t in range(5):
        torch.testing.assert_close(inflated[:, :, t], weight / 5)
    torch.testing.assert_close(inflated.sum(2), weight)
    with pytest.raises(ValueError, match=r"\(O, I, kH, kW\)"):
        inflate_conv_weight(torch.randn(2, 3, 3), 3)
    with pytest.raises(ValueError, match=">= 1"):
        inflate_conv_weight(weight, 0)


def test_inflated_conv_on_a_static_clip_equals_the_2d_conv_away_from_the_ends():
    weight = torch.randn(4, 3, 3, 3)
    frame = torch.randn(1, 3, 8, 8)
    clip = frame.unsqueeze(2).expand(-1, -1, 9, -1, -1)  # (1, 3, 9, 8, 8), one frame repeated
    out = F.conv3d(clip, inflate_conv_weight(weight, 5), padding=(2, 1, 1))
    expected = F.conv2d(frame, weight, padding=1)
    for t in range(2, 7):  # the 5-frame kernel sees no zero padding here
        torch.testing.assert_close(out[:, :, t], expected)
    assert not torch.allclose(out[:, :, 0], expected, atol=1e-3)  # zero padding at the ends


def test_report_sorts_every_key():
    state, report = inflate_state_dict(state_2d(), Net3d())
    assert report.inflated == ("conv.weight",)
    assert set(report.copied) == {
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
        "fc.weight",
        "fc.bias",
    }
    assert report.skipped == report.missing == report.unexpected == report.mismatched == ()
    assert report.complete
    assert state["conv.weight"].shape == (5, 3, 3, 3, 3)


def test_load_copies_and_inflates():
    source = state_2d()
    model = Net3d(time=1)
    report = load_inflated(model, source)
    assert report.inflated == ("conv.weight",)  # kT = 1: a reshape, still reported
    torch.testing.assert_close(model.conv.weight[:, :, 0], source["conv.weight"])
    assert torch.equal(model.bn.running_mean, source["bn.running_mean"])
    assert torch.equal(model.fc.weight, source["fc.weight"])


def test_partial_load_is_refused_naming_the_keys():
    source = state_2d()
    source["extra.weight"] = torch.zeros(1)
    del source["bn.running_var"]
    model = Net3d(classes=7)
    before = model.conv.weight.clone()
    with pytest.raises(ValueError) as err:
        load_inflated(model, source, source="net2d.pth", hint="try the 2D twin")
    message = str(err.value)
    assert "net2d.pth" in message and "try the 2D twin" in message
    assert "missing: bn.running_var" in message
    assert "unexpected: extra.weight" in message
    assert "fc.weight: checkpoint (4, 5) vs model (7, 5)" in message
    assert torch.equal(model.conv.weight, before)  # nothing was loaded


def test_skip_leaves_named_modules_to_the_model():
    torch.manual_seed(1)
    model = Net3d(classes=7)
    head = model.fc.weight.clone()
    source = state_2d(classes=1000)
    source["aux.weight"] = torch.zeros(2)
    report = load_inflated(model, source, skip=("fc", "aux.weight"))
    assert set(report.skipped) == {"fc.weight", "fc.bias", "aux.weight"}
    assert report.complete
    assert torch.equal(model.fc.weight, head)  # the new head keeps its initialisation
    assert torch.equal(model.bn.running_mean, source["bn.running_mean"])


def test_skip_matches_whole_names_not_prefixes():
    _, report = inflate_state_dict(state_2d(), Net3d(), skip=("f",))
    assert report.skipped == ()


def test_report_is_frozen():
    report = InflationReport((), (), (), (), (), ())
    with pytest.raises(AttributeError):
        report.inflated = ("x",)
    report.raise_if_partial("anything")  # a complete report raises nothing
