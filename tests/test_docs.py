"""README's option table is generated from the CLI; it must not drift."""

from __future__ import annotations

from pathlib import Path

from orchestrator.docs import sync_options_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_options_table_matches_the_cli() -> None:
    text = README.read_text()
    start = text.index("<!-- options:start")
    start = text.index("\n", start) + 1
    end = text.index("<!-- options:end -->")
    assert text[start:end] == sync_options_table(), "run: python -m orchestrator.docs"


def test_readme_names_every_exit_code_and_status_word() -> None:
    from workers.spec import ExitCode, Status

    text = README.read_text()
    for code in ExitCode:
        assert f"| {code.value} |" in text
    for status in Status:
        assert f"`{status.value}`" in text
