"""The package as a user installs it: type-checkable, cheap to start, licensed, readable in help()."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import storex_sync_firestore

ROOT = Path(__file__).resolve().parents[1]


def test_the_editable_install_type_checks_a_users_script(tmp_path: Path) -> None:
    """README: ``pip install -e .``; then ``mypy --strict`` on an application finds the package (setuptools'
    editable finder is an import hook that mypy cannot follow)."""
    direct_url = json.loads(
        metadata.distribution("storex-sync-firestore").read_text("direct_url.json") or "{}"
    )
    assert direct_url.get("dir_info", {}).get("editable") is True, (
        "the test environment is not `pip install -e .`"
    )
    script = tmp_path / "app.py"
    script.write_text(
        "from storex_sync_firestore import SyncedDatabase, do_sync, open_shared_log\n"
        "from storex_sync_firestore.continuous import ContinuousSync\n\n"
        "db = SyncedDatabase('sqlite:///notes.db')\n"
        "summary = do_sync(db, open_shared_log('memory://'))\n"
        "sent: int = summary.sent\n"
        "runner: ContinuousSync = ContinuousSync(db, open_shared_log('memory://'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        cwd=tmp_path,  # not the repository: the package must be found through the install
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # not the deprecated table form {text = ...}
    assert metadata.metadata("storex-sync-firestore")["License-Expression"] == "MIT"


def _modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_imports_neither_sqlalchemy_nor_the_google_client() -> None:
    loaded = _modules_after(
        "from storex_sync_firestore.cli import cli\n"
        "try:\n    cli(['--help'], prog_name='storex-sync')\nexcept SystemExit:\n    pass"
    )
    assert "click" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("sqlalchemy", "google", "grpc", "tenacity")}


def test_the_pytest_plugin_does_not_load_sqlalchemy_into_every_session(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text(
        "import sys\n\n"
        "def test_nothing_heavy_was_imported():\n"
        "    assert 'storex_sync_firestore.testing.pytest_plugin' in sys.modules\n"
        "    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'google'))\n"
        "    assert not heavy, heavy\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_default_prints_as_a_bare_object_in_help() -> None:
    """``help(open_shared_log)`` used to show ``retry=<object object at 0x...>``."""
    found = []
    for info in pkgutil.walk_packages(storex_sync_firestore.__path__, "storex_sync_firestore."):
        if ".testing.pytest_plugin" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            targets = [obj, *vars(obj).values()] if inspect.isclass(obj) else [obj]
            for target in targets:
                if callable(target):
                    try:
                        signature = str(inspect.signature(target))
                    except (TypeError, ValueError):
                        continue
                    if " object at 0x" in signature:  # a function default names itself; fine
                        found.append(f"{info.name}.{name}{signature}")
    assert found == []
