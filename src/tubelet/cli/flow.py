"""`tubelet flow`: optical flow of a whole video (streamed) or of one image pair."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tubelet.cli.common import app, console, err, run_job


@app.command(short_help="Optical flow of a video or of two images.")
def flow(
    inputs: Annotated[
        list[Path],
        typer.Argument(metavar="INPUT", help="A video file, or two image files (IMAGE1 IMAGE2)."),
    ],
    checkpoint: Annotated[
        Path,
        typer.Option(
            help="A flow run folder (`tubelet train --task flow`), or a weights file with --model "
            "and --checkpoint-format."
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Video: flow.mp4 (colour wheel). Images: flow.png or flow.flo.")
    ],
    model: Annotated[
        str | None, typer.Option(help="raft_small or raft_large, for a weights file.")
    ] = None,
    checkpoint_format: Annotated[
        str | None, typer.Option(help="Format of a weights file: torchvision or raft.")
    ] = None,
    save_npy: Annotated[
        Path | None, typer.Option(help="Video: also save each flow (2, H, W) float16 .npy here.")
    ] = None,
    updates: Annotated[
        int | None, typer.Option(min=1, help="RAFT updates per pair (default: the model's).")
    ] = None,
    warm_start: Annotated[
        bool, typer.Option("--warm-start/--no-warm-start", help="Video: start from the last flow.")
    ] = True,
    short_side: Annotated[
        int | None, typer.Option(min=8, help="Video: decode resized to this short side.")
    ] = None,
    corr_mode: Annotated[
        str | None,
        typer.Option(help="all_pairs or on_demand (memory-saving, for large frames)."),
    ] = None,
    max_flow: Annotated[
        float | None,
        typer.Option(help="Flow magnitude shown fully saturated (default: per frame)."),
    ] = None,
) -> None:
    """Optical flow: `tubelet flow VIDEO --out flow.mp4` or `tubelet flow IMG1 IMG2 --out flow.png`."""
    from rich.progress import Progress

    from tubelet.jobs.flow import flow_image_files, flow_video, load_flow_model

    if len(inputs) not in (1, 2):
        raise typer.BadParameter(f"give one video or two images, not {len(inputs)} paths")
    loaded, default_updates = run_job(
        lambda: load_flow_model(checkpoint, model=model, checkpoint_format=checkpoint_format)
    )
    if corr_mode is not None:
        run_job(lambda: loaded.set_corr_mode(corr_mode))
    num_updates = updates or default_updates
    if len(inputs) == 2:
        result = run_job(
            lambda: flow_image_files(
                loaded, inputs[0], inputs[1], out, num_flow_updates=num_updates, max_flow=max_flow
            )
        )
        magnitude = result.square().sum(0).sqrt()
        console.print(
            f"Wrote {out} ({result.shape[2]}x{result.shape[1]}, mean |flow| "
            f"{magnitude.mean():.2f} px, max {magnitude.max():.2f} px)"
        )
        return
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("flow", total=None)
        video = run_job(
            lambda: flow_video(
                loaded, inputs[0], out, num_flow_updates=num_updates, warm_start=warm_start,
                save_npy=save_npy, short_side=short_side, max_flow=max_flow,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        )  # fmt: skip
    saved = f"; {video.pairs} .npy files in {video.npy_dir}" if video.npy_dir else ""
    console.print(
        f"Wrote {video.out}: {video.pairs} flow frames of {video.width}x{video.height} at "
        f"{video.fps:g} fps{saved}",
        soft_wrap=True,
    )
