"""One exit-code convention: 0 done, 1 problems found (validate), 2 bad input or arguments with one
line naming the file or option and the fix; `--debug` shows the traceback instead."""

from __future__ import annotations

import json
import os

import pytest
import torch
from planted import Plant
from processes import held_elsewhere
from safetensors.torch import save_file
from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.models import create_model

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _classifier(root):
    """A classification run folder (untrained) over the `list_dataset` classes, its model.json in
    the unversioned format (which still loads)."""
    best = root / "run" / "best"
    best.mkdir(parents=True)
    model = create_model("frame2d_resnet18", num_classes=2, width=4)
    save_file(model.state_dict(), str(best / "model.safetensors"))
    (best / "model.json").write_text(json.dumps({
        "model": "frame2d_resnet18", "model_args": {"num_classes": 2, "width": 4},
        "classes": ["rise", "fall"], "clip": {"frames": 2, "sampling": "uniform", "stride": 1},
        "size": 32, "data": str(root / "data"),
    }))  # fmt: skip
    return root / "run"


def _refused(result, *fragments):
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())  # one line, however the terminal wrapped it
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in line, (fragment, result.output)


def test_a_torn_or_random_weights_file_is_one_line(list_dataset, tmp_path):
    run = _classifier(tmp_path)
    weights = run / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    video = list_dataset / "v0.mp4"
    _refused(invoke("predict", video, "--checkpoint", run), str(weights), "cannot be read")
    _refused(invoke("eval", "--checkpoint", run, "--data", list_dataset), "cannot be read")
    weights.write_bytes(os.urandom(4096))
    _refused(invoke("predict", video, "--checkpoint", run), "cannot be read as a checkpoint")
    _refused(invoke("extract", list_dataset / "v1.mp4", "--checkpoint", run,
                    "--out", tmp_path / "f"), "cannot be read as a checkpoint")  # fmt: skip


def test_a_spec_without_its_keys_or_of_another_kind_is_one_line(list_dataset, tmp_path):
    run = _classifier(tmp_path)
    video = list_dataset / "v0.mp4"
    spec_file = run / "best" / "model.json"
    spec = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps({**spec, "task": "flow"}))
    _refused(invoke("predict", video, "--checkpoint", run), "holds a flow model", "not a clip")
    _refused(invoke("eval", "--checkpoint", run), "holds a flow model")
    spec_file.write_text(json.dumps({"classes": ["a"]}))
    _refused(invoke("predict", video, "--checkpoint", run), "is not a tubelet model spec")
    _refused(invoke("eval", "--checkpoint", run), "is not a tubelet model spec")


def test_bad_options_are_one_line(list_dataset, tmp_path):
    run = _classifier(tmp_path)
    video = list_dataset / "v0.mp4"
    _refused(invoke("predict", video, "--checkpoint", run, "--top-k", "-1"), "--top-k")
    _refused(invoke("predict", video, "--checkpoint", run, "--views", "999999x1"),
             "--views asks for 999999 clips", "which has 12 frames")  # fmt: skip
    for arg, said, fix in [
        ("widht=4", "has no argument 'widht'", "it takes: num_classes, width"),
        ("width=abc", "argument 'width' takes int", "not 'abc'"),
    ]:
        _refused(invoke("train", "--data", list_dataset, "--model", "frame2d_resnet18",
                        "-m", arg, "--out", tmp_path / "x"), said, fix)  # fmt: skip
        assert not (tmp_path / "x").exists()  # a refused command leaves nothing behind
    tiny = ("--model", "frame2d_resnet18", "-m", "width=4", "--size", "32", "--epochs", "1",
            "--workers", "0")  # were it not refused, a second of training  # fmt: skip
    _refused(invoke("train", "--data", list_dataset, "--frames", "0", *tiny, "--out", tmp_path / "x"),
             "--frames")  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_files_in_the_way_are_one_line(list_dataset, tmp_path):
    _refused(invoke("data", "validate", list_dataset, "--report", tmp_path / "no" / "bad.csv"),
             f"{tmp_path / 'no'} does not exist")  # fmt: skip
    (tmp_path / "a-file").write_text("x")
    _refused(invoke("extract", list_dataset / "v0.mp4", "--model", "frame2d_resnet18",
                    "--out", tmp_path / "a-file"), "is a file")  # fmt: skip


