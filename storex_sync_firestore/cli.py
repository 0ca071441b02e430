"""``storex-sync``: the command line. Each command parses, calls one function of ``commands``, prints.

Errors are the library's (every ``SyncError`` names its fix in ``.hint``); here they become one line on
stderr and exit status 1. ``--debug`` shows the traceback instead.

Only click and the standard library are imported up front: ``commands`` (and with it SQLAlchemy) is
imported by the command that needs it, so ``storex-sync --help`` answers at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .errors import SyncError

if TYPE_CHECKING:
    from .continuous import ContinuousSync
    from .models import SyncSummary

log = logging.getLogger("storex_sync_firestore")
#: How long ``watch`` waits for a running sync after Ctrl-C or SIGTERM before it exits anyway.
STOP_GRACE = 1.0


def _is_database_error(exc: BaseException) -> bool:
    """A SQLAlchemy error, asked without importing SQLAlchemy (it is loaded if one was raised)."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError)


def _one_line(exc: BaseException) -> str:
    """What went wrong and what to do, on one line."""
    if isinstance(exc, SyncError):
        message = str(exc.args[0]) if exc.args else type(exc).__name__
        text = f"{message}; {exc.hint}" if exc.hint else message
    elif isinstance(exc, Exception) and _is_database_error(exc):
        from .commands import explain_database_error

        text = explain_database_error(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _known(exc: BaseException) -> bool:
    return isinstance(exc, SyncError | OSError) or _is_database_error(exc)


class _Group(click.Group):
    """Turns library errors into one-line messages unless ``--debug`` was given."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if ctx.params.get("debug") or not _known(exc):
                raise
            raise click.ClickException(_one_line(exc)) from exc


db_option = click.option(
    "--db", "db_url", required=True, metavar="URL", help="SQLAlchemy URL, e.g. sqlite:///notes.db"
)
timeout_option = click.option(
    "--timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Give up on an unreachable shared log after this long (default: 60).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
snapshot_option = click.option(
    "--snapshot-after",
    type=click.IntRange(min=0),
    default=100_000,
    show_default=True,
    metavar="ENTRIES",
    help="Write a snapshot after this many entries received and shared since the latest (0: never).",
)


@click.group(cls=_Group)
@click.version_option(package_name="storex-sync-firestore")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("-v", "--verbose", is_flag=True, help="Log more (INFO for every library module).")
def cli(debug: bool, verbose: bool) -> None:
    """Sync SQLite and PostgreSQL databases through a shared change log in Cloud Firestore.

    Start with 'storex-sync demo', then 'init' each database and 'sync' or 'watch' it.
    """
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not debug:  # progress lines are INFO; the rest of the package stays quiet
        logging.getLogger("storex_sync_firestore.progress").setLevel(logging.INFO)


@cli.command()
@db_option
@click.option("--tables", help="Comma-separated tables to sync (optional when re-running init).")
@click.option("--user", "user_id", help="The user whose devices share the log (default: kept, else $USER).")
@click.option(
    "--log",
    "log_url",
    metavar="LOG",
    help="firestore://PROJECT[/ROOT], postgresql://ROLE@HOST/DB, a folder, memory://, or another scheme "
    "that an installed backend adds.",
)
@click.option("--new-device", is_flag=True, help="Register as a new device, forgetting the stored id.")
@click.option(
    "--switch-user",
    is_flag=True,
    help="Move a database registered for another user to --user: a new device that shares every row again.",
)
@click.option(
    "--encrypt",
    is_flag=True,
    help="End-to-end encryption: the passphrase comes from $STOREX_SYNC_PASSPHRASE or a prompt.",
)
@click.option(
    "--on-conflict",
    metavar="RULE",
    help="For --tables: the later of two rows with the same unique value is deleted (delete-later, the "
    "default), loses its value (clear-later), or module:function decides.",
)
@timeout_option
@json_option
def init(
    db_url: str,
    tables: str | None,
    user_id: str | None,
    log_url: str | None,
    new_device: bool,
    switch_user: bool,
    encrypt: bool,
    on_conflict: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Enable sync on tables and register the database as a device. All or nothing; safe to run again.

    Without --tables, brings the synced tables up to date with their schema and replays entries set
    aside for a missing table or column.
    """
    from . import commands

    names = [t.strip() for t in tables.split(",") if t.strip()] if tables else None
    db = commands.open_database(db_url)
    result = commands.init_database(
        db,
        names,
        user_id=user_id,
        log_url=log_url,
        new_device=new_device,
        switch_user=switch_user,
        timeout=timeout,
        passphrase=_passphrase(PASSPHRASE_ENV, "Passphrase of the shared log") if encrypt else None,
        on_conflict=on_conflict,
    )
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"device {result['device_id']} of user {result['user_id']} in {result['log']}")
        click.echo(f"syncing tables: {', '.join(result['tables'])}")
        if result["encrypted"]:
            click.echo("end-to-end encrypted: the shared log holds only ciphertext")


