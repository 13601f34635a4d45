"""Redis down or slow: fall back to PostgreSQL, no client errors, fail closed.

- Redis killed (SIGKILL) in the middle of a concurrent workload: no client
  sees an error or a wrong row, every read after the kill reaches
  PostgreSQL; Redis restarted on the same port: hits
  resume (pg_stat_statements), rows still right.
- Redis paused (SIGSTOP) while a write goes through pgshelf: the write's
  invalidation times out: the client gets its answer while Redis is still
  stopped, without an error; after SIGCONT the old entry is still in Redis, yet it is never served.
- Redis killed, a write through pgshelf, Redis restarted from a snapshot
  taken before the write (so the stale entry, its version and the rule
  generation are all back, exactly as before the write): the lost
  invalidation must still keep the old entry from being served.
"""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from cache_support import (ClientThreads, connect, counter, poll, query, redis, redis_server, reaches_server,
                           served_from_cache, start_shelf, wait_for_hit, write_rules)

__all__ = ["counter", "redis", "redis_server"]

RULES = """
[[cache]]
name  = "stock"
query = "SELECT sku, qty, label FROM out_stock WHERE sku = $1"
key   = "stock:{sku}"
ttl   = "300s"

[[invalidate]]
name  = "stock_set"
query = "UPDATE out_stock SET qty = $1 WHERE sku = $2"
keys  = ["stock:{sku}"]
"""

READ = "SELECT sku, qty, label FROM out_stock WHERE sku = %s"
WRITE = "UPDATE out_stock SET qty = %s WHERE sku = %s"
PATTERN = "SELECT%out_stock%"
# A statement that waited for a stopped Redis instead of timing out would
# hang until SIGCONT; this only bounds how long the test waits to see that.
HANG = 30.0

READ_ONLY_SKUS = range(1, 21)  # never written: their rows are known
WRITTEN_SKUS = range(21, 41)  # written by the workload


@pytest.fixture(scope="module")
def oshelf(pg, redis_server, tmp_path_factory):
    pg.psql("""
        CREATE TABLE out_stock (sku int PRIMARY KEY, qty int NOT NULL, label text NOT NULL);
        INSERT INTO out_stock SELECT i, i * 10, 'item ' || i FROM generate_series(1, 100) AS i;
    """)
    rules = write_rules(tmp_path_factory.mktemp("rules"), RULES)
    proxy = start_shelf(pg, redis_server, rules)
    yield proxy
    proxy.stop()


def qty(conn, sku: int) -> int:
    rows = query(conn, READ, (sku,))
    assert len(rows) == 1
    return rows[0][1]


