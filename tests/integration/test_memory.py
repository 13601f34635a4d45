"""Bounded memory: back-pressure for a slow reader, small cost per idle connection.

- A ~1 GB result (1,000,000 rows of 1,000 bytes) is read by a raw-socket
  client that stops reading for several seconds early on, then drains it.
  While it pauses, the server backend must be blocked writing to its
  client (wait_event ClientWrite: back-pressure reached PostgreSQL).
  Every byte must arrive; through pgshelf, its RSS sampled throughout must
  stay below 64 MiB.
- Single messages far larger than any buffer, in both directions: a
  200 MB value in one DataRow, a 100 MB Bind parameter, 320 MB of COPY
  data sent as fast as possible; pgshelf's RSS stays below 64 MiB.
- 1,000 idle connections through pgshelf (PostgreSQL allows 1,100): the
  RSS growth per connection must be at most 64 KiB, and after they close
  pgshelf's descriptors return to their earlier count.

The RSS checks are about pgshelf only; the data and back-pressure checks
run directly too. A sanitizer build (PGSHELF_SANITIZE) only prints its RSS:
shadow memory, redzones and ASan's quarantine are no part of the budget.
"""

from __future__ import annotations

import concurrent.futures
import socket
import struct
import time

import pytest

import rawwire
from pgshelf_harness import RssSampler, pgshelf_sanitizers, wait_until

ROWS = 1_000_000
ROW_BYTES = 1000
PAUSE_SECONDS = 5
COPY_IN_ROWS = 320_000  # of 1,000 bytes, sent as 5,000 CopyData messages of 64 rows
PEAK_RSS_LIMIT_KIB = 64 * 1024
IDLE_CONNECTIONS = 1000
PER_CONNECTION_LIMIT_KIB = 64
RSS_CHECKED = not pgshelf_sanitizers()


@pytest.fixture(scope="module")
def pg_options():
    return {"settings": {"max_connections": IDLE_CONNECTIONS + 100, "shared_buffers": "128MB"}}


class RssWatch(RssSampler):
    """pgshelf's peak RSS while in the ``with`` block; no-op for direct targets."""

    def __init__(self, target) -> None:
        super().__init__(target.endpoint if target.is_proxy else None)

    def assert_bounded(self, min_samples: int = 1) -> None:
        if self.shelf:
            print(f"pgshelf peak RSS {self.peak_kib} KiB over {self.samples} samples")
            assert self.samples >= min_samples
            if RSS_CHECKED:
                assert self.peak_kib < PEAK_RSS_LIMIT_KIB, f"pgshelf peak RSS {self.peak_kib} KiB"


def drain_result(conn: rawwire.Conn) -> tuple[int, int, list[bytes]]:
    """Reads until ReadyForQuery; returns (DataRows, bytes of their first value, command tags).

    Parses in place from large reads: fast enough for a million rows.
    """
    buffer = conn.buffer
    rows = value_bytes = 0
    tags = []
    while True:
        offset, end = 0, len(buffer)
        while end - offset >= 5:
            kind = buffer[offset]
            (length,) = struct.unpack_from("!I", buffer, offset + 1)
            if end - offset < 1 + length:
                break
            body = offset + 5
            if kind == ord("D"):  # int16 column count, int32 value length, value
                rows += 1
                value_bytes += struct.unpack_from("!i", buffer, body + 2)[0]
            elif kind == ord("C"):
                tags.append(bytes(buffer[body:offset + 1 + length]))
            elif kind == ord("E"):
                raise rawwire.ServerError(rawwire.error_fields(bytes(buffer[body:offset + 1 + length])))
            elif kind == ord("Z"):
                del buffer[:offset + 1 + length]
                return rows, value_bytes, tags
            offset += 1 + length
        del buffer[:offset]
        chunk = conn.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("connection closed before ReadyForQuery")
        buffer += chunk


