"""Cases the distributed tests run in spawned processes (a module importable by name, which
`torch.multiprocessing.spawn` needs: the test modules themselves are imported by path)."""

import contextlib
import os
import socket
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader, Dataset

from tubelet.data.datasets import collate_clips
from tubelet.data.loader import ShardSampler, ShuffleSampler
from tubelet.engine import distributed as dist
from tubelet.engine.run import RunDir, open_run_dir
from tubelet.engine.trainer import OptimConfig, RuntimeConfig, Trainer, evaluate_loader
from tubelet.models.spec import ModelSpec
from tubelet.tasks import ClassificationTask
from tubelet.tasks.detection import DetectionMeter
from tubelet.tasks.flow import FlowMeter
from tubelet.tasks.generation import GenerationMeter
from tubelet.tasks.masked_video import ReconstructionMeter

CLASSES = 3


class Clips(Dataset):
    """Clips (3, 2, 4, 4) of 3 classes (shifted means); items in `bad` are unreadable; with
    `views=True` each clip is one evaluation view (1, 3, 2, 4, 4)."""

    def __init__(self, n, seed, *, views=False, bad=()):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, CLASSES, (n,), generator=g)
        self.videos = torch.randn(n, 3, 2, 4, 4, generator=g) + self.labels.view(n, 1, 1, 1, 1)
        self.views = views
        self.bad = set(bad)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if i in self.bad:
            return {"video": None, "label": -1, "index": i, "bad_files": [(f"/v{i}.mp4", "empty")]}
        video = self.videos[i].unsqueeze(0) if self.views else self.videos[i]
        return {"video": video, "label": int(self.labels[i]), "index": i, "bad_files": []}


class Net(nn.Module):
    """Two Linear layers in a Sequential (so FSDP shards them one by one), with a BatchNorm between
    them when `norm`; with checkpointing on, each layer recomputes its forward in backward."""

    def __init__(self, norm=False):
        super().__init__()
        torch.manual_seed(0)
        middle = [nn.BatchNorm1d(16)] if norm else []
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(96, 16), *middle, nn.ReLU(), nn.Linear(16, 3)
        )
        self.checkpointing = False

    def set_grad_checkpointing(self, enable=True):
        self.checkpointing = enable

    def forward(self, x):
        if not (self.checkpointing and self.training):
            return self.body(x)
        for layer in self.body:
            x = checkpoint(layer, x, use_reentrant=False)
        return x


# 7 videos: shares of 4 and 3 on two processes, in batches of 3: 2 batches and 1 (FSDP evaluation
# must keep the processes in step).
VAL = Clips(7, seed=2, views=True)


def make_trainer(
    root, *, rank=0, world=1, batch_size=8, epochs=1, parallel="ddp", bad=(), precision="fp32",
    checkpointing=False, norm=False,
):  # fmt: skip
    train = Clips(8, seed=1, bad=bad)
    sampler = ShuffleSampler(len(train), seed=0, rank=rank, world_size=world)
    return Trainer(
        Net(norm), ClassificationTask(CLASSES, label_smoothing=0.0),
        train_loader=DataLoader(train, batch_size, sampler=sampler, collate_fn=collate_clips),
        val_loader=DataLoader(
            VAL, batch_size=3, sampler=ShardSampler(len(VAL), rank=rank, world_size=world),
            collate_fn=collate_clips,
        ),
        config=OptimConfig(
            epochs=epochs, lr=0.01, warmup_epochs=0.5, grad_clip=None, precision=precision
        ),
        run=RunDir(Path(root)), spec=ModelSpec("net", {}, "classification"), show_progress=False,
        runtime=RuntimeConfig(parallel=parallel, grad_checkpointing=checkpointing),
    )  # fmt: skip


def first_moments(trainer):
    """AdamW's first moment per parameter after one step: (1 - beta1) * the averaged gradient."""
    return [whole(trainer.optimizer.state[p]["exp_avg"]) for p in trainer.model.parameters()]


def whole(tensor):
    """A tensor, gathered whole when it is sharded (collective), detached and copied."""
    tensor = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
    return tensor.detach().clone()


def trainer_state(trainer):
    """Whole weights and AdamW moments (collective under FSDP)."""
    params = [whole(p) for p in trainer.model.parameters()]
    moments = [
        whole(trainer.optimizer.state[p][slot])
        for p in trainer.model.parameters()
        for slot in ("exp_avg", "exp_avg_sq")
    ]
    return {"params": params, "moments": moments}


def interrupted_in_epoch_two(trainer):
    """`trainer.fit()` stopped by an interrupt at the start of its second epoch."""
    real_epoch, calls = trainer._train_epoch, []

    def crash_in_epoch_two(progress):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(progress)

    trainer._train_epoch = crash_in_epoch_two
    with contextlib.suppress(KeyboardInterrupt):
        trainer.fit()


def free_port():
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(rank, world, port):
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)


