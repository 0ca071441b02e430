"""The dialect contract (``testing.dialect_conformance``), over every database from one parametrization."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storex_sync_firestore.testing.dialect_conformance import DialectConformance
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

DIALECTS = ["sqlite", "postgresql"]


class TestDialects(DialectConformance):
    @pytest.fixture(params=DIALECTS)
    def database_url(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'app.db'}"
        else:
            urls: Callable[[], str] = request.getfixturevalue("postgres_urls")
            yield urls()


def test_an_unknown_database_names_the_known_dialects_and_the_entry_point_group() -> None:
    from storex_sync_firestore.capture import DIALECT_ENTRY_POINT_GROUP, dialect_class
    from storex_sync_firestore.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        dialect_class("oracle")
    assert "postgresql" in str(raised.value) and DIALECT_ENTRY_POINT_GROUP in str(raised.value)
