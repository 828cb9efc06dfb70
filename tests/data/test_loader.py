from tubelet.data import ClipSpec, build_dataset, build_loader
from tubelet.data.loader import ShuffleSampler, names_a_direction


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
