"""The plumbing of generated, cached data sets: reuse, replace, refuse, never half-finished."""

import json

import pytest

from tubelet.data.cache import cache_dir, ensure_generated, read_params, write_params

CLASSES = ("a", "b")


def writer(calls):
    def write(folder):
        calls.append(folder)
        folder.mkdir(parents=True)
        (folder / "classes.txt").write_text("a\nb\n")
        (folder / "data.txt").write_text(str(len(calls)))
        write_params(folder, {"name": "toy", "n": len(calls)})

    return write


def test_a_complete_set_is_reused_and_other_parameters_replace_it(tmp_path):
    out, calls = tmp_path / "set", []
    assert ensure_generated(out, {"name": "toy", "n": 1}, writer(calls), classes=CLASSES, what="toy set") == out
    assert read_params(out, "toy") == {"name": "toy", "n": 1}
    ensure_generated(out, {"name": "toy", "n": 1}, writer(calls), classes=CLASSES, what="toy set")
    assert len(calls) == 1  # reused
    ensure_generated(out, {"name": "toy", "n": 2}, writer(calls), classes=CLASSES, what="toy set")
    assert len(calls) == 2 and (out / "data.txt").read_text() == "2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_half_written_set_is_replaced_and_a_foreign_folder_refused(tmp_path):
    half = tmp_path / "half"
    half.mkdir()
    (half / "classes.txt").write_text("a\nb\n")  # what a writer puts first
    ensure_generated(half, {"name": "toy", "n": 1}, writer([]), classes=CLASSES, what="toy set")
    assert read_params(half, "toy") is not None
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="foreign holds files but no toy set"):
        ensure_generated(foreign, {"name": "toy", "n": 1}, writer([]), classes=CLASSES, what="toy set")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_an_interrupted_write_leaves_nothing_that_looks_finished(tmp_path):
    def broken(folder):
        folder.mkdir()
        (folder / "classes.txt").write_text("a\nb\n")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_generated(tmp_path / "set", {"name": "toy"}, broken, classes=CLASSES, what="toy set")
    assert list(tmp_path.iterdir()) == []


def test_params_of_another_generator_do_not_count(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "other", "n": 1}))
    assert read_params(tmp_path, "toy") is None
    (tmp_path / "dataset.json").write_text("not json")
    assert read_params(tmp_path, "toy") is None


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "tubelet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir().parts[-2:] == (".cache", "tubelet")
