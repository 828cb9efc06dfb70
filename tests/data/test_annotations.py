import json

import pytest

from tubelet.data.annotations import EmptySplitError, hold_out, read_annotations


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_list_layout_with_class_names_and_reversal_pairs(tmp_path):
    (tmp_path / "train.csv").write_text("a/x.mp4 0\n# comment\n\nb/y.mp4 1\n")
    (tmp_path / "val.csv").write_text("b/z.mp4,1\n")
    (tmp_path / "classes.txt").write_text("open\nclose\n")
    (tmp_path / "reversal_pairs.txt").write_text("open close\n")
    train = read_annotations(tmp_path, "train")
    assert train.layout == "list"
    assert [(r.path.relative_to(tmp_path).as_posix(), r.label) for r in train.records] == [
        ("a/x.mp4", 0),
        ("b/y.mp4", 1),
    ]
    assert train.classes == ("open", "close")
    assert train.reversal_pairs == ((0, 1),)
    assert read_annotations(tmp_path, "val").records[0].label == 1


def test_list_layout_without_classes_names_labels_by_index(tmp_path):
    (tmp_path / "train.csv").write_text("x.mp4 2\n")
    assert read_annotations(tmp_path, "train").classes == ("0", "1", "2")


def test_list_layout_rejects_labels_outside_the_classes(tmp_path):
    (tmp_path / "train.csv").write_text("x.mp4 5\n")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="label 5 of x.mp4 is outside 0..1"):
        read_annotations(tmp_path, "train")


def test_list_layout_rejects_a_line_without_label(tmp_path):
    (tmp_path / "train.csv").write_text("x.mp4\n")
    with pytest.raises(ValueError, match=r"train.csv:1: expected 'path label_index'"):
        read_annotations(tmp_path, "train")


def test_ssv2_layout(tmp_path):
    labels = {"Pushing something from left to right": "0", "Opening something": "1"}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    entries = [
        {"id": "7", "template": "Opening [something]", "label": "opening a box"},
        {"id": "9", "template": "Pushing [something] from left to right", "label": "..."},
    ]
    (tmp_path / "validation.json").write_text(json.dumps(entries))
    _touch(tmp_path / "videos" / "7.webm")
    _touch(tmp_path / "videos" / "9.mp4")
    ann = read_annotations(tmp_path, "val")
    assert ann.layout == "ssv2-json"
    assert ann.classes == ("Pushing something from left to right", "Opening something")
    assert [(r.path.name, r.label) for r in ann.records] == [("7.webm", 1), ("9.mp4", 0)]


def test_ssv2_layout_unknown_template(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"Opening something": "0"}))
    (tmp_path / "train.json").write_text(json.dumps([{"id": "1", "template": "Closing [x]"}]))
    with pytest.raises(ValueError, match="template 'Closing x' is not in"):
        read_annotations(tmp_path, "train")


def test_class_folders_with_split_folders(tmp_path):
    for split, name in [("train", "run"), ("train", "walk"), ("val", "run"), ("val", "walk")]:
        _touch(tmp_path / split / name / "a.mp4")
    _touch(tmp_path / "train" / "walk" / "notes.txt")
    ann = read_annotations(tmp_path, "train")
    assert ann.layout == "class-folders"
    assert ann.classes == ("run", "walk")
    assert [(r.path.parent.name, r.label) for r in ann.records] == [("run", 0), ("walk", 1)]


def test_class_folders_without_split_hold_out_every_fifth_video(tmp_path):
    for i in range(10):
        _touch(tmp_path / "jump" / f"{i:02d}.mp4")
    train = read_annotations(tmp_path, "train")
    val = read_annotations(tmp_path, "val")
    assert [r.path.name for r in val.records] == ["04.mp4", "09.mp4"]
    assert len(train.records) == 8
    assert not {r.path for r in train.records} & {r.path for r in val.records}


def test_missing_folder_empty_split_and_bad_pairs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_annotations(tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptySplitError, match="no train videos"):
        read_annotations(tmp_path / "empty", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        read_annotations(tmp_path, "test")
    (tmp_path / "train.csv").write_text("x.mp4 0\n")
    (tmp_path / "classes.txt").write_text("a\n")
    (tmp_path / "reversal_pairs.txt").write_text("a b\n")
    with pytest.raises(ValueError, match="two known class names"):
        read_annotations(tmp_path, "train")


def test_hold_out_gives_every_fifth_item_to_val_and_the_rest_to_train():
    items = list(range(12))
    assert hold_out(items, "val") == [4, 9]
    assert hold_out(items, "train") == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11]
    with pytest.raises(ValueError, match="split"):
        hold_out(items, "test")


