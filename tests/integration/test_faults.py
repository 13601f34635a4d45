"""Fault injection: real PostgreSQL, Redis and clients on 127.0.0.1, each
fault injected into a running process, each wait bounded, no timing
assertions. What the other files already check is not repeated here
(docs/reliability.md lists every scenario and the test that covers it).

PostgreSQL (a server of this module's own; each case runs directly and
through pgshelf, and the client must receive what PostgreSQL sends):
- restarted (fast or immediate shutdown) or crashing (a backend SIGKILLed,
  crash recovery) while a query runs: the client gets PostgreSQL's own
  FATAL / WARNING 57P01 / 57P02 before the connection closes, not a bare
  close; while PostgreSQL is down, a new client gets FATAL 08006 from
  pgshelf; afterwards new sessions work and pgshelf is alive;
- restarted in the middle of a transaction that has written (idle in it,
  or running a statement in it): FATAL 57P01, the write is not committed
  (checked directly), a driver's COMMIT fails.

Clients (the module's PostgreSQL, directly and through pgshelf):
- stops reading a large result (PostgreSQL blocked in ClientWrite, pgshelf's
  RSS sampled meanwhile stays within a small bound), then vanishes (FIN or
  RST): the server backend ends;
- vanishes in COPY FROM STDIN, after whole CopyData frames (the rows have
  reached the server: pg_stat_progress_copy) or inside one: the backend
  ends, no row is there;
- vanishes in a transaction that has written and holds a row lock
  (Terminate, close, RST, or while a statement runs): the backend ends, the
  lock is free, the write is rolled back, a new session starts idle.

Connection churn (pgshelf with caching on): 3,000 connect/disconnect
cycles mixing clean Terminate, close or RST after startup, close during
startup, close mid-query, mid-extended-batch and during a cacheable
lookup: every cycle behaves, afterwards pgshelf's descriptors are back at
their baseline, its RSS has grown by little, its connection gauges are 0,
no server backend is left and no cancel key is left in Redis.

With caching on (Redis faults; clients vanishing around cached reads and writes):
- paused (SIGSTOP: calls time out instead of failing fast) under a
  workload of reads and writes, autocommit and in transactions, then
  resumed: no client error, every read returns the last committed value
  (each writer reads its own writes back), hits resume, no stale hit;
- paused, or killed and restarted from a snapshot, between a
  transaction's write and its COMMIT, after another session has cached
  the pre-commit value: COMMIT succeeds, the lost invalidation is never
  answered with the old value, hits resume;
- a client populating an entry vanishes while another waits for the same
  entry: the other gets the right rows, the entry is cached afterwards;
- a client sends COMMIT (after another session cached the pre-commit
  value) or an autocommit UPDATE, and closes before the answer: whatever
  PostgreSQL decided, no later read returns anything else.

Figures (durations, RSS, descriptors, statement counts) are printed with
the prefix ``figure:``; run pytest with ``-s`` to see them.
"""

from __future__ import annotations

import concurrent.futures
import os
import resource
import signal
import socket
import struct
import time

import psycopg2
import pytest

import rawwire as w
from cache_support import (ClientThreads, connect, counter, metric, poll, query, redis, redis_server,
                           start_shelf, wait_for_hit, write_rules)
from clients import fetch_one, startup_error
from pgshelf_harness import CONNECT_TIMEOUT, PgShelf, Postgres, RssSampler, pgshelf_sanitizers, wait_until

__all__ = ["counter", "redis", "redis_server"]

TARGETS = [t for t in os.environ.get("PGSHELF_IT_TARGETS", "direct,pgshelf").split(",") if t]

STALL_RSS_GROWTH_LIMIT_KIB = 16 * 1024  # while one client stalls a ~2 GB result
CHURN_CYCLES = 3000
CHURN_WARMUP = 140  # 20 of each mode
CHURN_THREADS = 8
CHURN_RSS_GROWTH_LIMIT_KIB = 4 * 1024  # ~1.4 KiB per cycle: a leak of one buffer per session is far above
REDIS_STOP_SECONDS = 4
# A sanitizer build (PGSHELF_SANITIZE) only prints its RSS: shadow memory and
# ASan's quarantine are no part of the budget. Descriptors are checked always.
RSS_CHECKED = not pgshelf_sanitizers()
RECOVERY = 30.0  # seconds any recovery (backend gone, hits back, PostgreSQL up) may take before the test fails


def figure(name: str, value: object) -> None:
    print(f"figure: {name} = {value}")


