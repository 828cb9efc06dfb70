"""Features folders: writer/store round trip, resume, sharding across ranks, datasets, times."""

import json
import pickle

import numpy as np
import pytest
import torch

from tubelet.data.features import (
    FeatureDataset,
    FeatureStore,
    FeatureWriter,
    centre_times,
    collate_features,
    feature_indices,
    shard_videos,
)

META = {"model": "m", "level": "frame", "window": 1, "stride": 1, "dim": 4, "classes": ["a", "b"]}


def _video(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.arange(n) / 10.0 + 0.05, torch.arange(n)


def _write(root, names, **kw):
    with FeatureWriter(root, META, **kw) as writer:
        for i, name in enumerate(writer.pending(names)):
            feats, times, frames = _video(3 + i, seed=hash(name) % 1000)
            writer.add(name, feats, times, frames, fps=10.0, num_frames=3 + i, label=i % 2,
                       split="train" if i % 3 else "val")  # fmt: skip
    return writer


def test_round_trip_over_several_shards(tmp_path):
    names = [f"v/{i}.mp4" for i in range(5)]
    expected = {}
    with FeatureWriter(tmp_path, META, shard_mb=1e-6) as writer:  # 1 byte: a shard per video
        for i, name in enumerate(names):
            expected[name] = _video(2 + i, seed=i)
            writer.add(name, *expected[name], fps=12.5, num_frames=2 + i, label=i % 2, split="val")
    assert len(list(tmp_path.glob("shard-*.safetensors"))) == 5
    store = FeatureStore(tmp_path)
    assert store.videos == sorted(names)
    assert store.meta["dim"] == 4 and store.meta["dtype"] == "float32"
    assert store.classes == ["a", "b"]
    for i, name in enumerate(names):
        feats, times, frames = expected[name]
        assert torch.equal(store.load(name), feats)
        assert store.load(name).dtype == torch.float32
        torch.testing.assert_close(store.times(name), times.double())
        assert torch.equal(store.frames(name), frames)
        assert store.fps(name) == 12.5 and store.label(name) == i % 2
        assert store.split(name) == "val" and store.info(name)["num_frames"] == 2 + i
    assert store.videos_in("val") == sorted(names) and store.videos_in("train") == []
    with pytest.raises(KeyError, match="nope.mp4"):
        store.load("nope.mp4")
    copy = pickle.loads(pickle.dumps(store))  # as DataLoader workers receive it
    assert torch.equal(copy.load(names[0]), store.load(names[0]))


def test_half_precision_storage_loads_as_float32(tmp_path):
    feats, times, frames = _video(6, seed=0)
    with FeatureWriter(tmp_path, META, dtype="float16") as writer:
        writer.add("x", feats, times, frames, fps=10.0, num_frames=6)
    store = FeatureStore(tmp_path)
    assert store.load("x").dtype == torch.float32
    torch.testing.assert_close(store.load("x"), feats.half().float())
    assert store.label("x") is None and store.split("x") is None


def test_resume_skips_written_videos_and_refuses_other_settings(tmp_path):
    names = ["a", "b", "c", "d"]
    first = _write(tmp_path, names[:2])
    assert first.done == {"a", "b"}
    again = FeatureWriter(tmp_path, META)
    assert again.pending(names) == ["c", "d"]
    with pytest.raises(ValueError, match="already written"):
        again.add("a", *_video(2, 0), fps=1.0, num_frames=2)
    with pytest.raises(ValueError, match=r"other settings \(dim: 4 -> 8\)"):
        FeatureWriter(tmp_path, {**META, "dim": 8})
    _write(tmp_path, names)
    store = FeatureStore(tmp_path)
    assert store.videos == names
    assert len(list(tmp_path.glob("shard-*.safetensors"))) == 2


def test_two_ranks_cover_every_video_exactly_once(tmp_path):
    names = [f"{i:02d}.mp4" for i in range(7)]
    assert shard_videos(names, 0, 2) == names[0::2] and shard_videos(names, 1, 2) == names[1::2]
    for rank in (1, 0):
        _write(tmp_path, names, rank=rank, world_size=2, shard_mb=1e-6)
    for rank in (0, 1):  # each rank indexed its own share
        lines = (tmp_path / f"index-{rank:05d}.jsonl").read_text().splitlines()
        assert [json.loads(line)["video"] for line in lines] == names[rank::2]
    shards = sorted(p.name for p in tmp_path.glob("shard-*.safetensors"))
    numbers = [int(s[6:11]) for s in shards]
    assert len(numbers) == 7 and len(set(numbers)) == 7  # no rank overwrote another's shard
    indexed = [json.loads(line)["video"] for p in tmp_path.glob("index-*.jsonl")
               for line in p.read_text().splitlines()]  # fmt: skip
    assert sorted(indexed) == names  # each video once
    assert FeatureStore(tmp_path).videos == names


def test_writer_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank"):
        FeatureWriter("unused", META, rank=4, world_size=4)


def test_torn_index_line_and_bad_files(tmp_path):
    _write(tmp_path, ["a", "b"])
    index = tmp_path / "index-00000.jsonl"
    index.write_text(index.read_text() + '{"video": "c", "sha')  # an interrupted append
    writer = FeatureWriter(tmp_path, META)
    writer.add_bad("broken.mp4", "file is empty (0 bytes)")
    store = FeatureStore(tmp_path)
    assert store.videos == ["a", "b"]
    assert store.bad_files == [{"path": "broken.mp4", "reason": "file is empty (0 bytes)"}]


def test_missing_folder_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="tubelet extract"):
        FeatureStore(tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        FeatureWriter(tmp_path, META, dtype="int8")
    with pytest.raises(ValueError, match="level"):
        FeatureWriter(tmp_path, {**META, "level": "tube"})
    writer = FeatureWriter(tmp_path, META)
    with pytest.raises(ValueError, match=r"\(N >= 1, 4\)"):
        writer.add("x", torch.zeros(3, 5), torch.zeros(3), torch.zeros(3), fps=1.0, num_frames=3)
    with pytest.raises(ValueError, match="times and frames"):
        writer.add("x", torch.zeros(3, 4), torch.zeros(2), torch.zeros(3), fps=1.0, num_frames=3)


def test_feature_indices():
    assert feature_indices(10, 5, sampling="uniform", train=False).tolist() == [1, 3, 5, 7, 9]
    assert feature_indices(3, 6, sampling="uniform", train=False).tolist() == [0, 0, 1, 1, 2, 2]
    rng = np.random.default_rng(0)
    for _ in range(20):
        picked = feature_indices(10, 5, sampling="uniform", train=True, rng=rng)
        assert all(2 * k <= i < 2 * k + 2 for k, i in enumerate(picked))  # one per segment
        crop = feature_indices(10, 4, sampling="crop", train=True, rng=rng)
        assert np.array_equal(np.diff(crop), np.ones(3)) and 0 <= crop[0] <= 6
    assert feature_indices(10, 4, sampling="crop", train=False).tolist() == [3, 4, 5, 6]
    assert feature_indices(3, 4, sampling="crop", train=False).tolist() == [0, 1, 2]
    assert feature_indices(7, 2, sampling="all", train=True).tolist() == list(range(7))
    with pytest.raises(ValueError, match="sampling"):
        feature_indices(4, 2, sampling="dense", train=False)
    with pytest.raises(ValueError, match="rng"):
        feature_indices(4, 2, sampling="uniform", train=True)


def test_dataset_and_collate_pad_with_a_mask(tmp_path):
    _write(tmp_path, ["a", "b", "c", "d"])  # 3, 4, 5, 6 features; "a" and "d" are val
    store = FeatureStore(tmp_path)
    val = FeatureDataset(store, split="val", length=8, sampling="crop")
    assert val.videos == ["a", "d"]
    batch = collate_features([val[0], val[1]])
    assert batch["features"].shape == (2, 6, 4)
    assert batch["mask"].tolist() == [[True] * 3 + [False] * 3, [True] * 6]
    assert torch.equal(batch["features"][0, :3], store.load("a"))
    assert batch["features"][0, 3:].abs().sum() == 0
    assert batch["label"].tolist() == [0, 1]
    train = FeatureDataset(store, split="train", length=2, sampling="uniform", train=True)
    train.set_epoch(1)
    assert train[0]["features"].shape == (2, 4)
    with pytest.raises(ValueError, match="no test videos"):
        FeatureDataset(store, split="test")
    with pytest.raises(ValueError, match="exactly one"):
        FeatureDataset(store)


def test_dataset_refuses_unlabelled_videos(tmp_path):
    with FeatureWriter(tmp_path, META) as writer:
        writer.add("/abs/loose.mp4", *_video(3, 0), fps=10.0, num_frames=3)
    with pytest.raises(ValueError, match="no label"):
        FeatureDataset(FeatureStore(tmp_path), videos=["/abs/loose.mp4"])


def test_centre_times_follow_the_frames_pts():
    pts = torch.tensor([0.0, 0.1, 0.3, 0.4])  # variable frame rate; the last lasts 1 / fps
    starts = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(
        centre_times(pts, 10.0, starts, 1), torch.tensor([0.05, 0.2, 0.35, 0.45]).double()
    )
    # Windows of 2: first frame's start to second frame's end; past the end only real frames count.
    torch.testing.assert_close(
        centre_times(pts, 10.0, starts, 2), torch.tensor([0.15, 0.25, 0.4, 0.45]).double()
    )
    with pytest.raises(ValueError, match="fps"):
        centre_times(pts, 0.0, starts, 1)
