"""The generic trainer: AdamW, warm-up + cosine, bf16/fp16 autocast, accumulation, activation
checkpointing, channels-last, torch.compile, DDP/FSDP under torchrun, resume, best checkpoint.

The trainer knows nothing of a task but this duty list. A task provides
`loss(model, batch) -> scalar tensor`, `new_meter()` (an object with `compute() -> dict`), and
`evaluate_batch(model, batch, meter)`. A batch is a dict whose tensors share their first (batch)
dimension; it may carry `bad_files` (the unreadable files met, as from `tubelet.data.collate_clips`),
and a batch whose `video` is None (all of it unreadable) is skipped.

Under `torchrun` (see `tubelet.engine.distributed`) every process runs the same `Trainer` on its share
of the data; gradients are averaged across processes, evaluation meters are merged (each video
counted once), and only rank 0 shows progress and writes the run folder. The batch size is per
process: one optimizer step sees batch size x `accumulate` x processes clips.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tubelet.engine import distributed as dist
from tubelet.engine import sharded
from tubelet.engine.checkpoint import (
    WEIGHTS,
    load_trainer_state,
    save_model,
    save_spec,
    save_trainer_state,
)
from tubelet.engine.prefetch import DeviceBatches, Prepare, has_clips
from tubelet.engine.progress import TrainProgress
from tubelet.engine.run import RunDir, seed_everything
from tubelet.models.spec import ModelSpec

PRECISIONS = ("fp32", "bf16", "fp16")


class Meter(Protocol):
    def compute(self) -> dict[str, Any]: ...


class Task(Protocol):
    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor: ...

    def new_meter(self) -> Meter: ...  # with `merge(other)` for evaluation in several processes

    def evaluate_batch(self, model: nn.Module, batch: dict[str, Any], meter: Meter) -> None: ...


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation settings. `warmup_epochs` may be fractional; `accumulate` batches make one step."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    accumulate: int = 1
    precision: str = "fp32"
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.accumulate < 1 or self.epochs < 1:
            raise ValueError("epochs and accumulate must be at least 1")


@dataclass(frozen=True)
class RuntimeConfig:
    """How the model runs, not what it learns: each switch trades memory, speed or devices and leaves
    the results equal up to numerical effects.

    `grad_checkpointing`: the model's `set_grad_checkpointing()` (blocks recompute their activations
    in backward: less memory, one more forward). `channels_last`: weights and inputs in
    channels-last layout (`channels_last_3d` for 5-D tensors; faster Conv3d on recent cuDNN, measure
    per model). `compile`: `torch.compile` the model in place with `compile_backend` ("inductor"
    generates kernels; "aot_eager" only traces, for debugging). `parallel`: how several processes
    share the model, "ddp" (a copy each) or "fsdp" (parameters, gradients and optimizer state sharded).
    `cudnn_benchmark`: on a GPU, let cuDNN time its convolution algorithms for the first batch of
    each shape and keep the fastest (training clips have one shape; the last evaluation batch may
    add one more).
    """

    grad_checkpointing: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    parallel: str = "ddp"
    cudnn_benchmark: bool = True

    def __post_init__(self) -> None:
        if self.parallel not in dist.PARALLEL:
            raise ValueError(f"parallel must be one of {dist.PARALLEL}, not {self.parallel!r}")


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up from ~0 to 1, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation weights (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class Trainer:
    """Trains `model` on `task`, evaluating after every epoch and keeping the best by `monitor`
    (the highest value, or the lowest with `minimize=True`).

    The run folder gets `last/` (weights + trainer state, written every epoch) and `best/`. Calling
    `fit()` on a run folder that has `last/` resumes after its last finished epoch. `groups`
    replaces the default AdamW parameter groups (each may set its own "lr", which the schedule
    scales; e.g. layer-wise decay in `tubelet.jobs.finetune`).

    The data path keeps the device busy: each batch is copied to the device one step ahead and
    prepared there by `prepare` (e.g. uint8 clips normalised: `tubelet.data.transforms.
    BatchNormalize`), see `tubelet.engine.prefetch`. The host waits for the device only to read the
    running loss, every `sync_every` batches and at the end of an epoch.

    `self.model` is the user's module (what is saved); `self.train_model` is what runs the training
    forward (the module, or its DDP wrapper). In a process group (`init_distributed()` is called
    here, so `torchrun` is enough) each process seeds torch with the current seed plus its rank.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        *,
        train_loader: DataLoader,
        val_loader: DataLoader,
        config: OptimConfig,
        run: RunDir,
        spec: ModelSpec,
        monitor: str = "top1",
        minimize: bool = False,
        device: torch.device | None = None,
        show_progress: bool = True,
        runtime: RuntimeConfig | None = None,
        groups: list[dict[str, Any]] | None = None,
        prepare: Prepare | None = None,
        sync_every: int = 25,
    ) -> None:
        if sync_every < 1:
            raise ValueError(f"sync_every must be at least 1, got {sync_every}")
        self.env = dist.init_distributed()
        self.runtime = runtime or RuntimeConfig()
        self.device = device or dist.default_device(self.env)
        if self.env.world_size > 1:
            seed_everything(torch.initial_seed() + self.env.rank)
        if self.device.type == "cuda" and self.runtime.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.fsdp = self.env.world_size > 1 and self.runtime.parallel == "fsdp"
        if self.fsdp:
            sharded.check_supported()
        self.model = prepare_model(model, self.runtime, self.device)
        self.train_model = dist.wrap_model(
            self.model, self.runtime.parallel, self.device, config.precision
        )
        self.task = task
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.prepare = prepare
        self.sync_every = sync_every
        self.config = config
        self.run = run
        self.spec = spec
        self.monitor = monitor
        self.minimize = minimize
        self.show_progress = show_progress and self.env.is_main
        if groups is not None and self.fsdp:
            raise ValueError("parameter groups of the unsharded model cannot be used with FSDP")
        # After wrapping: FSDP replaces the parameters by sharded ones.
        # Fused on a GPU: one kernel for the whole update, its step count on the device (no host
        # reads). FSDP's sharded parameters take the default (foreach) implementation.
        self.optimizer = torch.optim.AdamW(
            groups or param_groups(self.model, config.weight_decay), lr=config.lr,
            fused=self.device.type == "cuda" and not self.fsdp or None,
        )  # fmt: skip
        self.scaler = grad_scaler(self.device, config.precision)
        self.steps_per_epoch = math.ceil(len(train_loader) / config.accumulate)
        total = config.epochs * self.steps_per_epoch
        warmup = min(total // 2, max(1, round(config.warmup_epochs * self.steps_per_epoch)))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, warmup_steps=warmup, total_steps=total)
        )
        self.epoch = 0  # epochs finished
        self.best: dict[str, Any] = {}
        self.bad_files: dict[str, dict[str, str]] = {}
        self.train_time = 0.0
        self.clips_seen = 0

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; return (and write) the run summary.

        The run folder is held (`RunDir.lock`) while training; each epoch is committed as one step
        (`RunDir.commit_epoch`), and what a stopped run left half-done is finished or dropped first.
        """
        with self._hold_run():
            self._resume()
            with TrainProgress(enabled=self.show_progress) as progress:
                while self.epoch < self.config.epochs:
                    with cpu_bf16_guard(self.model, self.device, self.config.precision):
                        train_stats = self._train_epoch(progress)
                    val = self.evaluate(self.val_loader, progress=progress, split="val")
                    self._gather_bad_files()
                    self.epoch += 1
                    record = {
                        "epoch": self.epoch,
                        **train_stats,
                        **{f"val_{k}": v for k, v in val.items() if not isinstance(v, list)},
                    }
                    # Every process holds the same merged metrics, so all take the same branch
                    # (under FSDP every process writes its shards).
                    improved = not self.best or self._improves(val[self.monitor])
                    if improved:
                        self.best = {"epoch": self.epoch, **val}
                    self._commit(record, improved)
                    progress.log_epoch(record)
            return self._summarise()

    @contextmanager
    def _hold_run(self) -> Iterator[None]:
        """Rank 0 holds the run folder and finishes or drops what a stopped run left; every process
        goes on, or all stop with rank 0's message (e.g. the folder is in use)."""
        with ExitStack() as stack:

            def hold() -> None:
                stack.enter_context(self.run.lock())
                self.run.recover()

            dist.main_decides(hold)
            yield

    def _train_epoch(self, progress: TrainProgress) -> dict[str, float]:
        self.train_model.train()
        sampler = getattr(self.train_loader, "sampler", None)
        for obj in (self.train_loader.dataset, sampler):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(self.epoch)
        accumulate = self.config.accumulate
        num_batches = len(self.train_loader)
        # The summed loss stays on the device; the host reads it every `sync_every` batches only.
        loss_total = torch.zeros((), device=self.device)
        loss_sum, loss_count, clips, wait = 0.0, 0, 0, 0.0
        start = time.perf_counter()
        task_id = progress.start_epoch(self.epoch + 1, self.config.epochs, num_batches)
        self.optimizer.zero_grad(set_to_none=True)
        batches = DeviceBatches(self.train_loader, self.device, self.prepare)
        for i, (batch, waited) in enumerate(batches):
            wait += waited
            self._note_bad(batch, "train")
            # The last group of an epoch may hold fewer than `accumulate` batches.
            group = min(accumulate, num_batches - (i // accumulate) * accumulate)
            sync = (i + 1) % accumulate == 0 or i + 1 == num_batches
            has_batch = has_clips(batch)
            by_hand = self._must_sync_by_hand(has_batch, sync)
            if has_batch:
                with self._no_sync(not sync or by_hand):
                    with self._autocast():
                        loss = self.task.loss(self.train_model, batch)
                    self.scaler.scale(loss / group).backward()
                loss_total += loss.detach()
                loss_count += 1
                clips += batch_size(batch)
            if by_hand:
                dist.all_reduce_gradients(self.model)
            if sync:
                self._step()
            if (i + 1) % self.sync_every == 0 or i + 1 == num_batches:
                loss_sum = loss_total.item()
            elapsed = time.perf_counter() - start
            progress.update(
                task_id, loss=loss_sum / max(1, loss_count), clips_per_s=clips / elapsed,
                wait_share=wait / elapsed,
            )  # fmt: skip
        # Over all processes: summed losses, counts, clips; the mean time spent waiting; the
        # slowest process's time (the epoch's wall time), so clips_per_s is the global throughput.
        elapsed = dist.all_reduce_max(time.perf_counter() - start)
        loss_sum, loss_count, clips, wait, batches = dist.all_reduce_sum(
            [loss_sum, loss_count, clips, wait, num_batches]
        )
        if batches and not clips:  # nothing learnt: stop before saving untrained weights
            raise ValueError(unreadable_split(self.bad_files, "train"))
        wait /= self.env.world_size
        self.train_time += elapsed
        self.clips_seen += int(clips)
        return {
            "train_loss": loss_sum / max(1, loss_count),
            "lr": self.scheduler.get_last_lr()[0],
            "clips_per_s": clips / elapsed,
            "data_wait_share": wait / elapsed,
            "data_wait_s": wait,
            "compute_s": elapsed - wait,
            "epoch_time_s": elapsed,
        }

    def _step(self) -> None:
        """One optimizer step on the accumulated gradients (unscaled first when fp16 scales them)."""
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with warnings.catch_warnings():
            # fp16: the scaler skips a step whose gradients overflowed (the first ones, while it
            # finds its scale); the schedule counts iterations and moves on, as intended.
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(self.task, "after_step"):  # e.g. the generation task's EMA update
            self.task.after_step(self.model)

    def _must_sync_by_hand(self, has_batch: bool, sync: bool) -> bool:
        """In several processes: whether some process has no batch (all of it unreadable) here.

        Then DDP cannot average gradients in backward (that process runs none), so the step's
        gradients are averaged by hand. FSDP gathers weights inside forward, so every process must
        run one: there it is an error.
        """
        if self.env.world_size == 1:
            return False
        missing = dist.all_reduce_sum([0.0 if has_batch else 1.0])[0]
        if missing and self.fsdp:
            raise ValueError(
                "a process got a batch of unreadable videos only, and FSDP needs every process to "
                "run each forward: train with --bad-files resample, or fix the data "
                "(`tubelet data validate`)"
            )
        return bool(missing) and sync

    def _no_sync(self, skip_sync: bool) -> AbstractContextManager:
        """DDP's `no_sync()` for the backward passes that must not average gradients yet."""
        if skip_sync and isinstance(self.train_model, nn.parallel.DistributedDataParallel):
            return self.train_model.no_sync()
        return nullcontext()

    def evaluate(
        self, loader: DataLoader, *, progress: TrainProgress | None = None, split: str = "val"
    ) -> dict[str, Any]:
        """Run the task's evaluation over `loader` and return its metrics."""
        if not self.fsdp:  # DDP: each process has updated its own BatchNorm statistics
            dist.broadcast_buffers(self.model)
        return evaluate_loader(
            self.model, self.task, loader, device=self.device, precision=self.config.precision,
            progress=progress, bad_files=self.bad_files, split=split, lockstep=self.fsdp,
            prepare=self.prepare,
        )  # fmt: skip

    # -- state ---------------------------------------------------------------------------------------
    def _commit(self, record: dict[str, Any], improved: bool) -> None:
        """Commit this epoch's weights (`last/`, and `best/` when `improved`), trainer state and
        metrics line as one step (`RunDir.commit_epoch`). Rank 0 writes; under FSDP every process
        writes its shards of the weights and optimizer state first."""
        stage = self.run.stage(self.epoch)
        optimizer = None  # in the shards under FSDP
        if self.fsdp:
            sharded.save_sharded(stage / "last", self.model, self.optimizer)
            if improved:
                sharded.save_sharded(stage / "best", self.model)
        else:
            optimizer = self.optimizer.state_dict()
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
        rng_by_rank = dist.all_gather_objects(rng)
        if not self.env.is_main:
            return
        state = {
            "epoch": self.epoch,
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": self.best,
            "bad_files": self.bad_files,
            "train_time": self.train_time,
            "clips_seen": self.clips_seen,
            "config": asdict(self.config),
            "rng": rng,
            "rng_by_rank": rng_by_rank,
        }
        for folder in (stage / "last", stage / "best") if improved else (stage / "last",):
            if self.fsdp:
                save_spec(folder, self.spec)
            else:
                save_model(folder, self.model, self.spec)
        save_trainer_state(stage / "last", state)
        self.run.commit_epoch(self.epoch, record)

    def _resume(self) -> None:
        """Continue from `last/`: sharded checkpoints from any number of processes, each process
        reading its share; whole ones read by every process (sharded on loading under FSDP)."""
        state = load_trainer_state(self.run.last)
        if state is None:
            return
        from tubelet.convert import read_state_dict  # a torn or foreign file: one clear error

        if sharded.is_sharded(self.run.last):
            sharded.load_sharded(self.run.last, self.model, self.optimizer)
        elif self.fsdp:
            weights = read_state_dict(self.run.last / WEIGHTS)
            _load_full_state(self.model, self.optimizer, weights, state["optimizer"])
        else:
            self.model.load_state_dict(read_state_dict(self.run.last / WEIGHTS))
            self.model.to(self.device)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.best = state["best"]
        self.bad_files = state["bad_files"]
        self.train_time = state["train_time"]
        self.clips_seen = state["clips_seen"]
        by_rank = state.get("rng_by_rank", [])
        rng = by_rank[self.env.rank] if len(by_rank) == self.env.world_size else state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])

    def _gather_bad_files(self) -> None:
        """Every process's unreadable files, in every process (the first reason per path)."""
        if self.env.world_size == 1:
            return
        for seen in dist.all_gather_objects(self.bad_files):
            for path, info in seen.items():
                self.bad_files.setdefault(path, info)

    def _summarise(self) -> dict[str, Any]:
        best = self.best
        summary = {
            "model": self.spec.model,
            "epochs": self.epoch,
            "best_epoch": best.get("epoch"),
            **{f"val_{k}": v for k, v in best.items() if k != "epoch"},
            "params": sum(p.numel() for p in self.model.parameters()),
            "train_time_s": round(self.train_time, 2),
            "train_clips_per_s": round(self.clips_seen / max(self.train_time, 1e-9), 2),
            "num_bad_files": len(self.bad_files),
            "bad_files": [{"path": p, **info} for p, info in sorted(self.bad_files.items())],
            "processes": self.env.world_size,
        }
        if self.env.is_main:
            self.run.write_summary(summary)
        return summary

    # -- helpers -------------------------------------------------------------------------------------
    def _improves(self, value: float) -> bool:
        best = self.best[self.monitor]
        return value < best if self.minimize else value > best

    def _note_bad(self, batch: dict[str, Any], split: str) -> None:
        note_bad_files(self.bad_files, batch, split)

    def _autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.config.precision)