def linger_reset(sock: socket.socket) -> None:
    """Makes close() send RST instead of FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def until_closed(conn: w.Conn, limit: int = 1000) -> list[tuple[bytes, bytes]]:
    """Every message until the peer closes the connection. A silent, open connection fails the test."""
    messages = []
    for _ in range(limit):
        try:
            messages.append(conn.recv())
        except TimeoutError:
            pytest.fail(f"the connection stayed open without a word after {summary(messages)}", pytrace=False)
        except (ConnectionError, OSError):
            return messages
    pytest.fail(f"more than {limit} messages and no close: {summary(messages[-5:])}", pytrace=False)


def summary(messages: list[tuple[bytes, bytes]]) -> list[tuple]:
    """(type, severity, SQLSTATE) of errors and notices; (type,) of anything else."""
    out = []
    for kind, body in messages:
        if kind in (b"E", b"N"):
            fields = w.error_fields(body)
            out.append((kind.decode(), fields.get("V", fields.get("S")), fields.get("C")))
        else:
            out.append((kind.decode(),))
    return out


def ready_status(messages: list[tuple[bytes, bytes]]) -> bytes:
    assert messages and messages[-1][0] == b"Z", summary(messages)
    return messages[-1][1]


def count_rows(pg: Postgres, table: str, token: str) -> int:
    return int(pg.psql(f"SELECT count(*) FROM {table} WHERE token = '{token}'"))


def backend_pid(pg: Postgres, app: str) -> int:
    rows = pg.wait_for_backends(f"application_name = '{app}'")
    assert len(rows) == 1, rows
    return int(rows[0]["pid"])


# ==========================================================================
# PostgreSQL restarted or crashing


@pytest.fixture(scope="module")
def rpg():
    """A PostgreSQL of this module's own: it is restarted and crashed on purpose."""
    server = Postgres(settings={"restart_after_crash": "on"})
    server.psql("CREATE TABLE fault_rows (token text NOT NULL)")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rpg_shelf(rpg, pgshelf_bin):
    shelf = PgShelf(rpg, binary=pgshelf_bin, env={"PGSHELF_UPSTREAM_CONNECT_TIMEOUT": "3s"})
    yield shelf
    crashed = None if shelf.alive() else shelf.proc.returncode
    log = shelf.log_tail()
    code = shelf.stop()
    assert crashed is None, f"pgshelf exited with {crashed} while PostgreSQL restarted under it:\n{log}"
    assert code == 0, f"pgshelf exited with {code} on SIGTERM:\n{log}"


@pytest.fixture(params=TARGETS)
def via(request, rpg):
    """Where clients connect for the PostgreSQL faults: ``rpg`` itself or pgshelf in front of it."""
    if request.param == "direct":
        return rpg
    return request.getfixturevalue("rpg_shelf")


def wait_postgres_answers(pg: Postgres) -> None:
    def answers() -> bool:
        try:
            return fetch_one(pg.dsn(), "SELECT 1") == (1,)
        except psycopg2.OperationalError:
            return False

    wait_until(answers, 60, 0.2, "PostgreSQL to accept queries again")


def immediate_shutdown(pg: Postgres) -> None:
    """SIGQUIT: PostgreSQL's immediate shutdown (no checkpoint; crash recovery at the next start)."""
    pg._terminate(signal.SIGQUIT, 30)


PG_FAULTS = {
    # fault: what a client running SELECT pg_sleep(60) receives (after the RowDescription) before the close
    "fast_restart": [("E", "FATAL", "57P01")],
    "immediate_restart": [("N", "WARNING", "57P01")],
    "backend_crash": [("N", "WARNING", "57P02")],
}


@pytest.mark.parametrize("fault", list(PG_FAULTS))
def test_postgres_fault_mid_query(via, rpg, fault):
    is_proxy = isinstance(via, PgShelf)
    app = f"it_fault_pg_{'pgshelf' if is_proxy else 'direct'}_{fault}"
    with w.Conn.connect(via.host, via.port, application_name=app, timeout=60) as conn:
        conn.send(w.query("SELECT pg_sleep(60)"))
        rpg.wait_for_backends(f"application_name = '{app}' AND state = 'active'")
        started = time.monotonic()
        if fault == "backend_crash":
            with w.Conn.connect(rpg.host, rpg.port, application_name="it_fault_victim") as victim:
                os.kill(victim.backend_key[0], signal.SIGKILL)
                messages = until_closed(conn)
            wait_postgres_answers(rpg)
        else:
            if fault == "fast_restart":
                rpg.shut_down()
            else:
                immediate_shutdown(rpg)
            messages = until_closed(conn)
            if is_proxy:
                # Nothing listens upstream: a new client gets pgshelf's own FATAL, class 08.
                error = startup_error(via)
                assert (error.fields["S"], error.sqlstate[:2]) == ("FATAL", "08"), error.fields
                assert via.alive()
            rpg.start()
    assert summary(messages) == [("T",)] + PG_FAULTS[fault], (
        f"{'through pgshelf' if is_proxy else 'directly'} the client received {summary(messages)}")
    assert fetch_one(via.dsn(), "SELECT 'served after the fault'") == ("served after the fault",)
    figure(f"postgres {fault} via {'pgshelf' if is_proxy else 'direct'}: fault to working session (s)",
           f"{time.monotonic() - started:.2f}")
    if is_proxy:
        assert via.alive()
        rpg.wait_no_backends(f"application_name = '{app}'", RECOVERY)


