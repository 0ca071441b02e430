"""Start, reset and stop the Cloud Firestore emulator jar, for tests and for manual use.

The jar is started directly (``java -cp JAR ...CloudFirestore``) rather than through ``gcloud`` or the shell
wrapper, because those fork java as a child: the PID we hold must be the JVM itself, or stopping it leaves
the emulator serving. The emulator keeps data in memory only; ``export``/``seed_from_export`` let a test
restart it without losing what was written.

Missing java or a missing jar raises :class:`EmulatorError` with the install command: tests that need the
emulator fail loudly instead of being skipped. So does a rules file that does not compile: the emulator
itself would only log that, and fail every request later with a message about something else.

``storex-sync emulator`` runs one in the foreground for manual use. :func:`write_firebase_launcher` makes
firebase-tools (``firebase emulators:exec``) use the same jar on Java 17 (see ``emulator/README.md``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from types import TracebackType
from typing import Any

DEFAULT_JAR = Path("/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar")
JAR_ENV = "STOREX_FIRESTORE_EMULATOR_JAR"
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
INSTALL_HINT = "apt-get install openjdk-17-jre-headless google-cloud-cli-firestore-emulator"
#: The project whose rules are replaced to compile the rules file at start (projects are isolated).
RULES_CHECK_PROJECT = "storex-rules-check"


class EmulatorError(RuntimeError):
    """The emulator could not be found, started, reset or stopped."""


def find_jar() -> Path:
    """The emulator jar: ``$STOREX_FIRESTORE_EMULATOR_JAR`` if set, else the Debian package's path."""
    override = os.environ.get(JAR_ENV)
    jar = Path(override) if override else DEFAULT_JAR
    if not jar.is_file():
        where = f"${JAR_ENV}={override}" if override else str(DEFAULT_JAR)
        raise EmulatorError(f"Firestore emulator jar not found at {where}; install it: {INSTALL_HINT}")
    return jar


def find_java() -> str:
    """The ``java`` executable on PATH (Java 17 or later)."""
    java = shutil.which("java")
    if java is None:
        raise EmulatorError(f"java not found on PATH; install it: {INSTALL_HINT}")
    return java


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def load_firebase_json(path: str | Path) -> dict[str, Any]:
    """``host``, ``port`` and absolute ``rules`` path of the emulator, as ``firebase.json`` sets them."""
    path = Path(path).resolve()
    config = json.loads(path.read_text())
    emulator = config.get("emulators", {}).get("firestore", {})
    rules = config.get("firestore", {}).get("rules")
    return {
        "host": emulator.get("host", "127.0.0.1"),
        "port": int(emulator.get("port", 8080)),
        "rules": str(path.parent / rules) if rules else None,
    }


def configured_emulator(
    config: str | Path | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    rules: str | Path | None = None,
) -> FirestoreEmulator:
    """The emulator ``storex-sync emulator`` runs: the options given, else those of ``config`` (by default
    ``./firebase.json`` if there is one), else 127.0.0.1:8080 with ``./firestore.rules`` if there is one.
    ``port=0`` picks a free port."""
    if config is None and Path("firebase.json").is_file():
        config = Path("firebase.json")
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": 8080, "rules": None}
    if config is not None:
        settings = load_firebase_json(config)
    if settings["rules"] is None and Path("firestore.rules").is_file():
        settings["rules"] = "firestore.rules"
    chosen_port = settings["port"] if port is None else port
    return FirestoreEmulator(
        host=host or settings["host"], port=chosen_port or None, rules=rules or settings["rules"]
    )


