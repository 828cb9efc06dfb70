import pytest
import torch

from tubelet.data import ClipSpec, build_dataset, collate_clips
from tubelet.data.transforms import EvalTransform
from tubelet.io import VideoDecodeError, VideoReader

CLIP = ClipSpec(frames=4, sampling="uniform")


def _train_set(root, **kw):
    return build_dataset(root, "train", clip=CLIP, size=32, train=True, **kw)[0]


def test_training_item_is_one_normalised_clip(list_dataset):
    item = _train_set(list_dataset)[0]
    assert item["video"].shape == (3, 4, 32, 32)
    assert item["video"].dtype == torch.float32
    assert item["label"] == 0
    assert item["bad_files"] == []


def test_items_are_reproducible_per_epoch(list_dataset):
    dataset = _train_set(list_dataset)
    first = dataset[2]["video"]
    torch.testing.assert_close(dataset[2]["video"], first)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[2]["video"], first)


def test_evaluation_item_holds_every_view(list_dataset):
    dataset, _ = build_dataset(
        list_dataset, "val", clip=ClipSpec(frames=4, sampling="dense", stride=2), size=32,
        train=False, num_clips=2, crops=3,
    )  # fmt: skip
    assert dataset[0]["video"].shape == (6, 3, 4, 32, 32)  # (clips x crops, C, T, H, W)


def test_resample_replaces_a_bad_video_and_reports_it(list_dataset):
    item = _train_set(list_dataset)[1]
    assert item["video"] is not None
    assert item["index"] != 1
    assert [path.endswith("broken.mp4") for path, _ in item["bad_files"]] == [True]
    assert "empty" in item["bad_files"][0][1]


def test_skip_drops_a_bad_video_from_its_batch(list_dataset):
    dataset = _train_set(list_dataset, bad_files="skip")
    batch = collate_clips([dataset[i] for i in range(4)])
    assert batch["video"].shape[0] == 3
    assert batch["skipped"] == 1
    assert batch["label"].tolist() == [0, 1, 0]
    assert len(batch["bad_files"]) == 1


def test_evaluation_never_resamples(list_dataset):
    dataset, _ = build_dataset(list_dataset, "val", clip=CLIP, size=32, train=False)
    assert dataset[1]["video"] is None  # a replacement would count another video twice


def test_raise_policy_stops_with_the_decode_error(list_dataset):
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        _train_set(list_dataset, bad_files="raise")[1]


def test_unknown_policy_and_mismatched_transform(list_dataset):
    with pytest.raises(ValueError, match="bad_files must be one of"):
        _train_set(list_dataset, bad_files="ignore")


def test_decode_device_reaches_every_reader(list_dataset, monkeypatch):
    devices = []
    real = VideoReader.__init__

    def init(self, *args, **kwargs):
        devices.append(kwargs.get("device"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(VideoReader, "__init__", init)
    dataset = _train_set(list_dataset, decode_device="cpu")
    assert dataset.decode_device == "cpu" and dataset[0]["video"].device.type == "cpu"
    assert devices and set(devices) == {"cpu"}


def test_bad_decode_device_is_refused_when_the_dataset_is_made(list_dataset):
    with pytest.raises(ValueError, match="PyAV decodes on the CPU only"):
        _train_set(list_dataset, backend="pyav", decode_device="cuda")
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
        _train_set(list_dataset, decode_device="gpu")


def test_evaluation_decodes_at_the_transform_s_resize_not_up_from_the_crop(list_dataset, monkeypatch):
    """A model whose preprocessing resizes the short side to 40 and crops 32 (as published
    checkpoints do, e.g. 128 then 112) gets frames decoded at 40: decoding at the crop's 32 and
    scaling up to 40 lost detail."""
    sides = []
    real = VideoReader.__init__

    def init(self, *args, **kwargs):
        sides.append(kwargs.get("short_side"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(VideoReader, "__init__", init)
    transform = EvalTransform(size=32, resize=40)
    dataset, _ = build_dataset(list_dataset, "val", clip=CLIP, size=32, train=False,
                               eval_transform=transform)  # fmt: skip
    views = dataset[0]["video"]
    assert set(sides) == {40} and views.shape == (1, 3, 4, 32, 32)
    with VideoReader(list_dataset / "v0.mp4") as reader:  # full size, resized here
        frames = reader.get_frames(dataset._views(reader)[0].indices).data
    torch.testing.assert_close(views[0], transform(frames)[0], rtol=0, atol=0.1)
