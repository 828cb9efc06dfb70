"""The declared dependency ranges hold the versions CI tests (constraints.txt pins every one)."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def test_every_declared_dependency_is_pinned_inside_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for r in project["optional-dependencies"]["test"]]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[canonicalize_name(name)] = version
    for requirement in declared:
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is declared but not pinned in constraints.txt"
        assert requirement.specifier.contains(pin, prereleases=True), (requirement, pin)
        assert requirement.specifier, f"{requirement.name} needs a tested lower bound"
