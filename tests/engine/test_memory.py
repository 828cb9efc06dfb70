import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.engine.memory import (
    Strategy,
    all_combinations,
    measure_strategies,
    memory_report,
    saved_tensor_bytes,
)
from tubelet.nn import checkpoint_module

FP32 = 4


class TwoBlocks(nn.Module):
    """Two (Conv3d 3->3, ReLU) blocks, a spatio-temporal mean and a Linear 3->4: small enough to
    count by hand what autograd keeps."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(
            [nn.Sequential(nn.Conv3d(3, 3, 3, padding=1), nn.ReLU()) for _ in range(2)]
        )
        self.fc = nn.Linear(3, 4)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable=True):
        self.grad_checkpointing = enable

    def forward(self, x):
        for block in self.blocks:
            x = checkpoint_module(block, x) if self.grad_checkpointing else block(x)
        return self.fc(x.mean((2, 3, 4)))


def _sum_loss(model, video, labels):
    return model(video).sum()  # sum's backward keeps no tensor


CLIP = (2, 3, 2, 4, 4)  # (B, C, T, H, W)
CLIP_BYTES = 2 * 3 * 2 * 4 * 4 * FP32  # 768
POOLED_BYTES = 2 * 3 * FP32  # the Linear's input (B, 3)


def test_saved_tensors_are_counted_once_per_storage_without_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(2, 8)
    with saved_tensor_bytes(model.parameters()) as saved:
        model(x).sum()
    # Linear 1 keeps x; ReLU keeps its output, which Linear 2 keeps too (one storage); the weights
    # (kept as transposed views) are parameters.
    assert sum(saved.values()) == 2 * 8 * FP32 + 2 * 16 * FP32


def test_baseline_counts_match_a_hand_computation():
    x, y = torch.randn(*CLIP), torch.tensor([0, 1])
    (row,) = measure_strategies(TwoBlocks(), x, y, [Strategy()], repeats=1, loss_fn=_sum_loss)
    # conv1 keeps x, relu1's output (also conv2's input), relu2's output; fc keeps the pooled input.
    assert row.activation_bytes == 3 * CLIP_BYTES + POOLED_BYTES
    params = 2 * (3 * 3 * 27 + 3) + (3 * 4 + 4)
    assert row.param_bytes == row.grad_bytes == params * FP32
    # AdamW: two moments per parameter, and a float32 step count per parameter tensor (6 tensors).
    assert row.optimizer_bytes == 2 * params * FP32 + 6 * FP32
    assert row.peak_bytes == row.activation_bytes + 4 * params * FP32 + 6 * FP32
    assert row.step_time_s > 0 and row.device == "cpu" and row.strategy == "baseline"


def test_checkpointing_keeps_only_the_block_inputs():
    x, y = torch.randn(*CLIP), torch.tensor([0, 1])
    strategies = [Strategy(checkpointing=True), Strategy(), Strategy(precision="bf16")]
    ckpt, base, bf16 = measure_strategies(
        TwoBlocks(), x, y, strategies, repeats=2, loss_fn=_sum_loss
    )
    # Each checkpointed block keeps its input (x, relu1's output); relu2's output is only pooled.
    assert ckpt.activation_bytes == 2 * CLIP_BYTES + POOLED_BYTES
    # The model switches back and forth: the plain step after it keeps all three activations.
    assert base.activation_bytes == 3 * CLIP_BYTES + POOLED_BYTES
    assert bf16.activation_bytes < base.activation_bytes
    assert [r.strategy for r in (ckpt, base, bf16)] == ["checkpointing", "baseline", "bf16"]


def test_cross_entropy_adds_its_own_saved_tensors():
    x, y = torch.randn(*CLIP), torch.tensor([0, 1])
    (row,) = measure_strategies(TwoBlocks(), x, y, [Strategy()], repeats=1)
    # log-softmax output (2, 4) fp32, int64 targets (2,), the fp32 scalar total weight
    assert row.activation_bytes == 3 * CLIP_BYTES + POOLED_BYTES + 2 * 4 * FP32 + 2 * 8 + FP32


def test_strategy_names_round_trip_and_bad_names_are_refused():
    assert Strategy.parse("baseline") == Strategy()
    s = Strategy.parse("bf16+checkpointing")
    assert s == Strategy(checkpointing=True, precision="bf16")
    assert s.name == "checkpointing+bf16"
    assert Strategy.parse("channels_last+fp16").name == "fp16+channels_last"
    with pytest.raises(ValueError, match="unknown strategy 'ckpt'"):
        Strategy.parse("ckpt")
    with pytest.raises(ValueError, match="both bf16 and fp16"):
        Strategy.parse("bf16+fp16")
    names = [s.name for s in all_combinations(("checkpointing", "bf16", "fp16"))]
    assert names == [
        "baseline", "checkpointing", "bf16", "fp16", "checkpointing+bf16", "checkpointing+fp16",
    ]  # fmt: skip


def test_report_on_a_registered_model_checkpointing_saves_activations():
    rows = memory_report(
        "r2plus1d_18", frames=4, size=32, batch=2, model_args={"width": 4}, repeats=1,
        strategies=[Strategy(), Strategy(checkpointing=True)],
    )  # fmt: skip
    base, ckpt = rows
    assert ckpt.activation_bytes < base.activation_bytes / 2
    assert ckpt.param_bytes == base.param_bytes
    with pytest.raises(ValueError, match="frames must be at least 1"):
        memory_report("r2plus1d_18", frames=0, size=16, batch=1)


def test_memory_command_prints_json_rows_and_a_table():
    runner = CliRunner()
    args = ["memory", "--model", "r2plus1d_18", "-m", "width=4", "--frames", "4", "--size", "32"]
    args += ["--batch", "2", "--repeats", "1", "-s", "baseline", "-s", "checkpointing+bf16"]
    result = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["strategy"] for r in rows] == ["baseline", "checkpointing+bf16"]
    for r in rows:
        assert {"strategy", "activation_bytes", "peak_bytes", "step_time_s"} <= set(r)
    assert rows[1]["activation_bytes"] < rows[0]["activation_bytes"]
    table = runner.invoke(app, args, catch_exceptions=False)
    assert table.exit_code == 0 and "checkpointing+bf16" in table.stdout
    bad = runner.invoke(app, ["memory", "--model", "r2plus1d_18", "-s", "half"])
    assert bad.exit_code == 2 and "unknown strategy 'half'" in bad.output
