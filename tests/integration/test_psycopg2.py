"""psycopg2 (libpq, simple protocol with client-side interpolation) through pgshelf.

Covers: interpolated parameters of many types, server-side (named) cursors
fetched in itersize batches, COPY in and out with copy_expert, notices,
LISTEN/NOTIFY between two sessions, ParameterStatus after SET, transaction
status after an error and after ROLLBACK, large bytea round trips.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import io
import select
import time
import uuid

import psycopg2
import psycopg2.extensions as ext
import psycopg2.extras
import pytest
from pgshelf_harness import CONNECT_TIMEOUT


@pytest.fixture
def conn(target):
    connection = psycopg2.connect(target.dsn(), connect_timeout=CONNECT_TIMEOUT, application_name="it_psycopg2")
    yield connection
    connection.close()


def test_client_side_interpolation(conn, same_as_direct):
    values = (42, -7.25, decimal.Decimal("12345678901234567890.123"), "it's \"quoted\" ünïcödé 😀", None, True,
              datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 2, 3, 4, 5, 678901),
              "12345678-1234-5678-1234-567812345678", [1, 2, None], b"\x00\x01\xff", {"k": [1, "v"]})

    def produce(target):
        psycopg2.extras.register_uuid()
        with psycopg2.connect(target.dsn(), connect_timeout=CONNECT_TIMEOUT) as c, c.cursor() as cur:
            cur.execute("SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s::uuid, %s, %s, %s::jsonb",
                        values[:-1] + (psycopg2.extras.Json(values[-1]),))
            row = cur.fetchone()
        c.close()
        return row

    row = same_as_direct("interpolation", produce)
    assert row[:4] == values[:4]
    assert row[4] is None and row[5] is True
    assert row[6:9] == (values[6], values[7], uuid.UUID(values[8]))
    assert row[9] == [1, 2, None] and bytes(row[10]) == values[10] and row[11] == values[11]


def test_named_cursor_itersize(conn):
    with conn:
        cur = conn.cursor("big_cursor")
        cur.itersize = 333
        cur.execute("SELECT g, md5(g::text) FROM generate_series(1, 10000) g ORDER BY g")
        total, count, last = 0, 0, None
        for n, digest in cur:
            total += n
            count += 1
            last = digest
            if count == 1:
                with conn.cursor() as side:
                    side.execute("SELECT name, is_holdable FROM pg_cursors")
                    assert side.fetchall() == [("big_cursor", False)]
        cur.close()
    assert (count, total, last) == (10000, 50005000, "b7a782741f667201b54880c925faec4b")


def test_copy_expert_in_and_out(conn):
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE t (id int, name text, note text)")
        data = "".join(f"{i},name {i},\"note, with comma {i}\"\n" for i in range(1, 5001))
        cur.copy_expert("COPY t FROM STDIN WITH (FORMAT csv)", io.StringIO(data))
        assert cur.rowcount == 5000
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT * FROM t ORDER BY id) TO STDOUT WITH (FORMAT csv)", out)
        assert out.getvalue() == data
        out = io.BytesIO()
        cur.copy_expert("COPY t TO STDOUT WITH (FORMAT binary)", out)
        assert out.getvalue().startswith(b"PGCOPY\n\xff\r\n\x00") and len(out.getvalue()) > 100000
        with pytest.raises(psycopg2.errors.InvalidTextRepresentation):
            cur.copy_expert("COPY t FROM STDIN WITH (FORMAT csv)", io.StringIO("1,a,b\nx,y,z\n"))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchone() == (5000,)


def test_notices(conn):
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DO $$ BEGIN RAISE NOTICE 'first %', 1; RAISE WARNING 'second'; END $$")
        cur.execute("SELECT 'after notices'")
        assert cur.fetchone() == ("after notices",)
    assert conn.notices == ["NOTICE:  first 1\n", "WARNING:  second\n"]


def test_listen_notify_between_sessions(target, conn):
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('LISTEN "it channel"')
    sender = psycopg2.connect(target.dsn(), connect_timeout=CONNECT_TIMEOUT)
    sender.autocommit = True
    try:
        with sender.cursor() as cur:
            for i in range(3):
                cur.execute("SELECT pg_notify('it channel', %s)", (f"message {i} ü",))
    finally:
        sender.close()
    received = []
    deadline = time.monotonic() + 10
    while len(received) < 3 and time.monotonic() < deadline:
        select.select([conn], [], [], 0.5)
        conn.poll()
        while conn.notifies:
            received.append(conn.notifies.pop(0))
    assert [(n.channel, n.payload) for n in received] == [("it channel", f"message {i} ü") for i in range(3)]


def test_parameter_status_and_transaction_status(conn):
    assert conn.info.parameter_status("server_version").startswith("15")
    assert conn.info.parameter_status("client_encoding") == "UTF8"
    assert conn.info.parameter_status("application_name") == "it_psycopg2"
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET application_name = 'changed by SET'")
        cur.execute("SET TIME ZONE 'Asia/Tokyo'")
    assert conn.info.parameter_status("application_name") == "changed by SET"
    assert conn.info.parameter_status("TimeZone") == "Asia/Tokyo"

    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert conn.info.transaction_status == ext.TRANSACTION_STATUS_INTRANS
        with pytest.raises(psycopg2.errors.DivisionByZero):
            cur.execute("SELECT 1/0")
        assert conn.info.transaction_status == ext.TRANSACTION_STATUS_INERROR
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
            cur.execute("SELECT 2")
    conn.rollback()
    assert conn.info.transaction_status == ext.TRANSACTION_STATUS_IDLE
    with conn.cursor() as cur:
        cur.execute("SELECT 3")
        assert cur.fetchone() == (3,)


def test_large_bytea_round_trip(conn):
    payload = bytes(range(256)) * 40000  # 10 MB
    with conn, conn.cursor() as cur:
        cur.execute("SELECT %s::bytea, md5(%s::bytea)", (payload, payload))
        value, digest = cur.fetchone()
    assert bytes(value) == payload
    assert digest == hashlib.md5(payload).hexdigest()
