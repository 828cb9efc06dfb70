"""The `tubelet` command: parses options, calls the jobs in `tubelet.jobs`, prints tables.

This module holds the classification and data commands; the other tasks' commands live in their own
modules under `tubelet.cli`, imported at the end so they register on the same app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tubelet.cli.common import (
    MAX_PIXELS,
    Accumulate,
    BadFiles,
    BatchSize,
    ChannelsLast,
    CheckpointModelArgs,
    Compile,
    DecodeDevice,
    Epochs,
    Flip,
    Fsdp,
    GradCheckpointing,
    LearningRate,
    Log,
    MaxPixels,
    ModelArgs,
    Out,
    Precision,
    Sampling,
    Seed,
    Stride,
    TaskArgs,
    Workers,
    app,
    console,
    data_app,
    data_bar,
    err,
    fmt,
    parse_model_args,
    parse_views,
    print_bad_files,
    run_job,
)

# `--head` with `--features`: the probe over cached tokens (`tubelet.models.probes`).
PROBES = {"attentive": "attentive_probe", "linear": "frame_mean"}


@app.command(short_help="Train a model (any task); resumes an interrupted run.")
def train(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option(help="Data folder; built-in synthetic set if absent.")
    ] = None,
    task: Annotated[
        str, typer.Option(help="What to train: classification (default) or another task.")
    ] = "classification",
    model: Annotated[
        str | None,
        typer.Option(
            help="Registered model name (`tubelet models`); the task's default if absent."
        ),
    ] = None,
    model_arg: ModelArgs = [],  # noqa: B006  (typer reads the default; it is never mutated)
    task_arg: TaskArgs = [],  # noqa: B006  (typer reads the default; it is never mutated)
    frames: Annotated[
        int | None, typer.Option(help="Frames per clip (T); 8, or --checkpoint's own.")
    ] = None,
    sampling: Sampling = "uniform",
    stride: Stride = 2,
    size: Annotated[
        int | None, typer.Option(help="Crop side S in pixels; 112, or --checkpoint's own.")
    ] = None,
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
    init: Annotated[
        Path | None,
        typer.Option(
            help="A `tubelet pretrain` run: fine-tune its encoder (layer-wise lr decay). "
            "With --task flow: a flow run whose weights start this one (e.g. at a larger --size)."
        ),
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option(help="A `tubelet extract` folder: train a temporal head on its features."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Published weights to start from (see --checkpoint-format)."),
    ] = None,
    checkpoint_format: Annotated[
        str | None,
        typer.Option(help="Format of --checkpoint: transformers, torchvision, ..."),
    ] = None,
    head: Annotated[
        str | None,
        typer.Option(
            help="attentive (V-JEPA 2's probe) or linear (on the mean of the tokens); with "
            "--features: the probe trained on them."
        ),
    ] = None,
    freeze_backbone: Annotated[
        bool, typer.Option("--freeze-backbone", help="Train the head only (a probe).")
    ] = False,
    layer_decay: Annotated[
        float | None,
        typer.Option(help="Layer-wise lr decay for full fine-tuning, e.g. 0.75."),
    ] = None,
    lora_rank: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="With --task generation: train LoRA adapters of this rank on the attention and "
            "MLP projections (base weights frozen; base from -m checkpoint=...); saves the adapter.",
        ),
    ] = None,
) -> None:
    """Train a model (action recognition by default); resumes the run in --out if interrupted.

    The run settings are every task's; the task's own come from --task-arg KEY=VALUE and, for
    classification, --init ... --layer-decay (--lora-rank: generation's). An option the task
    does not read is refused."""
    from tubelet.engine.distributed import launched_rank
    from tubelet.jobs import TrainJob, check_options, default_model, default_workers
    from tubelet.jobs import train as train_job
    from tubelet.jobs.common import job_settings
    from tubelet.jobs.finetune import pretrained_classifier
    from tubelet.jobs.probe import clip_defaults

    if head is not None and head not in PROBES:
        raise typer.BadParameter(f"--head must be one of {', '.join(PROBES)}, not {head!r}")
    given = [k for k in ctx.params if _given(ctx, k)]
    run_job(lambda: check_options(task, given, features=features is not None))
    options = {
        "init": init, "features": features, "checkpoint": checkpoint,
        "checkpoint_format": checkpoint_format, "head": None if features is not None else head,
        "freeze_backbone": freeze_backbone, "layer_decay": layer_decay, "lora_rank": lora_rank,
    }  # fmt: skip
    model_args, settings = run_job(
        lambda: job_settings(
            task, parse_model_args(model_arg), parse_model_args(task_arg, "-t"), options
        )
    )
    if model is None and features is not None and task == "classification":
        # the default head on cached features; a probe when --head names one
        model = PROBES[head] if head else "frame_transformer"
    finetune = init is not None and task == "classification"
    model = model or run_job(
        lambda: pretrained_classifier(init) if finetune else default_model(task)
    )
    frames, size = run_job(
        lambda: clip_defaults(model, checkpoint, checkpoint_format, frames=frames, size=size)
    )
    job = TrainJob(
        out=out or Path("runs") / model,
        task=task,
        data=data,
        model=model,
        model_args=model_args,
        settings=settings,
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
    if launched_rank() != 0:  # under torchrun, rank 0 prints
        return
    table = Table(title=f"{model}: {job.out.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key != "model" and isinstance(value, int | float | str | None):
            table.add_row(key, fmt(value))
    console.print(table)
    print_bad_files(summary["bad_files"])
    console.print(f"Run folder: {job.out} (summary.json, metrics.jsonl, best/, last/)")


@app.command("eval", short_help="Evaluate a run on its val split (multi-view; mAP).")
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="Run folder or checkpoint folder.")],
    data: Annotated[
        Path | None, typer.Option(help="Data folder; the training data if absent.")
    ] = None,
    views: Annotated[str, typer.Option(help="CLIPSxCROPS views per video, e.g. 2x3.")] = "1x1",
    batch_size: Annotated[int, typer.Option()] = 8,
    workers: Annotated[int | None, typer.Option()] = None,
    zero_shot: Annotated[
        bool,
        typer.Option(
            "--zero-shot", help="Name each class by its text (a video-text model; needs --model)."
        ),
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            help="A published checkpoint's registered model (`tubelet models`); with --zero-shot, "
            "the video-text model."
        ),
    ] = None,
    checkpoint_format: Annotated[
        str | None,
        typer.Option(
            help="Format of a published --checkpoint: torchvision, transformers, pytorchvideo or "
            "pyslowfast (with --zero-shot: transformers, the default)."
        ),
    ] = None,
    model_arg: CheckpointModelArgs = [],  # noqa: B006  (typer reads the default; never mutated)
    max_pixels: MaxPixels = MAX_PIXELS,
) -> None:
    """Evaluate a trained model on the val split with multi-view testing (detectors: mAP per tIoU)."""
    from tubelet.jobs import default_workers

    workers = default_workers() if workers is None else workers
    if zero_shot:
        from tubelet.jobs.zero_shot import evaluate_zero_shot

        if model is None or data is None:
            raise typer.BadParameter("--zero-shot needs --model (a video-text model) and --data")
        metrics = run_job(
            lambda: evaluate_zero_shot(
                data, model=model, checkpoint=checkpoint,
                checkpoint_format=checkpoint_format or "transformers", batch_size=batch_size,
                workers=workers,
            )
        )  # fmt: skip
        views = "zero-shot"
    else:
        if model is None and run_job(lambda: detect.is_detection_run(checkpoint)):
            return detect.evaluate_detection(checkpoint, data, batch_size)
        from tubelet.jobs.classification import evaluate as evaluate_job

        clips, crops = parse_views(views)
        metrics = run_job(
            lambda: evaluate_job(
                checkpoint, data=data, clips=clips, crops=crops, batch_size=batch_size,
                workers=workers, model=model, checkpoint_format=checkpoint_format,
                model_args=parse_model_args(model_arg),
                max_pixels=max_pixels or None,
            )
        )  # fmt: skip
        for note in metrics.get("notes", []):
            console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    table = Table(title=f"{checkpoint.name}: {views} views")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("top1", "top5", "clip_top1", "reversal_acc", "num_videos"):
        if key in metrics:
            table.add_row(key, fmt(metrics[key]))
    console.print(table)
    print_bad_files(metrics["bad_files"])


@app.command(short_help="Classify one video.")
def predict(
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="A video file.")],
    checkpoint: Annotated[Path, typer.Option(help="Run folder or checkpoint folder.")],
    top_k: Annotated[int, typer.Option(min=1, help="How many classes to show.")] = 5,
    views: Annotated[str, typer.Option(help="CLIPSxCROPS views, averaged.")] = "1x1",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--labels", help="Zero-shot: a class text, repeatable (a video-text --model)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="A published checkpoint's registered model (`tubelet models`); with --labels, "
            "the video-text model."
        ),
    ] = None,
    checkpoint_format: Annotated[
        str | None,
        typer.Option(
            help="Format of a published --checkpoint: torchvision, transformers, pytorchvideo or "
            "pyslowfast (with --labels: transformers, the default)."
        ),
    ] = None,
    model_arg: CheckpointModelArgs = [],  # noqa: B006  (typer reads the default; never mutated)
    max_pixels: MaxPixels = MAX_PIXELS,
) -> None:
    """Classify one video with a trained model (a run folder), or with a published checkpoint
    (--model, --checkpoint FILE_OR_FOLDER, --checkpoint-format), using the class names and
    preprocessing the checkpoint comes with; or rank texts (--labels) with a video-text model."""
    if labels:
        from tubelet.jobs.zero_shot import predict_zero_shot

        if model is None:
            raise typer.BadParameter("--labels needs --model (videoprism_lvt_b, videoprism_lvt_l)")
        ranked = run_job(
            lambda: predict_zero_shot(
                video, labels, model=model, checkpoint=checkpoint,
                checkpoint_format=checkpoint_format or "transformers",
            )
        )  # fmt: skip
        top = [{"class": r["label"], **r} for r in ranked[:top_k]]
    else:
        from tubelet.jobs.classification import predict as predict_job

        clips, crops = parse_views(views)
        top = run_job(
            lambda: predict_job(
                checkpoint, video, top_k=top_k, clips=clips, crops=crops, model=model,
                checkpoint_format=checkpoint_format, model_args=parse_model_args(model_arg),
                max_pixels=max_pixels or None,
            )
        )  # fmt: skip
    if as_json:
        print(json.dumps({"video": str(video), "predictions": top}, indent=2))
        return
    table = Table(title=video.name)
    table.add_column("class")
    table.add_column("probability", justify="right")
    if labels:
        table.add_column("similarity", justify="right")
    for row in top:
        extra = [f"{row['similarity']:.3f}"] if labels else []
        table.add_row(row["class"], f"{row['probability']:.3f}", *extra)
    console.print(table)


@app.command(short_help="One table of finished runs.")
def compare(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", help="Run folders.")],
) -> None:
    """One table of finished runs: validation top-1 and accuracy on time-reversal pairs."""
    table = Table(title="validation accuracy")
    table.add_column("model", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("top-1", justify="right")
    table.add_column("reversal pairs", justify="right")
    table.add_column("train s", justify="right")
    table.add_column("run", overflow="fold")
    for run in runs:
        path = run / "summary.json"
        if not path.is_file():
            raise typer.BadParameter(
                f"{run} has no summary.json (not a finished `tubelet train` run)"
            )
        s = json.loads(path.read_text())
        table.add_row(
            s["model"], f"{s['params'] / 1e6:.2f}M", fmt(s.get("val_top1")),
            fmt(s.get("val_reversal_acc")), f"{s['train_time_s']:.0f}", str(run),
        )  # fmt: skip
    console.print(table)


@data_app.command("synth", short_help="Write the built-in synthetic dataset.")
def data_synth(
    out: Annotated[
        Path,
        typer.Argument(metavar="OUT_DIR", help="Folder to write videos and annotation lists into."),
    ],
    videos_per_class: Annotated[int, typer.Option()] = 60,
    frames: Annotated[int, typer.Option()] = 24,
    size: Annotated[int, typer.Option()] = 72,
    fps: Annotated[float, typer.Option()] = 12.0,
    seed: Annotated[int, typer.Option()] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write over a folder that is not empty.")
    ] = False,
) -> None:
    """Write the built-in synthetic motion dataset as H.264 mp4 files with train/val lists."""
    from tubelet.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(
        out, videos_per_class=videos_per_class, num_frames=frames, size=size, fps=fps, seed=seed,
        progress=data_bar(), overwrite=overwrite,
    )  # fmt: skip
    console.print(f"Wrote {root} (train.csv, val.csv, classes.txt, reversal_pairs.txt, videos/)")


@data_app.command("inspect", short_help="Classes, counts and sizes of a data folder.")
def data_inspect(
    path: Annotated[Path, typer.Argument(metavar="DATA_DIR", help="A data folder.")],
) -> None:
    """Classes, counts, durations, frame rates, resolutions and unreadable files of a data folder."""
    from tubelet.data.inspect import inspect_dataset

    report = run_job(lambda: inspect_dataset(path, progress=data_bar()))
    console.print(
        f"{report.root}: {report.layout} layout, {len(report.classes)} classes", soft_wrap=True
    )
    table = Table()
    for column in ("class", *report.splits):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name in report.classes:
        table.add_row(name, *(str(s.per_class.get(name, 0)) for s in report.splits.values()))
    console.print(table)
    stats = Table()
    for column in (
        "split",
        "videos",
        "duration s (min/mean/max)",
        "fps",
        "resolutions",
        "unreadable",
    ):
        stats.add_column(column)
    for split, s in report.splits.items():
        d = s.durations
        span = f"{min(d):.2f} / {sum(d) / len(d):.2f} / {max(d):.2f}" if d else "-"
        stats.add_row(
            split, str(s.videos), span, _most_common(s.fps), _most_common(s.resolutions),
            str(len(s.unreadable)),
        )  # fmt: skip
    console.print(stats)
    print_bad_files(
        [{"path": p, "reason": r} for s in report.splits.values() for p, r in s.unreadable]
    )


@data_app.command("validate", short_help="Decode every video; list the unreadable ones.")
def data_validate(
    path: Annotated[
        Path, typer.Argument(metavar="DATA_DIR", help="A data folder (any layout `--data` reads).")
    ],
    report: Annotated[
        Path | None, typer.Option(help="Write the bad files to this CSV (path,splits,reason).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Videos checked at once (default: every core).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds allowed to decode one video.")
    ] = 60.0,
) -> None:
    """Decode every video of every split in full, in parallel; list unreadable or suspicious ones.

    Exit code 0 when every video is sound, 1 when some are bad (listed, and written to --report),
    2 when the folder cannot be read.
    """
    from rich.progress import Progress

    from tubelet.data.validate import validate_dataset

    if report is not None and not report.parent.is_dir():
        raise typer.BadParameter(
            f"{report.parent} does not exist: create it, or give --report a path in a folder"
        )
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("decoding videos", total=None)
        result = run_job(
            lambda: validate_dataset(
                path, workers=workers, timeout_s=timeout,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        )  # fmt: skip
    if report is not None:
        result.write_csv(report)
    if result.ok:
        console.print(
            f"{result.root}: all {result.checked} videos decode ({result.layout} layout)",
            soft_wrap=True,
        )
        return
    table = Table(title=f"{len(result.problems)} of {result.checked} videos are bad")
    for column in ("path", "split", "reason"):
        table.add_column(column, overflow="fold")
    for problem in result.problems:
        table.add_row(problem.path, problem.splits, problem.reason)
    console.print(table)
    if report is not None:
        console.print(f"Wrote {report}")
    raise typer.Exit(1)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was written on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"  # typer may ship its own click


def _most_common(counts: Any) -> str:
    return ", ".join(f"{value} ({n})" for value, n in counts.most_common(3))


# The other tasks' command modules register their commands on `app` when imported (one line each).
from tubelet.cli import (  # noqa: E402
    consolidate,  # noqa: F401
    detect,  # noqa: F401
    doctor,  # noqa: F401
    extract,  # noqa: F401
    flow,  # noqa: F401
    generate,  # noqa: F401
    memory,  # noqa: F401
    models,  # noqa: F401
    pretrain,  # noqa: F401
)


def main() -> None:
    """Entry point of the `tubelet` console script."""
    app()