def sharded_worker(rank, world, port, root, results):
    """FSDP with bf16 mixed precision (a BatchNorm kept in float32) and checkpointing: a run
    stopped in epoch 2 and resumed from its sharded checkpoint equals a straight run; a one-process
    run's checkpoint resumes here."""
    join(rank, world, port)
    out = {}
    kw = {"rank": rank, "world": world, "batch_size": 2, "parallel": "fsdp", "norm": True}
    kw |= {"precision": "bf16", "checkpointing": True}
    straight = make_trainer(f"{root}/straight", epochs=2, **kw)
    straight.fit()
    interrupted_in_epoch_two(make_trainer(f"{root}/sharded", epochs=2, **kw))
    resumed = make_trainer(f"{root}/sharded", epochs=2, **kw)
    resumed.fit()
    out["straight"], out["resumed"] = trainer_state(straight), trainer_state(resumed)
    out["steps"] = resumed.scheduler.last_epoch
    # A checkpoint of one process (whole weights), resumed by FSDP on two (the run is complete).
    from_one = make_trainer(f"{root}/one", epochs=1, **kw)
    from_one.fit()
    out["from_one"] = trainer_state(from_one)
    results[rank] = out
    dist.destroy()


def worker(rank, world, port, root, results):
    join(rank, world, port)
    out = {}
    # One step of a global batch of 8 (4 per process), DDP and FSDP.
    for parallel in ("ddp", "fsdp"):
        trainer = make_trainer(
            f"{root}/{parallel}", rank=rank, world=world, batch_size=4, parallel=parallel
        )
        summary = trainer.fit()
        out[parallel] = {
            "moments": [m.clone() for m in first_moments(trainer)],
            "summary": {k: v for k, v in summary.items() if k.startswith("val_")},
            "processes": summary["processes"],
        }
    # Resume: interrupted in epoch 2 and run again equals a straight run.
    straight = make_trainer(f"{root}/straight", rank=rank, world=world, batch_size=2, epochs=2)
    straight.fit()
    interrupted_in_epoch_two(
        make_trainer(f"{root}/resumed", rank=rank, world=world, batch_size=2, epochs=2)
    )
    resumed = make_trainer(f"{root}/resumed", rank=rank, world=world, batch_size=2, epochs=2)
    resumed.fit()
    out["resume_equal"] = all(
        torch.equal(a, b)
        for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True)
    )
    # A process whose batch is all unreadable: gradients are averaged by hand, ranks stay equal.
    bad = make_trainer(
        f"{root}/bad", rank=rank, world=world, batch_size=2, bad=range(8) if rank else ()
    )
    bad.fit()
    out["bad_params"] = [p.detach().clone() for p in bad.model.parameters()]
    # Evaluation alone: every video once.
    meter_videos = evaluate_loader(
        Net(), ClassificationTask(CLASSES), bad.val_loader, device=torch.device("cpu")
    )["num_videos"]
    out["eval_videos"] = meter_videos
    out["meters"] = meter_results(rank, world)
    results[rank] = out
    dist.destroy()


def slow_write_text(self, data, *args, **kwargs):
    """`Path.write_text` that leaves the file empty for a while between truncating and writing."""
    with open(self, "w") as f:
        f.flush()
        time.sleep(0.05)
        return f.write(data)


def run_folder_worker(rank, world, port, root, results):
    """Both ranks open one run folder again and again (writes made slow, so a reader would meet an
    empty file), read its config after a barrier, then open it with other settings (refused)."""
    join(rank, world, port)
    Path.write_text = slow_write_text
    configs = []
    for i in range(5):
        run = open_run_dir(root, {"lr": 0.1, "versions": i}, check=lambda previous: None)
        dist.barrier()
        configs.append(run.read_config())
        dist.barrier()

    def same_lr(previous):
        if previous["lr"] != 0.2:
            raise ValueError(f"{root} holds a run with lr {previous['lr']}, not 0.2")

    try:
        open_run_dir(root, {"lr": 0.2, "versions": 5}, check=same_lr)
        refusal = None
    except ValueError as error:
        refusal = str(error)
    results[rank] = {"configs": configs, "refusal": refusal}
    dist.destroy()


def meter_cases():
    """Per task: a new meter and the items an evaluation adds to it, one video (or pair) each."""
    g = torch.Generator().manual_seed(3)
    flows = [
        (torch.randn(1, 2, 6, 8, generator=g) * 4, torch.randn(1, 2, 6, 8, generator=g) * 4)
        for _ in range(7)
    ]
    valid = [torch.rand(1, 6, 8, generator=g) > 0.3 for _ in range(7)]
    truth = [
        {"video": f"v{i}", "start": 1.0 * k, "end": 1.0 * k + 2, "label": "ab"[k % 2]}
        for i in range(7)
        for k in range(3)
    ]
    boxes = torch.rand(7, 4, 3, generator=g).tolist()
    detections = [
        (f"v{i}", [{"start": 4 * s, "end": 4 * s + 2 * e, "label": "ab"[k % 2], "score": p}
                   for k, (s, e, p) in enumerate(boxes[i])])
        for i in range(7)
    ]  # fmt: skip
    losses = torch.rand(7, 2, generator=g)
    return {
        "flow": (FlowMeter, [lambda m, i=i: m.update(*flows[i], valid[i]) for i in range(7)]),
        "generation": (GenerationMeter, [lambda m, i=i: m.update(losses[i]) for i in range(7)]),
        "detection": (
            lambda: DetectionMeter(truth),
            [lambda m, i=i: m.update(*detections[i]) for i in range(7)],
        ),
        "masked_video": (
            ReconstructionMeter,
            [lambda m, i=i: m.update(float(losses[i, 0]), 2) for i in range(7)],
        ),
    }


def meter_results(rank=0, world=1):
    """Each task's metrics over the items `rank::world`, merged over the processes."""
    results = {}
    for name, (new, items) in meter_cases().items():
        meter = new()
        for update in items[rank::world]:
            update(meter)
        results[name] = dist.gather_meters(meter).compute()
    return results