PASSPHRASE_ENV = "STOREX_SYNC_PASSPHRASE"
NEW_PASSPHRASE_ENV = "STOREX_SYNC_NEW_PASSPHRASE"


def _passphrase(env: str, prompt: str) -> Callable[[bool], str]:
    """A passphrase from ``env`` or, on a terminal, a hidden prompt (confirmed when a key is created).
    Never a command-line argument: those end up in shell histories and process lists."""

    def ask(confirm: bool) -> str:
        value = os.environ.get(env)
        if value:
            return value
        return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))

    return ask


@cli.command()
@db_option
@timeout_option
def passphrase(db_url: str, timeout: float | None) -> None:
    """Change the passphrase of an encrypted shared log (the data key is rewrapped, nothing re-encrypted).

    The current passphrase comes from $STOREX_SYNC_PASSPHRASE, the new one from
    $STOREX_SYNC_NEW_PASSPHRASE, or each from a prompt.
    """
    from . import commands

    old = _passphrase(PASSPHRASE_ENV, "Current passphrase")(False)
    new = _passphrase(NEW_PASSPHRASE_ENV, "New passphrase")(True)
    commands.change_log_passphrase(commands.open_database(db_url), old=old, new=new, timeout=timeout)
    click.echo("passphrase changed; every device keeps syncing (they hold the data key)")


def _summary_text(summary: SyncSummary) -> str:
    s = summary
    status = "" if s.finished else " (stopped early)"
    resolved = f", resolved {s.resolved} (see status)" if s.resolved else ""
    return (
        f"sent {s.sent}, received {s.received}, applied {s.applied}, set aside {s.set_aside}{resolved}"
        f"{status}\n"
        f"log documents: {s.documents_read} read, {s.documents_written} written"
    )


@cli.command()
@db_option
@timeout_option
@json_option
@snapshot_option
def sync(db_url: str, timeout: float | None, as_json: bool, snapshot_after: int) -> None:
    """Run one full sync: receive, share, reconcile."""
    from . import commands
    from .progress import SyncProgress

    db = commands.open_database(db_url)
    progress = SyncProgress(totals={"share": commands.pending_count(db)})
    try:
        summary = commands.sync_database(
            db, timeout=timeout, progress=progress, snapshot_after=snapshot_after or None
        )
    except Exception as exc:
        if as_json and _known(exc):
            click.echo(json.dumps({"ok": False, "error": _one_line(exc)}))
        raise
    finally:
        progress.close()
    click.echo(json.dumps({"ok": True, **summary.as_dict()}) if as_json else _summary_text(summary))


