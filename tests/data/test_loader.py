import os

import pytest
import torch
from torch.utils.data import Dataset, default_collate

from tubelet.data import ClipSpec, build_dataset, build_loader
from tubelet.data.loader import (
    PREFETCH_BATCHES,
    PREFETCH_BYTES,
    ShardSampler,
    ShuffleSampler,
    names_a_direction,
    prefetch_batches,
)


def test_direction_words_switch_flips_off():
    assert names_a_direction(["move_left", "move_right"])
    assert names_a_direction(["Pushing something from left to right"])
    assert names_a_direction(["rotate_cw"])
    assert not names_a_direction(["brushing hair", "bright light", "copyright"])


def test_flip_follows_the_class_names_unless_asked(list_dataset, tmp_path):
    clip = ClipSpec(frames=2)
    assert build_dataset(list_dataset, "train", clip=clip, size=32, train=True)[0].transform.flip
    (tmp_path / "train.csv").write_text("a.mp4 0\n")
    (tmp_path / "classes.txt").write_text("move_left\nmove_right\n")
    dataset, _ = build_dataset(tmp_path, "train", clip=clip, size=32, train=True)
    assert not dataset.transform.flip
    forced, _ = build_dataset(tmp_path, "train", clip=clip, size=32, train=True, flip=True)
    assert forced.transform.flip


def test_shuffle_is_fixed_by_seed_and_epoch():
    sampler = ShuffleSampler(50, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50))
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_evaluation_loader_keeps_every_video_once_in_order(list_dataset):
    dataset, _ = build_dataset(list_dataset, "val", clip=ClipSpec(frames=2), size=32, train=False)
    loader = build_loader(dataset, batch_size=3, train=False, num_workers=0)
    batches = list(loader)
    assert [b["index"].tolist() for b in batches] == [[0, 2], [3]]
    assert sum(b["skipped"] for b in batches) == 1


def test_distributed_shares_are_disjoint_equal_and_follow_one_order():
    whole = ShuffleSampler(11, seed=3)
    shares = [ShuffleSampler(11, seed=3, rank=r, world_size=3) for r in range(3)]
    for epoch in (0, 1):
        for sampler in (whole, *shares):
            sampler.set_epoch(epoch)
        order = list(whole)
        lists = [list(s) for s in shares]
        assert [len(s) for s in shares] == [len(x) for x in lists] == [3, 3, 3]
        # Process r takes every third index of the common order from r on; the last 2 are left out.
        assert lists == [order[r:9:3] for r in range(3)]
        assert len(set(sum(lists, []))) == 9
    with pytest.raises(ValueError, match="cannot be shared among 4 processes"):
        ShuffleSampler(3, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank must be in"):
        ShuffleSampler(10, rank=2, world_size=2)


def test_evaluation_shards_cover_every_video_once_without_padding():
    shards = [list(ShardSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert [len(ShardSampler(7, rank=r, world_size=3)) for r in range(3)] == [3, 2, 2]
    assert sorted(sum(shards, [])) == list(range(7))


class EpochEcho(Dataset):
    """Items that say which epoch drew them and which process loaded them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return {"index": index, "epoch": self.epoch, "pid": os.getpid()}


@pytest.mark.parametrize("workers", [0, 2])
def test_persistent_workers_follow_each_epochs_order_and_randomness(workers):
    loader = build_loader(
        EpochEcho(12), batch_size=4, train=True, num_workers=workers, seed=5,
        collate_fn=default_collate,
    )  # fmt: skip
    assert loader.persistent_workers == (workers > 0)
    pids, orders = set(), []
    for epoch in (0, 1, 2):
        loader.sampler.set_epoch(epoch)  # as the trainer does
        expected = ShuffleSampler(12, 5)
        expected.set_epoch(epoch)
        batches = list(loader)
        assert [i for b in batches for i in b["index"].tolist()] == list(expected)
        assert {e for b in batches for e in b["epoch"].tolist()} == {epoch}
        pids |= {p for b in batches for p in b["pid"].tolist()}
        orders.append(list(expected))
    assert orders[0] != orders[1]
    assert len(pids) == max(1, workers)  # the same workers served every epoch
    assert (os.getpid() in pids) == (workers == 0)


def test_prefetching_is_sized_to_the_batch():
    assert prefetch_batches(4) == PREFETCH_BATCHES
    clip = 3 * 16 * 112 * 112  # a uint8 clip of 16 frames at 112^2
    assert prefetch_batches(14, 32 * clip) == PREFETCH_BATCHES  # 14 x 4 x 19 MB < 2 GiB
    assert prefetch_batches(14, 32 * 4 * clip) == 1  # float32 clips of 77 MB a batch
    assert prefetch_batches(2, PREFETCH_BYTES) == 1  # at least one each
    with pytest.raises(ValueError, match="at least one worker"):
        prefetch_batches(0)
    loader = build_loader(EpochEcho(8), batch_size=2, train=False, num_workers=1,
                          item_bytes=PREFETCH_BYTES // 2, collate_fn=default_collate)  # fmt: skip
    assert loader.prefetch_factor == 1
    assert loader.pin_memory == torch.cuda.is_available()
