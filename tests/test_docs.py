"""Every command has help and is documented, as sqlite-utils' test_docs does."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from storex_sync_firestore.cli import cli

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(cli.commands)


def test_there_are_commands() -> None:
    assert {"init", "sync", "watch", "status", "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name: str) -> None:
    command = cli.commands[name]
    assert command.help, f"{name} is missing its help"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} is missing its help"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_cli_docs(name: str) -> None:
    assert f"## `storex-sync {name}`" in (ROOT / "docs" / "cli.md").read_text()


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_readme(name: str) -> None:
    assert f"storex-sync {name}" in (ROOT / "README.md").read_text()