@cli.command()
@db_option
@click.option(
    "--interval",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Poll the shared log this often (default: 2; 60 with a log that pushes changes, as Firestore does).",
)
@click.option(
    "--compact",
    "compact_log",
    is_flag=True,
    help="Also compact the shared log about once a day (as 'storex-sync compact' with its defaults).",
)
@timeout_option
@snapshot_option
def watch(
    db_url: str, interval: float | None, timeout: float | None, compact_log: bool, snapshot_after: int
) -> None:
    """Keep syncing until Ctrl-C: soon after a local change or another device's upload."""
    from . import commands
    from .continuous import ContinuousSync

    db = commands.open_database(db_url)
    state = commands.initialized_state(db)
    shared_log = commands.open_log(state["log"], timeout=timeout)
    runner = ContinuousSync(
        db,
        shared_log,
        remote_poll_interval=interval,
        sync_options={"snapshot_after": snapshot_after or None},
    )
    if compact_log:
        runner.events.on("sync_finished", lambda **kw: _compact_after(db, shared_log, **kw))
    started: dict[str, float] = {}
    runner.events.on("sync_started", lambda: started.update(at=time.monotonic()))
    runner.events.on("sync_finished", lambda **kw: _report_watch(runner, started.get("at", 0.0), **kw))
    if not log.isEnabledFor(logging.INFO):  # each failure is reported once, by _report_watch
        logging.getLogger("storex_sync_firestore.continuous").setLevel(logging.ERROR)
    done = threading.Event()
    # Both signals are handled here, not as KeyboardInterrupt: a shell starts a background job with
    # SIGINT ignored, and Python then never raises KeyboardInterrupt at all.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    runner.start()
    click.echo(f"watching {db_url} through {state['log']}; Ctrl-C to stop")
    while not done.wait(0.5) and runner.running:
        pass
    if runner.error is not None:  # retrying cannot fix it: stop with the error (reported once already)
        runner.stop(timeout=STOP_GRACE)
        raise click.exceptions.Exit(1)
    if runner.stop(timeout=STOP_GRACE):
        click.echo("stopped")
        return
    # The sync under way is waiting for the network. Leaving it loses nothing (a sync is crash-safe: the
    # next one resumes it), but finalizing the interpreter around a gRPC call in flight can take a second
    # or more, so exit at once, after flushing what was printed and logged.
    click.echo("stopped (the sync under way was waiting for the network; the next one resumes it)")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _compact_after(db: Any, shared_log: Any, *, summary: SyncSummary | None, **_: Any) -> None:
    """After a successful sync in ``watch --compact``: compact if a day passed since the last time."""
    from .compaction import compact_if_due

    if summary is None or not summary.finished:
        return
    try:
        done = compact_if_due(db, shared_log)
    except Exception as exc:  # reported; the next day's attempt tries again, syncing goes on
        click.echo(f"compaction failed: {_one_line(exc)}", err=True)
        return
    if done is not None and done.batches_deleted:
        click.echo(
            f"compacted: deleted {done.batches_deleted} batches, {done.snapshots_deleted} old snapshots"
        )


def _report_watch(
    runner: ContinuousSync,
    started: float,
    *,
    summary: SyncSummary | None,
    error: BaseException | None,
    **_: Any,
) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    took = time.monotonic() - started
    if error is not None:
        wait = runner.next_retry_in
        again = "; stopped, retrying cannot fix this" if wait is None else f"; trying again in {wait:.1f} s"
        click.echo(f"{stamp} sync failed: {_one_line(error)}{again}", err=True)
    elif summary is not None and (summary.sent or summary.received or summary.applied or summary.set_aside):
        s = summary
        click.echo(
            f"{stamp} sent {s.sent}, received {s.received}, applied {s.applied}, "
            f"set aside {s.set_aside} ({took:.2f} s)"
        )


def _duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``15m``, ``0s``: a duration for --older-than and --retention."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise click.BadParameter(f"{text!r} is not a duration such as 7d, 12h, 30m or 0s") from None


@cli.command()
@db_option
@timeout_option
@json_option
def snapshot(db_url: str, timeout: float | None, as_json: bool) -> None:
    """Sync, then write the merged state to the shared log: new devices start from it."""
    from . import commands

    written = commands.write_log_snapshot(commands.open_database(db_url), timeout=timeout)
    if as_json:
        out = {"ok": True, "snapshot": written.snapshot_id, "entries": written.entries}
        click.echo(
            json.dumps({**out, "chunks": written.chunks, "documents_written": written.documents_written})
        )
        return
    click.echo(f"snapshot {written.snapshot_id}: {written.entries} entries in {written.chunks} chunks")


