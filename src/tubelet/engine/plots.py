"""Pictures of a run folder: `curves.png` (loss, learning rate and validation metrics by epoch) and,
for classification, `confusion.png` (the best epoch's confusion matrix with the class names).

Both are drawn from what the run folder already holds (`metrics.jsonl`, `summary.json` and the
best checkpoint's `model.json`), so they can be redrawn at any time with `plot_run(folder)`.
Matplotlib draws off-screen (a `Figure` without pyplot: no display, no global state).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tubelet.models.spec import read_spec

CURVES = "curves.png"
CONFUSION = "confusion.png"
# Per-epoch values that describe the machine rather than the learning: not plotted.
_NOT_CURVES = (
    "epoch",
    "clips_per_s",
    "data_wait_s",
    "compute_s",
    "data_wait_share",
    "epoch_time_s",
)


def plot_run(root: str | Path) -> list[Path]:
    """Draw the pictures of the run folder `root` that its files allow; return their paths."""
    root = Path(root)
    written = []
    records = _read_jsonl(root / "metrics.jsonl")
    if records:
        _save(curves_figure(records), root / CURVES)
        written.append(root / CURVES)
    summary = _read_json(root / "summary.json") or {}
    confusion = summary.get("val_confusion")
    if confusion:
        classes = _classes(root) or [str(i) for i in range(len(confusion))]
        _save(confusion_figure(confusion, classes), root / CONFUSION)
        written.append(root / CONFUSION)
    return written


def _classes(root: Path) -> list[str]:
    """The class names the run's saved model records (none when it has no readable spec)."""
    try:
        return list(read_spec(root).classes)
    except (FileNotFoundError, ValueError):
        return []


def curves_figure(records: list[dict[str, Any]]) -> Any:
    """A matplotlib Figure with one panel per quantity over the epochs of `records` (the lines of
    `metrics.jsonl`): the training loss (with the validation loss, where there is one), the
    learning rate, then every other validation metric."""
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in records]
    names = sorted({k for r in records for k, v in r.items() if _is_number(v) and _is_curve(k)})
    panels: list[tuple[str, list[str]]] = []
    losses = [n for n in ("train_loss", "val_loss") if n in names]
    if losses:
        panels.append(("loss", losses))
    if "lr" in names:
        panels.append(("learning rate", ["lr"]))
    panels += [(n, [n]) for n in names if n.startswith("val_") and n not in losses]
    panels += [(n, [n]) for n in names if not n.startswith("val_") and n not in (*losses, "lr")]

    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = _figure(4.0 * columns, 2.8 * rows)
    for i, (title, series) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, i + 1)
        for name in series:
            values = [r.get(name) for r in records]
            points = [(e, v) for e, v in zip(epochs, values, strict=True) if _is_number(v)]
            axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("epoch", fontsize=8)
        axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole epochs
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
        if len(series) > 1:
            axes.legend(fontsize=8)
    return figure


def confusion_figure(confusion: list[list[int]], classes: list[str]) -> Any:
    """A matplotlib Figure of the confusion matrix (rows: true class, columns: predicted), shaded
    by each row's shares, with the counts in the cells and the class names on both axes."""
    import numpy as np

    counts = np.asarray(confusion, dtype=float)  # (K, K)
    if counts.shape != (len(classes), len(classes)):
        raise ValueError(
            f"a {counts.shape} confusion matrix cannot be labelled by {len(classes)} classes"
        )
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)  # each row sums to 1
    side = max(4.0, 0.45 * len(classes) + 2.0)
    figure = _figure(side + 1.0, side)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(classes)), classes, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(classes) <= 30:  # counts stay legible
        for (true, predicted), count in np.ndenumerate(counts):
            if count:
                colour = "white" if shares[true, predicted] > 0.5 else "black"
                axes.text(predicted, true, int(count), ha="center", va="center", fontsize=7,
                          color=colour)  # fmt: skip
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    return figure


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _is_curve(name: str) -> bool:
    """Whether a per-epoch value is plotted: not the machine's speed, nor counts of items."""
    return name not in _NOT_CURVES and not name.startswith(("val_num_", "num_"))


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.strip()]