class FirestoreEmulator:
    """One emulator JVM on ``host:port``; a context manager that starts it and stops it by PID.

    ``port=None`` picks a free loopback port. ``rules`` is a path to a rules file (made absolute, since the
    JVM resolves it against its own working directory). ``seed_from_export`` starts from an export written by
    :meth:`export` (the ``.overall_export_metadata`` file).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        rules: str | Path | None = None,
        seed_from_export: str | Path | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        max_heap: str = "512m",
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.rules = str(Path(rules).resolve()) if rules is not None else None
        self.seed_from_export = str(Path(seed_from_export).resolve()) if seed_from_export else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.max_heap = max_heap
        self.process: subprocess.Popen[bytes] | None = None
        self._log_dir = tempfile.mkdtemp(prefix="firestore-emulator-")
        self.log_path = Path(self._log_dir) / "emulator.log"

    @classmethod
    def attach(cls, host_port: str, *, rules: str | Path | None = None) -> FirestoreEmulator:
        """An emulator someone else started (``FIRESTORE_EMULATOR_HOST``): wiped and given rules like ours,
        never stopped by us. Raises if nothing answers there."""
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise EmulatorError(f"FIRESTORE_EMULATOR_HOST={host_port!r} is not HOST:PORT")
        emulator = cls(host=host, port=int(port), rules=rules)
        if not emulator.is_ready():
            raise EmulatorError(
                f"FIRESTORE_EMULATOR_HOST={host_port} names no running emulator; start one there "
                "(storex-sync emulator) or unset it to let the tests start their own"
            )
        return emulator

    @property
    def host_port(self) -> str:
        """``host:port``, the value for ``FIRESTORE_EMULATOR_HOST``."""
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host_port}"

    def command(self) -> list[str]:
        """The java command line; the PID of the process it starts is the JVM."""
        cmd = [find_java(), "-Duser.language=en", f"-Xmx{self.max_heap}", "-cp", str(find_jar()), MAIN_CLASS]
        cmd += [f"--host={self.host}", f"--port={self.port}"]
        if self.rules:
            cmd.append(f"--rules={self.rules}")
        if self.seed_from_export:
            cmd.append(f"--seed_from_export={self.seed_from_export}")
        return cmd

    def start(self) -> FirestoreEmulator:
        """Start the JVM and wait until ``GET /`` answers ``Ok``; raise with the log tail on failure."""
        if self.process is not None and self.process.poll() is None:
            return self
        if self.rules and not Path(self.rules).is_file():
            raise EmulatorError(f"the rules file {self.rules} does not exist")
        cmd = self.command()
        with open(self.log_path, "ab") as log:  # cwd: whatever the JVM leaves behind lands with its log
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self._log_dir
            )
        from ..retry import wait_until

        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                raise EmulatorError(
                    f"Firestore emulator exited with code {process.returncode} while starting on "
                    f"{self.host_port}:\n{self.log_tail()}"
                )
            return self.is_ready()

        if wait_until(ready, timeout=self.start_timeout):
            self._check_rules()
            return self
        self.stop()
        raise EmulatorError(
            f"Firestore emulator did not answer on {self.host_port} within {self.start_timeout:.0f} s:\n"
            f"{self.log_tail()}"
        )

    def _check_rules(self) -> None:
        """Compile the rules file by loading it into a scratch project: the emulator reports a syntax
        error in ``--rules`` nowhere, and then fails every request with "Error compiling rules"."""
        if not self.rules:
            return
        try:
            self.set_rules(RULES_CHECK_PROJECT, Path(self.rules).read_text())
        except EmulatorError as exc:
            self.stop()
            detail = str(exc).split(": ", 1)[-1]
            try:
                errors = json.loads(detail)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                errors = detail
            raise EmulatorError(f"the rules in {self.rules} do not compile: {errors}") from exc

    def is_ready(self) -> bool:
        """True when the emulator answers ``Ok`` on ``GET /``."""
        try:
            with urllib.request.urlopen(self.base_url + "/", timeout=1.0) as resp:
                return bool(resp.status == 200 and resp.read().strip() == b"Ok")
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the emulator's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no emulator log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the JVM, then SIGKILL it if it has not exited after ``stop_timeout`` seconds."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=self.stop_timeout)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30.0) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise EmulatorError(f"{method} {path} failed with HTTP {exc.code}: {detail}") from exc
        except OSError as exc:
            raise EmulatorError(f"{method} {path} failed: {exc}\n{self.log_tail()}") from exc

    def wipe(self, project: str) -> None:
        """Delete every document of ``project`` (rules are kept)."""
        self._request("DELETE", f"/emulator/v1/projects/{project}/databases/(default)/documents")

    def set_rules(self, project: str, text: str) -> None:
        """Replace the security rules of ``project``; raises with the compile errors if any."""
        body = {"rules": {"files": [{"name": "firestore.rules", "content": text}]}}
        self._request("PUT", f"/emulator/v1/projects/{project}:securityRules", body)

    def export(self, project: str, directory: str | Path) -> Path:
        """Export ``project`` to ``directory``; returns the metadata file to pass as ``seed_from_export``."""
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        body = {"database": f"projects/{project}/databases/(default)", "export_directory": str(directory)}
        self._request("POST", f"/emulator/v1/projects/{project}:export", body)
        found = sorted(directory.rglob("*.overall_export_metadata"))
        if not found:
            raise EmulatorError(f"export of {project} to {directory} wrote no metadata file")
        return found[-1]

    def __enter__(self) -> FirestoreEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def write_firebase_launcher(directory: str | Path) -> Path:
    """A launcher jar for firebase-tools' ``FIRESTORE_EMULATOR_BINARY_PATH``, written into ``directory``.

    firebase-tools starts the emulator as ``java -jar PATH``; the Debian jar has no ``Main-Class``, so this
    tiny jar names it and puts the real jar on its ``Class-Path``. It lives in a writable place because
    firebase-tools chmods it. Written only when missing or pointing at another jar.
    """
    jar = find_jar().resolve()
    manifest = f"Manifest-Version: 1.0\r\nMain-Class: {MAIN_CLASS}\r\nClass-Path: {jar.as_uri()}\r\n\r\n"
    path = Path(directory).resolve() / "firestore-emulator-launcher.jar"
    try:
        with zipfile.ZipFile(path) as existing:
            if existing.read("META-INF/MANIFEST.MF").decode() == manifest:
                return path
    except (OSError, KeyError, zipfile.BadZipFile):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w") as launcher:
        launcher.writestr("META-INF/MANIFEST.MF", manifest)
    partial.replace(path)
    return path