def test_slow_reader_large_result(target):
    app = f"it_slow_reader_{target.name}"
    backpressured = f"application_name = '{app}' AND wait_event = 'ClientWrite'"
    with RssWatch(target) as rss, rawwire.Conn.connect(target.host, target.port, application_name=app,
                                                       timeout=60) as conn:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        conn.send(rawwire.query(f"SELECT repeat('x', {ROW_BYTES}) FROM generate_series(1, {ROWS})"))
        # Read a little, then stop reading: the sender must stall, not buffer.
        assert conn.recv()[0] == b"T"
        for _ in range(100):
            assert conn.recv()[0] == b"D"
        assert len(target.pg.wait_for_backends(backpressured, 1, 15)) == 1
        time.sleep(PAUSE_SECONDS)
        assert target.pg.backends(backpressured)
        rows, value_bytes, tags = drain_result(conn)
    assert rows + 100 == ROWS
    assert value_bytes + 100 * ROW_BYTES == ROWS * ROW_BYTES
    assert tags == [f"SELECT {ROWS}\0".encode()]
    rss.assert_bounded(min_samples=PAUSE_SECONDS * 10)


def test_huge_single_messages_both_ways(target):
    """Messages far larger than any buffer: a 200 MB value, a 100 MB parameter, 320 MB of COPY data."""
    with RssWatch(target) as rss, rawwire.Conn.connect(target.host, target.port, timeout=120) as conn:
        conn.send(rawwire.query("SELECT repeat('v', 200000000)"))
        assert drain_result(conn) == (1, 200_000_000, [b"SELECT 1\0"])

        conn.send(rawwire.parse("SELECT length($1::text)"), rawwire.bind((b"p" * 100_000_000,)),
                  rawwire.execute(), rawwire.sync())
        replies = conn.recv_until_ready()
        assert rawwire.kinds(replies) == "12DCZ"
        assert rawwire.data_row(replies[2][1]) == [b"100000000"]

        assert rawwire.kinds(conn.simple("CREATE TEMP TABLE sink (t text)")) == "CZ"
        conn.send(rawwire.query("COPY sink FROM STDIN"))
        assert conn.recv()[0] == b"G"
        chunk = rawwire.copy_data((b"c" * 999 + b"\n") * 64)
        for _ in range(COPY_IN_ROWS // 64):
            conn.sock.sendall(chunk)
        conn.send(rawwire.copy_done())
        replies = conn.recv_until_ready()
        assert replies[0] == (b"C", f"COPY {COPY_IN_ROWS}\0".encode())
    rss.assert_bounded()


def open_idle(target, count: int, app: str) -> list[rawwire.Conn]:
    def connect(_):
        conn = rawwire.Conn.connect(target.host, target.port, application_name=app, timeout=60)
        assert rawwire.kinds(conn.simple("SELECT 1")) == "TDCZ"
        return conn

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(connect, range(count), timeout=300))


def test_idle_connections_cost(shelf, pg):
    # Warm up: threads, allocator arenas and TLS-free code paths are in place.
    for conn in open_idle(shelf, 32, "it_warmup"):
        conn.close()
    pg.wait_no_backends("application_name = 'it_warmup'", 30)
    fds_before = shelf.fd_count()
    rss_before = shelf.rss_kib()

    connections = open_idle(shelf, IDLE_CONNECTIONS, "it_idle")
    try:
        assert len(pg.backends("application_name = 'it_idle'")) == IDLE_CONNECTIONS
        time.sleep(1)
        rss_after = shelf.rss_kib()
        per_connection = (rss_after - rss_before) / IDLE_CONNECTIONS
        print(f"pgshelf RSS {rss_before} -> {rss_after} KiB: {per_connection:.1f} KiB per idle connection")
        if RSS_CHECKED:
            assert per_connection <= PER_CONNECTION_LIMIT_KIB, (
                f"{per_connection:.1f} KiB per idle connection (RSS {rss_before} -> {rss_after} KiB)")
        # All of them still answer.
        for conn in connections[::100]:
            assert rawwire.kinds(conn.simple("SELECT 2")) == "TDCZ"
    finally:
        for conn in connections:
            conn.close()
    pg.wait_no_backends("application_name = 'it_idle'", 60)
    wait_until(lambda: shelf.fd_count() <= fds_before, 15, 0.1, "pgshelf's descriptors to be closed")
