import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.jobs.memory import (
    Strategy,
    all_combinations,
    fake_step_bytes,
    measure_strategies,
    memory_report,
    saved_tensor_bytes,
)
from tubelet.models import create_model
from tubelet.nn import checkpoint_module
from tubelet.nn.checkpoint import checkpoint_level

FP32, BF16 = 4, 2


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
        self.grad_checkpointing = checkpoint_level(enable)

    def forward(self, x):
        for block in self.blocks:
            level = self.grad_checkpointing
            x = checkpoint_module(block, x, level=level) if level else block(x)
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
    assert row.step_time_s > 0 and row.cpu_time_s > 0
    assert row.device == "cpu" and row.strategy == "baseline"


def test_checkpointing_keeps_only_the_block_inputs():
    x, y = torch.randn(*CLIP), torch.tensor([0, 1])
    strategies = [Strategy(checkpointing="full"), Strategy(), Strategy(precision="bf16")]
    ckpt, base, bf16 = measure_strategies(
        TwoBlocks(), x, y, strategies, repeats=2, loss_fn=_sum_loss
    )
    # Each checkpointed block keeps its input (x, relu1's output); relu2's output is only pooled.
    assert ckpt.activation_bytes == 2 * CLIP_BYTES + POOLED_BYTES
    # The model switches back and forth: the plain step after it keeps all three activations.
    assert base.activation_bytes == 3 * CLIP_BYTES + POOLED_BYTES
    # Autocast keeps x, relu1's and relu2's outputs in bf16 (half the bytes), and also the bf16
    # copies it makes of the weights (two conv weights of 3*3*27, the fc's 4*3), which are not
    # parameters; the pooled fc input is bf16 too.
    assert (
        bf16.activation_bytes
        == 3 * CLIP_BYTES // 2 + (2 * 3 * 3 * 27 + 4 * 3) * BF16 + 2 * 3 * BF16
    )
    assert [r.strategy for r in (ckpt, base, bf16)] == ["checkpointing", "baseline", "bf16"]


def test_a_strategy_list_without_the_baseline_is_measured():
    x, y = torch.randn(*CLIP), torch.tensor([0, 1])
    (row,) = measure_strategies(
        TwoBlocks(), x, y, [Strategy(precision="bf16")], repeats=1, loss_fn=_sum_loss
    )
    assert row.strategy == "bf16" and row.step_time_s > 0


@pytest.mark.parametrize(
    "strategy",
    ["baseline", "checkpointing", "selective_checkpointing", "bf16", "checkpointing+bf16"],
)
def test_counting_on_fake_tensors_equals_a_real_step(strategy):
    x, y = torch.randn(*CLIP), torch.tensor([0, 1])
    s = Strategy.parse(strategy)
    (real,) = measure_strategies(TwoBlocks(), x, y, [s], repeats=1, loss_fn=_sum_loss)
    (counted,) = measure_strategies(
        TwoBlocks(), x, y, [s], repeats=1, loss_fn=_sum_loss, timed=False
    )
    for field in ("activation_bytes", "param_bytes", "grad_bytes", "optimizer_bytes", "peak_bytes"):
        assert getattr(counted, field) == getattr(real, field), field
    assert counted.step_time_s is None and counted.cpu_time_s is None