@pytest.mark.parametrize("phase", ["idle_in_transaction", "statement_running"])
def test_postgres_restart_mid_transaction(via, rpg, phase):
    is_proxy = isinstance(via, PgShelf)
    token = f"{'pgshelf' if is_proxy else 'direct'}-{phase}"
    app = f"it_fault_pg_tx_{'pgshelf' if is_proxy else 'direct'}_{phase}"
    raw = w.Conn.connect(via.host, via.port, application_name=app, timeout=60)
    driver = None
    try:
        assert ready_status(raw.simple("BEGIN")) == b"T"
        assert ready_status(raw.simple(f"INSERT INTO fault_rows VALUES ('{token}')")) == b"T"
        if phase == "statement_running":
            raw.send(w.query("SELECT pg_sleep(60)"))
            rpg.wait_for_backends(f"application_name = '{app}' AND state = 'active'")
        else:
            rpg.wait_for_backends(f"application_name = '{app}' AND state = 'idle in transaction'")
            driver = psycopg2.connect(via.dsn(application_name=app + "_driver"), connect_timeout=CONNECT_TIMEOUT)
            with driver.cursor() as cur:
                cur.execute("INSERT INTO fault_rows VALUES (%s)", (token + "-driver",))
        rpg.restart()
        expected = [("E", "FATAL", "57P01")]
        if phase == "statement_running":
            expected.insert(0, ("T",))  # pg_sleep's RowDescription
        assert summary(until_closed(raw)) == expected
        if driver is not None:
            # libpq reports the closed connection (directly too, the FATAL may or may not be in its text).
            with pytest.raises(psycopg2.OperationalError):
                driver.commit()
    finally:
        raw.sock.close()
        if driver is not None:
            driver.close()
    assert count_rows(rpg, "fault_rows", token) == 0
    assert count_rows(rpg, "fault_rows", token + "-driver") == 0
    with w.Conn.open(via.host, via.port, timeout=30) as fresh:
        assert ready_status(fresh.startup("postgres", "postgres")) == b"I"
        rows = [w.data_row(body) for kind, body in fresh.simple(
            f"SELECT count(*) FROM fault_rows WHERE token LIKE '{token}%'") if kind == b"D"]
        assert rows == [[b"0"]]
    if is_proxy:
        assert via.alive()


# ==========================================================================
# Clients that stop reading or vanish (the module's PostgreSQL)


@pytest.fixture(scope="module")
def pg_options():
    return {"settings": {"max_connections": 300}}


@pytest.fixture(scope="module")
def client_tables(pg):
    pg.psql("""
        CREATE TABLE fault_copy (token text NOT NULL, n int NOT NULL);
        CREATE TABLE fault_tx (token text NOT NULL);
        CREATE TABLE fault_locks (k text PRIMARY KEY, v text NOT NULL);
    """)


STALL_ROWS = 2_000_000  # of 1,000 bytes: ~2 GB, never read to the end
STALL_SECONDS = 2


@pytest.mark.parametrize("ending", ["fin", "rst"])
def test_client_stops_reading_then_vanishes(target, ending):
    app = f"it_fault_stall_{target.name}_{ending}"
    shelf = target.endpoint if target.is_proxy else None
    rss_before = shelf.rss_kib() if shelf else 0
    conn = w.Conn.connect(target.host, target.port, application_name=app, timeout=60)
    try:
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        pid = backend_pid(target.pg, app)
        conn.send(w.query(f"SELECT repeat('x', 1000) FROM generate_series(1, {STALL_ROWS})"))
        assert conn.recv()[0] == b"T"
        for _ in range(100):
            assert conn.recv()[0] == b"D"
        blocked = f"pid = {pid} AND wait_event = 'ClientWrite'"
        with RssSampler(shelf) as rss:
            target.pg.wait_for_backends(blocked, 1, 15)
            time.sleep(STALL_SECONDS)  # stay stalled (pgshelf's RSS is sampled meanwhile)
            assert target.pg.backends(blocked), "PostgreSQL stopped being blocked on the stalled client"
        if ending == "rst":
            linger_reset(conn.sock)
    finally:
        conn.sock.close()
    target.pg.wait_no_backends(f"pid = {pid}", RECOVERY)
    if shelf:
        growth = rss.peak_kib - rss_before
        figure(f"stalled reader ({ending}): pgshelf RSS before / peak while stalled (KiB)",
               f"{rss_before} / {rss.peak_kib} (+{growth}, {rss.samples} samples)")
        if RSS_CHECKED:
            assert growth < STALL_RSS_GROWTH_LIMIT_KIB, f"pgshelf grew by {growth} KiB while a client stalled"
        assert shelf.alive()


