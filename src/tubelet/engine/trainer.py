"""The generic trainer: AdamW, warm-up + cosine, bf16 autocast, accumulation, resume, best checkpoint.

The trainer knows nothing of a task but this duty list. A task provides
`loss(model, batch) -> scalar tensor`, `new_meter()` (an object with `compute() -> dict`), and
`evaluate_batch(model, batch, meter)`. A batch is a dict whose tensors share their first (batch)
dimension; it may carry `bad_files` (the unreadable files met, as from `tubelet.data.collate_clips`),
and a batch whose `video` is None (all of it unreadable) is skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tubelet.engine.checkpoint import load_trainer_state, save_model, save_trainer_state
from tubelet.engine.progress import TrainProgress
from tubelet.engine.run import RunDir

PRECISIONS = ("fp32", "bf16")


class Meter(Protocol):
    def compute(self) -> dict[str, Any]: ...


class Task(Protocol):
    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor: ...

    def new_meter(self) -> Meter: ...

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
    `fit()` on a run folder that has `last/` resumes after its last finished epoch.
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
        spec: dict[str, Any],
        monitor: str = "top1",
        minimize: bool = False,
        device: torch.device | None = None,
        show_progress: bool = True,
    ) -> None:
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        self.task = task
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.config = config
        self.run = run
        self.spec = spec
        self.monitor = monitor
        self.minimize = minimize
        self.show_progress = show_progress
        self.optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
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
        """Train the remaining epochs; return (and write) the run summary."""
        self.run.root.mkdir(parents=True, exist_ok=True)
        self._resume()
        with TrainProgress(enabled=self.show_progress) as progress:
            while self.epoch < self.config.epochs:
                train_stats = self._train_epoch(progress)
                val = self.evaluate(self.val_loader, progress=progress, split="val")
                self.epoch += 1
                record = {
                    "epoch": self.epoch,
                    **train_stats,
                    **{f"val_{k}": v for k, v in val.items() if not isinstance(v, list)},
                }
                self.run.log_metrics(record)
                if not self.best or self._improves(val[self.monitor]):
                    self.best = {"epoch": self.epoch, **val}
                    save_model(self.run.best, self.model, self.spec)
                self._save_last()
                progress.log_epoch(record)
        return self._summarise()

    def _train_epoch(self, progress: TrainProgress) -> dict[str, float]:
        self.model.train()
        sampler = getattr(self.train_loader, "sampler", None)
        for obj in (self.train_loader.dataset, sampler):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(self.epoch)
        accumulate = self.config.accumulate
        num_batches = len(self.train_loader)
        loss_sum, loss_count, clips, wait = 0.0, 0, 0, 0.0
        start = time.perf_counter()
        task_id = progress.start_epoch(self.epoch + 1, self.config.epochs, num_batches)
        self.optimizer.zero_grad(set_to_none=True)
        for i, (batch, waited) in enumerate(_timed(self.train_loader)):
            wait += waited
            self._note_bad(batch, "train")
            # The last group of an epoch may hold fewer than `accumulate` batches.
            group = min(accumulate, num_batches - (i // accumulate) * accumulate)
            if batch.get("video", ()) is not None:
                batch = self._to_device(batch)
                with self._autocast():
                    loss = self.task.loss(self.model, batch)
                (loss / group).backward()
                loss_sum += loss.item()
                loss_count += 1
                clips += batch_size(batch)
            if (i + 1) % accumulate == 0 or i + 1 == num_batches:
                if self.config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - start
            progress.update(
                task_id, loss=loss_sum / max(1, loss_count), clips_per_s=clips / elapsed,
                wait_share=wait / elapsed,
            )  # fmt: skip
        elapsed = time.perf_counter() - start
        self.train_time += elapsed
        self.clips_seen += clips
        return {
            "train_loss": loss_sum / max(1, loss_count),
            "lr": self.scheduler.get_last_lr()[0],
            "clips_per_s": clips / elapsed,
            "data_wait_share": wait / elapsed,
            "epoch_time_s": elapsed,
        }

    def evaluate(
        self, loader: DataLoader, *, progress: TrainProgress | None = None, split: str = "val"
    ) -> dict[str, Any]:
        """Run the task's evaluation over `loader` and return its metrics."""
        return evaluate_loader(
            self.model, self.task, loader, device=self.device, precision=self.config.precision,
            progress=progress, bad_files=self.bad_files, split=split,
        )  # fmt: skip

    # -- state ---------------------------------------------------------------------------------------
    def _save_last(self) -> None:
        save_model(self.run.last, self.model, self.spec)
        save_trainer_state(
            self.run.last,
            {
                "epoch": self.epoch,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "best": self.best,
                "bad_files": self.bad_files,
                "train_time": self.train_time,
                "clips_seen": self.clips_seen,
                "config": asdict(self.config),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
            },
        )

    def _resume(self) -> None:
        state = load_trainer_state(self.run.last)
        if state is None:
            return
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(self.run.last / "model.safetensors")))
        self.model.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        self.best = state["best"]
        self.bad_files = state["bad_files"]
        self.train_time = state["train_time"]
        self.clips_seen = state["clips_seen"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])

    def _summarise(self) -> dict[str, Any]:
        best = self.best
        summary = {
            "model": self.spec["model"],
            "epochs": self.epoch,
            "best_epoch": best.get("epoch"),
            **{f"val_{k}": v for k, v in best.items() if k != "epoch"},
            "params": sum(p.numel() for p in self.model.parameters()),
            "train_time_s": round(self.train_time, 2),
            "train_clips_per_s": round(self.clips_seen / max(self.train_time, 1e-9), 2),
            "num_bad_files": len(self.bad_files),
            "bad_files": [{"path": p, **info} for p, info in sorted(self.bad_files.items())],
        }
        self.run.write_summary(summary)
        return summary

    # -- helpers -------------------------------------------------------------------------------------
    def _improves(self, value: float) -> bool:
        best = self.best[self.monitor]
        return value < best if self.minimize else value > best

    def _note_bad(self, batch: dict[str, Any], split: str) -> None:
        note_bad_files(self.bad_files, batch, split)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return to_device(batch, self.device)

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
) -> dict[str, Any]:
    """One evaluation pass of `model` over `loader`: the task's metrics. Unreadable videos are
    recorded in `bad_files` (path -> reason, split)."""
    model.eval()
    meter = task.new_meter()
    task_id = progress.start_eval(len(loader)) if progress else None
    for batch, _ in _timed(loader):
        if bad_files is not None:
            note_bad_files(bad_files, batch, split)
        if batch.get("video", ()) is not None:
            with autocast(device, precision):
                task.evaluate_batch(model, to_device(batch, device), meter)
        if progress:
            progress.advance(task_id)
    if progress:
        progress.finish(task_id)
    return meter.compute()


def note_bad_files(seen: dict[str, dict[str, str]], batch: dict[str, Any], split: str) -> None:
    """Record the unreadable files a batch met (first reason per path)."""
    for path, reason in batch.get("bad_files", ()):
        seen.setdefault(path, {"reason": reason, "split": split})


def batch_size(batch: dict[str, Any]) -> int:
    """The number of samples in a batch: the first dimension of its first tensor."""
    return next(len(v) for v in batch.values() if isinstance(v, torch.Tensor))


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with its tensors on `device`."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast for "bf16", nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _timed(loader: Iterable[Any]) -> Iterator[tuple[Any, float]]:
    """Yield each batch with the seconds spent waiting for it."""
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - start