def test_ssv2_lists_with_missing_keys_or_label_gaps_are_one_line(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"Opening something": "0", "Closing x": "2"}))
    (tmp_path / "train.json").write_text(json.dumps([{"id": "1", "template": "Opening [x]"}]))
    _refused(invoke("data", "inspect", tmp_path), "labels.json: indices must be 0..1")
    (tmp_path / "labels.json").write_text(json.dumps({"Opening something": "0"}))
    (tmp_path / "train.json").write_text(json.dumps([{"template": "Opening [something]"}]))
    _refused(invoke("data", "validate", tmp_path), 'entry 0 is not an object with an "id"')


def test_data_synth_refuses_bad_arguments_and_a_full_folder(tmp_path):
    _refused(invoke("data", "synth", tmp_path / "ds", "--videos-per-class", "1"),
             "videos_per_class must be at least 2")  # fmt: skip
    assert not (tmp_path / "ds").exists()
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.csv").write_text("mine.mp4 0\n")
    _refused(invoke("data", "synth", tmp_path / "ds"), "is not empty", "--overwrite")
    assert (tmp_path / "ds" / "train.csv").read_text() == "mine.mp4 0\n"
    args = ("--videos-per-class", "2", "--frames", "4", "--size", "16", "--overwrite")
    assert invoke("data", "synth", tmp_path / "ds", *args).exit_code == 0
    assert (tmp_path / "ds" / "train.csv").read_text() != "mine.mp4 0\n"


def test_a_run_folder_in_use_is_one_line_naming_the_pid(list_dataset, tmp_path):
    with held_elsewhere(tmp_path / "run") as pid:
        result = invoke("train", "--data", list_dataset, "--out", tmp_path / "run")
    _refused(result, f"in use by another tubelet process (PID {pid})", "--out")


@pytest.mark.slow  # one tiny training run (a few seconds), then the planted resume
def test_train_never_runs_a_planted_trainer_state(list_dataset, tmp_path):
    args = ["train", "--data", list_dataset, "--model", "frame2d_resnet18", "-m", "width=4",
            "--frames", "2", "--size", "32", "--batch-size", "2", "--workers", "0",
            "--out", tmp_path / "run"]  # fmt: skip
    assert invoke(*args, "--epochs", "1").exit_code == 0
    last = tmp_path / "run" / "last"
    for name in ("trainer_state.json", "trainer_state.safetensors"):
        (last / name).unlink()
    torch.save({"epoch": 1, "best": Plant(tmp_path / "code-ran")}, last / "trainer_state.pt")
    _refused(
        invoke(*args, "--epochs", "2"), "trainer_state.pt is not read", "nothing in it was run"
    )
    assert not (tmp_path / "code-ran").exists()


def test_debug_shows_the_traceback(tmp_path):
    quiet = invoke("predict", tmp_path / "v.mp4", "--checkpoint", tmp_path)
    _refused(quiet, "no checkpoint in")
    loud = invoke("--debug", "predict", tmp_path / "v.mp4", "--checkpoint", tmp_path)
    assert isinstance(loud.exception, FileNotFoundError) and loud.exit_code == 1


def test_the_pixel_ceiling_is_one_line_and_lifts(list_dataset, tmp_path):
    from tubelet.cli.common import MAX_PIXELS
    from tubelet.io.reader import MAX_PIXELS as READER_MAX_PIXELS

    assert MAX_PIXELS == READER_MAX_PIXELS  # the option's default is the reader's
    run = _classifier(tmp_path)
    video = list_dataset / "v0.mp4"  # 48x40 frames
    _refused(invoke("predict", video, "--checkpoint", run, "--max-pixels", "1000"),
             "frames have 1,920 pixels, over the ceiling of 1,000", "--max-pixels 0")  # fmt: skip
    assert invoke("predict", video, "--checkpoint", run, "--max-pixels", "0").exit_code == 0
    result = invoke("eval", "--checkpoint", run, "--data", list_dataset, "--max-pixels", "1000",
                    "--workers", "0")  # fmt: skip
    _refused(result, "not one val video could be read", "over the ceiling of 1,000")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without GPU")
def test_decoding_on_a_gpu_that_is_not_there_is_one_line(list_dataset, tmp_path):
    tiny = ("--model", "frame2d_resnet18", "-m", "width=4", "--size", "32", "--epochs", "1")
    _refused(invoke("train", "--data", list_dataset, *tiny, "--decode-device", "cuda",
                    "--out", tmp_path / "x"), "device='cuda' needs a GPU")  # fmt: skip
    assert not (tmp_path / "x").exists()
    _refused(invoke("train", "--task", "flow", "--decode-device", "cuda", "--out", tmp_path / "y"),
             "--decode-device is not used by --task flow")  # fmt: skip
