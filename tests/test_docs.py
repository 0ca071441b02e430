"""Every command has help and is documented, as sqlite-utils' test_docs does; the README's examples run
as written, each in a fresh directory, as a newcomer would run them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from storex_sync_firestore.cli import cli
from storex_sync_firestore.testing.emulator import FirestoreEmulator, free_port

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(cli.commands)
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def readme_block(language: str, index: int) -> str:
    """The README's ``index``-th fenced code block in ``language`` (0-based)."""
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.MULTILINE | re.DOTALL)[index]


def fresh_clone(tmp_path: Path) -> Path:
    """A working directory holding what a fresh clone's root holds for these examples."""
    for name in ("firebase.json", "firestore.rules", "firestore.indexes.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def user_env(**extra: str) -> dict[str, str]:
    """The installed package's scripts first on PATH, and no emulator inherited from the test session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIRESTORE_", "PYTEST_", "STOREX_"))}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra}


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


def test_the_readme_opens_with_the_two_commands() -> None:
    first = readme_block("sh", 0).splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["bash .ci/run demo", "bash .ci/run"]
    assert README.index("bash .ci/run demo") < README.index("\n## ")


def test_the_readme_python_example_runs_and_leaves_what_the_cli_needs(
    tmp_path: Path, firestore_emulator: FirestoreEmulator
) -> None:
    """Against an emulator as the README says to start one (here the session's, on its own port)."""
    work = fresh_clone(tmp_path)
    (work / "example.py").write_text(readme_block("python", 0))
    env = user_env(FIRESTORE_EMULATOR_HOST=firestore_emulator.host_port)
    try:
        run = subprocess.run(
            [sys.executable, "example.py"], cwd=work, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        assert "sent=1" in run.stdout
        status = subprocess.run(
            ["storex-sync", "status", "--db", "sqlite:///notes.db", "--json"], cwd=work, env=env,
            capture_output=True, text=True,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["log"] == "firestore://my-project"
        sync = subprocess.run(
            ["storex-sync", "sync", "--db", "sqlite:///notes.db"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        assert sync.returncode == 0 and "sent 0" in sync.stdout, sync.stderr
    finally:
        firestore_emulator.wipe("my-project")


def cli_walkthrough(port: int) -> str:
    """The README's command-line block as a script, changed only where a test must differ from a person:
    the package is installed already, the emulator gets a free port (tests run in parallel), and ``watch``
    gets a Ctrl-C (SIGINT) after a few seconds instead of from a keyboard."""
    lines = ["set -euo pipefail"]
    for line in readme_block("sh", 1).splitlines():
        command = line.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        if command.startswith("pip install -e ."):
            command = (
                "python -c 'import storex_sync_firestore'  # installed: the tests run in that environment"
            )
        elif command.startswith("storex-sync emulator &"):
            command = command.replace("storex-sync emulator &", f"storex-sync emulator --port {port} &")
        elif command.startswith("storex-sync watch"):
            command = command.split("  #")[0] + " & watch=$!; sleep 4; kill -INT $watch; wait $watch"
        lines.append(command)
    return "\n".join([*lines, "wait  # for the emulator to stop\n"])


def test_the_readme_cli_section_runs_as_written(tmp_path: Path) -> None:
    work = fresh_clone(tmp_path)
    script = cli_walkthrough(free_port())
    run = subprocess.run(
        ["bash", "-c", script], cwd=work, env=user_env(), capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, f"{script}\n---\n{run.stdout}\n{run.stderr}"
    out = run.stdout
    assert "converged: both devices hold the same notes" in out
    assert "of user alice in firestore://my-project" in out and "watching sqlite:///notes.db" in out
    status = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])  # status --json
    assert status["user_id"] == "alice" and status["tables"] == ["notes"] and status["last_sync"]["ok"]


def test_the_readme_testing_example_runs_with_the_plugin(tmp_path: Path) -> None:
    """In a project of its own: the plugin starts an emulator with the project's firestore.rules."""
    work = fresh_clone(tmp_path)
    (work / "test_example.py").write_text(readme_block("python", 1))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "test_example.py"],
        cwd=work, env=user_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout


def test_the_cli_docs_give_the_idle_cost_of_watch() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    assert re.search(r"idle .*\d+(\.\d+)?% of a core", text, re.DOTALL)
    assert "bench/cli_costs.py" in text
