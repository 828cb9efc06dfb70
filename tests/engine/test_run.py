import json
import os

import pytest
import torch.multiprocessing as mp
from distributed_cases import free_port, run_folder_worker
from processes import held_elsewhere

from tubelet.engine.atomic import atomic_write_text, fault_hook
from tubelet.engine.run import RunDir, RunLockedError, open_run_dir


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "config.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]


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


class Stop(BaseException):
    """Stands for the process being killed at a write point."""


def _commit(run, epoch, best, **metrics):
    stage = run.stage(epoch)
    for name in ("last", "best") if best else ("last",):
        (stage / name).mkdir()
        (stage / name / "epoch.txt").write_text(str(epoch))
    run.commit_epoch(epoch, {"epoch": epoch, **metrics})


def _state(run):
    def read(name):
        path = run.root / name / "epoch.txt"
        return int(path.read_text()) if path.is_file() else None

    return read("last"), read("best"), [r["epoch"] for r in run.read_metrics()]


def test_epochs_commit_last_best_and_metrics_together(tmp_path):
    run = RunDir(tmp_path)
    _commit(run, 1, best=True)
    _commit(run, 2, best=False)
    assert _state(run) == (2, 1, [1, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last", "metrics.jsonl"]


def test_a_stop_at_any_write_point_leaves_the_previous_or_the_next_epoch(tmp_path):
    points = []
    with fault_hook(points.append):
        run = RunDir(tmp_path / "count")
        _commit(run, 1, best=True)
        _commit(run, 2, best=True)
    assert "commit epoch 2" in points and "move best aside" in points

    for n in range(len(points)):
        run = RunDir(tmp_path / f"stop{n}")
        calls = []

        def stop_at_n(name, calls=calls, n=n):
            calls.append(name)
            if len(calls) == n + 1:
                raise Stop

        with fault_hook(stop_at_n), pytest.raises(Stop):
            _commit(run, 1, best=True)
            _commit(run, 2, best=True)
        run.recover()
        committed = points.index("commit epoch 2") < n
        first_done = points.index("commit epoch 1") < n
        expected = (2, 2, [1, 2]) if committed else (1, 1, [1]) if first_done else (None, None, [])
        assert _state(run) == expected, points[n]
        leftovers = [p.name for p in run.root.iterdir() if p.name.startswith(".")]
        assert leftovers == [], (points[n], leftovers)


def test_a_held_run_folder_refuses_another_process_and_names_its_pid(tmp_path):
    run = RunDir(tmp_path / "run")
    with held_elsewhere(run.root) as pid:
        busy = f"in use by another tubelet process \\(PID {pid}\\); wait for it"
        with pytest.raises(RunLockedError, match=busy), run.lock():
            pass
    with run.lock():  # released when the holder ends
        assert (run.root / ".lock").read_text().strip() == str(os.getpid())
        with run.lock():  # holds nest within one process
            pass


def test_metrics_survive_a_json_round_trip(tmp_path):
    run = RunDir(tmp_path)
    _commit(run, 1, best=True, val_top1=0.5)
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"epoch": 1, "val_top1": 0.5}


def test_tensorboard_gets_each_epochs_numbers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunDir(tmp_path, tensorboard=True)
    for epoch in (1, 2):
        _commit(run, epoch, best=False, train_loss=1.0 / epoch, val_top1=0.25 * epoch)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train_loss", "val_top1"}
    top1 = [(e.step, e.value) for e in events.Scalars("val_top1")]
    assert top1 == [(1, 0.25), (2, 0.5)]
    assert not (RunDir(tmp_path / "plain").root / "tensorboard").exists()
