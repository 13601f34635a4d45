"""Hostile input on the client port: every case gets an ErrorResponse (or,
where PostgreSQL's own protocol has no room for one, a closed connection),
nothing crashes, the protocol-error counter moves, and the next ordinary
client is served.

- startup packets: huge and too short lengths, a missing terminator, an
  unknown protocol version, garbage instead of a packet;
- after startup: a message longer than proxy.max_message_size, a negative
  length, a 100 MB query above the limit (rejected from its header, without
  buffering it), a flood of Parse messages with distinct names (kept at
  under 1 KiB each up to proxy.max_prepared_statements, then FATAL 53400),
  and the same cap on named portals.
"""

from __future__ import annotations

import socket
import struct

import pytest

import rawwire as w
from cache_support import metric
from pgshelf_harness import PgShelf, pgshelf_sanitizers

MAX_MESSAGE = 16 * 1024 * 1024
# A sanitizer build's RSS is mostly shadow memory and quarantine: not checked.
RSS_CHECKED = not pgshelf_sanitizers()


@pytest.fixture(scope="module")
def hshelf(pg):
    shelf = PgShelf(pg, env={"PGSHELF_PROXY_MAX_MESSAGE_SIZE": str(MAX_MESSAGE)})
    yield shelf
    assert shelf.alive(), shelf.log_tail()
    assert shelf.stop() == 0


def answer_then_close(conn: w.Conn) -> list[tuple[bytes, bytes]]:
    """Every message until pgshelf closes the connection (bounded)."""
    messages = []
    try:
        for _ in range(100):
            messages.append(conn.recv())
    except (ConnectionError, OSError):
        return messages
    raise AssertionError(f"the connection stayed open after {messages}")


def still_serves(shelf: PgShelf) -> None:
    with w.Conn.connect(shelf.host, shelf.port) as conn:
        assert w.data_row(dict(conn.simple("SELECT 'fine'"))[b"D"]) == [b"fine"]
    assert shelf.alive()


def protocol_errors(shelf: PgShelf) -> float:
    return metric(shelf, "pgshelf_protocol_errors_total")


