"""`tubelet detect`: actions with their start, end and score in one video, plus a timeline PNG;
and the detection branch of `tubelet eval` (mAP at each tIoU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tubelet.cli.common import app, console, fmt, run_job


@app.command(short_help="Find the actions in a video: segments and a timeline.")
def detect(
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="A video file.")],
    checkpoint: Annotated[
        Path, typer.Option(help="Run folder of `tubelet train --task detection`.")
    ],
    min_score: Annotated[float, typer.Option(help="Show segments scoring at least this.")] = 0.1,
    timeline: Annotated[
        Path | None,
        typer.Option(help="Timeline PNG to write (default: VIDEO_NAME.detections.png)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Find the actions in a video: segments (start, end, class, score) and a timeline PNG."""
    from tubelet.engine.checkpoint import load_model
    from tubelet.jobs.detection import detect as detect_job
    from tubelet.jobs.detection import timeline_png

    result = run_job(lambda: detect_job(checkpoint, video, min_score=min_score))
    _, spec = run_job(lambda: load_model(checkpoint))
    png = timeline_png(timeline or Path(f"{video.stem}.detections.png"), result, list(spec.classes))
    if as_json:
        print(json.dumps({**result, "timeline": str(png)}, indent=2))
        return
    table = Table(title=f"{video.name}: {len(result['segments'])} segments")
    for column in ("start s", "end s", "class", "score"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for seg in result["segments"]:
        table.add_row(
            f"{seg['start']:.2f}", f"{seg['end']:.2f}", seg["label"], f"{seg['score']:.3f}"
        )
    console.print(table)
    console.print(f"Timeline: {png}")


def evaluate_detection(checkpoint: Path, data: Path | None, batch_size: int) -> None:
    """`tubelet eval` on a detection run: mAP at each tIoU of the run and their average."""
    from tubelet.jobs.detection import evaluate

    metrics = run_job(lambda: evaluate(checkpoint, data=data, batch_size=batch_size))
    table = Table(title=f"{checkpoint.name}: detection on {metrics['subset']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if key.startswith("mAP@") or key in ("average_mAP", "num_videos", "num_predictions"):
            table.add_row(key, fmt(value))
    console.print(table)


def is_detection_run(checkpoint: Path) -> bool:
    """Whether `tubelet eval --checkpoint` names a detection run (then it reports mAP)."""
    from tubelet.jobs.detection import is_detection_run as check

    return check(checkpoint)