@cli.command()
@db_option
@click.option(
    "--older-than",
    "older_than",
    default="7d",
    show_default=True,
    metavar="DURATION",
    help="Keep batches shared more recently than this (0s: compact all that is safe now).",
)
@click.option(
    "--retention",
    default="30d",
    show_default=True,
    metavar="DURATION",
    help="Devices not seen for this long stop holding the log back (they bootstrap on return).",
)
@timeout_option
@json_option
def compact(db_url: str, older_than: str, retention: str, timeout: float | None, as_json: bool) -> None:
    """Delete the batches the latest snapshot covers that every active device has read."""
    from . import commands

    done = commands.compact_log(
        commands.open_database(db_url), older_than=_duration(older_than), retention=_duration(retention),
        timeout=timeout,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps({"ok": True, **dataclasses.asdict(done)}))
        return
    away = (
        f"; not seen within the retention: {', '.join(done.inactive_devices)}"
        if done.inactive_devices
        else ""
    )
    click.echo(f"deleted {done.batches_deleted} batches ({done.entries_deleted} entries), kept "
               f"{done.batches_kept}; deleted {done.snapshots_deleted} old snapshots{away}")  # fmt: skip


@cli.command()
@db_option
@json_option
@click.option("--offline", is_flag=True, help="Only what the database knows: do not ask the shared log.")
@timeout_option
def status(db_url: str, as_json: bool, offline: bool, timeout: float | None) -> None:
    """Show the device, its log, what waits to be shared or applied, and the last sync."""
    from . import commands

    db = commands.open_database(db_url)
    info = commands.database_status(db)
    if not offline:
        info["shared_log"] = commands.shared_log_status(db, timeout=10.0 if timeout is None else timeout)
    if as_json:
        click.echo(json.dumps(info, default=str))
        return
    for label, key in (("device", "device_id"), ("user", "user_id"), ("log", "log")):
        click.echo(f"{label:<13}{info[key]}")
    click.echo(f"{'tables':<13}{', '.join(info['tables'])}")
    click.echo(
        f"{'entries':<13}{info['unshared']} unshared, {info['unintegrated']} unintegrated, "
        f"{info['withheld']} withheld, {info['set_aside']} set aside"
    )
    last = info["last_sync"]
    if not last:
        click.echo(f"{'last sync':<13}never")
    elif last.get("ok"):
        s = last["summary"]
        click.echo(f"{'last sync':<13}{last['at']} ok: sent {s['sent']}, received {s['received']}, "
                   f"applied {s['applied']}")  # fmt: skip
    else:
        click.echo(f"{'last sync':<13}{last['at']} FAILED: {last.get('error')}")
    for e in info["set_aside_entries"]:
        click.echo(f"  set aside {e['direction']} {e['table'] or ''} {e['pk'] or ''} "
                   f"({e['device_id']}@{e['hlc']}): {e['reason']}")  # fmt: skip
    if info["disabled_tables"]:
        click.echo(f"{'capture off':<13}{', '.join(info['disabled_tables'])} ('init --tables' turns it on)")
    if info["resolutions"]:
        click.echo(f"{'resolutions':<13}{info['resolved']} (constraint rules applied; newest first)")
    for r in info["resolutions"]:
        at = datetime.fromtimestamp(r["at_ms"] / 1000).isoformat(sep=" ", timespec="seconds")
        key = json.dumps(r["pk"]) if r["pk"] else ""
        click.echo(f"  {at} {r['table']} {key} {r['rule']}: {json.dumps(r['detail'], ensure_ascii=False)}")
    _print_log_status(info.get("shared_log"))


