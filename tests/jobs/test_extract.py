"""Feature extraction: equal to running the model by hand, streaming windows, resume, sharding,
unreadable files."""

import json

import pytest
import torch

from tubelet.data.annotations import read_annotations
from tubelet.data.features import FeatureStore
from tubelet.data.transforms import EvalTransform
from tubelet.io import VideoReader
from tubelet.jobs import extract
from tubelet.jobs.extract import extract_features, window_starts
from tubelet.models import create_model
from tubelet.models.spec import ModelSpec

FRAME2D = {"model": "frame2d_resnet18", "model_args": {"width": 4}, "size": 32}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convolutions run fastest on one thread on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def videos(tiny_dataset):
    return sorted(r.path for r in read_annotations(tiny_dataset, "val").records)[:3]


def _frames(path, size=32):
    with VideoReader(path, short_side=size) as reader:
        return EvalTransform(size)(reader.get_frames(range(reader.num_frames)).data)  # (1,C,T,S,S)


def test_a_data_folder_gives_labelled_per_frame_features(tiny_dataset, tmp_path):
    out = extract_features(out=tmp_path / "f", data=tiny_dataset, show_progress=False, **FRAME2D)
    store = FeatureStore(out)
    train = read_annotations(tiny_dataset, "train")
    val = read_annotations(tiny_dataset, "val")
    assert len(store) == len(train.records) + len(val.records) == 30
    assert store.meta["level"] == "frame" and store.meta["window"] == 1
    assert store.meta["dim"] == 32 and store.meta["classes"] == list(val.classes)
    assert store.meta["reversal_pairs"] == [list(p) for p in val.reversal_pairs]
    record = val.records[0]
    key = str(record.path.relative_to(tiny_dataset))
    assert store.split(key) == "val" and store.label(key) == record.label
    assert store.load(key).shape == (8, 32)
    assert store.fps(key) == 8.0
    torch.testing.assert_close(store.times(key), (torch.arange(8) + 0.5).double() / 8)
    assert torch.equal(store.frames(key), torch.arange(8))


def test_features_equal_a_checkpoint_run_by_hand(videos, tmp_path, monkeypatch):
    from tubelet.engine.checkpoint import save_model

    torch.manual_seed(0)
    model = create_model("r3d_18", width=4, num_classes=3).eval()
    save_model(
        tmp_path / "run" / "best",
        model,
        ModelSpec("r3d_18", {"width": 4, "num_classes": 3}, "classification"),
    )
    monkeypatch.setattr(extract, "DECODE_CHUNK", 3)  # windows straddle decode chunks
    out = extract_features(
        out=tmp_path / "c", videos=videos, checkpoint=tmp_path / "run", level="clip", window=4,
        stride=3, size=32, batch_size=1, show_progress=False,
    )  # fmt: skip
    store = FeatureStore(out)
    assert store.meta["model"] == "r3d_18" and store.meta["checkpoint"].endswith("best")
    key = str(videos[0].resolve())
    clip = _frames(videos[0])  # (1, C, 8, S, S)
    with torch.no_grad():
        expected = torch.cat([
            model.forward_head(model.forward_features(clip[:, :, s : s + 4]), pre_logits=True)
            for s in (0, 3)
        ])  # fmt: skip
    torch.testing.assert_close(store.load(key), expected, rtol=1e-4, atol=1e-5)
    assert store.frames(key).tolist() == [0, 3]
    torch.testing.assert_close(store.times(key), torch.tensor([0.25, 0.625]).double())
    assert store.label(key) is None and store.meta["data"] is None
    with pytest.raises(ValueError, match="does not match the checkpoint's model r3d_18"):
        extract_features(out=tmp_path / "x", videos=videos, checkpoint=tmp_path / "run",
                         model="s3d", show_progress=False)  # fmt: skip


def test_frame_level_by_hand_and_in_chunks(videos, tmp_path, monkeypatch):
    from tubelet.engine.checkpoint import save_model

    torch.manual_seed(1)
    model = create_model("frame2d_resnet18", width=4, num_classes=2).eval()
    save_model(
        tmp_path / "run",
        model,
        ModelSpec("frame2d_resnet18", {"width": 4, "num_classes": 2}, "classification"),
    )
    monkeypatch.setattr(extract, "DECODE_CHUNK", 5)
    out = extract_features(out=tmp_path / "f", videos=videos[:1], checkpoint=tmp_path / "run",
                           size=32, batch_size=1, window=3, show_progress=False)  # fmt: skip
    with torch.no_grad():
        expected = model.forward_features(_frames(videos[0])).mean((3, 4))[0].T  # (T, D)
    torch.testing.assert_close(FeatureStore(out).load(str(videos[0].resolve())), expected)


