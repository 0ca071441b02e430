"""A throwaway PostgreSQL cluster for tests: started on a free loopback port, one fresh database per test.

The server binary is started directly (not through ``pg_ctl``), so the PID we hold is the postmaster
itself and stopping it by that PID really stops the cluster. initdb and postgres refuse to run as root, so
when the tests run as root (CI does) the cluster is owned by the unprivileged ``postgres`` OS user that the
Debian package creates, or by a system user created here. Durability is switched off: the data directory
is deleted at the end anyway.

PostgreSQL missing is an error, never a skip: a green run must mean the PostgreSQL tests ran.

Use it from a test module with::

    from storex_sync_firestore.testing.postgres import (  # noqa: F401
        postgres_server_fixture,
        postgres_url_fixture,
        postgres_urls_fixture,
    )

The fixtures are named ``postgres_server`` (session),
``postgres_urls`` (a factory of fresh databases) and ``postgres_url`` (one fresh database); the functions
carry a ``_fixture`` suffix so that a test's ``postgres_url`` argument does not shadow an import.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

BINDIR_ENV = "STOREX_PG_BINDIR"
DEFAULT_BINDIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
INSTALL_HINT = (
    "apt-get install postgresql-15 (or set STOREX_PG_BINDIR to the directory of initdb and postgres)"
)
OS_USERS = ("postgres", "storex_pg")


class PostgresError(RuntimeError):
    """PostgreSQL is missing, or the throwaway cluster could not be created, started or stopped."""


def find_bindir() -> Path:
    """The directory of ``initdb`` and ``postgres``; raise ``PostgresError`` naming the package if none."""
    candidates = [os.environ[BINDIR_ENV]] if os.environ.get(BINDIR_ENV) else list(DEFAULT_BINDIRS)
    pg_config = shutil.which("pg_config")
    if pg_config and not os.environ.get(BINDIR_ENV):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout
        candidates.append(out.strip())
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    raise PostgresError(f"PostgreSQL server binaries not found in {candidates}: {INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _os_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the cluster as when we are root (None when we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in OS_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    name = OS_USERS[-1]
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise PostgresError(
            f"running as root and could not create the OS user {name!r}: {result.stderr.strip()}"
        )
    return pwd.getpwnam(name)


class PostgresServer:
    """One throwaway cluster. ``start()`` returns once it accepts connections; ``stop()`` removes it."""

    def __init__(self, bindir: Path | None = None, *, port: int | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.port = port or _free_port()
        self.user = "postgres"
        self.process: subprocess.Popen[bytes] | None = None
        self.root: Path | None = None
        self._count = 0

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run_as(self) -> dict[str, int]:
        """``user``/``group`` for subprocess when running as root (PostgreSQL refuses to run as root)."""
        owner = _os_user()
        return {} if owner is None else {"user": owner.pw_uid, "group": owner.pw_gid}

    def start(self, timeout: float = 30.0) -> PostgresServer:
        as_user = self._run_as()
        self.root = Path(tempfile.mkdtemp(prefix="storex-pg-"))
        if as_user:
            os.chown(self.root, as_user["user"], as_user["group"])
        data, logfile = self.root / "data", self.root / "server.log"
        init = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8",
             "--no-locale", "--no-sync"],
            capture_output=True, text=True, check=False, cwd=self.root,
            user=as_user.get("user"), group=as_user.get("group"),
        )  # fmt: skip
        if init.returncode != 0:
            raise PostgresError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        # The superuser the tests use needs no password; every other role does, so that a test can show
        # that one role's credentials do not open another's data (the PostgreSQL shared log).
        (data / "pg_hba.conf").write_text(
            f"host all {self.user} 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "timezone": "UTC",
        }
        args = [str(self.bindir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        with open(logfile, "wb") as log:
            if as_user:
                os.chown(logfile, as_user["user"], as_user["group"])
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
                user=as_user.get("user"), group=as_user.get("group"),
            )  # fmt: skip
        self._wait_ready(timeout, logfile)
        return self

    def _wait_ready(self, timeout: float, logfile: Path) -> None:
        import psycopg

        from ..retry import wait_until

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise PostgresError(
                    f"postgres exited at start-up:\n{logfile.read_text(errors='replace')[-3000:]}"
                )
            try:
                psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres").close()
            except psycopg.OperationalError:
                return False
            return True

        if not wait_until(ready, timeout=timeout):
            self.stop()
            raise PostgresError(f"postgres did not accept connections within {timeout:.0f}s")

    def create_database(self, prefix: str = "test") -> str:
        """Create a fresh, empty database and return its SQLAlchemy URL."""
        import psycopg

        self._count += 1
        name = f"{prefix}_{os.getpid()}_{self._count}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), killed if it lingers; then the data directory is removed."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole test session; fails (never skips) if PostgreSQL is missing."""
    try:
        server = PostgresServer().start()
    except PostgresError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="postgres_urls")
def postgres_urls_fixture(postgres_server: PostgresServer) -> Callable[[], str]:
    """A factory: each call creates another fresh database and returns its URL (for multi-shop tests)."""
    return postgres_server.create_database


@pytest.fixture(name="postgres_url")
def postgres_url_fixture(postgres_urls: Callable[[], str]) -> str:
    """The URL of a fresh, empty database for this test."""
    return postgres_urls()