def completes(what: str, action):
    """Runs ``action`` (while Redis is down or stopped) and returns its result; fails if it hangs."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = action()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG)
    assert not worker.is_alive(), f"{what} did not complete while Redis was unavailable (waiting on Redis?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class Workload(ClientThreads):
    """Client threads through pgshelf: reads of known rows, and writes they check themselves."""

    def run(self, index: int) -> None:
        try:
            conn = connect(self.dsn)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"thread {index} connect: {e!r}")
            return
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                sku = READ_ONLY_SKUS[(index * 7 + n) % len(READ_ONLY_SKUS)]
                try:
                    rows = query(conn, READ, (sku,))
                    if rows != [(sku, sku * 10, f"item {sku}")]:
                        self.errors.append(f"thread {index}: sku {sku} read {rows}")
                    if n % 5 == 0:
                        # Each thread owns its written skus: it knows the value it wrote last.
                        written = WRITTEN_SKUS[index * 5 + (n // 5) % 5]
                        value = n
                        query(conn, WRITE, (value, written))
                        got = query(conn, READ, (written,))
                        if got[0][1] != value:
                            self.errors.append(f"thread {index}: wrote qty {value} for sku {written}, read {got}")
                except psycopg2.Error as e:
                    self.errors.append(f"thread {index}: {type(e).__name__}: {e}".strip())
                    conn.close()
                    conn = connect(self.dsn)
                with self.lock:
                    self.statements += 1 if n % 5 else 3
        finally:
            conn.close()


def test_redis_killed_mid_workload(pg, oshelf, redis, counter):
    conn = connect(oshelf.dsn())
    try:
        wait_for_hit(counter, PATTERN, lambda: qty(conn, 1), "sku 1 before the outage")
        with Workload(oshelf.dsn()) as load:
            poll(lambda: load.statements > 200, 20, "the workload to get going")
            redis.kill()
            killed_at = load.statements
            poll(lambda: load.statements > killed_at + 300, 30, "the workload to run on without Redis")
        assert not load.errors, f"{len(load.errors)} client errors around the kill, first: {load.errors[:5]}"
        # With the workload stopped: every read reaches PostgreSQL.
        reads = reaches_server(counter, PATTERN, lambda: completes("read with Redis down", lambda: qty(conn, 2)),
                               "reads with Redis killed", times=10)
        assert reads == [20] * 10
        with Workload(oshelf.dsn()) as load:
            poll(lambda: load.statements > 200, 20, "the workload to run with Redis still down")
            redis.start()
            restarted_at = load.statements
            poll(lambda: load.statements > restarted_at + 300, 30, "the workload to run on after the restart")
        assert not load.errors, f"{len(load.errors)} client errors around the restart, first: {load.errors[:5]}"
        # Hits resume (the circuit breaker probes again within its backoff).
        assert wait_for_hit(counter, PATTERN, lambda: qty(conn, 3), "sku 3 after Redis restarted", timeout=20) == 30
        assert served_from_cache(counter, PATTERN, lambda: qty(conn, 3), "sku 3 after the restart") == [30] * 3
    finally:
        conn.close()


def test_redis_paused_during_a_write(pg, oshelf, redis, counter):
    reader, writer, direct = connect(oshelf.dsn()), connect(oshelf.dsn()), connect(pg.dsn())
    try:
        assert wait_for_hit(counter, PATTERN, lambda: qty(reader, 50), "sku 50") == 500
        entries_before = len(redis.command("KEYS", "pgshelf:{stock:50}:stock:*"))
        assert entries_before >= 1, "no cache entry for sku 50 in Redis (test premise)"
        redis.pause()
        try:
            completes("UPDATE through pgshelf with Redis paused", lambda: query(writer, WRITE, (5050, 50)))
            assert qty(direct, 50) == 5050
            got = completes("read with Redis paused", lambda: qty(reader, 50))
            assert got == 5050, f"read during the pause got {got}"
        finally:
            redis.resume()
        # The old entry is still in Redis ...
        assert len(redis.command("KEYS", "pgshelf:{stock:50}:stock:*")) >= 1
        # ... and is never served: poll through the recovery until hits resume.
        deadline = time.monotonic() + 20
        while True:
            got, seen = counter.delta(PATTERN, lambda: qty(reader, 50))
            assert got == 5050, f"stale value {got} served after Redis came back (the write set 5050)"
            if seen == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert seen == 0, "hits did not resume within 20s after Redis came back"
    finally:
        for c in (reader, writer, direct):
            c.close()


def test_lost_invalidation_with_the_old_entry_restored(pg, oshelf, redis, counter):
    """Redis restarts from a snapshot taken before the write: only the fail-closed rule prevents a stale hit."""
    reader, writer = connect(oshelf.dsn()), connect(oshelf.dsn())
    try:
        assert wait_for_hit(counter, PATTERN, lambda: qty(reader, 60), "sku 60") == 600
        assert redis.command("SAVE") == "OK"
        redis.kill()
        completes("UPDATE through pgshelf with Redis down", lambda: query(writer, WRITE, (6060, 60)))
        assert completes("read with Redis down", lambda: qty(reader, 60)) == 6060
        redis.start()  # loads the snapshot: the old entry is valid by its own version and generations
        assert len(redis.command("KEYS", "pgshelf:{stock:60}:stock:*")) >= 1, "snapshot not restored (test premise)"
        deadline = time.monotonic() + 20
        reads = 0
        while True:
            got, seen = counter.delta(PATTERN, lambda: qty(reader, 60))
            reads += 1
            assert got == 6060, f"read {reads} after the restart served the stale value {got} (the write set 6060)"
            if seen == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert seen == 0, "hits did not resume within 20s after Redis came back"
        # A new connection too.
        fresh = connect(oshelf.dsn())
        try:
            assert qty(fresh, 60) == 6060
        finally:
            fresh.close()
    finally:
        reader.close()
        writer.close()