@torch.no_grad()
def evaluate_loader(
    model: nn.Module,
    task: Task,
    loader: Iterable[dict[str, Any]],
    *,
    device: torch.device,
    precision: str = "fp32",
    progress: TrainProgress | None = None,
    bad_files: dict[str, dict[str, str]] | None = None,
    split: str = "val",
    lockstep: bool = False,
    prepare: Prepare | None = None,
) -> dict[str, Any]:
    """One evaluation pass of `model` over `loader`: the task's metrics. Unreadable videos are
    recorded in `bad_files` (path -> reason, split). `prepare` runs on each batch on the device
    (see `Trainer`).

    In several processes each evaluates its share of the videos (the loaders of `build_loader` shard
    without padding) and the meters are merged, so every video counts once and the metrics equal one
    process's. `lockstep=True` is for models whose forward talks to the other processes (FSDP):
    a process with fewer batches repeats its last one into a meter that is thrown away, so all run
    the same number of forwards.
    """
    model.eval()
    meter = task.new_meter()
    num_batches = len(loader)  # type: ignore[arg-type]
    rounds = dist.all_reduce_max(num_batches) if lockstep else num_batches
    task_id = progress.start_eval(rounds) if progress else None
    last = None
    seen: dict[str, dict[str, str]] = {} if bad_files is None else bad_files
    evaluated = 0
    for batch, _ in DeviceBatches(loader, device, prepare):
        note_bad_files(seen, batch, split)
        if has_clips(batch):
            evaluated += 1
            last = batch
            with autocast(device, precision):
                task.evaluate_batch(model, last, meter)
        elif lockstep:
            _lockstep_forward(model, task, last, device, precision)
        if progress:
            progress.advance(task_id)
    for _ in range(rounds - num_batches):
        _lockstep_forward(model, task, last, device, precision)
    if progress:
        progress.finish(task_id)
    evaluated, batches = dist.all_reduce_sum([evaluated, num_batches])
    if batches and not evaluated:
        raise ValueError(unreadable_split(seen, split))
    return dist.gather_meters(meter).compute()


