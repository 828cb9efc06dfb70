"""`tubelet extract`: per-frame or per-clip features of every video into a features folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tubelet.cli.common import app, console, fmt, parse_model_args, print_bad_files, run_job


@app.command(short_help="Extract features of videos with a model.")
def extract(
    videos: Annotated[
        list[Path] | None,
        typer.Argument(metavar="VIDEO", help="Loose video files (besides or instead of --data)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Features folder (resumed if it exists).")] = Path(
        "features"
    ),
    data: Annotated[
        Path | None, typer.Option(help="Data folder: both splits, with labels.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Registered model (random weights without --checkpoint).")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Run folder of `tubelet train` whose model to use, or a published checkpoint "
            "(file or folder) with --model and --checkpoint-format."
        ),
    ] = None,
    checkpoint_format: Annotated[
        str | None,
        typer.Option(
            help="Format of a published --checkpoint: torchvision, transformers, pytorchvideo or "
            "pyslowfast (its preprocessing is applied)."
        ),
    ] = None,
    model_arg: Annotated[
        list[str],
        typer.Option(
            "--model-arg", "-m", metavar="KEY=VALUE", help="Builder argument, repeatable."
        ),
    ] = [],  # noqa: B006  (typer reads the default; it is never mutated)
    level: Annotated[
        str,
        typer.Option(help="frame (per frame), clip (per window) or tokens (a window's tokens)."),
    ] = "frame",
    window: Annotated[int, typer.Option(help="Frames per clip window.")] = 16,
    stride: Annotated[int, typer.Option(help="Frames between clip windows.")] = 8,
    size: Annotated[
        int | None,
        typer.Option(help="Centre crop in pixels (default: the checkpoint's crop, else 112)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    dtype: Annotated[str, typer.Option(help="Stored as float32, float16 or bfloat16.")] = "float32",
) -> None:
    """Extract features of every video with a model; resumable, and shardable under torchrun."""
    from tubelet.jobs.extract import extract_features

    folder = run_job(
        lambda: extract_features(
            out=out, data=data, videos=videos, model=model, checkpoint=checkpoint,
            checkpoint_format=checkpoint_format, level=level,
            window=window, stride=stride, size=size, batch_size=batch_size,
            model_args=parse_model_args(model_arg), dtype=dtype,
        )
    )  # fmt: skip
    from tubelet.engine.distributed import launch_env

    summary = json.loads((folder / f"summary-{launch_env().rank:05d}.json").read_text())
    table = Table(title=f"features: {folder}")
    table.add_column("item")
    table.add_column("value", justify="right")
    for key in ("videos", "extracted", "already_done", "unreadable", "features", "dim",
                "seconds", "frames_per_s"):  # fmt: skip
        table.add_row(key, fmt(summary[key]))
    console.print(table)
    print_bad_files(summary["bad_files"])
    console.print(f"Features folder: {folder} (meta.json, shard-*.safetensors, index-*.jsonl)")
