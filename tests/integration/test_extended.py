"""Startup and extended-protocol edge cases, checked message by message.

A raw wire client (rawwire.py) sends exact frontend sequences; the backend
messages received through pgshelf must be byte-for-byte those received
directly (after startup, too: authentication, ParameterStatus, all but
BackendKeyData), and their types must be the documented ones: errors in the
middle of a pipeline (the rest skipped until Sync, then the session
works), Execute with a row limit (PortalSuspended) within and across Syncs,
Describe of statements and portals answered before Sync when the client
sends Flush, named and unnamed statements and their Close, FunctionCall,
empty queries, COPY through Parse/Bind/Execute and CopyFail, several
simple Query messages sent without waiting.

Then the same situations through drivers: psycopg 3 pipeline mode with an
error in the middle, libpq's describe-prepared/describe-portal (via
psycopg's pq layer), and asyncpg executemany failing half-way.
"""

from __future__ import annotations

import asyncio
import struct

import asyncpg
import psycopg
import pytest

import rawwire as w
from pgshelf_harness import CONNECT_TIMEOUT

INT4PL_OID = 177  # int4pl(int4, int4), fixed in pg_proc.dat


def int4(n: int) -> bytes:
    return struct.pack("!i", n)


# Each scenario: (frontend messages to send in one write, number of ReadyForQuery to read,
#                 expected backend message types).
SCENARIOS = {
    "pipeline_error_skips_to_sync": (
        [w.parse("SELECT 1"), w.bind(), w.execute(),
         w.parse("SELECT 1/0"), w.bind(), w.execute(),
         w.parse("SELECT 3"), w.bind(), w.execute(), w.sync(),
         w.parse("SELECT 4"), w.bind(), w.execute(), w.sync()],
        2, "12DC1E" "Z" "12DCZ"),
    "syntax_error_mid_pipeline": (
        [w.parse("SELECT 'a'", "s1"), w.parse("SELEKT oops"), w.bind(statement="s1"), w.execute(), w.sync(),
         w.bind(statement="s1"), w.execute(), w.sync()],
        2, "1EZ" "2DCZ"),
    "execute_row_limit": (
        [w.parse("SELECT g FROM generate_series(1, 5) g"), w.bind(portal="p1"),
         w.execute("p1", 2), w.execute("p1", 2), w.execute("p1", 2), w.execute("p1", 2), w.sync()],
        1, "12DDsDDsDCCZ"),
    "portal_across_syncs_in_transaction": (
        [w.query("BEGIN"),
         w.parse("SELECT g, repeat('x', g) FROM generate_series(1, 7) g"), w.bind(portal="cur"),
         w.execute("cur", 3), w.sync(), w.execute("cur", 3), w.sync(), w.execute("cur", 0), w.sync(),
         w.close(b"P", "cur"), w.sync(), w.execute("cur", 1), w.sync(), w.query("ROLLBACK")],
        7, "CZ" "12DDDsZ" "DDDsZ" "DCZ" "3Z" "EZ" "CZ"),
    "describe_statement_and_portal": (
        [w.parse("SELECT $1::int AS a, $2::text AS b", "named", (23, 0)), w.describe(b"S", "named"),
         w.parse("INSERT INTO pg_temp.nothing VALUES (1)", "bad"),
         w.parse("UPDATE pg_class SET relname = relname WHERE $1", "upd"), w.describe(b"S", "upd"),
         w.bind((b"7", b"x"), "named", "portal"), w.describe(b"P", "portal"), w.execute("portal"), w.sync()],
        1, "1tT" "E" "Z"),
    "describe_no_data_and_flush": (
        [w.parse("UPDATE pg_class SET relname = relname WHERE $1", "upd"), w.describe(b"S", "upd"), w.flush()],
        0, "1tn"),
    "named_and_unnamed_statements": (
        [w.parse("SELECT 'named'", "a"), w.parse("SELECT 'unnamed one'"), w.sync(),
         w.bind(statement="a"), w.execute(), w.bind(), w.execute(), w.sync(),
         w.parse("SELECT 'unnamed two'"), w.bind(), w.execute(), w.sync(),
         w.parse("SELECT 'again'", "a"), w.sync(),
         w.close(b"S", "a"), w.close(b"S", "never_existed"), w.sync(),
         w.bind(statement="a"), w.execute(), w.sync()],
        6, "11Z" "2DC2DCZ" "12DCZ" "EZ" "33Z" "EZ"),
    "function_call": (
        [w.function_call(INT4PL_OID, (int4(40), int4(2))),
         w.function_call(INT4PL_OID, (b"1000", b"-1"), arg_format=0, result_format=0),
         w.function_call(INT4PL_OID, (int4(2**31 - 1), int4(1)))],
        3, "VZ" "VZ" "EZ"),
    "empty_queries": (
        [w.query(""), w.query(";"), w.parse(""), w.bind(), w.describe(b"P"), w.execute(), w.sync()],
        3, "IZ" "IZ" "12nIZ"),
    "simple_query_error_mid_message": (
        [w.query("SELECT 1; SELECT 1/0; SELECT 3"), w.query("SELECT 'next'")],
        2, "TDCEZ" "TDCZ"),
    "extended_copy_in_and_out": (
        [w.query("CREATE TEMP TABLE ct (a int, b text)"),
         w.parse("COPY ct FROM STDIN"), w.bind(), w.execute(),
         w.copy_data(b"1\tone\n2\ttwo\n"), w.copy_data(b"3\tthree\n"), w.copy_done(), w.sync(),
         w.parse("COPY (SELECT * FROM ct ORDER BY a) TO STDOUT"), w.bind(), w.execute(), w.sync(),
         w.query("COPY ct FROM STDIN"), w.frame(b"f", w.cstr("client gave up")),
         w.query("SELECT count(*) FROM ct")],
        5, "CZ" "12GCZ" "12HdddcCZ" "GEZ" "TDCZ"),
    "error_in_transaction_block": (
        [w.query("BEGIN"), w.parse("SELECT 1/0"), w.bind(), w.execute(), w.sync(),
         w.parse("SELECT 1"), w.bind(), w.execute(), w.sync(), w.query("ROLLBACK"), w.query("SELECT 'clean'")],
        5, "CZ" "1EZ" "EZ" "CZ" "TDCZ"),
    "pipelined_simple_queries": (
        [w.query(f"SELECT {i}, repeat('y', {i * 100})") for i in range(20)],
        20, "TDCZ" * 20),
}


