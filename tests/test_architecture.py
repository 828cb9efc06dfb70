"""The map in docs/architecture.md holds: no module imports what its package's row forbids, and
every package has a row. The table is read from the page itself, so the page and this test cannot
drift apart."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SOURCES = ROOT / "src" / "tubelet"
MAP = ROOT / "docs" / "architecture.md"
# "models by name": the family modules; engine may use the registry's functions and the spec only.
FAMILIES = {p.stem for p in (SOURCES / "models").glob("*.py")} - {"__init__", "registry", "spec"}


def read_table() -> dict[str, list[str]]:
    """{package: [what it must not import]} from the map's table."""
    rules = {}
    for line in MAP.read_text().splitlines():
        match = re.match(r"\| `(tubelet\.\w+)` \|.*\| ([^|]+) \|$", line)
        if match:
            cell = match.group(2).strip()
            rules[match.group(1)] = [] if cell == "—" else [c.strip() for c in cell.split(",")]
    return rules


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports (at any depth: lazy imports count), with `from X import y`
    giving both X and X.y (y may be a submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def package_of(path: Path) -> str:
    parts = path.relative_to(SOURCES.parent).with_suffix("").parts
    return ".".join(parts[:2])


def forbids(rule: str, name: str) -> bool:
    """Whether the imported module `name` falls under the table's entry `rule`."""
    if rule == "tubelet":
        return name == "tubelet" or name.startswith("tubelet.")
    if rule == "models by name":
        parts = name.split(".")
        return parts[:2] == ["tubelet", "models"] and len(parts) > 2 and parts[2] in FAMILIES
    module = rule if "." in rule else f"tubelet.{rule}"
    return name == module or name.startswith(f"{module}.")


def violations(rules: dict[str, list[str]]) -> list[str]:
    found = []
    for path in sorted(SOURCES.rglob("*.py")):
        package = package_of(path)
        for name in sorted(imports_of(path)):
            for rule in rules.get(package, []):
                if forbids(rule, name):
                    found.append(f"{path.relative_to(ROOT)} imports {name} ({package}: {rule})")
    return found


def test_every_package_has_a_row():
    rules = read_table()
    packages = {package_of(p) for p in SOURCES.rglob("*.py")} - {"tubelet.__init__"}
    packages -= {"tubelet.__main__"}
    assert packages <= set(rules), f"packages without a row in {MAP.name}: {packages - set(rules)}"
    assert "tubelet.engine" in rules and "models by name" in rules["tubelet.engine"]


def test_no_module_imports_what_its_row_forbids():
    assert violations(read_table()) == []


@pytest.mark.parametrize(
    ("rule", "name", "expected"),
    [
        ("models by name", "tubelet.models.resnet3d", True),
        ("models by name", "tubelet.models.resnet3d.ResNet3d", True),
        ("models by name", "tubelet.models.create_model", False),
        ("models by name", "tubelet.models.spec.ModelSpec", False),
        ("models by name", "tubelet.models", False),
        ("jobs", "tubelet.jobs.flow", True),
        ("jobs", "tubelet.jobstore", False),
        ("torch.nn", "torch.nn.functional", True),
        ("tubelet", "tubelet.io", True),
    ],
)
def test_the_rules_read_as_the_map_means(rule, name, expected):
    assert forbids(rule, name) is expected


def test_a_forbidden_import_is_found(tmp_path, monkeypatch):
    rules = {**read_table(), "tubelet.engine": ["models by name", "jobs"]}
    fake = SOURCES / "engine" / "trainer.py"
    real_read = Path.read_text

    def read_text(self, *args, **kwargs):
        text = real_read(self, *args, **kwargs)
        return text + "\nfrom tubelet.jobs import flow\n" if self == fake else text

    monkeypatch.setattr(Path, "read_text", read_text)
    assert violations(rules) == [
        "src/tubelet/engine/trainer.py imports tubelet.jobs (tubelet.engine: jobs)",
        "src/tubelet/engine/trainer.py imports tubelet.jobs.flow (tubelet.engine: jobs)",
    ]
