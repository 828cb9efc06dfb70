"""`tubelet train --features`: a temporal head learns from a features folder; settings checked."""

import json

import pytest
import torch

from tubelet import jobs
from tubelet.data.features import FeatureWriter
from tubelet.engine.checkpoint import load_model
from tubelet.jobs import TrainJob
from tubelet.jobs.common import ClassificationSettings

CLASSES = ["forward", "backward"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_features(tmp_path):
    """Per-frame features of 2 classes that only the order tells apart: class 1 is class 0
    reversed. 48 train and 16 val videos of 6 to 9 frames."""
    meta = {"model": "toy", "level": "frame", "window": 1, "stride": 1, "dim": 4,
            "classes": CLASSES, "reversal_pairs": [[0, 1]]}  # fmt: skip
    g = torch.Generator().manual_seed(0)
    with FeatureWriter(tmp_path / "feats", meta) as writer:
        for i in range(64):
            n, label = 6 + (i // 8) % 4, i % 2
            ramp = torch.linspace(-1, 1, n)[:, None] * torch.tensor([1.0, -0.5, 0.3, 0.8])
            feats = ramp + 0.2 * torch.randn(n, 4, generator=g)
            feats = feats.flip(0) if label else feats
            split = "val" if (i // 2) % 4 == 3 else "train"
            writer.add(f"v{i:02d}.mp4", feats, torch.arange(n) / 8.0, torch.arange(n),
                       fps=8.0, num_frames=n, label=label, split=split)  # fmt: skip
    return tmp_path / "feats"


def _job(out, features, **kw):
    settings = dict(model="frame_transformer", model_args={"width": 16, "num_heads": 2, "max_len": 16},
                    frames=6, epochs=8, batch_size=8, lr=3e-3, warmup_epochs=0.5)  # fmt: skip
    own = ClassificationSettings(features=features)
    return TrainJob(out=out, settings=own, **{**settings, **kw})


def test_transformer_learns_what_mean_pooling_cannot(toy_features, tmp_path):
    summary = jobs.train(_job(tmp_path / "tf", toy_features), show_progress=False)
    assert summary["val_top1"] == 1.0
    assert summary["val_reversal_acc"] == 1.0
    mean = jobs.train(_job(tmp_path / "mean", toy_features, model="frame_mean", model_args={}),
                      show_progress=False)  # fmt: skip
    assert mean["val_reversal_acc"] == 0.5  # same set of features both ways
    config = json.loads((tmp_path / "tf" / "config.json").read_text())
    assert config["features"] == str(toy_features.resolve()) and "size" not in config
    model, spec = load_model(tmp_path / "tf")
    assert spec.task == "features" and list(spec.classes) == CLASSES
    assert spec.model_args["in_dim"] == 4 and spec.preprocessing is None
    assert model(torch.randn(1, 6, 4)).shape == (1, 2)
    # Resuming with other settings is refused.
    with pytest.raises(ValueError, match="frames"):
        jobs.train(_job(tmp_path / "tf", toy_features, frames=4), show_progress=False)


def test_bad_settings(toy_features, tmp_path):
    with pytest.raises(ValueError, match="cannot build r3d_18 on features"):
        jobs.train(_job(tmp_path / "a", toy_features, model="r3d_18", model_args={}),
                   show_progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="--task flow takes FlowSettings, not ClassificationSet"):
        _job(tmp_path / "b", toy_features, task="flow")  # features are classification's
    with pytest.raises(FileNotFoundError, match="no features"):
        jobs.train(_job(tmp_path / "c", tmp_path), show_progress=False)


def test_probes_train_on_features_and_only_the_ordered_one_tells_reversals_apart(
    toy_features, tmp_path
):
    from typer.testing import CliRunner

    from tubelet.cli.main import app

    linear = jobs.train(_job(tmp_path / "lin", toy_features, model="linear_probe",
                             model_args={"num_tokens": 6}), show_progress=False)  # fmt: skip
    assert linear["val_reversal_acc"] == 1.0  # a weight per position sees the order
    # `--head attentive` with `--features` trains V-JEPA 2's attentive probe on them.
    result = CliRunner().invoke(app, [
        "train", "--features", str(toy_features), "--head", "attentive", "--frames", "6",
        "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "att"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "att" / "summary.json").read_text())["model"] == "attentive_probe"
    bad = CliRunner().invoke(app, ["train", "--features", str(toy_features), "--head", "mlp"])
    assert bad.exit_code == 2 and "--head must be one of" in bad.output
