import json

import pytest
import torch.multiprocessing as mp
from distributed_cases import free_port, run_folder_worker

from tubelet.engine.run import RunDir, atomic_write_text, open_run_dir


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "config.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]


def test_metrics_of_a_resumed_epoch_replace_the_uncommitted_ones(tmp_path):
    run = RunDir(tmp_path)
    for epoch in (1, 2, 3):
        run.log_metrics({"epoch": epoch, "loss": float(epoch)})
    run.log_metrics({"epoch": 2, "loss": 0.5})  # resumed after epoch 1: epochs 2 and 3 again
    assert run.read_metrics() == [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_open_run_dir_writes_the_config_or_refuses_the_folder(tmp_path):
    def refuse(previous):
        raise ValueError(f"other settings: {previous}")

    run = open_run_dir(tmp_path / "run", {"lr": 0.1}, check=refuse)
    assert json.loads((run.root / "config.json").read_text()) == {"lr": 0.1}
    with pytest.raises(ValueError, match="other settings"):
        open_run_dir(tmp_path / "run", {"lr": 0.2}, check=refuse)


@pytest.mark.slow
def test_two_processes_open_one_run_folder_without_racing(tmp_path):
    """Every write is slowed between truncating and writing: a rank that read or wrote config.json
    beside rank 0 would meet an empty file. Refusal reaches both ranks with one message."""
    root = tmp_path / "run"
    results = mp.Manager().dict()
    mp.spawn(run_folder_worker, args=(2, free_port(), str(root), results), nprocs=2, join=True)
    for rank in (0, 1):
        assert results[rank]["configs"] == [{"lr": 0.1, "versions": i} for i in range(5)]
    assert results[0]["refusal"] == results[1]["refusal"]
    assert "holds a run with lr 0.1, not 0.2" in results[0]["refusal"]
    assert json.loads((root / "config.json").read_text())["lr"] == 0.1
    assert [p.name for p in root.iterdir()] == ["config.json"]


def test_tensorboard_gets_each_epochs_numbers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunDir(tmp_path, tensorboard=True)
    for epoch in (1, 2):
        run.log_metrics({"epoch": epoch, "train_loss": 1.0 / epoch, "val_top1": 0.25 * epoch})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train_loss", "val_top1"}
    top1 = [(e.step, e.value) for e in events.Scalars("val_top1")]
    assert top1 == [(1, 0.25), (2, 0.5)]
    assert not (RunDir(tmp_path / "plain").root / "tensorboard").exists()
