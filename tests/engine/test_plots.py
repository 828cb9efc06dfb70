"""Pictures of a run folder: curves.png from metrics.jsonl, confusion.png with the class names."""

import json

import pytest
from PIL import Image

from tubelet.engine.plots import CONFUSION, CURVES, confusion_figure, curves_figure, plot_run
from tubelet.engine.run import RunDir

RECORDS = [
    {"epoch": e, "train_loss": 2.0 / e, "lr": 1e-3 * e, "clips_per_s": 5.0, "val_top1": 0.2 * e,
     "val_reversal_acc": 0.5, "val_loss": 2.2 / e, "data_wait_share": 0.1, "val_num_videos": 30}
    for e in (1, 2, 3)
]  # fmt: skip


def test_curves_have_loss_lr_and_each_validation_metric():
    figure = curves_figure(RECORDS)
    panels = {axes.get_title(): axes for axes in figure.axes}
    assert set(panels) == {"loss", "learning rate", "val_top1", "val_reversal_acc"}
    assert [line.get_label() for line in panels["loss"].get_lines()] == ["train_loss", "val_loss"]
    epochs, top1 = panels["val_top1"].get_lines()[0].get_data()
    assert list(epochs) == [1, 2, 3] and list(top1) == pytest.approx([0.2, 0.4, 0.6])


def test_confusion_is_labelled_with_the_class_names():
    classes = ["archery", "bowling", "surfing"]
    figure = confusion_figure([[3, 1, 0], [0, 4, 0], [2, 0, 2]], classes)
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == classes
    assert [t.get_text() for t in axes.get_yticklabels()] == classes
    assert axes.get_xlabel() == "predicted" and axes.get_ylabel() == "true"
    shares = axes.get_images()[0].get_array()
    assert shares[0].tolist() == pytest.approx([0.75, 0.25, 0.0])  # row 0: 3 of 4, 1 of 4
    with pytest.raises(ValueError, match="3 classes"):
        confusion_figure([[1, 0], [0, 1]], classes)


def _commit(run, record):
    """An epoch committed with its metrics line only (what the pictures read)."""
    run.stage(record["epoch"])
    run.commit_epoch(record["epoch"], record)


def test_write_summary_draws_the_pictures_a_run_allows(tmp_path):
    run = RunDir(tmp_path / "run")
    for record in RECORDS:
        _commit(run, record)
    (run.best).mkdir(parents=True)
    (run.best / "model.json").write_text(json.dumps({"model": "m", "classes": ["a", "b"]}))
    run.write_summary({"val_top1": 0.6, "val_confusion": [[2, 0], [1, 1]]})
    for name in (CURVES, CONFUSION):
        with Image.open(run.root / name) as image:
            assert image.format == "PNG" and min(image.size) > 100

    other = RunDir(tmp_path / "flow")  # no confusion matrix: the curves alone
    _commit(other, {"epoch": 1, "train_loss": 1.0, "lr": 1e-3, "val_epe": 2.0})
    other.write_summary({"val_epe": 2.0})
    assert plot_run(other.root) == [other.root / CURVES]
    assert not (other.root / CONFUSION).exists()
