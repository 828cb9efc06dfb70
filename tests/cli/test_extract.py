"""`tubelet extract`: a features folder from a data folder and loose files, errors as one line."""

from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.data.features import FeatureStore

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_extract_writes_a_store_and_prints_a_summary(tiny_dataset, tmp_path):
    loose = tiny_dataset / "videos" / "appear" / "appear_0000.mp4"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "feats"
    result = invoke(
        "extract", loose, empty, "--model", "frame2d_resnet18", "-m", "width=4", "--size", 32,
        "--level", "clip", "--window", 4, "--stride", 4, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "extracted" in result.output and "empty.mp4: file is empty" in result.output
    store = FeatureStore(out)
    assert store.videos == [str(loose.resolve())]
    assert store.load(store.videos[0]).shape == (2, 32)  # 8 frames, windows at 0 and 4
    assert store.meta["model_args"] == {"width": 4} and store.meta["level"] == "clip"


def test_extract_errors_are_one_line(tmp_path):
    result = invoke("extract", "--data", tmp_path / "missing", "--model", "frame2d_resnet18")
    assert result.exit_code == 2
    assert "does not exist" in " ".join(result.output.split())
    result = invoke("extract", "--out", tmp_path / "f")
    assert result.exit_code == 2 and "nothing to extract" in result.output


def test_train_on_extracted_features_defaults_to_the_transformer(tiny_dataset, tmp_path):
    feats = tmp_path / "feats"
    result = invoke("extract", "--data", tiny_dataset, "--model", "frame2d_resnet18", "-m",
                    "width=4", "--size", 32, "--out", feats)  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke("train", "--features", feats, "--frames", 4, "--epochs", 1, "-m", "width=16",
                    "-m", "num_heads=2", "--out", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "frame_transformer" in result.output and "val_reversal_acc" in result.output
    result = invoke("train", "--features", tmp_path / "nothing", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "no features in" in result.output
