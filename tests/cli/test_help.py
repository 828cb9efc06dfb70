"""Every command's --help in an 80-column terminal: option names whole, no line past 80."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from tubelet.cli.main import app

COLUMNS = 80


def subcommands(group: Any) -> dict[str, Any]:
    """{name: command} of a group; {} for a command. (Typer ships its own copy of click, so
    groups are told by what they do, not by click's class.)"""
    if not hasattr(group, "list_commands"):
        return {}
    context = group.context_class(group)
    return {name: group.get_command(context, name) for name in group.list_commands(context)}


def commands() -> list[tuple[tuple[str, ...], Any]]:
    """(path of names, command) for every command and group under `tubelet`, the root first."""
    found = [((), typer.main.get_command(app))]
    for path, command in found:  # grows while it is walked: breadth first
        found += [((*path, name), sub) for name, sub in subcommands(command).items()]
    return found


def render_help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(
        app, [*path, "--help"], env={"COLUMNS": str(COLUMNS)}, terminal_width=COLUMNS
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    "path", [path for path, _ in commands()], ids=lambda path: " ".join(("tubelet", *path))
)
def test_help_at_80_columns_shows_every_option_name_whole(path):
    command = dict(commands())[path]
    text = render_help(path)
    too_long = [line for line in text.splitlines() if len(line) > COLUMNS]
    assert not too_long, too_long
    assert "…" not in text
    for param in command.params:
        for name in (*param.opts, *param.secondary_opts):
            if not name.startswith("-"):
                continue  # an argument: shown by its metavar
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (name, text)
    for name, sub in subcommands(command).items():  # each one-line summary, not cut short
        summary = sub.get_short_help_str(limit=COLUMNS)
        assert not summary.endswith("..."), f"shorten the short_help of {name!r}: {summary}"
        assert re.search(rf"^  {re.escape(name)} +{re.escape(summary)}$", text, re.M), text


def test_the_walk_finds_nested_commands():
    paths = {path for path, _ in commands()}
    assert {(), ("train",), ("data",), ("data", "validate")} <= paths
