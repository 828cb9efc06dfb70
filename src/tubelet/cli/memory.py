"""`tubelet memory`: the memory and time of one training step under each memory-saving strategy."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from tubelet.cli.common import app, console, err, parse_model_args, run_job


@app.command()
def memory(
    model: Annotated[str, typer.Option(help="Registered classifier name (`tubelet models`).")],
    frames: Annotated[int, typer.Option(help="Frames per clip (T).")] = 16,
    size: Annotated[int, typer.Option(help="Crop side S in pixels.")] = 224,
    batch: Annotated[int, typer.Option(help="Clips per step (B).")] = 1,
    strategies: Annotated[
        list[str],
        typer.Option(
            "--strategy",
            "-s",
            help="A strategy to measure, repeatable: baseline or switches joined by '+' "
            "(checkpointing, bf16, fp16, channels_last). Default: baseline, checkpointing, bf16, "
            "checkpointing+bf16.",
        ),
    ] = [],  # noqa: B006  (typer reads the default; it is never mutated)
    model_arg: Annotated[
        list[str], typer.Option("--model-arg", "-m", help="Builder argument KEY=VALUE, repeatable.")
    ] = [],  # noqa: B006
    num_classes: Annotated[int, typer.Option(help="Classes of the head.")] = 400,
    repeats: Annotated[int, typer.Option(min=1, help="Timed steps per strategy.")] = 3,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the rows as JSON {strategy, activation_bytes, peak_bytes, ...}."
        ),
    ] = False,
) -> None:
    """Measure one training step (forward, loss, backward, AdamW) of MODEL on random clips
    (B, 3, T, S, S) under each strategy: activation memory, peak memory and step time.

    On a GPU the peak is the device's peak allocation; on a CPU it is the tensors saved for backward
    plus parameters, gradients and optimizer state. Ratios are to the first strategy measured.
    """
    from tubelet.engine.memory import DEFAULT_STRATEGIES, Strategy, memory_report

    names = strategies or list(DEFAULT_STRATEGIES)
    parsed = run_job(lambda: [Strategy.parse(name) for name in names])
    with err.status(f"measuring {len(parsed)} strategies x {repeats + 1} training steps"):
        rows = run_job(
            lambda: memory_report(
                model, frames=frames, size=size, batch=batch, strategies=parsed,
                model_args=parse_model_args(model_arg), num_classes=num_classes, repeats=repeats,
            )
        )  # fmt: skip
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    base = rows[0]
    device = base.device
    peak = "peak MiB" if device.startswith("cuda") else "total MiB"
    table = Table(
        title=f"{model}: one training step, batch {batch} x {frames}x{size}x{size} on {device}"
    )
    for column in ("strategy", "activations MiB", peak, "step s", "activations", "peak", "time"):
        table.add_column(
            column,
            justify="left" if column == "strategy" else "right",
            no_wrap=column == "strategy",
        )
    for row in rows:
        table.add_row(
            row.strategy, f"{row.activation_bytes / 2**20:.1f}", f"{row.peak_bytes / 2**20:.1f}",
            f"{row.step_time_s:.3f}", f"{row.activation_bytes / base.activation_bytes:.2f}x",
            f"{row.peak_bytes / base.peak_bytes:.2f}x", f"{row.step_time_s / base.step_time_s:.2f}x",
        )  # fmt: skip
    console.print(table)
    if not device.startswith("cuda"):
        console.print(
            "CPU: activations = tensors saved for backward; total = activations + parameters + "
            "gradients + AdamW state. Ratios are to the first row."
        )
