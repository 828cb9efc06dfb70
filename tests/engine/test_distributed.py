import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from distributed_cases import (
    CLASSES,
    Net,
    first_moments,
    free_port,
    make_trainer,
    meter_cases,
    meter_results,
    worker,
)
from safetensors.torch import load_file
from torch import nn

from tubelet.engine import distributed as dist
from tubelet.engine.sharded import read_weights
from tubelet.tasks import ClassificationTask


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(2, free_port(), str(tmp_path), results), nprocs=2, join=True)
    one = make_trainer(tmp_path / "one", batch_size=8)
    single = one.fit()
    expected_val = {k: v for k, v in single.items() if k.startswith("val_")}
    for parallel in ("ddp", "fsdp"):
        for rank in (0, 1):
            got = results[rank][parallel]
            assert got["processes"] == 2
            for a, b in zip(got["moments"], first_moments(one), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
            # Validation: 7 videos, each counted once, the same metrics as one process.
            assert got["summary"] == expected_val
            assert got["summary"]["val_num_videos"] == 7
        # Rank 0 alone wrote the run folder, once per epoch; FSDP's weights are read whole.
        root = tmp_path / parallel
        assert len((root / "metrics.jsonl").read_text().splitlines()) == 1
        assert json.loads((root / "summary.json").read_text())["processes"] == 2
        best = root / "best"
        weights = (
            read_weights(best) if parallel == "fsdp" else load_file(best / "model.safetensors")
        )
        assert weights["body.1.weight"].shape == (16, 96)
        torch.testing.assert_close(weights["body.1.weight"], one.model.body[1].weight.detach())
    assert results[0]["resume_equal"] and results[1]["resume_equal"]
    for a, b in zip(results[0]["bad_params"], results[1]["bad_params"], strict=True):
        assert torch.equal(a, b)
    assert results[0]["eval_videos"] == results[1]["eval_videos"] == 7
    # Every task's meter: its shares gathered over the processes equal one meter over all items.
    alone = meter_results()
    for rank in (0, 1):
        assert_same_metrics(results[rank]["meters"], alone)


@pytest.mark.slow
def test_torchrun_restarts_a_killed_worker_and_the_run_resumes(tiny_dataset, tmp_path):
    """`torchrun --nproc-per-node 2 --max-restarts 1`: rank 1 is killed in the middle of epoch 2;
    torchrun restarts both, they resume from epoch 1 (the last committed) and finish, with one
    metrics line per epoch."""
    out, weights = tmp_path / "run", tmp_path / "weights"
    weights.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts",
        "1", "--master-port", str(free_port()), str(Path(__file__).parents[1] / "launch_case.py"),
        "train", "--data", str(tiny_dataset), "--model", "r2plus1d_18", "-m", "width=4",
        "--frames", "4", "--size", "32", "--epochs", "2", "--batch-size", "2", "--workers", "0",
        "--out", str(out), "--grad-checkpointing", "--channels-last",
    ]  # fmt: skip
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "TUBELET_TEST_WEIGHTS": str(weights),
        "TUBELET_TEST_KILL": "1",
    }  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    attempts = sorted((weights / "resumed.txt").read_text().splitlines())
    # attempt rank epoch: the first attempt started at epoch 0, the restart at epoch 1.
    assert attempts == ["0 0 0", "0 1 0", "1 0 1", "1 1 1"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in metrics] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["epochs"] == 2
    val_videos = len((tiny_dataset / "val.csv").read_text().splitlines())
    assert summary["val_num_videos"] == val_videos  # each validation video once, none twice
    assert result.stdout.count("Run folder:") == 1  # rank 0 prints the summary
    node0, node1 = (load_file(weights / f"rank{r}.safetensors") for r in (0, 1))
    saved = load_file(out / "last" / "model.safetensors")
    for key in saved:
        assert torch.equal(node0[key], node1[key]) and torch.equal(node0[key], saved[key]), key
    config = json.loads((out / "config.json").read_text())
    assert config["grad_checkpointing"] and config["channels_last"] and not config["fsdp"]


def launch_two_nodes(arguments, weights, timeout=240):
    """`tubelet ARGUMENTS` as two torchrun launchers of one process each, meeting at a c10d
    rendezvous on the loopback interface, as two nodes would; returns (exit code, output) per node."""
    port = free_port()
    weights.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUBELET_TEST_WEIGHTS": str(weights)}
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(node),
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--rdzv-id",
                "nodes",
                "--max-restarts",
                "0",
                str(Path(__file__).parents[1] / "launch_case.py"),
                *map(str, arguments),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )  # fmt: skip
        for node in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in launchers]
        return [(p.returncode, output) for p, output in zip(launchers, outputs, strict=True)]
    finally:
        for p in launchers:
            p.kill()


