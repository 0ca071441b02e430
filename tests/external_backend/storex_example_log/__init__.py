"""``example:///path``: a folder log under another scheme, opened by this package's own code.

Each open leaves a line in ``{path}/opened-by-example``, so a test can tell that this backend, found
through its entry point, did the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from storex_sync_firestore.shared_log.filesystem import FilesystemSharedLog


class ExampleSharedLog(FilesystemSharedLog):
    @property
    def url(self) -> str:
        return f"example://{self.folder.resolve()}"


def open_log(url: str, **options: Any) -> ExampleSharedLog:
    folder = Path(unquote(urlsplit(url).path))
    log = ExampleSharedLog(folder)
    with open(folder / "opened-by-example", "a") as marks:
        marks.write(f"{sorted(options)}\n")
    return log
