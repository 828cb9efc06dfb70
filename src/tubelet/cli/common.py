"""What every command module shares: the typer app, the consoles, option parsers and printers.

Each command module (`main.py` for classification and data, one module per other task) adds its
commands to `app`; `tubelet.cli.main` imports them all.

Exit codes, the same for every command: 0 done; 1 problems found (`tubelet data validate` listing
bad videos); 2 bad input or arguments (an unreadable or wrong file, an unknown name, a bad option,
a run folder in use), reported as one line that names the file or option and the fix. Any error of
those kinds raised anywhere in a command ends that way (`TubeletGroup`); `tubelet --debug CMD`
shows its traceback instead. Anything else is a bug in tubelet and keeps its traceback (exit 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

# The reader's ceiling on a frame's pixels (`tubelet.io.VideoReader`), as an option.
MAX_PIXELS = 36_000_000
MaxPixels = Annotated[
    int,
    typer.Option(
        min=0, metavar="PIXELS",
        help="Refuse videos whose frames have more pixels (bounds decoding memory); 0: no limit.",
    ),
]  # fmt: skip

EXIT_PROBLEMS = 1  # `tubelet data validate` found bad videos
EXIT_BAD_INPUT = 2  # what the user gave cannot be used; the message says why and what to do
_options = {"debug": False}


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix: bad values and names (ValueError), files that are missing,
    unreadable or in the way (OSError), videos that cannot be decoded."""
    from tubelet.io import VideoDecodeError

    return (ValueError, OSError, VideoDecodeError)


class TubeletGroup(TyperGroup):
    """The command group: a user error from any command ends as one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except user_errors() as error:
            if _options["debug"]:
                raise
            print_error(str(error) or type(error).__name__)
            raise typer.Exit(EXIT_BAD_INPUT) from None


app = typer.Typer(
    cls=TubeletGroup,
    help="tubelet: decode, sample, train and evaluate video models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # click's plain help: it wraps the descriptions and never cuts an option name (typer's rich
    # panels cut them in an 80-column terminal).
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show an error's traceback instead of one line.")
    ] = False,
) -> None:
    _options["debug"] = debug


data_app = typer.Typer(
    help="Make and inspect data sets.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)

# The options of every training command (`tubelet train`, `tubelet pretrain`), declared once.
ModelArgs = Annotated[
    list[str],
    typer.Option("--model-arg", "-m", metavar="KEY=VALUE", help="Builder argument, repeatable."),
]
CheckpointModelArgs = Annotated[
    list[str],
    typer.Option(
        "--model-arg",
        "-m",
        metavar="KEY=VALUE",
        help="Builder argument of --model the checkpoint does not state, repeatable.",
    ),
]
Sampling = Annotated[str, typer.Option(help="uniform (TSN segments) or dense (consecutive).")]
Stride = Annotated[int, typer.Option(help="Frame stride of dense clips.")]
Epochs = Annotated[int, typer.Option()]
BatchSize = Annotated[int, typer.Option()]
LearningRate = Annotated[
    float, typer.Option("--lr", help="Peak learning rate (AdamW, warm-up + cosine).")
]
Precision = Annotated[
    str, typer.Option(help="fp32, bf16 or fp16 (autocast; fp16 with loss scaling).")
]
Accumulate = Annotated[int, typer.Option(help="Batches per optimizer step.")]
GradCheckpointing = Annotated[
    bool,
    typer.Option(
        "--grad-checkpointing", help="Recompute activations in backward (less memory, more time)."
    ),
]
ChannelsLast = Annotated[bool, typer.Option("--channels-last", help="Channels-last memory layout.")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the model.")]
DecodeDevice = Annotated[
    str,
    typer.Option(
        help="Where clips are decoded: cpu (in --workers processes) or cuda (NVDEC through "
        "torchcodec, in the training process; --workers is then not used)."
    ),
]
Fsdp = Annotated[
    bool, typer.Option("--fsdp", help="Under torchrun: shard the model (FSDP) instead of DDP.")
]
Flip = Annotated[
    bool | None,
    typer.Option(
        "--flip/--no-flip",
        help="Horizontal flips (default: unless a class names a direction; pretrain: on).",
    ),
]
BadFiles = Annotated[str, typer.Option(help="resample, skip or raise on unreadable videos.")]
Workers = Annotated[int | None, typer.Option(help="Decoding worker processes.")]
TaskArgs = Annotated[
    list[str],
    typer.Option(
        "--task-arg", "-t", metavar="KEY=VALUE",
        help="The task's own setting, repeatable (classification: label_smoothing; flow: "
        "updates; generation: prediction, schedule, objective, vae, ... see "
        "docs/generation.md; autoencoder: kl_weight).",
    ),
]  # fmt: skip
Seed = Annotated[int, typer.Option()]
Out = Annotated[Path | None, typer.Option(help="Run folder (resumed if it exists).")]
Log = Annotated[
    str,
    typer.Option(
        help="files (metrics.jsonl, summary.json, curves.png) or tensorboard (also TensorBoard "
        "event files in RUN/tensorboard; pip install 'tubelet[tensorboard]')."
    ),
]


def parse_views(views: str) -> tuple[int, int]:
    """`"2x3"` -> (2 clips, 3 crops), with a usage error for anything else."""
    try:
        clips, crops = (int(v) for v in views.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(
            f"views must look like CLIPSxCROPS (e.g. 2x3), not {views!r}"
        ) from None
    if clips < 1 or crops not in (1, 3):
        raise typer.BadParameter("views need at least 1 clip and 1 or 3 crops")
    return clips, crops


def parse_model_args(pairs: list[str], option: str = "--model-arg") -> dict[str, Any]:
    """`["width=16", "attention=joint"]` -> {"width": 16, "attention": "joint"} (values read as JSON)."""
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{option} takes KEY=VALUE (e.g. width=16), not {pair!r}")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


def fmt(value: Any) -> str:
    """A table cell: floats to 3 decimals, None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def data_bar() -> Any:
    """A progress callback for making the built-in dataset."""
    from rich.progress import Progress

    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "progress" not in state:
            state["progress"] = Progress(console=err, transient=True)
            state["progress"].start()
            state["task"] = state["progress"].add_task("making the built-in dataset", total=total)
        state["progress"].update(state["task"], completed=done)
        if done == total:
            state["progress"].stop()

    return update


def print_bad_files(bad: list[dict[str, str]]) -> None:
    """One unwrapped line per unreadable video, so paths can be copied."""
    if not bad:
        return
    console.print(f"[bold yellow]{len(bad)} unreadable video(s):[/]")
    for entry in bad[:20]:
        console.print(f"  {entry['path']}: {entry['reason']}", soft_wrap=True, markup=False)
    if len(bad) > 20:
        console.print(f"  ... and {len(bad) - 20} more (see the JSON file)")


def run_job(job: Any) -> Any:
    """Run a job; turn the errors a user can fix into one clear line and exit code 2 (the traceback
    with `--debug`)."""
    try:
        return job()
    except user_errors() as error:
        if _options["debug"]:
            raise
        print_error(str(error) or type(error).__name__)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def print_error(message: str) -> None:
    """`error: MESSAGE` on stderr as one unwrapped line (paths stay whole and copyable)."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