def test_fake_counts_of_a_video_vit_match_and_leave_the_model_usable():
    torch.manual_seed(0)
    model = create_model("vit_t_16_video", num_classes=4, head_dim=8)
    x, y = torch.randn(2, 3, 4, 32, 32), torch.tensor([0, 3])
    strategies = [Strategy.parse(s) for s in ("baseline", "selective_checkpointing", "bf16")]
    counted = [fake_step_bytes(model, x, y, s) for s in strategies]
    before = [p.detach().clone() for p in model.parameters()]
    real = measure_strategies(model, x, y, strategies, repeats=1)  # real tensors after fake ones
    assert [c[0] for c in counted[:2]] == [r.activation_bytes for r in real[:2]]  # fp32: exact
    # bf16: LayerNorm's saved mean and 1/std come out bf16 from PyTorch's shape functions but
    # float32 from the CPU kernel, 2 bytes fewer per value: 2 values per token (2 clips x 8 tubes)
    # in each of the 2 x 12 block norms, and 2 per clip in the head's norm.
    missing = (2 * 12 * 2 * (2 * 8) + 2 * 2) * 2
    assert real[2].activation_bytes - counted[2][0] == missing
    assert counted[0][1:] == (real[0].param_bytes, real[0].grad_bytes, real[0].optimizer_bytes)
    assert any(not torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))


def test_cross_entropy_adds_its_own_saved_tensors():
    x, y = torch.randn(*CLIP), torch.tensor([0, 1])
    (row,) = measure_strategies(TwoBlocks(), x, y, [Strategy()], repeats=1)
    # log-softmax output (2, 4) fp32, int64 targets (2,), the fp32 scalar total weight
    assert row.activation_bytes == 3 * CLIP_BYTES + POOLED_BYTES + 2 * 4 * FP32 + 2 * 8 + FP32


def test_strategy_names_round_trip_and_bad_names_are_refused():
    assert Strategy.parse("baseline") == Strategy()
    s = Strategy.parse("bf16+checkpointing")
    assert s == Strategy(checkpointing="full", precision="bf16")
    assert s.name == "checkpointing+bf16"
    selective = Strategy.parse("bf16+selective_checkpointing")
    assert selective == Strategy(checkpointing="selective", precision="bf16")
    assert selective.name == "selective_checkpointing+bf16"
    assert Strategy.parse("channels_last+fp16").name == "fp16+channels_last"
    with pytest.raises(ValueError, match="unknown strategy 'ckpt'"):
        Strategy.parse("ckpt")
    with pytest.raises(ValueError, match="both bf16 and fp16"):
        Strategy.parse("bf16+fp16")
    with pytest.raises(ValueError, match="two checkpointing levels"):
        Strategy.parse("checkpointing+selective_checkpointing")
    with pytest.raises(ValueError, match="checkpointing must be None, 'full' or 'selective'"):
        Strategy(checkpointing="some")
    names = [s.name for s in all_combinations(("checkpointing", "bf16", "fp16"))]
    assert names == [
        "baseline", "checkpointing", "bf16", "fp16", "checkpointing+bf16", "checkpointing+fp16",
    ]  # fmt: skip
    levels = all_combinations(("checkpointing", "selective_checkpointing"))
    assert [s.name for s in levels] == ["baseline", "checkpointing", "selective_checkpointing"]


def test_report_on_a_registered_model_checkpointing_saves_activations():
    rows = memory_report(
        "r2plus1d_18", frames=4, size=32, batch=2, model_args={"width": 4}, repeats=1,
        strategies=[Strategy(), Strategy(checkpointing="full"), Strategy(checkpointing="selective")],
    )  # fmt: skip
    base, ckpt, selective = rows
    assert ckpt.activation_bytes < base.activation_bytes / 2
    assert ckpt.param_bytes == base.param_bytes
    # No attention in a CNN: selective checkpointing keeps what full checkpointing keeps.
    assert selective.activation_bytes == ckpt.activation_bytes
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
    counted = runner.invoke(app, [*args, "--count-only", "--json"], catch_exceptions=False)
    assert counted.exit_code == 0, counted.output
    counted_rows = json.loads(counted.stdout)
    assert counted_rows[0]["activation_bytes"] == rows[0]["activation_bytes"]
    # BatchNorm's saved statistics: bf16 when counted, float32 in the CPU kernel.
    assert 0 < rows[1]["activation_bytes"] - counted_rows[1]["activation_bytes"] < 100
    assert all(r["step_time_s"] is None for r in counted_rows)
    counted_table = runner.invoke(app, [*args, "--count-only"], catch_exceptions=False)
    assert counted_table.exit_code == 0 and "fake tensors" in counted_table.stdout
    bad = runner.invoke(app, ["memory", "--model", "r2plus1d_18", "-s", "half"])
    assert bad.exit_code == 2 and "unknown strategy 'half'" in bad.output


