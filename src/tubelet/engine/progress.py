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

# Training is data-bound when it waits for batches more than half of the time: the model would run
# faster than the loader feeds it, so more decoding workers (or smaller clips) speed it up, and
# memory or compute switches do not.
DATA_BOUND_SHARE = 0.5
# The first batches include starting the loader's workers; judge after these many.
DATA_BOUND_AFTER = 4


def data_bound_warning(wait_share: float, batches: int) -> str | None:
    """A warning when the share of time spent waiting for data says training is data-bound, else None.

    `wait_share` is the data-wait time over the wall time so far, after `batches` batches.
    """
    if batches < DATA_BOUND_AFTER or wait_share <= DATA_BOUND_SHARE:
        return None
    return (
        f"data-bound: {wait_share:.0%} of the time waiting for data; more --workers, "
        "fewer --frames or a smaller --size would help"
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
        self._batches = 0

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
        self._batches = 0
        return self._progress.add_task(f"epoch {epoch}/{epochs}", total=num_batches, stats="")

    def update(self, task: TaskID, *, loss: float, clips_per_s: float, wait_share: float) -> None:
        """After one training batch: the running loss, throughput and share of time spent waiting
        for data, flagged in the bar while training is data-bound."""
        self._batches += 1
        stats = f"loss {loss:.3f} {clips_per_s:.1f} clips/s data wait {wait_share:.0%}"
        if data_bound_warning(wait_share, self._batches):
            stats += " [bold yellow](data-bound)[/]"
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
        warning = data_bound_warning(record.get("data_wait_share", 0.0), DATA_BOUND_AFTER)
        if warning:
            self._progress.console.log(f"[bold yellow]warning:[/] {warning}")
