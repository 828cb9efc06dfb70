"""`tubelet models`: the registry, one model's arguments, and the generated docs/models.md."""

from pathlib import Path

from typer.testing import CliRunner

from tubelet.cli.main import app
from tubelet.cli.models import format_default, models_markdown

runner = CliRunner()
DOCS = Path(__file__).parents[2] / "docs" / "models.md"


def test_models_name_lists_its_arguments_with_types_and_defaults():
    result = runner.invoke(app, ["models", "swin3d_t"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "int" in rows["width"] and "96" in rows["width"]
    assert "Sequence[int]" in rows["depths"] and "[2, 2, 6, 2]" in rows["depths"]
    assert "null" in rows["num_heads"]


def test_models_name_of_an_unknown_model_is_one_line_and_exit_2():
    result = runner.invoke(app, ["models", "vit_t_16_vide"])
    assert result.exit_code == 2
    assert "unknown model 'vit_t_16_vide'" in result.output and "vit_t_16_video" in result.output


def test_docs_models_md_is_current():
    # Regenerate with `tubelet models --markdown > docs/models.md`.
    assert DOCS.read_text() == models_markdown()
    result = runner.invoke(app, ["models", "--markdown"])
    assert result.exit_code == 0 and result.output == models_markdown()
    assert "## vit_t_16_video" in result.output and "| `head_dim` | `int` | `64` |" in result.output


def test_a_bad_model_argument_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(
        app, ["memory", "--model", "r2plus1d_18", "-m", "depth=3", "--frames", "4", "--size", "32"]
    )
    assert result.exit_code == 2
    assert (
        "model r2plus1d_18 has no argument 'depth'; it takes: num_classes, width" in result.output
    )
    assert "Traceback" not in result.output


def test_defaults_print_as_they_are_written_after_dash_m():
    assert format_default((2, 4)) == "[2, 4]"
    assert format_default(None) == "null" and format_default(False) == "false"
    assert format_default("cls") == "'cls'"