def run_scenario(target, name: str) -> list[tuple[bytes, bytes]]:
    messages, ready_count, _ = SCENARIOS[name]
    with w.Conn.connect(target.host, target.port) as conn:
        conn.send(*messages)
        received = []
        for _ in range(ready_count):
            received += conn.recv_until_ready()
        if ready_count == 0:  # answered on Flush, before any Sync
            received = conn.recv_n(len(SCENARIOS[name][2]))
        # The session is still in step: a plain query works afterwards.
        assert w.kinds(conn.simple("SELECT 'still in step'")) == "TDCZ"
    return received


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_raw_sequence(target, same_as_direct, name):
    received = same_as_direct(name, lambda t: run_scenario(t, name))
    assert w.kinds(received) == SCENARIOS[name][2]


def test_startup_messages(target, same_as_direct):
    """Authentication, ParameterStatus set and order, ReadyForQuery: as from PostgreSQL.

    Only BackendKeyData may differ (pgshelf hands out its own key); it must still be there.
    """

    def produce(t):
        with w.Conn.open(t.host, t.port) as conn:
            messages = conn.startup("postgres", "postgres", application_name="it_startup", DateStyle="German")
        assert [kind for kind, _ in messages].count(b"K") == 1
        return [(kind, body) for kind, body in messages if kind != b"K"]

    messages = same_as_direct("startup", produce)
    assert messages[0] == (b"R", struct.pack("!I", 0))
    parameters = dict(tuple(body.split(b"\0")[:2]) for kind, body in messages if kind == b"S")
    assert parameters[b"application_name"] == b"it_startup"
    assert parameters[b"DateStyle"] == b"German, DMY"
    assert messages[-1] == (b"Z", b"I")


