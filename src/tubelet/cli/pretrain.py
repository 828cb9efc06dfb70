"""`tubelet pretrain`: VideoMAE self-supervised pre-training on a folder of videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tubelet.cli.common import (
    Accumulate,
    BadFiles,
    BatchSize,
    ChannelsLast,
    Compile,
    DecodeDevice,
    Epochs,
    Flip,
    Fsdp,
    GradCheckpointing,
    LearningRate,
    Log,
    ModelArgs,
    Out,
    Precision,
    Sampling,
    Seed,
    Stride,
    Workers,
    app,
    console,
    data_bar,
    fmt,
    parse_model_args,
    print_bad_files,
    run_job,
)


@app.command(short_help="Pre-train a VideoMAE encoder on masked tubes.")
def pretrain(
    data: Annotated[
        Path | None,
        typer.Option(help="Folder of videos (any layout; labels ignored); built-in set if absent."),
    ] = None,
    model: Annotated[
        str, typer.Option(help="videomae_pretrain, videomae_pretrain_s or videomae_pretrain_t.")
    ] = "videomae_pretrain_s",
    mask_ratio: Annotated[
        float, typer.Option(help="Share of the tubes hidden from the encoder.")
    ] = 0.9,
    masking: Annotated[
        str, typer.Option(help="tube (same positions in every frame) or random.")
    ] = "tube",
    model_arg: ModelArgs = [],  # noqa: B006  (typer reads the default; it is never mutated)
    frames: Annotated[int, typer.Option(help="Frames per clip (a multiple of the tubelet).")] = 16,
    sampling: Sampling = "dense",
    stride: Stride = 2,
    size: Annotated[int, typer.Option(help="Crop side in pixels (a multiple of the patch).")] = 112,
    epochs: Epochs = 10,
    batch_size: BatchSize = 8,
    lr: LearningRate = 1e-3,
    precision: Precision = "fp32",
    accumulate: Accumulate = 1,
    grad_checkpointing: GradCheckpointing = False,
    channels_last: ChannelsLast = False,
    compile: Compile = False,
    decode_device: DecodeDevice = "cpu",
    fsdp: Fsdp = False,
    flip: Flip = None,
    bad_files: BadFiles = "resample",
    workers: Workers = None,
    seed: Seed = 0,
    out: Out = None,
    log: Log = "files",
) -> None:
    """Pre-train a VideoMAE encoder by reconstructing masked tubes; labels are ignored.

    Writes a run folder like `tubelet train` (resumable) plus reconstruction.png; fine-tune it
    with `tubelet train --init RUN`.
    """
    from tubelet.jobs import TrainJob, default_workers
    from tubelet.jobs import train as train_job

    job = TrainJob(
        out=out or Path("runs") / model,
        task="pretrain",
        data=data,
        model=model,
        model_args={**parse_model_args(model_arg), "mask_ratio": mask_ratio, "masking": masking},
        frames=frames,
        sampling=sampling,
        stride=stride,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        precision=precision,
        accumulate=accumulate,
        grad_checkpointing=grad_checkpointing,
        channels_last=channels_last,
        compile=compile,
        decode_device=decode_device,
        fsdp=fsdp,
        flip=flip,
        bad_files=bad_files,
        workers=default_workers() if workers is None else workers,
        seed=seed,
        log=log,
    )
    summary = run_job(lambda: train_job(job, on_data=data_bar()))
    table = Table(title=f"{model}: {job.out.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key != "model" and isinstance(value, int | float | str | None):
            table.add_row(key, fmt(value))
    console.print(table)
    print_bad_files(summary["bad_files"])
    console.print(f"Run folder: {job.out} (reconstruction.png, summary.json, best/, last/)")
