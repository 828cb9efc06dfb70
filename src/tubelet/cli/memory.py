"""`tubelet memory`: the memory and time of one training step under each memory-saving strategy."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from tubelet.cli.common import app, console, err, parse_model_args, run_job


@app.command(short_help="Memory and time of a training step, per strategy.")
def memory(
    model: Annotated[
        str, typer.Option(help="Registered classifier or generation model (`tubelet models`).")
    ],
    frames: Annotated[int, typer.Option(help="Frames per clip (T).")] = 16,
    size: Annotated[int, typer.Option(help="Crop side S in pixels.")] = 224,
    height: Annotated[
        int | None, typer.Option(help="Frame height instead of S (e.g. 480 for 480x832).")
    ] = None,
    width: Annotated[int | None, typer.Option(help="Frame width instead of S.")] = None,
    lora_rank: Annotated[
        int | None,
        typer.Option(
            min=1, help="A generation model: LoRA adapters of this rank train, the base frozen."
        ),
    ] = None,
    batch: Annotated[int, typer.Option(help="Clips per step (B).")] = 1,
    strategies: Annotated[
        list[str],
        typer.Option(
            "--strategy",
            "-s",
            help="A strategy to measure, repeatable: baseline or switches joined by '+' "
            "(checkpointing, selective_checkpointing, bf16, fp16, channels_last). Default: "
            "baseline, checkpointing, bf16, checkpointing+bf16.",
        ),
    ] = [],  # noqa: B006  (typer reads the default; it is never mutated)
    model_arg: Annotated[
        list[str],
        typer.Option(
            "--model-arg", "-m", metavar="KEY=VALUE", help="Builder argument, repeatable."
        ),
    ] = [],  # noqa: B006
    num_classes: Annotated[int, typer.Option(help="Classes of the head.")] = 400,
    repeats: Annotated[int, typer.Option(min=1, help="Timed steps per strategy.")] = 3,
    count_only: Annotated[
        bool,
        typer.Option(
            "--count-only",
            help="Count the memory on fake tensors (no arithmetic, seconds even where a strategy "
            "computes slowly, e.g. bf16 on a CPU without bf16 units); no times.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the rows as JSON {strategy, activation_bytes, peak_bytes, step_time_s, "
            "cpu_time_s, ...}.",
        ),
    ] = False,
) -> None:
    """Measure one training step (forward, loss, backward, AdamW) of MODEL on random clips
    (B, 3, T, S, S) under each strategy: activation memory, peak memory and step time. A
    text-to-video denoiser (wan_dit) trains on the Wan VAE latents of such clips with 512 text
    tokens; --lora-rank counts LoRA fine-tuning.

    On a GPU the peak is the device's peak allocation; on a CPU (and with --count-only) it is the
    tensors saved for backward plus parameters, gradients and optimizer state. The step's wall time
    and CPU time (all threads) are medians over --repeats steps taken in turn by the strategies.
    Ratios are to the first strategy measured. --count-only allocates neither the model nor the
    batch; a real run is counted that way first and refused when it needs more than the device has
    free.
    """
    from tubelet.jobs.memory import DEFAULT_STRATEGIES, Strategy, memory_report

    names = strategies or list(DEFAULT_STRATEGIES)
    parsed = run_job(lambda: [Strategy.parse(name) for name in names])
    work = "counting" if count_only else f"measuring {repeats + 1} training steps of"
    with err.status(f"{work} {len(parsed)} strategies"):
        rows = run_job(
            lambda: memory_report(
                model, frames=frames, size=size, batch=batch, strategies=parsed,
                model_args=parse_model_args(model_arg), num_classes=num_classes, repeats=repeats,
                timed=not count_only, height=height, width=width, lora_rank=lora_rank,
            )
        )  # fmt: skip
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    base = rows[0]
    device = base.device
    peak = "peak MiB" if device.startswith("cuda") and not count_only else "total MiB"
    how = "counted on fake tensors" if count_only else f"on {device}"
    hw = f"{height or size}x{width or size}"
    lora = f", LoRA rank {lora_rank}" if lora_rank else ""
    table = Table(title=f"{model}{lora}: one training step, batch {batch} x {frames}x{hw} {how}")
    for column in ("strategy", "activations MiB", peak, "step s", "cpu s", "activations", "peak"):
        table.add_column(
            column,
            justify="left" if column == "strategy" else "right",
            no_wrap=column == "strategy",
        )
    table.add_column("time", justify="right")
    for row in rows:
        timed = row.step_time_s is not None and base.step_time_s  # None under --count-only
        table.add_row(
            row.strategy, f"{row.activation_bytes / 2**20:.1f}", f"{row.peak_bytes / 2**20:.1f}",
            f"{row.step_time_s:.3f}" if timed else "-", f"{row.cpu_time_s:.3f}" if timed else "-",
            f"{row.activation_bytes / base.activation_bytes:.2f}x",
            f"{row.peak_bytes / base.peak_bytes:.2f}x",
            f"{row.step_time_s / base.step_time_s:.2f}x" if timed else "-",
        )  # fmt: skip
    console.print(table)
    if count_only or not device.startswith("cuda"):
        where = "Counted" if count_only else "CPU"
        console.print(
            f"{where}: activations = tensors saved for backward; total = activations + parameters "
            "+ gradients + AdamW state. Ratios are to the first row."
        )
