import pytest
import torch
import torch.multiprocessing as mp
from distributed_cases import Net, free_port, make_trainer, sharded_worker, trainer_state
from safetensors.torch import load_file

from tubelet.engine import sharded
from tubelet.engine.checkpoint import find_checkpoint, save_spec
from tubelet.models.spec import ModelSpec


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.slow
def test_sharded_checkpoints_resume_on_two_processes_and_on_one(tmp_path):
    """FSDP (bf16 parameters, BatchNorm in float32, activation checkpointing) on 2 gloo processes:
    each writes its own shards, a resumed run equals a straight one, the weights stay finite, and
    the shards resume 2 -> 1 and 1 -> 2."""
    one = make_trainer(tmp_path / "one", epochs=1, batch_size=4, norm=True)
    one.fit()  # a one-process run: whole weights, resumed below by two processes
    results = mp.Manager().dict()
    mp.spawn(sharded_worker, args=(2, free_port(), str(tmp_path), results), nprocs=2, join=True)
    for rank in (0, 1):
        got = results[rank]
        _assert_same(got["resumed"]["params"], got["straight"]["params"])
        _assert_same(got["resumed"]["moments"], got["straight"]["moments"])
        _assert_same(got["from_one"]["params"], trainer_state(one)["params"])  # 1 -> 2
        _assert_same(got["from_one"]["moments"], trainer_state(one)["moments"])
    assert all(torch.isfinite(p).all() for p in results[0]["resumed"]["params"])
    last = tmp_path / "sharded" / "last"
    files = sorted((last / sharded.SHARDED).glob("*.safetensors"))
    assert len(files) == 2  # one per process, none holds the whole model
    first = load_file(files[0])
    assert first["model.body.1.weight"].shape == (8, 96)
    assert not (last / "model.safetensors").exists()
    assert find_checkpoint(tmp_path / "sharded") == tmp_path / "sharded" / "best"
    # 2 -> 1: one process reads every shard (the run is complete, so nothing more is trained).
    alone = make_trainer(tmp_path / "sharded", epochs=2, batch_size=4, norm=True)
    alone.fit()
    state = trainer_state(alone)
    _assert_same(state["params"], results[0]["resumed"]["params"])
    _assert_same(state["moments"], results[0]["resumed"]["moments"])
    assert alone.scheduler.last_epoch == results[0]["steps"]
    # Consolidated for predict and export: the usual whole-weights file.
    written = sharded.consolidate_run(tmp_path / "sharded")
    assert written == [tmp_path / "sharded" / d / "model.safetensors" for d in ("best", "last")]
    weights = load_file(last / "model.safetensors")
    _assert_same([weights[k] for k in dict(alone.model.named_parameters())], state["params"])


def test_a_one_process_checkpoint_round_trips_and_reads_whole(tmp_path):
    model = Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 2, 4, 4)).sum().backward()
    optimizer.step()
    sharded.save_sharded(tmp_path, model, optimizer)
    save_spec(tmp_path, ModelSpec("net", {}, "classification"))
    assert sharded.is_sharded(tmp_path) and find_checkpoint(tmp_path) == tmp_path
    copy = Net()
    for p in copy.parameters():
        p.data.zero_()
    copy_opt = torch.optim.AdamW(copy.parameters(), lr=0.5)
    sharded.load_sharded(tmp_path, copy, copy_opt)
    _assert_same(list(copy.parameters()), list(model.parameters()))
    for p, q in zip(model.parameters(), copy.parameters(), strict=True):
        for slot in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(optimizer.state[p][slot], copy_opt.state[q][slot])
    assert copy_opt.param_groups[0]["lr"] == 0.1
    weights = sharded.read_weights(tmp_path)
    assert weights.keys() == model.state_dict().keys()
    # Saving again replaces the shards whole.
    sharded.save_sharded(tmp_path, copy)
    assert not (tmp_path / "sharded.tmp").exists() and not (tmp_path / "sharded.old").exists()


def test_consolidate_refuses_a_folder_without_shards(tmp_path):
    with pytest.raises(FileNotFoundError, match="no sharded checkpoint in"):
        sharded.consolidate_run(tmp_path)
