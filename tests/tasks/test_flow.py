"""Flow task: sequence loss and metrics against hand computations; the eval step pads and crops."""

import pytest
import torch

from tubelet.data.flow import SyntheticFlowDataset
from tubelet.models import create_model
from tubelet.tasks.flow import FlowMeter, FlowTask, pad_to_multiple, sequence_loss, unpad


def test_sequence_loss_by_hand():
    target = torch.zeros(1, 2, 1, 2)
    first = torch.ones(1, 2, 1, 2)  # |error| 1 everywhere: mean 1
    second = torch.tensor([[[[0.5, -0.5]], [[0.0, 0.0]]]])  # mean of |0.5|, |0.5|, 0, 0 = 0.25
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    loss = sequence_loss([first, second], target, valid)
    torch.testing.assert_close(loss, torch.tensor(0.8 * 1.0 + 0.25))
    # Invalid pixels count as zero error (the mean still runs over all of them).
    valid[0, 0, 1] = False
    loss = sequence_loss([first, second], target, valid)
    torch.testing.assert_close(loss, torch.tensor(0.8 * 0.5 + 0.125))
    # Ground truth beyond max_flow is treated as invalid too.
    huge = torch.tensor([[[[500.0, 0.0]], [[0.0, 0.0]]]])
    loss = sequence_loss([huge], huge, torch.ones(1, 1, 2, dtype=torch.bool), gamma=0.5)
    torch.testing.assert_close(loss, torch.tensor(0.0))


def test_metrics_by_hand():
    target = torch.zeros(1, 2, 1, 3)
    target[:, 0] = 2.0  # 2 px to the right everywhere
    flow = target.clone()
    flow[0, 0, 0, 1] = 4.0  # EPE 2
    flow[0, 1, 0, 2] = 4.0  # EPE 4
    meter = FlowMeter()
    meter.update(flow, target, torch.ones(1, 1, 3, dtype=torch.bool))
    m = meter.compute()
    assert m["epe"] == pytest.approx(2.0)
    assert (m["px1"], m["px3"], m["px5"]) == pytest.approx((1 / 3, 2 / 3, 1.0))
    assert m["fl_all"] == pytest.approx(100 / 3)  # only EPE 4 > 3 px and > 5% of |2|
    assert m["num_pairs"] == 1
    # A second image with its last pixel invalid: EPE over pixels, per-image EPE over images.
    meter.update(flow, target, torch.tensor([[[True, True, False]]]))
    m = meter.compute()
    assert m["epe"] == pytest.approx((0 + 2 + 4 + 0 + 2) / 5)
    assert m["per_image_epe"] == pytest.approx((2.0 + 1.0) / 2)
    assert m["fl_all"] == pytest.approx(100 / 5)


def test_fl_all_relative_threshold():
    target = torch.zeros(1, 2, 1, 1)
    target[:, 0] = 100.0
    flow = target.clone()
    flow[:, 0] += 4.0  # EPE 4 > 3 px but only 4% of 100 px: not an outlier
    meter = FlowMeter()
    meter.update(flow, target, torch.ones(1, 1, 1, dtype=torch.bool))
    assert meter.compute()["fl_all"] == 0.0
    with pytest.raises(ValueError, match="no valid"):
        FlowMeter().compute()


def test_padding_round_trip():
    x = torch.randn(1, 2, 13, 21)
    padded, pad = pad_to_multiple(x)
    assert padded.shape[-2:] == (16, 24)
    assert torch.equal(unpad(padded, pad), x)


def test_predict_handles_any_size():
    model = create_model("raft_small").eval()
    x = torch.rand(1, 3, 70, 90) * 2 - 1
    flow = FlowTask(eval_updates=1).predict(model, x, x)
    assert flow.shape == (1, 2, 70, 90)


@pytest.mark.slow
def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    model = create_model("raft_small").train()
    data = SyntheticFlowDataset(2, seed=0)
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in data[0]}
    task = FlowTask(train_updates=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    losses = []
    for _ in range(6):
        loss = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