def test_counts_a_text_to_video_denoiser_and_its_lora_fine_tuning():
    from tubelet.jobs.memory import memory_report

    small = {"width": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 2, "text_dim": 16}
    strategies = [Strategy.parse("checkpointing+bf16"), Strategy.parse("bf16")]
    full = memory_report("wan_dit", frames=9, size=0, height=32, width=48, batch=1,
                         strategies=strategies, model_args=small, timed=False)  # fmt: skip
    lora = memory_report("wan_dit", frames=9, size=0, height=32, width=48, batch=1,
                         strategies=strategies, model_args=small, timed=False, lora_rank=4)  # fmt: skip
    checkpointed, plain = full
    assert checkpointed.activation_bytes < plain.activation_bytes
    # AdamW: two fp32 moments per weight (and a step counter per tensor).
    assert 2 <= checkpointed.optimizer_bytes / checkpointed.param_bytes < 2.01
    adapter = lora[0].grad_bytes
    # LoRA: only the adapters have gradients and optimizer state; the base is counted once.
    assert 0 < adapter < 0.2 * checkpointed.grad_bytes
    assert 2 <= lora[0].optimizer_bytes / adapter < 2.1
    assert lora[0].param_bytes == checkpointed.param_bytes + adapter
    with pytest.raises(ValueError, match="frames 1 \\+ 4k"):
        memory_report("wan_dit", frames=8, size=32, batch=1, model_args=small, timed=False)


def test_counting_a_huge_batch_allocates_no_batch():
    import resource

    small = dict(frames=4, size=32, model_args={"width": 4}, strategies=[Strategy()], timed=False)
    (one,) = memory_report("r2plus1d_18", batch=1, **small)
    (two,) = memory_report("r2plus1d_18", batch=2, **small)
    batch = 20_000
    clips_bytes = batch * 3 * 4 * 32 * 32 * FP32  # 983 MB of input alone, were it real
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    (many,) = memory_report("r2plus1d_18", batch=batch, **small)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    # The counts grow by one clip's activations per clip (BatchNorm's statistics are per channel)
    per_clip = two.activation_bytes - one.activation_bytes
    assert many.activation_bytes - one.activation_bytes == (batch - 1) * per_clip
    assert many.param_bytes == one.param_bytes
    # ... while the process's peak resident memory grows by far less than the batch would take.
    assert grown < clips_bytes / 10, grown


def test_a_run_that_cannot_fit_is_refused_before_allocating(monkeypatch):
    from tubelet.jobs import memory as job

    args = ["memory", "--model", "r2plus1d_18", "-m", "width=4", "--frames", "4", "--size", "32"]
    args += ["-s", "baseline", "--repeats", "1"]
    free = job.free_bytes(torch.device("cpu"))
    assert free is not None and free > 0
    # 10**8 clips of 4x32x32: about 5 PB counted, far more than any machine's RAM; counting is
    # cheap (fake tensors), so the refusal comes at once, before the batch or the model exists.
    monkeypatch.setattr(torch, "randn", lambda *a, **k: pytest.fail("allocated the batch"))
    result = CliRunner().invoke(app, [*args, "--batch", str(10**8)])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert "needs about" in line and "GiB free" in line, line
    assert "smaller --batch" in line and "--count-only" in line and "-s checkpointing" in line
    # The same batch counted only is fine.
    counted = CliRunner().invoke(app, [*args, "--batch", str(10**8), "--count-only", "--json"])
    assert counted.exit_code == 0, counted.output
    assert json.loads(counted.stdout)[0]["peak_bytes"] > free
