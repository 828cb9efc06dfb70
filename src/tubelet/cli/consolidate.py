"""`tubelet consolidate`: the whole weights of a sharded (--fsdp) run, for predict and export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tubelet.cli.common import app, console, run_job


@app.command(short_help="Join a --fsdp run's shards into model.safetensors.")
def consolidate(
    run: Annotated[
        Path,
        typer.Argument(metavar="RUN_DIR", help="A run folder trained with --fsdp, or its best/."),
    ],
) -> None:
    """Write model.safetensors beside each sharded checkpoint of a --fsdp run (best/, last/)."""
    from tubelet.engine.sharded import consolidate_run

    for path in run_job(lambda: consolidate_run(run)):
        console.print(f"wrote {path}")
