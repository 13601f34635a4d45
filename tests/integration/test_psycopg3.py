"""psycopg 3 (extended protocol, server-side binding) through pgshelf.

Covers: parameters bound on the server, named prepared statements
(``prepare=True``, visible in pg_prepared_statements), pipeline mode with
many statements before one Sync, binary results, COPY in/out in text and
binary, server cursors, LISTEN/NOTIFY via ``conn.notifies()``, and
ParameterStatus/transaction status bookkeeping.
"""

from __future__ import annotations

import datetime
import decimal
import uuid

import psycopg
import pytest
from psycopg import pq

from pgshelf_harness import CONNECT_TIMEOUT, wait_until


@pytest.fixture
def conn(target):
    with psycopg.connect(target.dsn(), connect_timeout=CONNECT_TIMEOUT, autocommit=True) as connection:
        yield connection


def test_server_side_binding(conn):
    values = (42, 2**40, decimal.Decimal("-1.50"), "tab\tquote' ü 😀", None, True, datetime.date(2000, 1, 1),
              uuid.UUID("00000000-0000-0000-0000-00000000abcd"), b"\x00\xffbin", [1, None, 3])
    row = conn.execute("SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s", values).fetchone()
    assert row == values
    assert conn.execute("SELECT %s::int + %s::int", (40, 2)).fetchone() == (42,)
    # Server-side binding: the text was sent with $n placeholders.
    assert conn.execute("SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone() == (
        "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()",)
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        conn.execute("SELECT %s::int", ("not a number",))
    assert conn.execute("SELECT 'still fine'").fetchone() == ("still fine",)


def test_prepared_statements(conn):
    query = "SELECT %s::int * 2 AS doubled, %s::text AS label"
    for i in range(5):
        assert conn.execute(query, (i, f"n{i}"), prepare=True).fetchone() == (i * 2, f"n{i}")
    names = conn.execute("SELECT name, statement FROM pg_prepared_statements").fetchall()
    assert [s for _, s in names] == ["SELECT $1::int * 2 AS doubled, $2::text AS label"]
    assert names[0][0].startswith("_pg3_")
    # prepare=False keeps using the unnamed statement.
    assert conn.execute("SELECT %s::int + 1", (1,), prepare=False).fetchone() == (2,)
    assert len(conn.execute("SELECT name FROM pg_prepared_statements").fetchall()) == 1
    conn.execute("DEALLOCATE ALL")
    assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)


def test_pipeline_many_statements(conn):
    conn.execute("CREATE TEMP TABLE pipe (id int PRIMARY KEY, v text)")
    with conn.pipeline() as pipeline:
        for i in range(500):
            conn.execute("INSERT INTO pipe VALUES (%s, %s)", (i, f"value {i}"))
        cursors = [conn.execute("SELECT v FROM pipe WHERE id = %s", (i,)) for i in range(0, 500, 50)]
        pipeline.sync()
        assert [c.fetchone()[0] for c in cursors] == [f"value {i}" for i in range(0, 500, 50)]
        totals = conn.execute("SELECT count(*), sum(id) FROM pipe")
    assert totals.fetchone() == (500, sum(range(500)))


def test_binary_results(conn, same_as_direct):
    def produce(target):
        with psycopg.connect(target.dsn(), connect_timeout=CONNECT_TIMEOUT) as c:
            cur = c.cursor(binary=True)
            cur.execute("SELECT 1::int2, 2::int4, 3::int8, 1.5::float8, 'txt'::text, '\\x01ff'::bytea, "
                        "'2024-02-29 12:00:00+00'::timestamptz, ARRAY[1, 2]::int4[], '{\"a\": 1}'::jsonb, "
                        "12.345::numeric, NULL::int")
            assert cur.pgresult.fformat(0) == pq.Format.BINARY
            return cur.fetchone()

    row = same_as_direct("binary", produce)
    assert row[:6] == (1, 2, 3, 1.5, "txt", b"\x01\xff")
    assert row[6] == datetime.datetime(2024, 2, 29, 12, tzinfo=datetime.timezone.utc)
    assert row[7:] == ([1, 2], {"a": 1}, decimal.Decimal("12.345"), None)


def test_copy_text_and_binary(conn):
    conn.execute("CREATE TEMP TABLE c (id int, name text, data bytea)")
    rows = [(i, f"name {i} ü", bytes([i % 256]) * 10) for i in range(3000)]
    with conn.cursor() as cur:
        with cur.copy("COPY c FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        with cur.copy("COPY c FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(["int4", "text", "bytea"])
            for row in rows:
                copy.write_row((row[0] + 3000, row[1], row[2]))
        assert conn.execute("SELECT count(*), sum(id) FROM c").fetchone() == (6000, sum(range(6000)))
        with cur.copy("COPY (SELECT * FROM c WHERE id < 3000 ORDER BY id) TO STDOUT") as copy:
            copy.set_types(["int4", "text", "bytea"])
            assert list(copy.rows()) == rows
        with cur.copy("COPY (SELECT * FROM c WHERE id >= 3000 ORDER BY id) TO STDOUT (FORMAT binary)") as copy:
            copy.set_types(["int4", "text", "bytea"])
            assert [(i - 3000, n, bytes(d)) for i, n, d in copy.rows()] == rows


def test_server_cursor(conn):
    with conn.transaction():
        with conn.cursor(name="server_side") as cur:
            cur.itersize = 100
            cur.execute("SELECT g FROM generate_series(1, 1000) g")
            assert cur.fetchmany(10) == [(g,) for g in range(1, 11)]
            cur.scroll(500, mode="absolute")
            assert cur.fetchone() == (501,)
            assert sum(g for (g,) in cur) == sum(range(502, 1001))


def test_notifies(target, conn):
    conn.execute("LISTEN it_chan")
    with psycopg.connect(target.dsn(), connect_timeout=CONNECT_TIMEOUT, autocommit=True) as other:
        other.execute("NOTIFY it_chan, 'one'")
        other.execute("NOTIFY it_chan, 'two'")
    received = []
    conn.add_notify_handler(lambda n: received.append((n.channel, n.payload)))

    def both_received() -> bool:
        # psycopg 3.1's notifies() has no timeout: let queries pick them up instead.
        conn.execute("SELECT 1")
        return len(received) >= 2

    wait_until(both_received, 60, 0.1, "notifications")
    assert received == [("it_chan", "one"), ("it_chan", "two")]


def test_transaction_status(conn):
    conn.autocommit = False
    conn.execute("SELECT 1")
    assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
    with pytest.raises(psycopg.errors.UndefinedTable):
        conn.execute("SELECT * FROM no_such_table")
    assert conn.info.transaction_status == pq.TransactionStatus.INERROR
    conn.rollback()
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    conn.execute("SET search_path = pg_catalog, public")
    assert conn.info.parameter_status("search_path") is None  # not a GUC_REPORT setting
    conn.execute("SET DateStyle = 'German'")
    assert conn.info.parameter_status("DateStyle") == "German, DMY"
    assert conn.execute("SELECT '2024-02-29'::date::text").fetchone() == ("29.02.2024",)
    conn.rollback()
    assert conn.info.parameter_status("DateStyle") == "ISO, MDY"
