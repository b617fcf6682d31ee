"""Reference tables for README.md, generated from the CLI so they cannot drift.

``python -m orchestrator.docs`` prints the table of ``tandem sync`` options;
a test checks that README.md holds exactly this text.
"""

from __future__ import annotations

import typer
import typer.core

from orchestrator.cli import app


def sync_options_table() -> str:
    command = typer.main.get_command(app)
    assert isinstance(command, typer.core.TyperGroup)
    sync = command.commands["sync"]
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for param in sync.params:
        if not isinstance(param, typer.core.TyperOption) or param.name == "help":
            continue
        name = max(param.opts, key=len)
        empty = param.is_flag or param.default is None or param.default in ((), "")
        default = "" if empty else f"`{_plain(param.default)}`"
        helptext = (param.help or "").replace("\\[", "[").replace("|", "\\|")
        rows.append(f"| `{name}` | {default} | {helptext} |")
    return "\n".join(rows) + "\n"


def _plain(value: object) -> str:
    return str(getattr(value, "value", value))


if __name__ == "__main__":
    print(sync_options_table(), end="")
