import json
import math
import signal
import subprocess
import sys
import traceback
import warnings
from contextlib import nullcontext

import pytest
import torch
from distributed_cases import make_trainer
from planted import Plant
from processes import held_elsewhere, python_env
from safetensors.torch import load_file
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset

from tubelet.data.datasets import collate_clips
from tubelet.data.loader import ShuffleSampler
from tubelet.engine import trainer as trainer_module
from tubelet.engine.atomic import fault_hook
from tubelet.engine.checkpoint import load_trainer_state
from tubelet.engine.run import RunDir, RunLockedError
from tubelet.engine.trainer import (
    OptimConfig,
    RuntimeConfig,
    Trainer,
    autocast,
    cpu_bf16_guard,
    grad_scaler,
    inductor_workarounds,
    prepare_model,
    to_channels_last,
    warmup_cosine,
)
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec
from tubelet.tasks import ClassificationTask


class Blobs(Dataset):
    """Clips (3, 2, 4, 4) whose class is the sign of their mean; item 0 pretends to be unreadable."""

    def __init__(self, n, seed, bad_first=False):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.videos = torch.randn(n, 3, 2, 4, 4, generator=g) + (self.labels * 2.0 - 1.0).view(
            n, 1, 1, 1, 1
        )
        self.bad_first = bad_first

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.bad_first and i == 0:
            return {
                "video": None,
                "label": -1,
                "index": 0,
                "bad_files": [("/data/broken.mp4", "file is empty")],
            }
        return {"video": self.videos[i], "label": int(self.labels[i]), "index": i, "bad_files": []}


class EvalViews(Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = dict(self.base[i])
        if item["video"] is not None:
            item["video"] = item["video"].unsqueeze(0)  # one view: (1, C, T, H, W)
        return item


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 2))


def _trainer(
    tmp_path, *, epochs=3, batch_size=8, accumulate=1, bad_first=False, model=None, lr=0.05
):
    train = Blobs(64, seed=1, bad_first=bad_first)
    val = EvalViews(Blobs(32, seed=2))
    train_loader = DataLoader(
        train,
        batch_size=batch_size,
        sampler=ShuffleSampler(len(train), 0),
        collate_fn=collate_clips,
    )
    val_loader = DataLoader(val, batch_size=16, collate_fn=collate_clips)
    return Trainer(
        model or _tiny_model(),
        ClassificationTask(2, label_smoothing=0.0),
        train_loader=train_loader,
        val_loader=val_loader,
        config=OptimConfig(
            epochs=epochs, lr=lr, accumulate=accumulate, warmup_epochs=0.5, grad_clip=None
        ),
        run=RunDir(tmp_path),
        spec=ModelSpec("tiny", {}, "classification"),
        show_progress=False,
    )


def test_warmup_then_cosine():
    factors = [warmup_cosine(s, warmup_steps=4, total_steps=12) for s in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0
    assert factors[8] == pytest.approx(0.5)
    assert factors[12] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))