def unreadable_split(bad_files: dict[str, dict[str, str]], split: str) -> str:
    """The error for a split of which not one video could be read (a few of them as examples)."""
    bad = [(p, i["reason"]) for p, i in bad_files.items() if i.get("split") == split]
    shown = "; ".join(f"{p}: {r}" for p, r in bad[:3]) + ("; ..." if len(bad) > 3 else "")
    return (
        f"not one {split} video could be read ({len(bad)} unreadable: {shown}); fix or replace "
        "them (`tubelet data validate DATA` lists every bad file)"
    )


def _lockstep_forward(
    model: nn.Module, task: Task, batch: dict[str, Any] | None, device: torch.device, precision: str
) -> None:
    """A forward whose results are thrown away, to keep in step with processes that have a batch."""
    if batch is None:
        raise ValueError(
            "a process has no readable validation video to keep in step with the others (FSDP "
            "evaluation needs at least one per process): use fewer processes or fix the data"
        )
    with autocast(device, precision):
        task.evaluate_batch(model, batch, task.new_meter())


def note_bad_files(seen: dict[str, dict[str, str]], batch: dict[str, Any], split: str) -> None:
    """Record the unreadable files a batch met (first reason per path)."""
    for path, reason in batch.get("bad_files", ()):
        seen.setdefault(path, {"reason": reason, "split": split})