def test_raw_details(target):
    """Spot checks of message contents on top of the type sequences."""
    received = run_scenario(target, "function_call")
    assert received[0] == (b"V", struct.pack("!i", 4) + int4(42))
    assert received[2] == (b"V", struct.pack("!i", 3) + b"999")
    assert w.error_fields(received[4][1])["C"] == "22003"  # integer out of range

    received = run_scenario(target, "execute_row_limit")
    assert [w.data_row(b)[0] for k, b in received if k == b"D"] == [b"1", b"2", b"3", b"4", b"5"]
    assert [b for k, b in received if k == b"C"] == [b"SELECT 1\0", b"SELECT 0\0"]

    received = run_scenario(target, "pipeline_error_skips_to_sync")
    assert w.error_fields(dict(received)[b"E"])["C"] == "22012"
    assert [b for k, b in received if k == b"Z"] == [b"I", b"I"]

    received = run_scenario(target, "error_in_transaction_block")
    assert [b for k, b in received if k == b"Z"] == [b"T", b"E", b"E", b"I", b"I"]

    received = run_scenario(target, "describe_statement_and_portal")
    assert received[1] == (b"t", struct.pack("!HII", 2, 23, 25))
    assert w.error_fields(received[3][1])["C"] == "42P01"


def test_psycopg3_pipeline_error_in_the_middle(target):
    with psycopg.connect(target.dsn(), connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE pe (v int)")
        with conn.pipeline() as pipeline:
            before = conn.execute("INSERT INTO pe VALUES (1)")
            failing = conn.execute("SELECT 1/0")
            after = None
            # psycopg raises at whichever call first reads the error: the
            # next execute() if the result is already in, else sync().
            with pytest.raises(psycopg.errors.DivisionByZero):
                after = conn.execute("INSERT INTO pe VALUES (2)")
                pipeline.sync()
            if after is None:
                # The batch still ends at the next Sync; psycopg reports what
                # the server skipped until then as aborted.
                with pytest.raises(psycopg.errors.PipelineAborted):
                    conn.execute("INSERT INTO pe VALUES (2)")
                    pipeline.sync()
            # Executed, failed, skipped until Sync:
            assert (before.statusmessage, failing.statusmessage) == ("INSERT 0 1", None)
            if after is not None:
                assert after.pgresult is None
            next_one = conn.execute("SELECT array_agg(v) FROM pe")
        # Everything up to the Sync was one implicit transaction: the first INSERT was rolled back too.
        assert next_one.fetchone() == (None,)
        with conn.pipeline():
            results = [conn.execute("SELECT %s::int", (i,)) for i in range(50)]
        assert [r.fetchone()[0] for r in results] == list(range(50))


def test_libpq_describe_prepared_and_portal(target):
    with psycopg.connect(target.dsn(), connect_timeout=CONNECT_TIMEOUT) as conn:
        pgconn = conn.pgconn
        result = pgconn.prepare(b"st", b"SELECT $1::int8 AS big, $2::bytea AS raw, now() AS ts")
        assert result.status == psycopg.pq.ExecStatus.COMMAND_OK
        desc = pgconn.describe_prepared(b"st")
        assert [desc.param_type(i) for i in range(desc.nparams)] == [20, 17]
        assert [(desc.fname(i), desc.ftype(i)) for i in range(desc.nfields)] == [
            (b"big", 20), (b"raw", 17), (b"ts", 1184)]
        assert pgconn.exec_(b"BEGIN").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert pgconn.exec_(b"DECLARE c CURSOR FOR SELECT 1 AS one, 'x'::text AS two").status == \
            psycopg.pq.ExecStatus.COMMAND_OK
        portal = pgconn.describe_portal(b"c")
        assert [(portal.fname(i), portal.ftype(i)) for i in range(portal.nfields)] == [(b"one", 23), (b"two", 25)]
        missing = pgconn.describe_prepared(b"nope")
        assert missing.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"26000"
        assert pgconn.transaction_status == psycopg.pq.TransactionStatus.INERROR
        pgconn.exec_(b"ROLLBACK")
        result = pgconn.exec_prepared(b"st", [b"5", b"\\x00ff"])
        assert (result.get_value(0, 0), result.get_value(0, 1)) == (b"5", b"\\x00ff")


def test_asyncpg_executemany_error_half_way(target):
    async def main():
        conn = await asyncpg.connect(target.dsn(), timeout=CONNECT_TIMEOUT)
        try:
            await conn.execute("CREATE TEMP TABLE em (v int CHECK (v < 50))")
            with pytest.raises(asyncpg.CheckViolationError):
                async with conn.transaction():
                    await conn.executemany("INSERT INTO em VALUES ($1)", [(i,) for i in range(100)])
            assert await conn.fetchval("SELECT count(*) FROM em") == 0
            await conn.executemany("INSERT INTO em VALUES ($1)", [(i,) for i in range(40)])
            assert await conn.fetchval("SELECT count(*) FROM em") == 40
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), 60))
