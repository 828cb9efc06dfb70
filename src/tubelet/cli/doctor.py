"""`tubelet doctor`: versions, decoders, CPUs and GPUs as a bug report needs them, and the fixes."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from tubelet.cli.common import app, console


@app.command(short_help="Versions, decoders, CPUs and GPUs; what to fix.")
def doctor() -> None:
    """Print what a bug report needs: the versions of tubelet, torch, torchvision, torchcodec and
    PyAV, whether FFmpeg's libraries load for torchcodec, the decoder `backend='auto'` uses, the
    CPUs, the GPUs and NVDEC. Exits 0 when everything tubelet needs works, 1 (with the fix) when
    something does not; optional parts (torchcodec, GPUs, NVDEC) only get their fix printed."""
    from tubelet.engine.doctor import diagnose, problems

    checks = diagnose()
    table = Table(title="tubelet doctor", show_header=False)
    table.add_column("check")
    table.add_column("found")
    table.add_column("status")
    for check in checks:
        status = "ok" if check.ok else ("MISSING" if check.needed else "optional, off")
        style = "" if check.ok else ("bold red" if check.needed else "yellow")
        table.add_row(check.name, escape(check.found), f"[{style}]{status}[/]" if style else status)
    console.print(table)
    for check in checks:
        if not check.ok and check.fix:
            kind = "fix" if check.needed else "to enable"
            console.print(f"{kind} ({check.name}): {escape(check.fix)}", soft_wrap=True)
    failed = problems(checks)
    if failed:
        console.print(f"[bold red]{len(failed)} problem(s):[/] tubelet cannot work until fixed")
        raise typer.Exit(1)
    console.print("everything tubelet needs works")
