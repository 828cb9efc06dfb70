"""`tubelet models`: the registered models, one model's builder arguments, and docs/models.md."""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tubelet.cli.common import app, console, run_job


def format_default(value: Any) -> str:
    """A default as a user would write it after `-m KEY=`: JSON-like for values, a name for a
    layer factory, "(required)" when there is none."""
    if value is inspect.Parameter.empty:
        return "(required)"
    if isinstance(value, functools.partial):
        args = ", ".join(f"{k}={v!r}" for k, v in value.keywords.items())
        return f"{format_default(value.func)}({args})"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, tuple | list):
        return "[" + ", ".join(format_default(v) for v in value) + "]"
    if callable(value):
        return getattr(value, "__name__", repr(value))
    return repr(value) if isinstance(value, str) else str(value)


def summary(name: str) -> str:
    """The first line of a registered model's docstring."""
    from tubelet.models.registry import builder

    doc = inspect.getdoc(builder(name)) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def models_markdown() -> str:
    """docs/models.md: every registered model with its kind, summary and builder arguments."""
    from tubelet.models import list_models, model_args, model_kind

    lines = [
        "# Models",
        "",
        "Every registered model, what it is, and the builder arguments `-m KEY=VALUE` sets (values",
        "are read as JSON: `-m depths=[1,1,1]`, `-m temporal=false`). `tubelet models NAME` prints",
        "the same table. Arguments mean one thing everywhere: `width` is the base channels of a",
        "CNN or the embedding dimension of a transformer, `head_dim` the channels per attention",
        "head, `num_heads` the number of heads, `in_channels` the input channels.",
        "",
        "Runs saved before an argument was renamed still load: their arguments are translated",
        "(`tubelet.models.translate_legacy_args`): the video ViTs' and VideoMAE's per-head `width`",
        "and `decoder_width` are now `head_dim` and `decoder_head_dim`, `in_chans` is",
        "`in_channels`, TimeSformer's `layer_norm_eps` is `norm_eps`, and video_unet's",
        "`base_channels` is `width`. An old name given to `-m` is read as the new one, with a",
        "warning that names it.",
        "",
        "This page is generated: `tubelet models --markdown > docs/models.md`.",
        "",
        "| model | kind | what it is |",
        "|---|---|---|",
    ]
    for name in list_models():
        lines.append(f"| [`{name}`](#{name}) | {model_kind(name)} | {summary(name)} |")
    for name in list_models():
        lines += ["", f"## {name}", "", f"{summary(name)}", ""]
        lines += ["| argument | type | default |", "|---|---|---|"]
        for arg in model_args(name):
            type_name = arg.type.replace("|", "\\|")
            lines.append(f"| `{arg.name}` | `{type_name}` | `{format_default(arg.default)}` |")
    return "\n".join(lines) + "\n"


@app.command(short_help="List the models, or one model's arguments.")
def models(
    name: Annotated[
        str | None, typer.Argument(help="A registered model: list its builder arguments.")
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print every model's arguments as docs/models.md.")
    ] = False,
) -> None:
    """List the registered models with their kind (what they take and give); with NAME, that
    model's builder arguments (what `-m KEY=VALUE` sets) with their types and defaults."""
    from tubelet.models import list_models, model_args, model_kind

    if markdown:
        typer.echo(models_markdown(), nl=False)
        return
    if name is None:
        table = Table(title="registered models")
        table.add_column("model")
        table.add_column("kind")
        for model in list_models():
            table.add_row(model, model_kind(model))
        console.print(table)
        return
    args = run_job(lambda: model_args(name))
    table = Table(title=escape(f"{name} ({model_kind(name)}): {summary(name)}"))
    table.add_column("argument", no_wrap=True)
    table.add_column("type")
    table.add_column("default")
    for arg in args:
        table.add_row(arg.name, escape(arg.type), escape(format_default(arg.default)))
    console.print(table)
