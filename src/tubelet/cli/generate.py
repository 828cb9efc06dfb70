"""`tubelet generate`: sample clips from a `tubelet train --task generation` run into a grid video."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tubelet.cli.common import app, console, err, fmt, run_job


@app.command(short_help="Sample clips from a generation run.")
def generate(
    checkpoint: Annotated[Path, typer.Option(help="A generation run folder or checkpoint folder.")],
    out: Annotated[Path, typer.Option(help="The grid video to write: .mp4 or .gif.")],
    class_name: Annotated[
        str | None, typer.Option("--class", help="Sample this class only (default: every class).")
    ] = None,
    num: Annotated[int, typer.Option(min=1, help="Clips per class (one row per class).")] = 4,
    steps: Annotated[int, typer.Option(min=1, help="DDIM sampling steps.")] = 50,
    guidance: Annotated[
        float, typer.Option(help="Classifier-free guidance scale (1 = no guidance).")
    ] = 3.0,
    eta: Annotated[
        float, typer.Option(min=0.0, help="DDIM eta: 0 deterministic, 1 DDPM-like.")
    ] = 0.0,
    seed: Annotated[int, typer.Option()] = 0,
    fps: Annotated[float, typer.Option(help="Frame rate of the written video.")] = 6.0,
    zoom: Annotated[int, typer.Option(min=1, help="Enlarge each pixel to ZOOM x ZOOM.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips sampled at once.")] = 16,
    classifier: Annotated[
        Path | None,
        typer.Option(
            help="A classification run on the same data, frames and size: measure the samples "
            "(class accuracy, frame difference, Frechet distance) into OUT with suffix .json."
        ),
    ] = None,
    ema: Annotated[
        bool, typer.Option("--ema/--no-ema", help="Sample with the EMA weights (default).")
    ] = True,
) -> None:
    """Sample clips with DDIM (and classifier-free guidance) and write them as one grid video."""
    from tubelet.jobs.generation import generate as generate_job

    columns = (
        TextColumn("[bold]sampling"), BarColumn(bar_width=16), MofNCompleteColumn(),
        TextColumn("eta"), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("sampling", total=None)
        result = run_job(
            lambda: generate_job(
                checkpoint, out, class_name=class_name, num=num, steps=steps, guidance=guidance,
                eta=eta, seed=seed, fps=fps, zoom=zoom, batch_size=batch_size,
                classifier=classifier, ema=ema,
                on_step=lambda done, total: bar.update(task, completed=done, total=total),
            )
        )  # fmt: skip
    if classifier is not None:
        table = Table(title=f"{len(result['classes']) * num} generated clips")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key in (
            "class_acc", "real_class_acc", "frame_diff", "real_frame_diff", "fd",
            "num_generated", "num_real",
        ):  # fmt: skip
            table.add_row(key, fmt(result[key]))
        console.print(table)
        console.print(f"Wrote {out} and {out.with_suffix('.json')}")
    else:
        console.print(f"Wrote {out} ({len(result['classes'])} x {num} clips)")
