"""Reference tables for README.md, generated from the code so they cannot drift.

``python -m orchestrator.docs`` rewrites the generated blocks of README.md: the
``tandem sync`` options (from the CLI), the ``tandem serve`` settings and the
per-container policy keys (from the settings models). A test checks that
README.md holds exactly this text.
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


def settings_table() -> str:
    from orchestrator.settings import Settings

    rows = ["| key (TOML) | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if name in ("host", "defaults", "rules"):
            default = {"host": "the host name", "defaults": "", "rules": ""}[name]
        else:
            default = "" if field.default in (None, (), "") else f"`{_plain(field.default)}`"
        env = f"`TANDEM_{name.upper()}`"
        rows.append(f"| `{name}` | {env} | {default} | {field.description or ''} |")
    return "\n".join(rows) + "\n"


def policy_table() -> str:
    from orchestrator.settings import BUILTIN, ContainerPolicy

    rows = [
        "| key | label (Docker) / config key (LXD) | built-in default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in ContainerPolicy.model_fields.items():
        key = field.alias or name
        value = getattr(BUILTIN, name)
        default = "" if value is None else f"`{_plain(value)}`"
        meaning = field.description or ""
        rows.append(f"| `{key}` | `tandem.{key}` / `user.tandem.{key}` | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


BLOCKS = {"options": sync_options_table, "settings": settings_table, "policy": policy_table}


def generated(text: str, block: str) -> tuple[int, int]:
    """Where the generated BLOCK sits in TEXT (start, end of its body)."""
    start = text.index(f"<!-- {block}:start")
    start = text.index("\n", start) + 1
    return start, text.index(f"<!-- {block}:end -->")


def rewrite(text: str) -> str:
    for block, make in BLOCKS.items():
        start, end = generated(text, block)
        text = text[:start] + make() + text[end:]
    return text


def _plain(value: object) -> str:
    return str(getattr(value, "value", value))


if __name__ == "__main__":
    from pathlib import Path

    readme = Path(__file__).resolve().parent.parent / "README.md"
    readme.write_text(rewrite(readme.read_text()))