def _print_log_status(info: dict[str, Any] | None) -> None:
    if info is None:
        return
    if "error" in info:
        click.echo(f"{'shared log':<13}unreachable: {info['error']}")
        return
    click.echo(f"{'shared log':<13}{info['documents']} documents, {info['bytes']:,} bytes "
               f"({info['batches']} batches, {info['entries']} entries)")  # fmt: skip
    snap = info["snapshot"]
    if snap is None:
        click.echo(f"{'snapshot':<13}none ('storex-sync snapshot' writes one)")
    else:
        age = f", {snap['age_s'] / 3600:.1f} h old" if "age_s" in snap else ""
        click.echo(f"{'snapshot':<13}{snap['id']}: {snap.get('entries', '?')} entries{age}; "
                   f"frontier {json.dumps(snap.get('frontier', {}))}")  # fmt: skip
    for d in info["devices"]:
        lag = "never synced" if d["lag_entries"] is None else f"{d['lag_entries']} entries behind"
        click.echo(f"  device {d['device_id']}: {lag}, last seen {d['last_seen'] or 'never'}")


@cli.command()
@db_option
@click.option("--tables", required=True, help="Comma-separated synced tables to switch capture off on.")
def disable(db_url: str, tables: str) -> None:
    """Switch capture off on tables, e.g. to change their schema; 'init --tables' switches it back on.

    Nothing is lost: changes captured so far are kept and shared, entries from other devices wait, and
    the tables keep their history. Writes made while capture is off are not synced.
    """
    from . import commands

    names = [t.strip() for t in tables.split(",") if t.strip()]
    done = commands.disable_tables(commands.open_database(db_url), names)
    click.echo(f"capture off on: {', '.join(done)}; after your change run 'storex-sync init --db {db_url} "
               f"--tables {','.join(names)}'")  # fmt: skip


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the temporary folder with both databases.")
@click.option(
    "--log",
    "log_url",
    metavar="LOG",
    help="Sync through this shared log (e.g. postgresql://ROLE@HOST/DB) instead of a Firestore emulator.",
)
@click.option(
    "--user", "user_id", default="alice", show_default=True, help="The user both devices belong to."
)
def demo(keep: bool, log_url: str | None, user_id: str) -> None:
    """Sync two SQLite databases through a local Firestore emulator and show that they converge."""
    from .demo import run_demo
    from .testing.emulator import EmulatorError

    try:
        converged = run_demo(echo=click.echo, keep=keep, log_url=log_url, user_id=user_id)
    except EmulatorError as exc:
        raise click.ClickException(" ".join(str(exc).split("\n")[0].split())) from exc
    if not converged:
        raise SystemExit(1)


@cli.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="firebase.json to take host, port and rules from (default: ./firebase.json if there is one).",
)
@click.option(
    "--host", default=None, help="Address to listen on (default: from firebase.json, else 127.0.0.1)."
)
@click.option(
    "--port", type=int, default=None, help="Port (default: from firebase.json, else 8080; 0: any free)."
)
@click.option(
    "--rules",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Security rules file (default: from firebase.json, else ./firestore.rules if there is one).",
)
@click.option(
    "--firebase-launcher",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Instead: write a launcher jar for firebase-tools into DIR and print its path.",
)
def emulator(
    config: Path | None,
    host: str | None,
    port: int | None,
    rules: Path | None,
    firebase_launcher: Path | None,
) -> None:
    """Run a local Firestore emulator until Ctrl-C, and print the FIRESTORE_EMULATOR_HOST to use."""
    from .testing.emulator import EmulatorError, configured_emulator, write_firebase_launcher

    try:
        if firebase_launcher is not None:
            click.echo(write_firebase_launcher(firebase_launcher))
            return
        runner = configured_emulator(config, host=host, port=port, rules=rules)
        done = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: done.set())
        runner.start()
    except EmulatorError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc
    try:
        click.echo(f"Firestore emulator ready; rules: {runner.rules or 'none (everything allowed)'}")
        click.echo(f"export FIRESTORE_EMULATOR_HOST={runner.host_port}")
        while not done.wait(0.5):
            if runner.process is None or runner.process.poll() is not None:
                raise click.ClickException(f"the emulator exited: {' '.join(runner.log_tail(3).split())}")
    finally:
        runner.stop()
    click.echo("stopped")


def main() -> None:
    """Entry point of the ``storex-sync`` script and of ``python -m storex_sync_firestore``."""
    cli(prog_name="storex-sync")


if __name__ == "__main__":  # pragma: no cover
    main()
