"""Generated data sets cached on disk: where they live, how a complete one is recognised, and how
one is (re)made without ever leaving a folder that looks finished when it is not.

A generated folder ends with `dataset.json`, written last, holding its generator's `name` and
parameters; a folder whose `dataset.json` has the same parameters is complete and reused. The
built-in synthetic sets (`tubelet.data.synthetic`, `tubelet.data.untrimmed`) share this plumbing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PARAMS_FILE = "dataset.json"


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/tubelet`, or `~/.cache/tubelet` without it: where generated sets live."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tubelet"


def read_params(folder: Path, name: str) -> dict[str, Any] | None:
    """The parameters in `folder/dataset.json` if a generator called `name` wrote it, else None."""
    try:
        params = json.loads((folder / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return params if isinstance(params, dict) and params.get("name") == name else None


def write_params(folder: Path, params: dict[str, Any]) -> None:
    """Write `folder/dataset.json` atomically: the last file of a generated set, its mark of being
    complete (a generator removes it first and writes it when everything else is there)."""
    staged = folder / f"{PARAMS_FILE}.tmp"
    staged.write_text(json.dumps(params, indent=2) + "\n")
    staged.replace(folder / PARAMS_FILE)


def ensure_generated(
    out: Path,
    params: dict[str, Any],
    write: Callable[[Path], Any],
    *,
    classes: Sequence[str],
    what: str,
) -> Path:
    """`out` holding a complete set of `params` (which has the generator's "name"), made by
    `write(folder)` only when needed.

    A folder whose `dataset.json` holds `params` is returned as it is. A folder holding a set of the
    same generator with other parameters, or a half-written one (its `classes.txt` lists `classes`,
    the file a generator writes first), is replaced; a folder holding anything else is refused with
    FileExistsError naming it as not `what`. `write` fills a temporary sibling folder, which is
    renamed into place when complete, so an interrupted run never leaves a folder that looks
    finished; when another process finished the same set first, its folder is kept.
    """
    name = params["name"]
    if read_params(out, name) == params:
        return out
    if out.exists() and any(out.iterdir()) and not _is_generated(out, name, classes):
        raise FileExistsError(
            f"{out} holds files but no {what}; pass an empty or new folder, or delete it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
        if read_params(out, name) == params:  # another process finished the same set first
            return out
        if out.exists():
            retired = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(retired)
            shutil.rmtree(retired)
        try:
            staging.rename(out)
        except OSError:
            if read_params(out, name) != params:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _is_generated(folder: Path, name: str, classes: Sequence[str]) -> bool:
    """Whether `folder` holds a set of generator `name`, complete or half-written."""
    names = folder / "classes.txt"
    return read_params(folder, name) is not None or (
        names.is_file() and tuple(names.read_text().split()) == tuple(classes)
    )
