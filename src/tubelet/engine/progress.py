"""Progress bars for training and evaluation (rich): loss, clips/s, share of time waiting for data, ETA."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """One bar per epoch and one per evaluation pass; `enabled=False` shows nothing."""

    def __init__(self, *, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
            transient=False,
        )

    def __enter__(self) -> TrainProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def start_epoch(self, epoch: int, epochs: int, num_batches: int) -> TaskID:
        return self._progress.add_task(f"epoch {epoch}/{epochs}", total=num_batches, stats="")

    def update(self, task: TaskID, *, loss: float, clips_per_s: float, wait_share: float) -> None:
        stats = f"loss {loss:.3f} {clips_per_s:.1f} clips/s data wait {wait_share:.0%}"
        self._progress.update(task, advance=1, stats=stats)

    def start_eval(self, num_batches: int) -> TaskID:
        return self._progress.add_task("  evaluate", total=num_batches, stats="")

    def advance(self, task: TaskID) -> None:
        self._progress.update(task, advance=1)

    def finish(self, task: TaskID) -> None:
        self._progress.remove_task(task)

    def log_epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        parts = [f"epoch {record['epoch']}", f"train loss {record['train_loss']:.3f}"]
        for key in ("val_top1", "val_clip_top1", "val_reversal_acc"):
            if record.get(key) is not None:
                parts.append(f"{key} {record[key]:.3f}")
        self._progress.console.log(" | ".join(parts))
