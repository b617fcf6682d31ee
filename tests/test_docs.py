"""README's option table is generated from the CLI; it must not drift."""

from __future__ import annotations

from pathlib import Path

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