COPY_FRAMES = 4
COPY_ROWS_PER_FRAME = 5000


@pytest.mark.parametrize("cut", ["between_frames", "inside_frame"])
def test_client_vanishes_mid_copy(target, client_tables, cut):
    token = f"{target.name}-{cut}"
    app = f"it_fault_copy_{target.name}_{cut}"
    conn = w.Conn.connect(target.host, target.port, application_name=app, timeout=30)
    try:
        pid = backend_pid(target.pg, app)
        conn.send(w.query("COPY fault_copy (token, n) FROM STDIN"))
        assert conn.recv()[0] == b"G"
        frame = w.copy_data("".join(f"{token}\t{i}\n" for i in range(COPY_ROWS_PER_FRAME)).encode())
        for _ in range(COPY_FRAMES):
            conn.sock.sendall(frame)
        if cut == "inside_frame":
            conn.sock.sendall(frame[:len(frame) // 2])
        # The rows have reached the server before the client goes.
        target.pg.wait_for_backends(
            f"pid = {pid} AND EXISTS (SELECT 1 FROM pg_stat_progress_copy p WHERE p.pid = pg_stat_activity.pid "
            f"AND p.tuples_processed >= {COPY_FRAMES * COPY_ROWS_PER_FRAME})", 1, 15)
    finally:
        conn.sock.close()
    target.pg.wait_no_backends(f"pid = {pid}", RECOVERY)
    assert count_rows(target.pg, "fault_copy", token) == 0
    if target.is_proxy:
        assert target.endpoint.alive()


@pytest.mark.parametrize("ending", ["terminate", "fin", "rst", "busy"])
def test_client_vanishes_mid_transaction(target, client_tables, ending):
    token = f"{target.name}-{ending}"
    app = f"it_fault_tx_{target.name}_{ending}"
    target.pg.psql(f"INSERT INTO fault_locks VALUES ('{token}', 'original')")
    params = {"application_name": app}
    if not target.is_proxy:
        # PostgreSQL notices a vanished client during pg_sleep only with this; pgshelf must cancel itself.
        params["options"] = "-c client_connection_check_interval=200"
    conn = w.Conn.connect(target.host, target.port, timeout=30, **params)
    try:
        pid = backend_pid(target.pg, app)
        assert ready_status(conn.simple("BEGIN")) == b"T"
        assert ready_status(conn.simple(f"UPDATE fault_locks SET v = 'dirty' WHERE k = '{token}'")) == b"T"
        assert ready_status(conn.simple(f"INSERT INTO fault_tx VALUES ('{token}')")) == b"T"
        if ending == "busy":
            conn.send(w.query("SELECT pg_sleep(60)"))
            target.pg.wait_for_backends(f"pid = {pid} AND state = 'active'")
        else:
            target.pg.wait_for_backends(f"pid = {pid} AND state = 'idle in transaction'")
        if ending == "terminate":
            conn.send(w.terminate())
        elif ending == "rst":
            linger_reset(conn.sock)
    finally:
        conn.sock.close()
    target.pg.wait_no_backends(f"pid = {pid}", RECOVERY)
    # Rolled back: the row lock is free (NOWAIT fails if it is not), the update and the insert are gone.
    assert target.pg.psql(f"BEGIN; SELECT v FROM fault_locks WHERE k = '{token}' FOR UPDATE NOWAIT; COMMIT") \
        == "original"
    assert count_rows(target.pg, "fault_tx", token) == 0
    # A new session starts outside any transaction, on a backend of its own.
    with w.Conn.open(target.host, target.port, timeout=30) as fresh:
        assert ready_status(fresh.startup("postgres", "postgres", application_name=app + "_next")) == b"I"
        messages = fresh.simple(f"SELECT v, pg_backend_pid() FROM fault_locks WHERE k = '{token}'")
        row = w.data_row(dict(messages)[b"D"])
        assert row[0] == b"original" and int(row[1]) != pid
        assert ready_status(messages) == b"I"
    if target.is_proxy:
        assert target.endpoint.alive()


# ==========================================================================
# pgshelf with caching on: churn and Redis faults


RULES = """
[[cache]]
name  = "fault_stock"
query = "SELECT sku, qty, label FROM fault_stock WHERE sku = $1"
key   = "fstock:{sku}"
ttl   = "300s"

[[invalidate]]
name  = "fault_stock_set"
query = "UPDATE fault_stock SET qty = $1 WHERE sku = $2"
keys  = ["fstock:{sku}"]
"""

READ = "SELECT sku, qty, label FROM fault_stock WHERE sku = %s"
WRITE = "UPDATE fault_stock SET qty = %s WHERE sku = %s"
PATTERN = "SELECT%fault_stock%"

READ_ONLY_SKUS = range(1, 21)  # never written: their rows are known
WRITTEN_SKUS = range(21, 41)  # each workload thread owns 5


@pytest.fixture(scope="module")
def cshelf(pg, redis_server, tmp_path_factory, pgshelf_bin):
    pg.psql("""
        CREATE TABLE fault_stock (sku int PRIMARY KEY, qty int NOT NULL, label text NOT NULL);
        INSERT INTO fault_stock SELECT i, i * 10, 'item ' || i FROM generate_series(1, 120) AS i;
    """)
    rules = write_rules(tmp_path_factory.mktemp("rules"), RULES)
    shelf = start_shelf(pg, redis_server, rules, log_level="info")
    yield shelf
    crashed = None if shelf.alive() else shelf.proc.returncode
    log = shelf.log_tail()
    code = shelf.stop()
    assert crashed is None, f"pgshelf exited with {crashed} during the tests:\n{log}"
    assert code == 0, f"pgshelf exited with {code} on SIGTERM:\n{log}"


def qty(conn, sku: int) -> int:
    rows = query(conn, READ, (sku,))
    assert len(rows) == 1, rows
    return rows[0][1]


def reads_until_hit(counter, read, expected, what: str) -> int:
    """Reads until one is answered from the cache; every read (hit or miss) must return ``expected``.

    Returns how many reads it took; fails when no hit comes within RECOVERY seconds.
    """
    deadline = time.monotonic() + RECOVERY
    reads = 0
    while True:
        got, seen = counter.delta(PATTERN, read)
        reads += 1
        assert got == expected, f"{what}: read {reads} returned {got}, the last committed value is {expected}"
        if seen == 0:
            return reads
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: no cache hit within {RECOVERY:g}s ({reads} reads)", pytrace=False)
        time.sleep(0.05)


CHURN_MODES = ["terminate", "fin_after_startup", "rst_after_startup", "close_mid_startup", "close_mid_query",
               "close_mid_batch", "close_mid_lookup"]


def churn_cycle(shelf: PgShelf, i: int) -> str:
    mode = CHURN_MODES[i % len(CHURN_MODES)]
    if mode == "close_mid_startup":
        with socket.create_connection((shelf.host, shelf.port), timeout=30) as sock:
            sock.sendall(w.startup_message("postgres", "postgres", application_name="it_churn"))
        return mode
    conn = w.Conn.connect(shelf.host, shelf.port, application_name="it_churn", timeout=30)
    try:
        if mode == "terminate":
            assert w.data_row(dict(conn.simple(f"SELECT {i}"))[b"D"]) == [str(i).encode()]
            conn.send(w.terminate())
        elif mode == "rst_after_startup":
            linger_reset(conn.sock)
        elif mode == "close_mid_query":
            conn.send(w.query("SELECT repeat('x', 100) FROM generate_series(1, 100000)"))
        elif mode == "close_mid_batch":
            conn.send(w.parse("SELECT sku, qty, label FROM fault_stock WHERE sku = $1"), w.bind((str(i % 100 + 1),)),
                      w.execute())
        elif mode == "close_mid_lookup":
            conn.send(w.query(f"SELECT sku, qty, label FROM fault_stock WHERE sku = {i % 100 + 1}"))
    finally:
        conn.sock.close()
    return mode


def run_churn(shelf: PgShelf, cycles: int, offset: int = 0) -> dict[str, int]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=CHURN_THREADS) as pool:
        modes = list(pool.map(lambda i: churn_cycle(shelf, i), range(offset, offset + cycles), timeout=600))
    return {mode: modes.count(mode) for mode in CHURN_MODES}


def churn_settled(shelf: PgShelf, pg: Postgres, fds: int | None = None) -> bool:
    return (not pg.backends("application_name = 'it_churn'")
            and metric(shelf, "pgshelf_client_connections") == 0
            and metric(shelf, "pgshelf_server_connections") == 0
            and (fds is None or shelf.fd_count() <= fds))


def test_out_of_descriptors_names_the_cause(pg, pgshelf_bin):
    """With no descriptor left for the server connection, the client's error names the cause
    (it read "Operation canceled"), and pgshelf serves again once descriptors are free."""
    shelf = PgShelf(pg, binary=pgshelf_bin, workers=1)
    try:
        first = connect(shelf.dsn())  # a client and a server connection: everything opened lazily is open
        assert query(first, "SELECT 1") == [(1,)]
        # The descriptor limit caps descriptor numbers: leave exactly three free ones, two for the
        # next client and its server connection, one for the client after it.
        used = {int(fd) for fd in os.listdir(f"/proc/{shelf.pid}/fd")}
        free, limit = 0, 0
        while free < 3:
            free += limit not in used
            limit += 1
        resource.prlimit(shelf.pid, resource.RLIMIT_NOFILE, (limit, limit))
        second = connect(shelf.dsn())
        with pytest.raises(psycopg2.OperationalError) as refused:
            psycopg2.connect(shelf.dsn(), connect_timeout=CONNECT_TIMEOUT)
        assert "Too many open files" in str(refused.value), str(refused.value)
        second.close()
        first.close()
        def answers() -> bool:
            try:
                return fetch_one(shelf.dsn(), "SELECT 1") == (1,)
            except psycopg2.OperationalError:
                return False
        poll(answers, 30, "a connection once descriptors are free")
        assert shelf.alive()
    finally:
        shelf.stop()


def test_connect_disconnect_cycles(pg, cshelf, redis):
    def cancel_keys() -> int:
        return len(redis.command("KEYS", "*:cancel:*"))

    run_churn(cshelf, CHURN_WARMUP)
    wait_until(lambda: churn_settled(cshelf, pg), RECOVERY, 0.1, "the warm-up connections to be gone")
    fds_before, rss_before = cshelf.fd_count(), cshelf.rss_kib()
    accepted_before = metric(cshelf, "pgshelf_client_connections_accepted_total")
    started = time.monotonic()
    done = run_churn(cshelf, CHURN_CYCLES, offset=CHURN_WARMUP)
    elapsed = time.monotonic() - started
    assert sum(done.values()) == CHURN_CYCLES, done
    assert cshelf.alive()
    wait_until(lambda: churn_settled(cshelf, pg, fds_before), RECOVERY, 0.1,
               "pgshelf's sessions, descriptors and server backends to be gone")
    wait_until(lambda: cancel_keys() == 0, RECOVERY, 0.1, "the sessions' cancel keys to leave Redis")
    fds_after, rss_after = cshelf.fd_count(), cshelf.rss_kib()
    accepted = metric(cshelf, "pgshelf_client_connections_accepted_total") - accepted_before
    figure("churn cycles", f"{CHURN_CYCLES} in {elapsed:.1f}s ({CHURN_THREADS} threads), per mode {done}")
    figure("churn pgshelf fds before / after", f"{fds_before} / {fds_after}")
    figure("churn pgshelf RSS before / after (KiB)", f"{rss_before} / {rss_after} ({rss_after - rss_before:+d})")
    assert accepted == CHURN_CYCLES
    assert fds_after <= fds_before
    assert not RSS_CHECKED or rss_after - rss_before < CHURN_RSS_GROWTH_LIMIT_KIB, (
        f"pgshelf RSS grew from {rss_before} to {rss_after} KiB over {CHURN_CYCLES} cycles")
    # Still serving, from the cache too.
    conn = connect(cshelf.dsn())
    try:
        assert qty(conn, 5) == 50
    finally:
        conn.close()


class Workload(ClientThreads):
    """Client threads through pgshelf that check every row they read.

    Reads of rows nobody writes must return their known values; each thread
    owns five rows it writes (autocommit, or BEGIN/UPDATE/COMMIT) and reads
    back at once: a read older than the thread's own last committed write
    is an error.
    """

    def __init__(self, dsn: str, threads: int = 4) -> None:
        super().__init__(dsn, threads)
        self.slowest = 0.0
        self.written: dict[int, int] = {}

    def run(self, index: int) -> None:
        try:
            conn = connect(self.dsn)
        except psycopg2.Error as e:
            self.errors.append(f"thread {index} connect: {e!r}")
            return
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                sku = READ_ONLY_SKUS[(index * 7 + n) % len(READ_ONLY_SKUS)]
                start = time.monotonic()
                done = 1
                try:
                    rows = query(conn, READ, (sku,))
                    if rows != [(sku, sku * 10, f"item {sku}")]:
                        self.errors.append(f"thread {index}: sku {sku} read {rows}")
                    if n % 4 == 0:
                        own = WRITTEN_SKUS[index * 5 + (n // 4) % 5]
                        value = index * 1_000_000 + n
                        if (n // 4) % 2:
                            query(conn, "BEGIN")
                            query(conn, WRITE, (value, own))
                            query(conn, "COMMIT")
                            done += 3
                        else:
                            query(conn, WRITE, (value, own))
                            done += 1
                        with self.lock:
                            self.written[own] = value
                        got = query(conn, READ, (own,))
                        done += 1
                        if got != [(own, value, f"item {own}")]:
                            self.errors.append(f"thread {index}: wrote qty {value} for sku {own}, read {got}")
                except psycopg2.Error as e:
                    self.errors.append(f"thread {index}: {type(e).__name__}: {e}".strip())
                    conn.close()
                    conn = connect(self.dsn)
                elapsed = time.monotonic() - start
                with self.lock:
                    self.statements += done
                    self.slowest = max(self.slowest, elapsed)
        finally:
            conn.close()


def test_redis_paused_mid_workload(pg, cshelf, redis, counter):
    conn, direct = connect(cshelf.dsn()), connect(pg.dsn())
    try:
        wait_for_hit(counter, PATTERN, lambda: qty(conn, 1), "sku 1 before the pause")
        errors_before = metric(cshelf, "pgshelf_redis_errors_total")
        with Workload(cshelf.dsn()) as load:
            poll(lambda: load.statements > 300, 30, "the workload to get going")
            redis.pause()
            paused_at, paused = load.statements, time.monotonic()
            try:
                poll(lambda: load.statements > paused_at + 500, 60, "the workload to run on with Redis stopped")
                # Stay stopped long enough for the circuit breakers to probe a still-stopped Redis again.
                time.sleep(max(0.0, REDIS_STOP_SECONDS - (time.monotonic() - paused)))
                during = load.statements - paused_at
                circuits_open = metric(cshelf, "pgshelf_redis_circuit_open")
            finally:
                redis.resume()
            stopped_for = time.monotonic() - paused
            resumed_at = load.statements
            poll(lambda: load.statements > resumed_at + 500, 60, "the workload to run on after SIGCONT")
        figure("redis SIGSTOP workload", f"{load.statements} statements, {during} during a {stopped_for:.1f}s stop, "
               f"slowest iteration {load.slowest * 1000:.0f} ms, circuits open during the stop {circuits_open:g}")
        assert not load.errors, f"{len(load.errors)} client errors around the pause, first: {load.errors[:5]}"
        # Premise: pgshelf really met a stopped Redis (calls timed out).
        assert metric(cshelf, "pgshelf_redis_errors_total") > errors_before
        # Every written row is right through pgshelf, and hits come back without a stale one.
        assert load.written, "the workload wrote nothing"
        for sku, value in load.written.items():
            assert qty(direct, sku) == value
            assert qty(conn, sku) == value, f"sku {sku}: pgshelf's answer is not the last committed value"
        hits_after = reads_until_hit(counter, lambda: qty(conn, 3), 30, "sku 3 after SIGCONT")
        for sku, value in sorted(load.written.items()):
            reads_until_hit(counter, lambda: qty(conn, sku), value, f"sku {sku} after SIGCONT")
        figure("redis SIGSTOP: reads of sku 3 after SIGCONT until the first hit", hits_after)
    finally:
        conn.close()
        direct.close()


@pytest.mark.parametrize("fault", ["pause", "kill_with_snapshot"])
def test_redis_fault_between_write_and_commit(pg, cshelf, redis, counter, fault):
    """The commit's invalidation is lost while another session has cached the pre-commit value."""
    sku = 111 if fault == "pause" else 112  # rows the churn test never reads
    old, new = sku * 10, sku * 10 + 7
    reader, writer, direct = connect(cshelf.dsn()), connect(cshelf.dsn()), connect(pg.dsn())
    try:
        assert wait_for_hit(counter, PATTERN, lambda: qty(reader, sku), f"sku {sku}") == old
        query(writer, "BEGIN")
        query(writer, WRITE, (new, sku))
        # Uncommitted: others still read the old row, and may cache it again after the write's invalidation.
        assert wait_for_hit(counter, PATTERN, lambda: qty(reader, sku), f"sku {sku} during the transaction") == old
        failed_before = metric(cshelf, 'pgshelf_cache_invalidations_total{kind="failed"}')
        if fault == "pause":
            redis.pause()
        else:
            assert redis.command("SAVE") == "OK"
            redis.kill()
        try:
            query(writer, "COMMIT")  # no error for the client
            assert qty(direct, sku) == new
            assert qty(reader, sku) == new
        finally:
            if fault == "pause":
                redis.resume()
            else:
                redis.start()  # from the snapshot: the old entry is back, valid by its own stamps
        assert metric(cshelf, 'pgshelf_cache_invalidations_total{kind="failed"}') > failed_before, (
            "premise: the COMMIT's invalidation was expected not to reach Redis")
        assert len(redis.command("KEYS", f"pgshelf:{{fstock:{sku}}}:*")) >= 1, "premise: the old entry is in Redis"
        reads = reads_until_hit(counter, lambda: qty(reader, sku), new, f"sku {sku} after Redis came back")
        figure(f"redis {fault} at COMMIT", f"{reads} reads until the first hit, none stale")
    finally:
        for c in (reader, writer, direct):
            c.close()


def test_populating_client_vanishes(pg, cshelf, redis, counter):
    """The client whose miss is filling an entry vanishes while another client asks for the same entry."""
    sku = 110  # a row no other test reads: not cached yet
    sql = f"SELECT sku, qty, label FROM fault_stock WHERE sku = {sku}"
    locker = connect(pg.dsn(), autocommit=False)
    waiter = None
    try:
        query(locker, "LOCK TABLE fault_stock IN ACCESS EXCLUSIVE MODE")  # the populating read blocks on it
        populator = w.Conn.connect(cshelf.host, cshelf.port, application_name="it_fault_populator", timeout=30)
        try:
            pid = backend_pid(pg, "it_fault_populator")
            populator.send(w.query(sql))
            pg.wait_for_backends(f"pid = {pid} AND wait_event_type = 'Lock'")
            waiter = w.Conn.connect(cshelf.host, cshelf.port, application_name="it_fault_waiter", timeout=60)
            waiter.send(w.query(sql))
            linger_reset(populator.sock)
        finally:
            populator.sock.close()
        pg.wait_no_backends(f"pid = {pid}", RECOVERY)
        # The waiter is not stuck in pgshelf behind the vanished populator: its statement reaches PostgreSQL.
        pg.wait_for_backends("application_name = 'it_fault_waiter' AND wait_event_type = 'Lock'", 1, RECOVERY)
    finally:
        locker.rollback()
        locker.close()
    try:
        messages = waiter.recv_until_ready()
        assert summary(messages) == [("T",), ("D",), ("C",), ("Z",)], summary(messages)
        assert w.data_row(messages[1][1]) == [str(sku).encode(), str(sku * 10).encode(), f"item {sku}".encode()]
    finally:
        waiter.close()
    conn = connect(cshelf.dsn())
    try:
        assert wait_for_hit(counter, PATTERN, lambda: qty(conn, sku), f"sku {sku} after its populator vanished",
                            timeout=RECOVERY) == sku * 10
    finally:
        conn.close()
    assert cshelf.alive()


VANISH_AFTER_WRITE = {
    # case: (sku, ending) - rows no other test reads
    "commit-fin": (113, "fin"),
    "commit-rst": (114, "rst"),
    "autocommit_update-fin": (115, "fin"),
}


@pytest.mark.parametrize("case", list(VANISH_AFTER_WRITE))
def test_client_vanishes_right_after_a_write(pg, cshelf, redis, counter, case):
    """The client sends COMMIT (or an autocommit UPDATE) and closes before the answer.

    PostgreSQL decides whether the write commits; whatever it decided, pgshelf
    must not answer a later read with anything else. With COMMIT, another
    session has cached the pre-commit value during the transaction (allowed:
    the write was not committed then), so only the commit-time invalidation
    can remove it.
    """
    sku, ending = VANISH_AFTER_WRITE[case]
    old, new = sku * 10, sku * 10 + 9
    reader, direct = connect(cshelf.dsn()), connect(pg.dsn())
    app = f"it_fault_vanish_{case.replace('-', '_')}"
    writer = w.Conn.connect(cshelf.host, cshelf.port, application_name=app, timeout=30)
    try:
        pid = backend_pid(pg, app)
        assert wait_for_hit(counter, PATTERN, lambda: qty(reader, sku), f"sku {sku}") == old
        update = f"UPDATE fault_stock SET qty = {new} WHERE sku = {sku}"
        if case.startswith("commit"):
            assert ready_status(writer.simple("BEGIN")) == b"T"
            assert ready_status(writer.simple(update)) == b"T"
            assert wait_for_hit(counter, PATTERN, lambda: qty(reader, sku), f"sku {sku} in the transaction") == old
            writer.send(w.query("COMMIT"))
        else:
            writer.send(w.query(update))
        if ending == "rst":
            linger_reset(writer.sock)
    finally:
        writer.sock.close()
    try:
        pg.wait_no_backends(f"pid = {pid}", RECOVERY)
        committed = qty(direct, sku)
        assert committed in (old, new)
        reads = reads_until_hit(counter, lambda: qty(reader, sku), committed, f"sku {sku} after the writer vanished")
        figure(f"client vanished right after a write ({case})",
               f"{'committed' if committed == new else 'not committed'}, {reads} reads until the first hit")
    finally:
        reader.close()
        direct.close()
