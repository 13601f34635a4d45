"""asyncpg (binary protocol, named statements, its own cancel) through pgshelf.

Covers: binary encoding/decoding of many types, named prepared statements
and their Describe (parameter and result types), COPY in with
copy_records_to_table and out with copy_from_query, cursors fetched with
row limits (Execute with max_rows -> PortalSuspended), a query timeout
that asyncpg turns into a CancelRequest on a second connection: the call
fails promptly, the connection stays usable and the server backend really
stopped sleeping (pg_stat_activity, checked directly).
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import io
import ipaddress
import uuid

import asyncpg
import pytest

from clients import sleeping
from pgshelf_harness import CONNECT_TIMEOUT

BOUND = 60  # seconds any single test's coroutine may take


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, BOUND))


async def connect(target, **kwargs) -> asyncpg.Connection:
    return await asyncpg.connect(target.dsn(), timeout=CONNECT_TIMEOUT, **kwargs)


def test_binary_types(target, same_as_direct):
    values = [
        ("int2", 7), ("int4", -2**31), ("int8", 2**62), ("float8", 1.25), ("numeric", decimal.Decimal("1e-20")),
        ("text", "ünïcödé 😀 \t"), ("bytea", b"\x00\x01\xfe\xff"), ("bool", False),
        ("date", datetime.date(1999, 12, 31)), ("timestamptz", datetime.datetime(2030, 5, 6, 7, 8, 9, 10,
                                                                                  tzinfo=datetime.timezone.utc)),
        ("interval", datetime.timedelta(days=3, seconds=4)), ("uuid", uuid.UUID(int=12345)),
        ("inet", ipaddress.ip_interface("10.1.2.3/24")), ("int4[]", [[1, 2], [3, None]]), ("text[]", ["a", None]),
        ("jsonb", '{"k": [1, 2]}'),
    ]

    async def produce(t):
        conn = await connect(t)
        try:
            sql = "SELECT " + ", ".join(f"${i + 1}::{typ}" for i, (typ, _) in enumerate(values))
            return tuple(await conn.fetchrow(sql, *[v for _, v in values]))
        finally:
            await conn.close()

    row = same_as_direct("binary types", lambda t: run(produce(t)))
    assert row == tuple(v for _, v in values)


def test_named_prepared_statements(target):
    async def main():
        conn = await connect(target)
        try:
            stmt = await conn.prepare("SELECT $1::int + $2::int8 AS total, $3::text || 'x' AS label")
            assert [p.name for p in stmt.get_parameters()] == ["int4", "int8", "text"]
            assert [(a.name, a.type.name) for a in stmt.get_attributes()] == [("total", "int8"), ("label", "text")]
            results = [tuple(await stmt.fetchrow(i, 10, str(i))) for i in range(20)]
            assert results == [(i + 10, f"{i}x") for i in range(20)]
            names = await conn.fetch("SELECT name FROM pg_prepared_statements")
            assert any(r["name"].startswith("__asyncpg_stmt_") for r in names)
            no_result = await conn.prepare("UPDATE pg_class SET relname = relname WHERE false")
            assert no_result.get_attributes() == ()
            with pytest.raises(asyncpg.PostgresSyntaxError):
                await conn.prepare("SELEC 1")
            with pytest.raises(asyncpg.UndefinedTableError):
                await conn.prepare("SELECT * FROM no_such_table")
            assert await stmt.fetchval(1, 1, "y") == 2
        finally:
            await conn.close()

    run(main())


def test_copy_in_and_out(target):
    async def main():
        conn = await connect(target)
        try:
            await conn.execute("CREATE TEMP TABLE people (id int, name text, born date, score numeric)")
            records = [(i, f"person {i} ü", datetime.date(1990, 1, 1) + datetime.timedelta(days=i),
                        decimal.Decimal(i) / 4) for i in range(5000)]
            status = await conn.copy_records_to_table("people", records=records)
            assert status == "COPY 5000"
            assert await conn.fetchval("SELECT sum(score) FROM people") == sum(r[3] for r in records)
            out = io.BytesIO()
            status = await conn.copy_from_query("SELECT id, name FROM people WHERE id < $1 ORDER BY id", 3,
                                                output=out, format="csv")
            assert status == "COPY 3"
            assert out.getvalue().decode() == "".join(f"{i},person {i} ü\n" for i in range(3))
            chunks = []

            async def collect(data: bytes) -> None:
                chunks.append(bytes(data))

            status = await conn.copy_from_table("people", output=collect, format="binary")
            assert status == "COPY 5000"
            assert b"".join(chunks).startswith(b"PGCOPY\n\xff\r\n\x00")
        finally:
            await conn.close()

    run(main())


def test_cursor_row_limits(target):
    async def main():
        conn = await connect(target)
        try:
            async with conn.transaction():
                cursor = await conn.cursor("SELECT g FROM generate_series(1, 1000) g")
                batches = [await cursor.fetch(7) for _ in range(3)]
                assert batches == [[(g,) for g in range(s, s + 7)] for s in (1, 8, 15)]
                await cursor.forward(100)
                assert await cursor.fetchrow() == (122,)
                rest = [r[0] async for r in conn.cursor("SELECT g FROM generate_series(1, 1000) g", prefetch=33)]
                assert rest == list(range(1, 1001))
            assert await conn.fetchval("SELECT 'after cursors'") == "after cursors"
        finally:
            await conn.close()

    run(main())


def test_timeout_cancels_server_query(target):
    app = f"it_asyncpg_cancel_{target.name}"

    async def main():
        conn = await connect(target, server_settings={"application_name": app})
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(conn.fetchval("SELECT pg_sleep(10)", timeout=0.5), 8)
            assert await asyncio.wait_for(conn.fetchval("SELECT 'usable'"), 8) == "usable"
            assert not conn.is_in_transaction()
        finally:
            await conn.close()

    run(main())
    # The sleep ended on the server: no backend of ours is still running it.
    target.pg.wait_no_backends(sleeping(app), 10)