STARTUP_CASES = {
    "huge_length": struct.pack("!iI", 0x7FFFFFFF, 196608),
    "length_below_header": struct.pack("!iI", 4, 196608),
    "negative_length": struct.pack("!iI", -8, 196608),
    "missing_terminator": (lambda body: struct.pack("!i", len(body) + 4) + body)(
        struct.pack("!I", 196608) + b"user\0postgres\0database\0postgres"),
    "protocol_4": (lambda body: struct.pack("!i", len(body) + 4) + body)(
        struct.pack("!I", 4 << 16) + b"user\0postgres\0\0"),
    "http_request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("case", list(STARTUP_CASES))
def test_malformed_startup(hshelf, case):
    before = protocol_errors(hshelf)
    with w.Conn.open(hshelf.host, hshelf.port) as conn:
        conn.send(STARTUP_CASES[case])
        messages = answer_then_close(conn)
    assert [kind for kind, _ in messages] == [b"E"], messages
    fields = w.error_fields(messages[0][1])
    assert fields["S"] == "FATAL" and fields["C"] in ("08P01", "0A000"), fields
    assert protocol_errors(hshelf) > before or fields["C"] == "0A000"
    still_serves(hshelf)


def test_message_above_the_limit(hshelf):
    before = protocol_errors(hshelf)
    with w.Conn.connect(hshelf.host, hshelf.port) as conn:
        conn.send(b"Q" + struct.pack("!I", MAX_MESSAGE + 5))
        messages = answer_then_close(conn)
    assert [kind for kind, _ in messages] == [b"E"], messages
    assert w.error_fields(messages[0][1])["C"] in ("08P01", "54000")
    assert protocol_errors(hshelf) > before
    still_serves(hshelf)


def test_negative_message_length(hshelf):
    with w.Conn.connect(hshelf.host, hshelf.port) as conn:
        conn.send(b"Q" + struct.pack("!i", -100))
        messages = answer_then_close(conn)
    assert [kind for kind, _ in messages] == [b"E"], messages
    # As an unsigned length it is above the limit: "too large" (54000) is fair.
    assert w.error_fields(messages[0][1])["C"] in ("08P01", "54000")
    still_serves(hshelf)


def test_100_mb_query_above_the_limit_is_rejected_unbuffered(hshelf):
    rss_before = hshelf.rss_kib()
    sql = b"SELECT '" + b"x" * (100 * 1024 * 1024) + b"'\0"
    with w.Conn.connect(hshelf.host, hshelf.port) as conn:
        header = b"Q" + struct.pack("!I", len(sql) + 4)
        try:
            conn.sock.sendall(header + sql)
        except OSError:
            pass  # pgshelf answered and closed while the body was still on its way
        try:
            messages = answer_then_close(conn)
        except (ConnectionError, OSError):
            messages = []
    if messages:  # a reset can overtake the ErrorResponse on loopback
        assert [kind for kind, _ in messages] == [b"E"], messages
    if RSS_CHECKED:
        assert hshelf.rss_kib() < rss_before + 32 * 1024, "the oversized query was buffered"
    still_serves(hshelf)


def fatal_limit(conn: w.Conn) -> dict[str, str]:
    """The 53400 FATAL pgshelf answers when the statement/portal cap is hit, then the closed connection."""
    messages = answer_then_close(conn)
    errors = [w.error_fields(body) for kind, body in messages if kind == b"E"]
    assert errors, f"no ErrorResponse before the close: {messages}"
    fields = errors[-1]
    assert (fields["S"], fields["C"]) == ("FATAL", "53400"), fields
    assert "max_prepared_statements" in fields["M"], fields
    return fields


def test_parse_flood_is_capped(hshelf, pg):
    """Named statements up to the default cap (10,000) work at under 1 KiB of bookkeeping each; one more is FATAL."""
    rss_before = hshelf.rss_kib()
    errors_before = protocol_errors(hshelf)
    count = 10_000
    with w.Conn.connect(hshelf.host, hshelf.port, application_name="it_parse_flood") as conn:
        batch = 1000
        for start in range(0, count, batch):
            conn.send(*(w.parse(f"SELECT {i}::int AS n, 'some padding text' AS p", f"flood_{i}")
                        for i in range(start, start + batch)), w.sync())
            messages = conn.recv_until_ready(limit=batch + 10)
            assert [kind for kind, _ in messages].count(b"1") == batch, messages[-3:]
        # The last statements still work through pgshelf; re-parsing the
        # unnamed statement is not limited.
        conn.send(w.parse("SELECT 1"), w.bind(statement=f"flood_{count - 1}"), w.execute(), w.sync())
        messages = conn.recv_until_ready()
        assert w.data_row(dict(messages)[b"D"]) == [str(count - 1).encode(), b"some padding text"]
        grown_kib = hshelf.rss_kib() - rss_before  # must stay under 1 KiB per statement
        conn.send(w.parse("SELECT 'one too many'", "flood_extra"), w.sync())
        fatal_limit(conn)
    if RSS_CHECKED:
        assert grown_kib < count, f"pgshelf grew by {grown_kib} KiB for {count} prepared statements"
    assert protocol_errors(hshelf) == errors_before + 1
    pg.wait_no_backends("application_name = 'it_parse_flood'")
    still_serves(hshelf)


@pytest.fixture(scope="module")
def capped(pg):
    shelf = PgShelf(pg, env={"PGSHELF_PROXY_MAX_PREPARED_STATEMENTS": "3"})
    yield shelf
    assert shelf.alive(), shelf.log_tail()
    assert shelf.stop() == 0


def test_statement_cap_counts_what_the_session_holds(capped):
    with w.Conn.connect(capped.host, capped.port) as conn:
        conn.send(*(w.parse(f"SELECT {i}", f"s{i}") for i in range(3)), w.sync())
        assert w.kinds(conn.recv_until_ready()) == "111Z"
        # Redefining a held name is not a new one (PostgreSQL refuses it: 42P05).
        conn.send(w.parse("SELECT 9", "s0"), w.sync())
        messages = conn.recv_until_ready()
        assert w.error_fields(dict(messages)[b"E"])["C"] == "42P05"
        # Closing one makes room; SQL-level PREPARE is not counted.
        conn.send(w.close(b"S", "s0"), w.sync())
        assert w.kinds(conn.recv_until_ready()) == "3Z"
        assert b"E" not in dict(conn.simple("PREPARE sql_level AS SELECT 1"))
        conn.send(w.parse("SELECT 3", "s3"), w.bind(statement="s3"), w.execute(), w.sync())
        assert w.data_row(dict(conn.recv_until_ready())[b"D"]) == [b"3"]
        conn.send(w.parse("SELECT 4", "s4"), w.sync())
        fatal_limit(conn)
    still_serves(capped)


def test_portal_cap(capped):
    with w.Conn.connect(capped.host, capped.port) as conn:
        conn.simple("BEGIN")
        conn.send(w.parse("SELECT generate_series(1, 10)"),
                  *(w.bind(portal=f"p{i}") for i in range(3)), w.sync())
        assert w.kinds(conn.recv_until_ready()) == "1222Z"
        conn.send(w.execute(portal="p2", max_rows=1), w.sync())
        assert w.data_row(dict(conn.recv_until_ready())[b"D"]) == [b"1"]
        conn.send(w.bind(portal="p3"), w.sync())
        fatal_limit(conn)
    still_serves(capped)


def test_garbage_after_startup(hshelf):
    with w.Conn.connect(hshelf.host, hshelf.port) as conn:
        conn.send(b"\x00\x01\x02\x03\x04\x05\x06\x07")
        messages = answer_then_close(conn)
    assert messages and messages[-1][0] == b"E", messages
    assert w.error_fields(messages[-1][1])["C"] in ("08P01", "54000")
    still_serves(hshelf)


def test_connection_closed_mid_startup(hshelf):
    sock = socket.create_connection((hshelf.host, hshelf.port), timeout=10)
    sock.sendall(struct.pack("!i", 100)[:3])
    sock.close()
    still_serves(hshelf)
