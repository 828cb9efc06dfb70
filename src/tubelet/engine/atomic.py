"""Writes that a crash cannot tear, and the write points where fault-injection tests stop a process.

`atomic_write` writes a temporary file beside the target, flushes it to disk, then renames it over
the target: rename within one file system is atomic (POSIX `rename(2)`, Windows `MoveFileEx`), so a
reader, or a process started after a `kill -9`, sees the old file or the new one, never half of one.
Every file tubelet writes into a run folder goes through here.

`write_point(name)` marks a moment between two steps of a write. Nothing happens there unless a test
has installed a hook with `fault_hook`: the crash-consistency tests count the points of a run, then
stop it at each one in turn (raising, or killing the process) and check that a resume ends where an
uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_hook: Callable[[str], None] | None = None


def write_point(name: str) -> None:
    """A moment between two write steps, where a fault-injection hook may stop the process."""
    if _hook is not None:
        _hook(name)


@contextmanager
def fault_hook(hook: Callable[[str], None]) -> Iterator[None]:
    """Call `hook(name)` at every write point inside the block (for fault-injection tests: count the
    points, or raise or kill the process at the n-th)."""
    global _hook
    previous, _hook = _hook, hook
    try:
        yield
    finally:
        _hook = previous


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Write `path` whole or not at all: `write(tmp)` fills a temporary file beside it, which is
    flushed to disk and renamed over `path`. Makes the folder if needed; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_point(f"write {path.name}")
    try:
        write(tmp)
        fsync_path(tmp)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    write_point(f"replace {path.name}")
    os.replace(tmp, path)
    fsync_path(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, value: Any) -> Path:
    """`atomic_write` of `value` as indented JSON."""
    return atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def fsync_path(path: str | Path) -> None:
    """Flush a file, or a folder's entries (after a rename in it), to disk. Folders cannot be opened
    for this on Windows, where renames are durable without it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
