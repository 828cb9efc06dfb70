import pytest

from tubelet.data import ClipSpec, build_dataset, build_loader
from tubelet.data.loader import ShardSampler, ShuffleSampler, names_a_direction


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
