"""The shops case: two PostgreSQL shops and one SQLite shop edit one catalogue and converge.

Each shop works offline between syncs: price changes on both sides (some on the same products), products
added and discontinued, bulk updates of thousands of rows. After syncing, all three hold the same
catalogue, and it is the one last-write-wins says: later edits win per column, deletes stay deleted.

Parametrized over the shared log: in memory, Firestore on the emulator, and a PostgreSQL server.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from storex_sync_firestore import MemorySharedLog, uuid7
from storex_sync_firestore.shared_log.base import SharedSyncLog
from storex_sync_firestore.testing.postgres import (  # noqa: F401
    postgres_server_fixture,
    postgres_url_fixture,
    postgres_urls_fixture,
)

from .pg_devices import PgDevice, SqliteDevice, set_aside, sync_rounds

PG_SCHEMA = """
CREATE TABLE products (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    sku text NOT NULL,
    name text NOT NULL,
    price numeric(10, 2) NOT NULL,
    stock integer NOT NULL DEFAULT 0,
    active boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""
SQLITE_SCHEMA = """
CREATE TABLE products (
    id TEXT PRIMARY KEY,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    price DECIMAL_TEXT(10, 2) NOT NULL,
    stock INTEGER NOT NULL DEFAULT 0,
    active BOOLEAN NOT NULL DEFAULT 1,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL
);
"""
NOW_SQLITE = "strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')"
CATALOGUE = 3_000


@pytest.fixture(params=["memory", "firestore", "postgresql"])
def shared_log(request: pytest.FixtureRequest) -> SharedSyncLog:
    """The in-memory log, Firestore on the emulator, and the chain's own PostgreSQL server (the log in a
    database of its own, reached as the role ``shopco`` that the server confines to its own rows): the
    shops converge through each."""
    if request.param == "memory":
        return MemorySharedLog()
    if request.param == "postgresql":
        from storex_sync_firestore.shared_log import open_shared_log

        admin_url = request.getfixturevalue("postgres_urls")()
        admin = open_shared_log(admin_url)
        admin.add_user("shopco", password="shop-secret")  # type: ignore[attr-defined]
        admin.close()  # type: ignore[attr-defined]
        return open_shared_log(admin_url.replace("//postgres@", "//shopco:shop-secret@"))
    from storex_sync_firestore.shared_log.firestore import FirestoreSharedLog

    return FirestoreSharedLog(request.getfixturevalue("firestore_client"))


@pytest.fixture
def shops(postgres_urls: Any, tmp_path: Path, shared_log: SharedSyncLog) -> Iterator[list[Any]]:
    pg1 = PgDevice(postgres_urls(), shared_log, PG_SCHEMA, ["products"])
    pg2 = PgDevice(postgres_urls(), shared_log, PG_SCHEMA, ["products"])
    lite = SqliteDevice(tmp_path / "shop3.db", shared_log, SQLITE_SCHEMA, ["products"])
    yield [pg1, pg2, lite]
    for shop in (pg1, pg2, lite):
        shop.close()


Row = tuple[str, str, str, Decimal, int, bool, datetime]


def catalogue(shop: Any) -> dict[str, Row]:
    """The shop's products, normalized across databases (uuid/text keys, decimal text, 0/1, ISO text)."""
    if isinstance(shop, PgDevice):
        rows = shop.query("SELECT id::text, sku, name, price::text, stock, active, updated_at FROM products")
    else:
        rows = shop.query("SELECT id, sku, name, price, stock, active, updated_at FROM products")
    result: dict[str, Row] = {}
    for id_, sku, name, price, stock, active, updated in rows:
        assert isinstance(price, str) and "." in price, f"price must stay exact decimal text, got {price!r}"
        when = updated if isinstance(updated, datetime) else datetime.fromisoformat(updated)
        result[id_] = (id_, sku, name, Decimal(price), int(stock), bool(active), when.astimezone(UTC))
    return result


def by_sku(shop: Any) -> dict[str, Row]:
    return {row[1]: row for row in catalogue(shop).values()}


def assert_converged(shops: list[Any]) -> dict[str, Row]:
    first = catalogue(shops[0])
    for shop in shops[1:]:
        other = catalogue(shop)
        assert other.keys() == first.keys(), f"{type(shop).__name__} has different products"
        assert other == first
    for shop in shops:
        assert set_aside(shop) == []
    return first


def test_three_shops_converge_on_one_catalogue(shops: list[Any]) -> None:
    pg1, pg2, lite = shops
    pg1.sql(
        "INSERT INTO products (sku, name, price, stock) "
        "SELECT 'sku-' || lpad(i::text, 5, '0'), 'Product ' || i, (i % 97) + 0.90, i % 13 "
        "FROM generate_series(1, :n) i",
        {"n": CATALOGUE},
    )
    sync_rounds(shops)
    assert len(assert_converged(shops)) == CATALOGUE
    assert by_sku(lite)["sku-00010"][3] == Decimal("10.90")

    # Offline edits on every shop.
    pg1.sql("UPDATE products SET price = price + 1.00, updated_at = now() WHERE sku LIKE '%1'")
    pg1.sql("UPDATE products SET stock = stock + 100")  # bulk: every row
    lite.sql(
        "INSERT INTO products (id, sku, name, price, stock, active, updated_at) VALUES (?, ?, ?, ?, ?, ?, "
        + NOW_SQLITE
        + ")",
        (uuid7(), "sku-new-lite", "Lite special", "4.20", 5, 1),
    )
    for i in range(50):
        new = (uuid7(), f"lite-{i:03}x", "New", "9.99")
        lite.sql(f"INSERT INTO products VALUES (?, ?, ?, ?, 1, 1, {NOW_SQLITE})", new)
    lite.sql("DELETE FROM products WHERE sku LIKE '%3' AND sku < 'sku-01000'")  # discontinued
    lite.sql(f"UPDATE products SET active = 0, updated_at = {NOW_SQLITE} WHERE sku LIKE '%5'")
    pg2.sql("UPDATE products SET price = price * 2, updated_at = now() WHERE sku LIKE '%1' OR sku LIKE '%2'")
    pg2.sql("DELETE FROM products WHERE sku LIKE '%7' AND sku >= 'sku-02000'")
    pg2.sql(
        "INSERT INTO products (sku, name, price) "
        "SELECT 'pg2-' || i, 'Import', 1.05 FROM generate_series(1, 30) i"
    )

    sync_rounds(shops, rounds=2)
    final = assert_converged(shops)
    skus = {row[1]: row for row in final.values()}
    discontinued = {f"sku-{i:05}" for i in range(1, CATALOGUE + 1) if i % 10 == 3 and i < 1000}
    discontinued |= {f"sku-{i:05}" for i in range(2000, CATALOGUE + 1) if i % 10 == 7}
    expected = {f"sku-{i:05}" for i in range(1, CATALOGUE + 1)} - discontinued
    expected |= {"sku-new-lite"} | {f"lite-{i:03}x" for i in range(50)} | {f"pg2-{i}" for i in range(1, 31)}
    assert sorted(skus.keys() - expected) == [] and sorted(expected - skus.keys()) == []
    assert not discontinued & skus.keys()
    # pg2 doubled the prices after pg1 raised them: the later write wins, per column.
    assert skus["sku-00011"][3] == Decimal("2") * (Decimal(11 % 97) + Decimal("0.90"))
    assert skus["sku-00012"][3] == Decimal("2") * (Decimal(12 % 97) + Decimal("0.90"))
    # pg1's bulk stock update and lite's deactivation merge column by column.
    assert skus["sku-00015"][4] == 15 % 13 + 100 and skus["sku-00015"][5] is False
    assert skus["sku-new-lite"][3] == Decimal("4.20")

    # A second day: a bulk price update in SQLite, concurrent edits of the same rows in PostgreSQL.
    lite.sql(f"UPDATE products SET price = printf('%.2f', price * 1.1), updated_at = {NOW_SQLITE}")
    pg1.sql("UPDATE products SET name = name || ' (v2)' WHERE sku LIKE 'sku-0%'")
    pg2.sql("DELETE FROM products WHERE sku LIKE 'pg2-%'")
    pg1.sql("UPDATE products SET stock = 0 WHERE sku LIKE 'pg2-%'")  # later, but an edit does not re-create
    sync_rounds(shops, rounds=2)
    final = assert_converged(shops)
    skus = {row[1]: row for row in final.values()}
    assert skus["sku-new-lite"][3] == Decimal("4.62")
    assert skus["sku-00100"][2] == "Product 100 (v2)"
    assert not any(sku.startswith("pg2-") for sku in skus)  # stock edit of a deleted product: stays deleted
