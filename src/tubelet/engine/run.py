"""A run folder: config, metrics as JSON lines, a summary, and checkpoints under best/ and last/.

Crash consistency: an epoch's checkpoint (`last/`: weights and trainer state; `best/` when the epoch
is the best so far) and its `metrics.jsonl` line are committed as one step. They are written into a
new folder `.epoch-NNNN.tmp/`, which is renamed to `.epoch-NNNN/` once complete: that rename is the
commit. The committed folder's parts are then moved into place one by one, each move idempotent, so
`recover()` finishes the moves of a committed epoch after a `kill -9` and deletes a half-written one.
A resumed run thus starts from exactly the last committed epoch, whenever the process was stopped.

One process at a time: `lock()` holds `.lock` in the folder (an `fcntl.flock`, which the system
releases when the process ends, however it ends) with the holder's PID in it.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tubelet.engine import distributed as dist
from tubelet.engine.atomic import atomic_write_json, atomic_write_text, fsync_path, write_point

LOCK = ".lock"
_HELD: dict[Path, int] = {}  # run folders this process holds, with how many nested holds


class RunLockedError(ValueError):
    """Another process holds the run folder."""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run. `config.json` is what was asked, `metrics.jsonl` one line per evaluation,
    `summary.json` the result; `best/` and `last/` hold checkpoints.

    One writer: in a process group only rank 0 writes (the write methods do nothing on the other
    ranks), and every file is replaced whole (`tubelet.engine.atomic`), so a reader sees the old file
    or the new one, never a truncated one.
    """

    root: Path
    tensorboard: bool = False  # also write each epoch's numbers as TensorBoard scalars

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # a str is taken too

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
            atomic_write_json(self.root / "config.json", config)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The committed records of `metrics.jsonl`, one per finished epoch, oldest first."""
        path = self.root / "metrics.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        return [json.loads(line) for line in lines if line.strip()]

    def read_summary(self) -> dict[str, Any] | None:
        path = self.root / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write `summary.json`, then draw the run's pictures from the folder (`tubelet.engine.plots`:
        curves.png, and confusion.png for classification). Every task's run ends here."""
        if dist.dist_env().is_main:
            atomic_write_json(self.root / "summary.json", summary)
            from tubelet.engine.plots import plot_run

            plot_run(self.root)

    # -- one process, whole epochs -------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder while inside; another process gets a `RunLockedError` naming the
        PID that holds it. Holds nest within one process (a job holds the folder from its settings
        check on, and its trainer again). Creates the folder."""
        import fcntl  # POSIX; tubelet's readers and launchers are too

        key = self.root.resolve()
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(
                f"{self.root} is in use by another tubelet process (PID {holder}); wait for it to "
                "finish or stop it, or pass another --out"
            ) from None
        _HELD[key] = 1
        try:
            # The file stays when released: deleting it would let two processes lock two files.
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            del _HELD[key]
            os.close(fd)  # releases the lock

    def has_commit(self) -> bool:
        """Whether an epoch was ever committed here (`last/`, or a commit not yet moved into place)."""
        committed = (p for p in self.root.glob(".epoch-*") if not p.name.endswith(".tmp"))
        return self.last.is_dir() or any(committed)

    def stage(self, epoch: int) -> Path:
        """The new folder `.epoch-NNNN.tmp/` where epoch `epoch`'s checkpoint is written (`last/`,
        and `best/` when the epoch is the best so far) before `commit_epoch`. Rank 0 makes it;
        every process gets its path once it exists (to write its shards into)."""
        stage = self.root / f".epoch-{epoch:04d}.tmp"
        if dist.dist_env().is_main:
            if stage.exists():
                shutil.rmtree(stage)
            stage.mkdir(parents=True)
        dist.barrier()
        return stage

    def commit_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        """Commit the staged epoch `epoch` with its metrics `record` as one step (see the module
        doc); rank 0 only."""
        stage = self.root / f".epoch-{epoch:04d}.tmp"
        lines = [json.dumps(r) for r in (*self.read_metrics(), record)]
        atomic_write_text(stage / "metrics.jsonl", "\n".join(lines) + "\n")
        fsync_path(stage)
        write_point(f"commit epoch {epoch}")
        committed = self.root / f".epoch-{epoch:04d}"
        os.rename(stage, committed)
        fsync_path(self.root)
        self._apply(committed)
        if self.tensorboard:  # after the commit: the event files hold committed epochs only
            write_tensorboard(self.root / TENSORBOARD, record)

    def recover(self) -> None:
        """Finish what a stopped process left: move a committed epoch into place, delete a
        half-written one and any temporary files."""
        if not self.root.is_dir():
            return
        staged = sorted(self.root.glob(".epoch-*"))
        for folder in staged:
            if folder.name.endswith(".tmp"):
                shutil.rmtree(folder)
        for folder in staged:
            if not folder.name.endswith(".tmp"):
                self._apply(folder)
        for name in ("last", "best"):
            if (self.root / f".{name}.old").exists():
                shutil.rmtree(self.root / f".{name}.old")
        for folder in (self.root, self.last, self.best):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                tmp.unlink()

    def _apply(self, committed: Path) -> None:
        """Move a committed epoch's parts into the run folder. Each step checks what is still to do,
        so calling this again after a stop anywhere in it finishes the job."""
        for name in ("last", "best"):
            source, target = committed / name, self.root / name
            if not source.is_dir():
                continue
            old = self.root / f".{name}.old"
            if target.exists():
                if old.exists():
                    shutil.rmtree(old)
                write_point(f"move {name} aside")
                os.rename(target, old)
            write_point(f"move {name} in")
            os.rename(source, target)
        if (committed / "metrics.jsonl").is_file():
            write_point("move metrics.jsonl in")
            os.replace(committed / "metrics.jsonl", self.root / "metrics.jsonl")
        fsync_path(self.root)
        write_point("clean up")
        for name in ("last", "best"):
            if (self.root / f".{name}.old").exists():
                shutil.rmtree(self.root / f".{name}.old")
        shutil.rmtree(committed)


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
