"""The reference text is generated from the code and must not drift; every command
and option has help text (the `--help` output is the manual)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from orchestrator.docs import BLOCKS, generated

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_readme_generated_tables_match_the_code(block: str) -> None:
    text = README.read_text()
    start, end = generated(text, block)
    assert text[start:end] == BLOCKS[block](), "run: python -m orchestrator.docs"


def test_readme_names_every_exit_code_and_status_word() -> None:
    from workers.spec import ExitCode, Status

    text = README.read_text()
    for code in ExitCode:
        assert f"| {code.value} |" in text
    for status in Status:
        assert f"`{status.value}`" in text


def test_cli_reference_matches_the_cli() -> None:
    from orchestrator.docs import cli_reference

    path = README.parent / "docs" / "CLI.md"
    assert path.read_text() == cli_reference(), "run: python -m orchestrator.docs"


def _commands() -> list[tuple[str, click.Command]]:
    import typer

    from orchestrator.cli import app

    found = []
    todo: list[tuple[str, click.Command]] = [("tandem", typer.main.get_command(app))]
    while todo:
        name, command = todo.pop()
        found.append((name, command))
        if isinstance(command, click.Group):
            todo += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
    return found


@pytest.mark.parametrize("name,command", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_and_option_has_help(name: str, command: click.Command) -> None:
    assert command.help or command.short_help, f"{name} has no help text"
    for param in command.params:
        assert getattr(param, "help", None), f"{name}: {param.name} has no help text"


def test_serve_help_names_every_setting_and_policy_key() -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from orchestrator.settings import ContainerPolicy, Settings

    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    for name in Settings.model_fields:
        assert f"TANDEM_{name.upper()}" in out
    for name, field in ContainerPolicy.model_fields.items():
        assert f"- {field.alias or name}:" in out