def batch_size(batch: dict[str, Any]) -> int:
    """The number of samples in a batch: the first dimension of its first tensor."""
    return next(len(v) for v in batch.values() if isinstance(v, torch.Tensor))


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 or fp16 autocast for "bf16"/"fp16", nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


@functools.cache
def onednn_bf16_conv3d_grads_are_wrong() -> bool:
    """Whether the installed torch's oneDNN (mkldnn) kernels compute bfloat16 Conv3d weight
    gradients wrongly on this CPU, found by asking it once (a few milliseconds).

    Seen with torch 2.14.1 on an AMD EPYC: the weight gradient of a bf16 `conv3d` under autocast
    came out as garbage (differences from float32 larger than the gradient itself; inf or NaN in
    about a third of the calls), while 2D convolutions, float32, and torch's own kernels
    (`torch.backends.mkldnn` off) were right. Training a 3D CNN with `--precision bf16` on a CPU
    then learnt nothing.
    """
    g = torch.Generator().manual_seed(0)
    # A shape where it fails (16+ channels over a small 2x4x4 volume, batch 2 or more).
    x, grad_out = (torch.randn(2, 16, 2, 4, 4, generator=g) for _ in range(2))
    weight = torch.randn(16, 16, 3, 3, 3, generator=g)
    args = ([1, 1, 1], [1, 1, 1], [1, 1, 1], False, [0, 0, 0], 1, [False, True, False])
    want = torch.ops.aten.convolution_backward(grad_out, x, weight, None, *args)[1]
    bf16 = (t.to(torch.bfloat16) for t in (grad_out, x, weight))
    got = torch.ops.aten.convolution_backward(*bf16, None, *args)[1].float()
    # bf16 keeps 8 bits: its sums of 64 products are off by a few thousandths of their size.
    return not torch.allclose(got, want, rtol=0.05, atol=0.05 * float(want.abs().max()))


