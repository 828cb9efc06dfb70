"""A run folder: config, metrics as JSON lines, a summary, and checkpoints under best/ and last/."""

from __future__ import annotations

import json
import platform
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class RunDir:
    """Paths of one run. `config.json` is what was asked, `metrics.jsonl` one line per evaluation,
    `summary.json` the result; `best/` and `last/` hold checkpoints."""

    root: Path

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def last(self) -> Path:
        return self.root / "last"

    def read_config(self) -> dict[str, Any] | None:
        path = self.root / "config.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_config(self, config: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config.json").write_text(json.dumps(config, indent=2))

    def log_metrics(self, record: dict[str, Any]) -> None:
        with open(self.root / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        path = self.root / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.root / "summary.json").write_text(json.dumps(summary, indent=2))


def seed_everything(seed: int) -> None:
    """The one place randomness is seeded: Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    """Versions that decide whether a run can be reproduced."""
    import torchvision

    from tubelet import __version__

    return {
        "tubelet": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
