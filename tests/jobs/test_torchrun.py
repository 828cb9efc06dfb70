"""Every task's loaders under `torchrun --nproc-per-node 2` (gloo, CPU): the two processes train
on disjoint halves of each epoch, and evaluate each item once in all."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_cases import free_port

from tubelet.data.features import FeatureWriter

COMMON = ["--epochs", "1", "--batch-size", "2", "--workers", "0", "--seed", "3"]


def _features(root: Path) -> Path:
    """Per-frame features of 10 train and 5 val videos of 2 classes."""
    meta = {"model": "toy", "level": "frame", "window": 1, "stride": 1, "dim": 4,
            "classes": ["a", "b"], "reversal_pairs": []}  # fmt: skip
    with FeatureWriter(root, meta) as writer:
        for i in range(15):
            writer.add(f"v{i:02d}.mp4", torch.randn(6, 4), torch.arange(6) / 8.0, torch.arange(6),
                       fps=8.0, num_frames=6, label=i % 2,
                       split="val" if i % 3 == 2 else "train")  # fmt: skip
    return root


@pytest.mark.slow
def test_every_task_shards_its_loaders_over_two_processes(tiny_dataset, tmp_path):
    from detection_data import make_detection_data

    _, _, detection_features = make_detection_data(tmp_path / "detection")
    clips = ["--data", str(tiny_dataset), "--frames", "4", "--size", "32"]
    commands = {
        "classification": ["train", *clips, "--model", "frame2d_resnet18"],
        "pretrain": ["train", "--task", "pretrain", *clips, "--model", "videomae_pretrain_t"],
        "generation": ["train", "--task", "generation", *clips, "--size", "16"],
        "flow": ["train", "--task", "flow", "--size", "32"],
        "detection": ["train", "--task", "detection", "--data", str(detection_features)],
        "features": ["train", "--features", str(_features(tmp_path / "feats")), "--frames", "4",
                     "--model", "frame_mean"],
    }  # fmt: skip
    argv = [[*c, *COMMON, "--out", str(tmp_path / "runs" / t)] for t, c in commands.items()]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
        str(free_port()), str(Path(__file__).parents[1] / "loader_case.py"),
        str(tmp_path / "items"), json.dumps(argv),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    for i, task in enumerate(commands):
        ranks = [json.loads((tmp_path / "items" / str(i) / f"rank{r}.json").read_text())
                 for r in (0, 1)]  # fmt: skip
        assert [r["world"] for r in ranks] == [2, 2], task
        size = ranks[0]["train_size"]
        for epoch in (0, 1):
            mine, yours = (set(r["epochs"][epoch]) for r in ranks)
            assert not mine & yours, f"{task}: the processes share training items"
            assert len(mine) == len(yours) >= (size // 2) - 2, task  # halves (less drop_last)
            assert mine | yours <= set(range(size)), task
        orders = [ranks[0]["epochs"][e] for e in (0, 1)]
        assert orders[0] != orders[1] or size < 4, f"{task}: the order is not reshuffled"
        val = ranks[0]["val"] + ranks[1]["val"]
        assert sorted(val) == list(range(ranks[0]["val_size"])), f"{task}: each val item once"