def cpu_bf16_guard(
    model: nn.Module, device: torch.device, precision: str
) -> AbstractContextManager:
    """Around bf16 training of a model with 3D convolutions on a CPU whose oneDNN gets their
    gradients wrong (`onednn_bf16_conv3d_grads_are_wrong`): oneDNN off, so torch's own kernels
    compute them (slower, right), with a warning saying so. Nothing elsewhere."""
    if (
        device.type != "cpu"
        or precision != "bf16"
        or not any(isinstance(m, nn.Conv3d) for m in model.modules())
        or not onednn_bf16_conv3d_grads_are_wrong()
    ):
        return nullcontext()
    warnings.warn(
        "this torch's oneDNN computes bf16 Conv3d gradients wrongly on this CPU; training runs "
        "with oneDNN off (right, slower). --precision fp32 is faster here",
        stacklevel=2,
    )
    return _onednn_off()


@contextmanager
def _onednn_off() -> Iterator[None]:
    with warnings.catch_warnings():
        # torch's note on setting the flags, about Intel GPUs: nothing to do with this.
        warnings.filterwarnings("ignore", "TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for "fp16" (its gradients underflow without it); a pass-through otherwise.

    The scaler multiplies the loss before backward and divides the gradients before the step,
    skipping steps whose gradients overflowed and adapting the scale (Micikevicius et al. 2018,
    "Mixed Precision Training", section 3.2).
    """
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def to_channels_last(x: Any) -> Any:
    """A module's 5-D/4-D weights, or a 5-D/4-D tensor, in channels-last layout
    (`channels_last_3d` for 5-D); other tensors unchanged. A module is changed in place."""
    if isinstance(x, nn.Module):
        for tensor in (*x.parameters(), *x.buffers()):
            tensor.data = to_channels_last(tensor.data)
        return x
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def prepare_model(model: nn.Module, runtime: RuntimeConfig, device: torch.device) -> nn.Module:
    """`model` on `device` with the switches of `runtime` that act on one process: checkpointing,
    channels-last, compile (in place, so its state dict keeps its keys)."""
    model = model.to(device)
    if runtime.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ValueError(
                f"{type(model).__name__} has no set_grad_checkpointing(); activation checkpointing "
                "needs a model that follows the tubelet model contract"
            )
        model.set_grad_checkpointing(True)
    if runtime.channels_last:
        to_channels_last(model)
    if runtime.compile:
        compile_model(model, runtime.compile_backend)
    return model


def compile_model(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """`model.compile(backend=...)` in place (its state dict keeps its keys), with inductor options
    that work around known inductor bugs of the installed torch (`inductor_workarounds`)."""
    options = inductor_workarounds() if backend == "inductor" else {}
    model.compile(backend=backend, **({"options": options} if options else {}))
    return model


def inductor_workarounds() -> dict[str, Any]:
    """Inductor options that avoid compile failures of the installed torch, found by asking it.

    Triton's coalescing analysis (`tiling_utils.solve_for_tiling`) raised "expected no
    ModularIndexing or FloorDiv in expr" on nested index expressions
    (https://github.com/pytorch/pytorch/issues/191603, fixed by #191605): seen compiling
    TimeSformer's training step on an H200 with torch 2.11. Where the installed version still
    raises on that issue's repro, the analysis is switched off for tubelet's compiles (kernels
    keep inductor's other tiling).
    """
    try:
        import sympy
        from torch._inductor import tiling_utils
        from torch.utils._sympy.functions import ModularIndexing
    except ImportError:  # an inductor without the analysis has nothing to work around
        return {}
    n0 = sympy.Symbol("n0", integer=True, nonnegative=True)
    try:
        tiling_utils.solve_for_tiling(ModularIndexing(ModularIndexing(n0 - 252252, 1, 50), 1, 50))
    except AssertionError:
        return {"triton.coalesce_tiling_analysis": False}
    return {}


def _load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
) -> None:
    """Load whole (unsharded) model and optimizer states into an FSDP model, each process its shard.

    `optimizer_state` is a plain `optimizer.state_dict()` (of a run in one process or under DDP),
    whose parameters are numbered in the order of its groups; the groups of `optimizer` hold the
    same parameters in the same order, which gives each number its parameter's name.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=options)
    names = {p: n for n, p in model.named_parameters()}
    saved = [i for group in optimizer_state["param_groups"] for i in group["params"]]
    current = [names[p] for group in optimizer.param_groups for p in group["params"]]
    name = dict(zip(saved, current, strict=True))
    by_name = {
        "state": {name[i]: slots for i, slots in optimizer_state["state"].items()},
        "param_groups": [
            {**group, "params": [name[i] for i in group["params"]]}
            for group in optimizer_state["param_groups"]
        ],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=options)