@pytest.mark.slow
def test_two_nodes_train_resume_and_stop_together(tiny_dataset, tmp_path):
    """Two launchers (--nnodes 2, one process each, c10d rendezvous on 127.0.0.1): the run ends
    with the same weights on both; run again with more epochs it continues after the last one;
    with other settings both stop at once with rank 0's message."""
    out, weights = tmp_path / "run", tmp_path / "weights"
    train = [
        "train", "--data", tiny_dataset, "--model", "r2plus1d_18", "-m", "width=4", "--frames", "4",
        "--size", "32", "--batch-size", "2", "--workers", "0", "--out", out,
    ]  # fmt: skip

    def same_weights_on_both_nodes():
        node0, node1 = (load_file(weights / f"rank{r}.safetensors") for r in (0, 1))
        saved = load_file(out / "last" / "model.safetensors")
        assert node0.keys() == node1.keys() == saved.keys()
        for key in saved:  # parameters and BatchNorm statistics
            assert torch.equal(node0[key], node1[key]) and torch.equal(node0[key], saved[key]), key

    for code, output in launch_two_nodes([*train, "--epochs", "1"], weights):
        assert code == 0, output[-3000:]
    same_weights_on_both_nodes()
    first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in first] == [1]
    # Stopped after epoch 1, started again for 2 epochs: it trains epoch 2 only.
    for code, output in launch_two_nodes([*train, "--epochs", "2"], weights):
        assert code == 0, output[-3000:]
    same_weights_on_both_nodes()
    resumed = (weights / "resumed.txt").read_text().split("\n")
    assert sorted(resumed[-3:-1]) == ["0 0 1", "0 1 1"]  # both went on from epoch 1
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in metrics] == [1, 2] and metrics[0] == first[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["epochs"] == 2
    # Other settings: both nodes stop with the same one-line message, nothing hangs.
    results = launch_two_nodes([*train, "--epochs", "2", "--lr", "0.5"], weights, timeout=120)
    lines = []
    for code, output in results:
        assert code != 0
        lines.append([line for line in output.splitlines() if "already holds a run" in line])
    assert len(lines[0]) == len(lines[1]) == 1 and lines[0][0][-150:] == lines[1][0][-150:]


def test_without_torchrun_everything_is_one_process():
    assert dist.init_distributed() == dist.DistEnv(rank=0, world_size=1, local_rank=0)
    assert dist.all_reduce_sum([1.0, 2.0]) == [1.0, 2.0]
    assert dist.all_reduce_max(3) == 3
    meter = ClassificationTask(CLASSES).new_meter()
    assert dist.gather_meters(meter) is meter
    model = Net()
    assert dist.wrap_model(model, "fsdp", torch.device("cpu")) is model


def test_launch_env_reads_torchrun_variables_without_a_process_group(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert dist.launch_env() == dist.DistEnv(rank=0, world_size=1, local_rank=0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist.launch_env() == dist.DistEnv(rank=3, world_size=4, local_rank=1)
    assert not torch.distributed.is_initialized()


def test_nccl_runs_get_a_host_group_and_the_host_s_sums_never_touch_the_gpu(monkeypatch):
    """Under NCCL the per-step "has every process a batch?" sum and the epoch's sums go through a
    gloo group on CPU tensors: reading an NCCL (GPU) result back would wait for every kernel queued
    before it, once per training step."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(dist, "_attempt_store", lambda *a: None)
    monkeypatch.setattr(
        dist.dist, "init_process_group", lambda backend, **kw: calls.append(backend)
    )
    monkeypatch.setattr(dist.dist, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(dist.dist, "new_group", lambda backend, **kw: calls.append(backend) or "G")
    monkeypatch.setattr(dist, "dist_env", lambda: dist.DistEnv(rank=0, world_size=2, local_rank=0))
    dist.init_distributed()
    assert calls == ["nccl", "gloo"] and dist._HOST_GROUP == "G"

    def all_reduce(tensor, op=None, group=None):
        calls.append((tensor.device.type, group))
        tensor.mul_(2)

    monkeypatch.setattr(dist.dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist.dist, "destroy_process_group", lambda: None)
    assert dist.all_reduce_sum([1.0, 0.0]) == [2.0, 0.0]
    assert dist.all_reduce_max(3) == 6
    assert calls[2:] == [("cpu", "G"), ("cpu", "G")]
    dist.destroy()
    assert dist._HOST_GROUP is None


def test_fsdp_shards_each_block_once():
    model = nn.Sequential(
        nn.Conv3d(3, 4, 1),
        nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))),
        nn.ReLU(),
    )
    units = dist.fsdp_units(model)
    assert units == [model[0], model[1]]  # outermost items with parameters; none nested
    blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
    holder = nn.Module()
    holder.blocks, holder.head = blocks, nn.Linear(2, 2)
    assert dist.fsdp_units(holder) == list(blocks)


def assert_same_metrics(got, expected):
    """Counts and per-item results equal; sums of floats (added in another order) within rounding."""
    assert got.keys() == expected.keys()
    for task, metrics in expected.items():
        assert got[task].keys() == metrics.keys(), task
        for key, value in metrics.items():
            if isinstance(value, float):
                value = pytest.approx(value, rel=1e-12, abs=1e-12)
            assert got[task][key] == value, (task, key)


def test_every_task_meter_merges_into_one_meter_over_all_items():
    halves = {}
    for name, (new, items) in meter_cases().items():
        first, second = new(), new()
        for update in items[0::2]:
            update(first)
        for update in items[1::2]:
            update(second)
        first.merge(second)
        halves[name] = first.compute()
    alone = meter_results()
    assert_same_metrics(halves, alone)
    assert alone["flow"]["num_pairs"] == 7 and alone["detection"]["num_videos"] == 7
    assert alone["generation"]["num_videos"] == 14 and alone["masked_video"]["num_clips"] == 14
    # Counts and correctly rounded sums: the merged flow and generation metrics are exact.
    assert halves["flow"] == alone["flow"] and halves["generation"] == alone["generation"]


def test_merged_meters_equal_one_meter_over_all_videos():
    task = ClassificationTask(CLASSES, reversal_pairs=((0, 1),))
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(7, 2, CLASSES, generator=g), torch.randint(0, 3, (7,), generator=g)
    reversed_logits = torch.randn(7, 2, CLASSES, generator=g)
    whole, first, second = task.new_meter(), task.new_meter(), task.new_meter()
    whole.update(logits, labels, reversed_logits)
    first.update(logits[:4], labels[:4], reversed_logits[:4])
    second.update(logits[4:], labels[4:], reversed_logits[4:])
    first.merge(second)
    assert first.compute() == whole.compute()
    with pytest.raises(ValueError, match="cannot merge"):
        first.merge(ClassificationTask(5).new_meter())