def test_training_learns_and_writes_the_run_folder(tmp_path):
    summary = _trainer(tmp_path, bad_first=True).fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert summary["val_top1"] > 0.9
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_bad_files"] == 1
    assert summary["bad_files"] == [
        {"path": "/data/broken.mp4", "reason": "file is empty", "split": "train"}
    ]
    for name in (
        "best/model.safetensors",
        "best/model.json",
        "last/model.safetensors",
        "last/trainer_state.safetensors",
        "last/trainer_state.json",
    ):
        assert (tmp_path / name).is_file()


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    straight = _trainer(tmp_path / "a")
    straight.fit()

    interrupted = _trainer(tmp_path / "b")
    real_epoch = interrupted._train_epoch
    calls = []

    def crash_in_epoch_two(progress):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(progress)

    interrupted._train_epoch = crash_in_epoch_two
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1

    resumed = _trainer(tmp_path / "b", model=nn.Sequential(nn.Flatten(), nn.Linear(96, 2)))
    summary = resumed.fit()
    assert summary["epochs"] == 3
    for a, b in zip(
        straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_accumulation_gives_the_gradient_of_the_big_batch(tmp_path):
    one = _trainer(tmp_path / "one", epochs=1, batch_size=64)
    two = _trainer(tmp_path / "two", epochs=1, batch_size=16, accumulate=4)
    assert one.steps_per_epoch == two.steps_per_epoch == 1
    one.fit()
    two.fit()
    # After one AdamW step the first moment holds (1 - beta1) * gradient exactly.
    for p1, p2 in zip(one.model.parameters(), two.model.parameters(), strict=True):
        m1 = one.optimizer.state[p1]["exp_avg"]
        m2 = two.optimizer.state[p2]["exp_avg"]
        torch.testing.assert_close(m1, m2, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_trains(tmp_path):
    trainer = _trainer(tmp_path, epochs=2)
    trainer.config = OptimConfig(epochs=2, lr=0.05, precision="bf16", grad_clip=None)
    summary = trainer.fit()
    assert summary["val_top1"] > 0.9
    assert math.isfinite(
        json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"]
    )


def test_bf16_on_a_cpu_gives_3d_convolutions_their_float32_gradients():
    """Under the trainer's guard a bf16 Conv3d's weight gradient is float32's within bf16's
    rounding, whether or not this machine's oneDNN gets it wrong (torch 2.14.1 on the 2-core CI
    machine does: differences of 1e32 and infs)."""
    g = torch.Generator().manual_seed(1)
    x, grad = (torch.randn(4, 16, 2, 4, 4, generator=g) for _ in range(2))
    conv = nn.Conv3d(16, 16, 3, padding=1, bias=False)
    conv(x).backward(grad)
    want, conv.weight.grad = conv.weight.grad, None
    cpu = torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the guard's own warning, where it applies
        with cpu_bf16_guard(conv, cpu, "bf16"):
            with autocast(cpu, "bf16"):
                out = conv(x)
            out.backward(grad.to(out.dtype))
    torch.testing.assert_close(conv.weight.grad, want, rtol=0.05, atol=0.05 * want.abs().max())


def test_bf16_training_on_a_faulty_cpu_says_it_turns_onednn_off(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "onednn_bf16_conv3d_grads_are_wrong", lambda: True)
    cpu = torch.device("cpu")
    assert isinstance(cpu_bf16_guard(_tiny_model(), cpu, "bf16"), nullcontext)  # no Conv3d
    model = nn.Sequential(nn.Conv3d(3, 2, 1), nn.Flatten(), nn.Linear(2 * 2 * 4 * 4, 2))
    trainer = _trainer(tmp_path, epochs=1, model=model)
    trainer.config = OptimConfig(epochs=1, precision="bf16")
    seen = []
    trainer._train_epoch = lambda progress: seen.append(torch.backends.mkldnn.enabled) or {
        "train_loss": 0.0}  # fmt: skip
    with pytest.warns(UserWarning, match="oneDNN off"):
        trainer.fit()
    assert seen == [False] and torch.backends.mkldnn.enabled


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        OptimConfig(precision="fp8")
    with pytest.raises(ValueError, match="at least 1"):
        OptimConfig(accumulate=0)


def _copy_pair(name, **kw):
    torch.manual_seed(0)
    plain = create_model(name, num_classes=5, **kw)
    ckpt = create_model(name, num_classes=5, **kw)
    ckpt.load_state_dict(plain.state_dict())
    return plain.train(), ckpt.train()


@pytest.mark.parametrize(
    ("name", "kw", "shape"),
    [
        ("r2plus1d_18", {"width": 4}, (2, 3, 4, 32, 32)),
        ("vit_s_16_video", {"head_dim": 8, "depth": 2, "num_heads": 2}, (2, 3, 4, 32, 32)),
    ],
)
def test_grad_checkpointing_leaves_outputs_and_gradients_equal(name, kw, shape):
    plain, ckpt = _copy_pair(name, **kw)
    ckpt = prepare_model(ckpt, RuntimeConfig(grad_checkpointing=True), torch.device("cpu"))
    assert ckpt.grad_checkpointing
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    out_plain, out_ckpt = plain(x), ckpt(x)
    torch.testing.assert_close(out_ckpt, out_plain, rtol=1e-5, atol=1e-6)
    out_plain.square().sum().backward()
    out_ckpt.square().sum().backward()
    for (key, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=key)
    for a, b in zip(plain.buffers(), ckpt.buffers(), strict=True):  # BatchNorm statistics
        torch.testing.assert_close(b, a)


def test_channels_last_changes_layout_not_results():
    plain, fast = _copy_pair("r2plus1d_18", width=4)
    fast = prepare_model(fast, RuntimeConfig(channels_last=True), torch.device("cpu"))
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    assert to_channels_last(x).is_contiguous(memory_format=torch.channels_last_3d)
    assert to_channels_last(x[:, :, 0]).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(to_channels_last(x)), plain(x), rtol=1e-4, atol=1e-5)


def test_trainer_applies_the_runtime_switches(tmp_path):
    model = create_model("r2plus1d_18", num_classes=2, width=4)
    train = Blobs(8, seed=1)
    trainer = Trainer(
        model, ClassificationTask(2), train_loader=DataLoader(train, collate_fn=collate_clips),
        val_loader=DataLoader(train, collate_fn=collate_clips), config=OptimConfig(epochs=1),
        run=RunDir(tmp_path / "b"), spec=ModelSpec("r2plus1d_18", {}, "classification"),
        runtime=RuntimeConfig(grad_checkpointing=True), show_progress=False,
    )  # fmt: skip
    assert trainer.model.grad_checkpointing and trainer.train_model is trainer.model
    with pytest.raises(ValueError, match="has no set_grad_checkpointing"):
        prepare_model(nn.Linear(2, 2), RuntimeConfig(grad_checkpointing=True), torch.device("cpu"))
    with pytest.raises(ValueError, match="parallel must be one of"):
        RuntimeConfig(parallel="zero3")


def test_fp16_trains_with_loss_scaling(tmp_path):
    trainer = _trainer(tmp_path, epochs=2)
    trainer.config = OptimConfig(epochs=2, lr=0.05, precision="fp16", grad_clip=1.0)
    trainer.scaler = grad_scaler(trainer.device, "fp16")
    assert trainer.scaler.is_enabled()
    assert not grad_scaler(trainer.device, "bf16").is_enabled()
    summary = trainer.fit()
    assert summary["val_top1"] > 0.9
    assert trainer.scaler.get_scale() > 0
    state = load_trainer_state(tmp_path / "last")
    assert state["scaler"]["scale"] == trainer.scaler.get_scale()


def test_accumulation_steps_the_schedule_once_per_group(tmp_path):
    # 64 clips in batches of 8 -> 8 batches; groups of 3 -> steps after batches 3, 6 and 8.
    trainer = _trainer(tmp_path, epochs=2, batch_size=8, accumulate=3)
    assert trainer.steps_per_epoch == 3
    trainer.fit()
    assert trainer.scheduler.last_epoch == 6
    assert next(iter(trainer.optimizer.state.values()))["step"].item() == 6
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["data_wait_s"] + record["compute_s"] == pytest.approx(record["epoch_time_s"])


def test_compiled_model_trains_and_saves_plain_keys(tmp_path):
    # "aot_eager" traces forward and backward as "inductor" does but builds no C++ kernels: inductor
    # took minutes for this tiny model on the shared 2-core machine.
    trainer = _trainer(tmp_path, epochs=1)
    runtime = RuntimeConfig(compile=True, compile_backend="aot_eager")
    trainer.model = prepare_model(trainer.model, runtime, trainer.device)
    trainer.train_model = trainer.model
    summary = trainer.fit()
    assert summary["val_top1"] > 0.8
    # Keys without torch.compile's "_orig_mod." prefix, so the checkpoint loads into a plain model.
    assert set(load_file(tmp_path / "best" / "model.safetensors")) == {"1.weight", "1.bias"}


TIMINGS = {"clips_per_s", "data_wait_share", "data_wait_s", "compute_s", "epoch_time_s"}


class Crash(BaseException):
    """Stands for `kill -9` at a write point: nothing catches it and nothing cleans up after it."""


def _outcome(root, trainer):
    metrics = [
        {k: v for k, v in r.items() if k not in TIMINGS} for r in RunDir(root).read_metrics()
    ]
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    best = load_file(str(root / "best" / "model.safetensors"))
    return metrics, weights, best


def _assert_same_outcome(a, b, where=""):
    assert a[0] == b[0], where
    for outcome_a, outcome_b in ((a[1], b[1]), (a[2], b[2])):
        for key, value in outcome_a.items():
            torch.testing.assert_close(outcome_b[key], value, rtol=0, atol=0, msg=f"{where} {key}")


@pytest.mark.slow  # ~40 stopped-and-resumed two-epoch runs of a tiny model (~15 s)
def test_a_run_killed_at_any_write_point_resumes_to_the_uninterrupted_result(tmp_path):
    points = []
    with fault_hook(points.append):
        straight = make_trainer(tmp_path / "straight", epochs=2)
        straight.fit()
    expected = _outcome(tmp_path / "straight", straight)
    assert "commit epoch 2" in points and "move last aside" in points

    for n, point in enumerate(points):
        root = tmp_path / f"killed{n}"
        calls = []

        def crash_at_n(name, calls=calls, n=n):
            calls.append(name)
            if len(calls) == n + 1:
                raise Crash

        with fault_hook(crash_at_n), pytest.raises(Crash):
            make_trainer(root, epochs=2).fit()
        resumed = make_trainer(root, epochs=2)  # seeded as a job seeds it: a run killed before
        resumed.fit()  # its first commit starts over
        _assert_same_outcome(expected, _outcome(root, resumed), where=f"killed at {n}: {point}")
        assert not [p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_a_real_kill_during_the_epoch_commit_resumes_to_the_uninterrupted_result(tmp_path):
    script = (
        "import os, signal, sys\n"
        "from tubelet.engine.atomic import fault_hook\n"
        "from distributed_cases import make_trainer\n"
        "seen = []\n"
        "def kill(name):\n"
        "    seen.append(name)\n"
        "    if seen.count('move last aside') == 1 and name == 'move last in':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "with fault_hook(kill):\n"
        "    make_trainer(sys.argv[1], epochs=3).fit()\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "killed")], env=python_env()
    )
    assert killed.returncode == -signal.SIGKILL
    # Killed in epoch 2's commit between moving the old last/ aside and the new one in.
    assert not (tmp_path / "killed" / "last").exists()
    assert [p.name for p in (tmp_path / "killed").glob(".epoch-*")] == [".epoch-0002"]

    resumed = make_trainer(tmp_path / "killed", epochs=3)  # the dead process's lock is gone
    resumed.fit()
    straight = make_trainer(tmp_path / "straight", epochs=3)
    straight.fit()
    a, b = _outcome(tmp_path / "straight", straight), _outcome(tmp_path / "killed", resumed)
    assert [r["epoch"] for r in b[0]] == [1, 2, 3]
    _assert_same_outcome(a, b)


def test_resume_never_unpickles_a_planted_trainer_state(tmp_path):
    _trainer(tmp_path / "run", epochs=1).fit()
    last = tmp_path / "run" / "last"
    for name in ("trainer_state.json", "trainer_state.safetensors"):
        (last / name).unlink()
    marker = tmp_path / "code-ran"
    torch.save({"epoch": 1, "best": Plant(marker)}, last / "trainer_state.pt")
    with pytest.raises(ValueError, match="trainer_state.pt is not read"):
        _trainer(tmp_path / "run", epochs=2).fit()
    assert not marker.exists()


def _crash_at(point):
    def crash(name):
        if name == point:
            raise Crash

    return crash


def test_an_old_pickled_trainer_state_still_resumes(tmp_path):
    with fault_hook(_crash_at("commit epoch 2")), pytest.raises(Crash):
        _trainer(tmp_path / "old", epochs=2).fit()
    last = tmp_path / "old" / "last"
    torch.save(load_trainer_state(last), last / "trainer_state.pt")  # as tubelet saved it before
    for name in ("trainer_state.json", "trainer_state.safetensors"):
        (last / name).unlink()
    resumed = _trainer(
        tmp_path / "old", epochs=2, model=nn.Sequential(nn.Flatten(), nn.Linear(96, 2))
    )
    resumed.fit()
    straight = _trainer(tmp_path / "new", epochs=2)
    straight.fit()
    _assert_same_outcome(_outcome(tmp_path / "new", straight), _outcome(tmp_path / "old", resumed))


def test_a_trainer_on_a_run_folder_held_elsewhere_is_refused_and_writes_nothing(tmp_path):
    with held_elsewhere(tmp_path) as pid, pytest.raises(RunLockedError, match=f"PID {pid}"):
        _trainer(tmp_path, epochs=1).fit()
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


class Unreadable(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return {"video": None, "label": -1, "index": i, "bad_files": [(f"/v{i}.mp4", "empty")]}


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_split_of_unreadable_videos_only_stops_before_saving_anything(tmp_path, split):
    trainer = _trainer(tmp_path, epochs=1)
    loader = DataLoader(Unreadable(), batch_size=4, collate_fn=collate_clips)
    setattr(trainer, f"{split}_loader", loader)
    with pytest.raises(
        ValueError,
        match=rf"not one {split} video could be read \(6 unreadable: /v0.mp4: empty; .*tubelet data validate",
    ):
        trainer.fit()
    assert not (tmp_path / "last").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_inductor_workarounds_switch_off_the_tiling_analysis_only_where_it_fails(monkeypatch):
    from torch._inductor import config, tiling_utils

    assert inductor_workarounds() == {}  # this torch solves the expression
    assert hasattr(config.triton, "coalesce_tiling_analysis")  # the option inductor reads

    def raises(expr):
        raise AssertionError("expected no ModularIndexing or FloorDiv in expr")

    monkeypatch.setattr(tiling_utils, "solve_for_tiling", raises)
    assert inductor_workarounds() == {"triton.coalesce_tiling_analysis": False}


class HostSyncs(TorchDispatchMode):
    """Counts the ops that copy a tensor's value to the host (`Tensor.item()`, `bool(tensor)`): on a
    GPU each one waits for every kernel queued before it. Not counted: those inside the data
    loader (workers' work in a real run) and the optimizer's step counter (a CPU tensor in torch's
    AdamW, never on the GPU)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            files = [frame.filename for frame in traceback.extract_stack()]
            if not any("torch/utils/data/" in f or "torch/optim/" in f for f in files):
                self.count += 1
        return func(*args, **(kwargs or {}))


def test_training_reads_the_loss_on_the_host_every_few_batches_only(tmp_path):
    """The CPU proxy of a GPU loop that never waits for the device between steps: 16 batches of
    an epoch, the loss read after the 5th, 10th and 15th and at the end, not after each batch."""
    trainer = _trainer(tmp_path, epochs=1, batch_size=4)
    trainer.sync_every = 5
    trainer.evaluate = lambda loader, **kw: {"top1": 1.0}  # count the training epoch only
    with HostSyncs() as syncs:
        trainer.fit()
    assert len(trainer.train_loader) == 16
    assert syncs.count == 16 // 5 + 1


def test_the_trainer_prepares_each_batch_on_the_device_for_training_and_evaluation(tmp_path):
    trainer = _trainer(tmp_path, epochs=1)
    seen = []

    def prepare(batch):
        seen.append(tuple(batch["video"].shape[:2]))
        return batch

    trainer.prepare = prepare
    trainer.fit()
    assert seen.count((8, 3)) == 8  # the 64 training clips in batches of 8
    assert seen.count((16, 1)) == 2  # 32 evaluation clips of one view
