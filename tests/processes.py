"""Other processes for the tests of one-process-per-run-folder and crash consistency (a module
importable by name from every test directory)."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def python_env():
    """The environment for a child `python`: this interpreter's import path, tests/ included."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}


@contextlib.contextmanager
def held_elsewhere(root):
    """Another process holds the run folder `root` while inside; yields its PID."""
    script = (
        "import sys\n"
        "from tubelet.engine.run import RunDir\n"
        "with RunDir(sys.argv[1]).lock():\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=python_env(),
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