def test_list_paths_keep_spaces_and_commas_exactly(tmp_path):
    (tmp_path / "train.csv").write_text(
        "a  b.mp4 0\n"  # two spaces
        "c, d.mp4,1\n"  # a comma in the name
        '"e, f.mp4",0\n'  # quoted as CSV writers do
        "g h 12.mp4 , 1\n"
        "  i.mp4\t0\n"
    )
    records = read_annotations(tmp_path, "train").records
    assert [(r.path.name, r.label) for r in records] == [
        ("a  b.mp4", 0),
        ("c, d.mp4", 1),
        ("e, f.mp4", 0),
        ("g h 12.mp4", 1),
        ("i.mp4", 0),
    ]


def test_a_byte_order_mark_is_not_part_of_the_first_path(tmp_path):
    (tmp_path / "train.csv").write_bytes("\ufeffx.mp4 0\ny.mp4 1\n".encode())
    (tmp_path / "classes.txt").write_bytes("\ufeffopen\nclose\n".encode())
    ann = read_annotations(tmp_path, "train")
    assert ann.records[0].path == tmp_path / "x.mp4"
    assert ann.classes == ("open", "close")


def test_a_list_in_another_encoding_is_named(tmp_path):
    (tmp_path / "train.csv").write_bytes("caf\u00e9.mp4 0\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"train.csv is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        read_annotations(tmp_path, "train")


def test_a_video_listed_twice_is_refused_with_its_line_numbers(tmp_path):
    (tmp_path / "val.csv").write_text("a.mp4 0\nb.mp4 1\n./a.mp4 0\nb.mp4 1\n")
    with pytest.raises(ValueError, match=r"a.mp4 \(lines 1 and 3\); b.mp4 \(lines 2 and 4\)"):
        read_annotations(tmp_path, "val")


def test_ssv2_duplicates_gaps_and_missing_keys_are_refused(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"Opening something": "0", "Closing x": "2"}))
    (tmp_path / "train.json").write_text(json.dumps([{"id": "1", "template": "Opening [x]"}]))
    with pytest.raises(ValueError, match=r"labels.json: indices must be 0..1 .*missing \[1\]"):
        read_annotations(tmp_path, "train")
    (tmp_path / "labels.json").write_text(json.dumps({"Opening something": "0"}))
    (tmp_path / "train.json").write_text(json.dumps([{"template": "Opening [something]"}]))
    with pytest.raises(ValueError, match=r"train.json: entry 0 is not an object with an \"id\""):
        read_annotations(tmp_path, "train")
    entry = {"id": "1", "template": "Opening [something]"}
    (tmp_path / "train.json").write_text(json.dumps([entry, entry]))
    with pytest.raises(ValueError, match=r"1.webm \(entries 0 and 1\)"):
        read_annotations(tmp_path, "train")


def test_a_split_with_fewer_classes_is_labelled_by_name(tmp_path):
    for split, name in [("train", "a"), ("train", "b"), ("train", "c"), ("val", "a"), ("val", "c")]:
        _touch(tmp_path / split / name / "v.mp4")
    (tmp_path / "reversal_pairs.txt").write_text("a c\n")
    train = read_annotations(tmp_path, "train")
    val = read_annotations(tmp_path, "val", classes=train.classes)
    assert val.classes == ("a", "b", "c")
    assert [(r.path.parent.name, r.label) for r in val.records] == [("a", 0), ("c", 2)]
    assert val.reversal_pairs == ((0, 2),)


def test_a_split_with_a_class_outside_the_given_ones_is_refused(tmp_path):
    for split, name in [("train", "a"), ("train", "b"), ("val", "a"), ("val", "zoom")]:
        _touch(tmp_path / split / name / "v.mp4")
    with pytest.raises(
        ValueError,
        match=r"val split of .* has videos of 1 class\(es\) outside the 2 it must match \(a, b\): zoom",
    ):
        read_annotations(tmp_path, "val", classes=("a", "b"))
