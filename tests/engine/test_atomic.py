import pytest

from tubelet.engine.atomic import atomic_write, atomic_write_json, fault_hook, write_point


class Stop(BaseException):
    """Stands for the process being killed at a write point."""


def test_a_write_stopped_before_its_rename_leaves_the_old_file(tmp_path):
    path = tmp_path / "config.json"
    atomic_write_json(path, {"a": 1})

    def stop_at_replace(name):
        if name == "replace config.json":
            raise Stop

    with fault_hook(stop_at_replace), pytest.raises(Stop):
        atomic_write_json(path, {"a": 2})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    atomic_write_json(path, {"a": 3})
    assert path.read_text() == '{\n  "a": 3\n}\n'


def test_a_failed_write_removes_its_temporary_file(tmp_path):
    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "x.txt", fail)
    assert list(tmp_path.iterdir()) == []


def test_write_points_reach_the_hook_only_inside_the_block(tmp_path):
    seen = []
    with fault_hook(seen.append):
        write_point("a")
        atomic_write_json(tmp_path / "s.json", {})
    write_point("b")
    assert seen == ["a", "write s.json", "replace s.json"]
