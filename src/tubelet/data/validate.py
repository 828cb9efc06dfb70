"""`tubelet data validate`: decode every video of a data folder and list the bad ones.

Each video is decoded once in full (`tubelet.io.scan_video`) by one of several checker processes,
and a checker still busy with a file after the time bound is killed and replaced, so one file
that hangs or crashes the decoder costs at most that long and is reported like any other. A file is
reported when it cannot be opened (missing, empty, unreadable, not a video, no video stream, no
decodable frame), when some of its frames do not decode, when the container's frame count
disagrees with the frames it holds, or when its check times out or crashes.
"""

from __future__ import annotations

import csv
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from tubelet.data.annotations import SPLITS, EmptySplitError, read_annotations
from tubelet.io import VideoDecodeError, scan_video
from tubelet.io.threads import available_cores


@dataclass(frozen=True)
class FileProblem:
    """One bad video: its path, the splits that list it, and why it is bad."""

    path: str
    splits: str  # "train", "val" or "train+val"
    reason: str


@dataclass(frozen=True)
class ValidationReport:
    """The result of `validate_dataset`: how many videos were checked and which are bad."""

    root: Path
    layout: str
    checked: int
    problems: tuple[FileProblem, ...]

    @property
    def ok(self) -> bool:
        """True when every video decoded in full and agreed with its container."""
        return not self.problems

    def write_csv(self, path: str | Path) -> None:
        """Write the problems as CSV with the header `path,splits,reason` (header only if none)."""
        with Path(path).open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["path", "splits", "reason"])
            writer.writerows((p.path, p.splits, p.reason) for p in self.problems)


def check_video(path: str | Path) -> str | None:
    """Why the video at `path` is unreadable or suspicious ("; "-joined), or None if it is sound."""
    try:
        problems = scan_video(path).problems()
    except VideoDecodeError as error:
        return error.reason
    return "; ".join(problems) or None


def validate_dataset(
    root: str | Path,
    *,
    workers: int | None = None,
    timeout_s: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationReport:
    """Check every video of every split of `root` (any layout `read_annotations` reads).

    `workers` videos are checked at once (default: every available core), each in at most
    `timeout_s` seconds. `progress(done, total)` is called after each.
    """
    root = Path(root)
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    splits_of: dict[Path, list[str]] = {}  # each video once, with the splits that list it
    layout = ""
    for split in SPLITS:
        try:
            annotations = read_annotations(root, split)
        except EmptySplitError:
            continue
        layout = annotations.layout
        for record in annotations.records:
            splits_of.setdefault(record.path, []).append(split)
    if not splits_of:
        raise ValueError(f"{root} holds no videos in any known layout (see `tubelet data --help`)")
    paths = list(splits_of)
    reasons = run_checks(paths, workers or available_cores(), timeout_s, progress)
    problems = tuple(
        FileProblem(str(path), "+".join(splits_of[path]), reason)
        for path, reason in zip(paths, reasons, strict=True)
        if reason is not None
    )
    return ValidationReport(root, layout, len(paths), problems)


def run_checks(
    paths: Sequence[Path],
    workers: int,
    timeout_s: float,
    progress: Callable[[int, int], None] | None = None,
) -> list[str | None]:
    """`check_video` of each path in `workers` child processes that each check one file at a time.

    A child still busy with a file after `timeout_s` is killed and replaced, and the file reported
    as timed out; a child that dies (the decoder crashed) is replaced and its file reported with
    the exit code. Children are forked where the platform can, so they start in milliseconds.
    """
    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    )
    results: list[str | None] = [None] * len(paths)
    queue = list(range(len(paths)))[::-1]  # pop() takes the first path first
    idle = [_Checker(context) for _ in range(min(workers, len(paths)))]
    busy: dict[Connection, _Checker] = {}
    done = 0
    try:
        while queue or busy:
            while queue and idle:
                checker = idle.pop()
                checker.start(queue.pop(), paths, timeout_s)
                busy[checker.connection] = checker
            next_deadline = min(checker.deadline for checker in busy.values())
            ready = set(wait(list(busy), timeout=max(0.0, next_deadline - time.monotonic())))
            now = time.monotonic()
            for connection, checker in list(busy.items()):
                if connection in ready:
                    try:
                        results[checker.index] = connection.recv()
                        idle.append(checker)
                    except EOFError:  # it died before answering
                        exit_code = checker.stop()
                        results[checker.index] = f"the decoder crashed (exit code {exit_code})"
                        idle.append(_Checker(context))
                elif now >= checker.deadline:
                    checker.stop()
                    results[checker.index] = (
                        f"not decoded within {timeout_s:g} s (decoding hangs or is too slow)"
                    )
                    idle.append(_Checker(context))
                else:
                    continue
                del busy[connection]
                done += 1
                if progress:
                    progress(done, len(paths))
    finally:
        for checker in [*idle, *busy.values()]:
            checker.stop()
    return results


class _Checker:
    """A child process that answers each path it receives with `check_video(path)`."""

    def __init__(self, context: Any) -> None:
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs,), daemon=True)
        self.process.start()
        theirs.close()  # the child holds the only other end: EOF here when it dies
        self.index = -1
        self.deadline = float("inf")

    def start(self, index: int, paths: Sequence[Path], timeout_s: float) -> None:
        """Send it path `index`; its answer is due by `deadline`."""
        self.index = index
        self.deadline = time.monotonic() + timeout_s
        self.connection.send(paths[index])

    def stop(self) -> int | None:
        """End the process (idle, stuck or dead) and return its exit code."""
        self.process.kill()
        self.process.join()
        self.connection.close()
        return self.process.exitcode


def _serve(connection: Connection) -> None:
    """Body of a checker process: check each path received until the pipe closes."""
    while True:
        try:
            path = connection.recv()
        except EOFError:
            return
        try:
            result = check_video(path)
        except Exception as error:  # a bug or an FFmpeg oddity: report it as this file's problem
            result = f"unexpected error while checking: {type(error).__name__}: {error}"
        connection.send(result)
