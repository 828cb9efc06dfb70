"""A run folder: config, metrics as JSON lines, a summary, and checkpoints under best/ and last/."""

from __future__ import annotations

import json
import os
import platform
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tubelet.engine import distributed as dist


@dataclass(frozen=True)
class RunDir:
    """Paths of one run. `config.json` is what was asked, `metrics.jsonl` one line per evaluation,
    `summary.json` the result; `best/` and `last/` hold checkpoints.

    One writer: in a process group only rank 0 writes (the write methods do nothing on the other
    ranks), and every file is replaced whole (`atomic_write_text`), so a reader sees the old file or
    the new one, never a truncated one.
    """

    root: Path
    tensorboard: bool = False  # also write each epoch's numbers as TensorBoard scalars

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def last(self) -> Path:
        return self.root / "last"

    def read_config(self) -> dict[str, Any] | None:
        path = self.root / "config.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_config(self, config: dict[str, Any]) -> None:
        if dist.dist_env().is_main:
            atomic_write_text(self.root / "config.json", json.dumps(config, indent=2))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of `metrics.jsonl`, oldest first (none for a new run)."""
        path = self.root / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        return [json.loads(line) for line in lines if line.strip()]

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Add `record` (one epoch's) to `metrics.jsonl`, replacing the records of that epoch and later
        ones: those of a run stopped after logging an epoch it never committed, resumed since."""
        if not dist.dist_env().is_main:
            return
        epoch = record.get("epoch")
        kept = [r for r in self.read_metrics() if epoch is None or r.get("epoch", 0) < epoch]
        text = "".join(json.dumps(r) + "\n" for r in [*kept, record])
        atomic_write_text(self.root / "metrics.jsonl", text)
        if self.tensorboard:
            write_tensorboard(self.root / TENSORBOARD, record)

    def read_summary(self) -> dict[str, Any] | None:
        path = self.root / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write `summary.json`, then draw the run's pictures from the folder (`tubelet.engine.plots`:
        curves.png, and confusion.png for classification). Every task's run ends here."""
        if dist.dist_env().is_main:
            atomic_write_text(self.root / "summary.json", json.dumps(summary, indent=2))
            from tubelet.engine.plots import plot_run

            plot_run(self.root)


def open_run_dir(
    root: str | Path, config: dict[str, Any], check: Callable[[dict[str, Any]], None]
) -> RunDir:
    """The run folder `root` holding `config`, opened once for all processes.

    Rank 0 alone reads the config already there, calls `check(previous)` (which raises ValueError
    to refuse the folder) and writes `config`; its verdict reaches every process, so all of them
    go on, or all stop with rank 0's message.
    """
    run = RunDir(Path(root))

    def decide() -> None:
        previous = run.read_config()
        if previous is not None:
            check(previous)
        run.write_config(config)

    dist.init_distributed()
    dist.main_decides(decide)
    return run


TENSORBOARD = "tensorboard"  # the event files' folder in a run folder


def tensorboard_error() -> str | None:
    """Why TensorBoard event files cannot be written here (one line with the fix), or None."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return "--log tensorboard needs the tensorboard package: pip install 'tubelet[tensorboard]'"
    return None


def write_tensorboard(folder: Path, record: dict[str, Any]) -> None:
    """Add the numbers of one epoch's `record` to the TensorBoard event files in `folder`, at step
    `record["epoch"]` (TensorBoard reads every event file of the folder as one run)."""
    from torch.utils.tensorboard import SummaryWriter

    step = record.get("epoch")
    with SummaryWriter(log_dir=str(folder)) as writer:
        for name, value in record.items():
            if name != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(name, value, global_step=step)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder renamed over it: readers
    (and a crash) see the old content or the new, never a part. Makes the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def seed_everything(seed: int) -> None:
    """The one place randomness is seeded: Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    """Versions that decide whether a run can be reproduced."""
    import torchvision

    from tubelet import __version__

    return {
        "tubelet": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