def test_resume_skips_done_videos(videos, tmp_path, monkeypatch):
    out = tmp_path / "f"
    extract_features(out=out, videos=videos[:2], show_progress=False, **FRAME2D)
    calls = []
    original = extract._Extractor.__call__
    monkeypatch.setattr(
        extract._Extractor,
        "__call__",
        lambda self, path: calls.append(path) or original(self, path),
    )
    extract_features(out=out, videos=videos, show_progress=False, **FRAME2D)
    assert calls == [videos[2].resolve()]
    summary = json.loads((out / "summary-00000.json").read_text())
    assert (summary["videos"], summary["already_done"], summary["extracted"]) == (3, 2, 1)
    assert len(FeatureStore(out)) == 3
    with pytest.raises(ValueError, match="other settings"):
        extract_features(out=out, videos=videos, show_progress=False, **{**FRAME2D, "size": 24})


def test_two_processes_share_the_videos(tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "f"
    keys = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        extract_features(out=out, data=tiny_dataset, show_progress=False, **FRAME2D)
        summary = json.loads((out / f"summary-{rank:05d}.json").read_text())
        assert summary["videos"] == summary["extracted"] == 15
        lines = (out / f"index-{rank:05d}.jsonl").read_text().splitlines()
        keys += [json.loads(line)["video"] for line in lines]
    assert len(keys) == len(set(keys)) == 30
    assert sorted(keys) == FeatureStore(out).videos


def test_unreadable_files_are_reported_and_skipped(videos, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = extract_features(out=tmp_path / "f", videos=[empty, videos[0]], show_progress=False,
                           **FRAME2D)  # fmt: skip
    store = FeatureStore(out)
    assert store.videos == [str(videos[0].resolve())]
    assert store.bad_files == [{"path": str(empty.resolve()), "reason": "file is empty (0 bytes)"}]
    summary = json.loads((out / "summary-00000.json").read_text())
    assert summary["unreadable"] == 1 and summary["bad_files"][0]["path"] == str(empty.resolve())


def test_bad_arguments(videos, tmp_path):
    with pytest.raises(ValueError, match="keeps time"):
        extract_features(out=tmp_path / "a", videos=videos[:1], model="r2plus1d_18",
                         model_args={"width": 4}, size=32, show_progress=False)  # fmt: skip
    assert not (tmp_path / "a").exists()  # nothing written: the fix (--level clip) is not refused
    with pytest.raises(ValueError, match="nothing to extract"):
        extract_features(out=tmp_path / "b", show_progress=False, **FRAME2D)
    with pytest.raises(ValueError, match="--model NAME"):
        extract_features(out=tmp_path / "c", videos=videos, show_progress=False)
    with pytest.raises(ValueError, match="level"):
        extract_features(out=tmp_path / "d", videos=videos, level="tube", **FRAME2D)


def test_window_starts():
    assert window_starts(10, 4, 3).tolist() == [0, 3, 6]
    assert window_starts(3, 8, 2).tolist() == [0]
    assert window_starts(5, 1, 1).tolist() == [0, 1, 2, 3, 4]


def test_tokens_level_keeps_every_token_of_each_window(videos, tmp_path):
    args = {"width": 24, "depth": 1, "num_heads": 2, "patch_size": 16, "head": "linear"}
    torch.manual_seed(0)  # the model's random weights, here and by hand below
    out = extract_features(
        out=tmp_path / "t", videos=videos[:1], model="vjepa2_vitl", model_args=args,
        level="tokens", window=4, stride=4, size=32, show_progress=False,
    )  # fmt: skip
    store = FeatureStore(out)
    feats = store.load(str(videos[0].resolve()))
    torch.manual_seed(0)
    model = create_model("vjepa2_vitl", **args).eval()
    clip = _frames(videos[0])[:, :, :4]  # the first window: 4 frames -> 2 x 2 x 2 tokens
    with torch.no_grad():
        tokens = model.forward_features(clip).flatten(2).transpose(1, 2)[0]  # (8, D)
    assert store.meta["level"] == "tokens" and store.meta["dim"] == 24
    assert feats.shape[1] == 24 and feats.shape[0] % 8 == 0
    torch.testing.assert_close(feats[:8], tokens, atol=1e-5, rtol=1e-5)
