"""README.md's quick start: every command parses as written, and the ones a tiny data set can serve
run at tiny size, in order (train, eval, predict, compare, extract, heads, pre-training, ...)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import typer.main
from typer.testing import CliRunner

from tubelet.cli.main import app

README = Path(__file__).resolve().parents[1] / "README.md"

# Appended to a command to run it at tiny size (a repeated option's last value wins).
TINY = {
    "train": ["--epochs", "1", "--batch-size", "4", "--size", "32", "--frames", "4", "--workers", "0"],
    "pretrain": ["--epochs", "1", "--batch-size", "4", "--size", "32", "--frames", "4", "--workers", "0"],
    "eval": ["--workers", "0"],
    "extract": ["--size", "32"],
    "memory": ["--size", "32", "--frames", "4", "--repeats", "1"],
}  # fmt: skip
# Tasks whose data a tiny classification folder cannot stand for, or whose runs take minutes:
# their commands are parsed, not run (tests/cli and tests/jobs run each of them end to end).
# bf16 on a CPU without bf16 units, and full-size models, take minutes too.
PARSE_ONLY = ("--task flow", "--task detection", "--task generation", "det_feats", "runs/det")
PARSE_ONLY += ("runs/flow", "runs/gen", "my_untrimmed", "torchrun", "--precision bf16")


def tiny(args: list[str]) -> list[str]:
    """What `args` takes to run at tiny size: `TINY`'s options of its command, but for `--size`
    on a head over cached features, which reads no clips (and refuses it)."""
    extra = TINY.get(args[0], [])
    if args[0] == "train" and "--features" in args:
        at = extra.index("--size")
        extra = extra[:at] + extra[at + 2 :]
    return extra


def quick_start_commands() -> list[list[str]]:
    """The commands of README's "Quick start" section that run `tubelet`, as argument lists
    (`torchrun ... -m tubelet ...` included)."""
    text = README.read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "tubelet" in words:
                commands.append(words)
    return commands


def parse(args: list[str]) -> None:
    """Parse `args` (after `tubelet`) as the command line would, without running the command:
    unknown options, bad values and missing arguments raise. (`tubelet` and its groups take no
    options of their own, so the leading words name the command.)"""
    command: Any = typer.main.get_command(app)
    words = list(args)
    while hasattr(command, "list_commands"):
        name = words.pop(0)
        command = command.get_command(command.context_class(command), name)
        assert command is not None, f"no command {name!r}"
    command.make_context(name, words)


def tubelet_args(words: list[str]) -> list[str]:
    """The arguments after `tubelet` in a command line."""
    return words[words.index("tubelet") + 1 :]


def test_the_quick_start_has_a_command_for_every_task():
    commands = [" ".join(words) for words in quick_start_commands()]
    for expected in (
        "tubelet train --data",
        "tubelet predict",
        "tubelet extract",
        "tubelet pretrain",
    ):
        assert any(c.startswith(expected) for c in commands), expected
    for task in ("flow", "detection", "generation"):
        assert any(f"--task {task}" in c for c in commands), task


@pytest.mark.parametrize("words", quick_start_commands(), ids=" ".join)
def test_quick_start_command_parses(words):
    parse(tubelet_args(words))


@pytest.mark.slow
def test_quick_start_runs_at_tiny_size(tiny_dataset, tmp_path, monkeypatch):
    """Eleven commands on 30 clips of 8 frames at 32 px, one epoch each, and a published r3d_18
    checkpoint on one clip: about 50 s of CPU time."""
    shutil.copytree(tiny_dataset, tmp_path / "my_videos")
    clip = (tiny_dataset / "val.csv").read_text().split()[0]
    shutil.copy(tiny_dataset / clip, tmp_path / "my_clip.mp4")
    # The published checkpoint the quick start names: torchvision's r3d_18 layout, random weights.
    from torchvision.models.video import r3d_18

    torch.save(r3d_18().state_dict(), tmp_path / "r3d_18-b3b3357e.pth")
    monkeypatch.chdir(tmp_path)
    ran = []
    for words in quick_start_commands():
        line = " ".join(words)
        if any(marker in line for marker in PARSE_ONLY):
            continue
        args = tubelet_args(words)
        result = CliRunner().invoke(app, args + tiny(args), catch_exceptions=False)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        ran.append(args[0])
    assert (
        ran.count("train") >= 3
        and ran.count("predict") == 2
        and {
            "eval",
            "predict",
            "compare",
            "extract",
            "pretrain",
            "memory",
        }
        <= set(ran)
    )
    assert (tmp_path / "runs" / "r21d" / "best" / "model.safetensors").is_file()
