"""Shared helpers for the caching integration tests (test_cache_*.py).

- ``redis_server``: one Redis per test module (no persistence);
- ``start_shelf``: a pgshelf with caching on (REDIS_URL + PGSHELF_RULES);
- ``StatementCounter``: how many times PostgreSQL really executed the
  statements whose text matches a pattern, from pg_stat_statements over a
  DIRECT superuser connection. A cache hit is an execution PostgreSQL did
  not see: ``wait_for_hit`` polls until one happens (the first lookups of a
  key miss and populate it in the background), ``served_from_cache`` runs a
  statement a few times and asserts PostgreSQL received none of them;
- ``run_node``: a Node.js snippet with tests/integration/node's packages
  (pg, postgres) resolvable, its JSON output returned.

pg_stat_statements updates its counters before the server sends
ReadyForQuery, so a counter read after the client got its result is exact.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import psycopg2
import pytest

from pgshelf_harness import CONNECT_TIMEOUT, PG_BINDIR, PgShelf, Postgres, Redis, client_env

T = TypeVar("T")

NODE_DIR = Path(__file__).parent / "node"
HIT_TIMEOUT = 30.0  # seconds a new entry may take to be populated and hit (a bound against a hang)


# --------------------------------------------------------------------------
# processes


@pytest.fixture(scope="module")
def redis_server():
    server = Redis()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server):
    """The module's Redis, running and answering again after each test."""
    yield redis_server
    redis_server.resume()
    if not redis_server.alive():
        redis_server.start()


def write_rules(directory: Path, text: str, name: str = "rules.toml") -> Path:
    path = Path(directory) / name
    path.write_text(textwrap.dedent(text))
    return path


def start_shelf(pg: Postgres, redis: Redis, rules: Path, *, workers: int = 2, log_level: str = "debug",
                **env: str) -> PgShelf:
    """pgshelf in front of ``pg`` caching in ``redis`` by ``rules``; ``env`` adds PGSHELF_* settings."""
    settings = {"REDIS_URL": redis.url, "PGSHELF_RULES": str(rules)}
    settings.update(env)
    return PgShelf(pg, workers=workers, log_level=log_level, env=settings)


def start_shelf_pair(pg: Postgres, redis: Redis, rules: Path) -> tuple[PgShelf, PgShelf]:
    """Two instances sharing ``redis``, as sidecars of two app instances."""
    first = start_shelf(pg, redis, rules)
    try:
        second = start_shelf(pg, redis, rules)
    except BaseException:
        first.stop()
        raise
    return first, second


def metric(shelf: PgShelf, series: str) -> float:
    """Value of ``series`` (name and labels, e.g. 'x_total{outcome="ok"}') from the admin port's /metrics; 0 if absent."""
    address = shelf.env["PGSHELF_ADMIN_LISTEN"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line[len(series) + 1:])
    return 0.0


class ClientThreads:
    """Client threads running ``run(index)`` until the ``with`` block ends.

    Subclasses loop in ``run`` while ``self.stop`` is not set, count under
    ``self.lock`` and record what went wrong in ``self.errors``.
    """

    JOIN_TIMEOUT = 60.0

    def __init__(self, dsn: str, threads: int = 4) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.statements = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def run(self, index: int) -> None:
        raise NotImplementedError

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.JOIN_TIMEOUT)
        assert not any(t.is_alive() for t in self.threads), \
            f"client threads did not stop within {self.JOIN_TIMEOUT:.0f}s"


# --------------------------------------------------------------------------
# observing hits


class StatementCounter:
    """Executions PostgreSQL counted in pg_stat_statements, by query text pattern.

    ``pattern`` is an ILIKE pattern on the (normalised) text, e.g.
    '%hit_items%'; the counter's own queries (they name
    pg_stat_statements) never match.
    """

    def __init__(self, pg: Postgres) -> None:
        self.conn = psycopg2.connect(pg.dsn(), connect_timeout=CONNECT_TIMEOUT)
        self.conn.autocommit = True

    def calls(self, pattern: str, dbname: str | None = None) -> int:
        sql = ("SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s "
               "JOIN pg_database d ON d.oid = s.dbid "
               "WHERE s.query ILIKE %s AND s.query NOT ILIKE '%%pg_stat_statements%%'")
        params: list = [pattern]
        if dbname is not None:
            sql += " AND d.datname = %s"
            params.append(dbname)
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return int(cur.fetchone()[0])

    def reset(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_stat_statements_reset()")

    def delta(self, pattern: str, action: Callable[[], T], dbname: str | None = None) -> tuple[T, int]:
        """Runs ``action``; returns its result and how many matching executions PostgreSQL saw meanwhile."""
        before = self.calls(pattern, dbname)
        result = action()
        return result, self.calls(pattern, dbname) - before

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def counter(pg):
    c = StatementCounter(pg)
    yield c
    c.close()


def wait_for_hit(counter: StatementCounter, pattern: str, run: Callable[[], T], what: str,
                 timeout: float = HIT_TIMEOUT, dbname: str | None = None) -> T:
    """Repeats ``run`` until one execution is answered without PostgreSQL seeing it.

    Returns that execution's result. Fails (naming ``what``) when every
    attempt within ``timeout`` reached PostgreSQL.
    """
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        result, seen = counter.delta(pattern, run, dbname)
        attempts += 1
        if seen == 0:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: never served from the cache: PostgreSQL received the statement on each of "
                        f"{attempts} attempts within {timeout:g}s", pytrace=False)
        time.sleep(0.02)


def served_from_cache(counter: StatementCounter, pattern: str, run: Callable[[], T], what: str,
                      times: int = 3, dbname: str | None = None) -> list[T]:
    """Runs ``run`` ``times`` times and asserts PostgreSQL received none of them; returns the results."""
    results, seen = counter.delta(pattern, lambda: [run() for _ in range(times)], dbname)
    assert seen == 0, f"{what}: PostgreSQL received {seen} of {times} executions that should have been cache hits"
    return results


def reaches_server(counter: StatementCounter, pattern: str, run: Callable[[], T], what: str,
                   times: int = 3, dbname: str | None = None) -> list[T]:
    """Runs ``run`` ``times`` times and asserts PostgreSQL received every one of them."""
    results, seen = counter.delta(pattern, lambda: [run() for _ in range(times)], dbname)
    assert seen == times, f"{what}: PostgreSQL received {seen} of {times} executions (expected all: no cache hit)"
    return results


def poll(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """First truthy value of ``predicate`` within ``timeout`` seconds, else a test failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}", pytrace=False)
        time.sleep(interval)


# --------------------------------------------------------------------------
# clients


def connect(dsn: str, autocommit: bool = True, **kwargs) -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dsn, connect_timeout=CONNECT_TIMEOUT, **kwargs)
    conn.autocommit = autocommit
    return conn


def query(conn, sql: str, params: Iterable | None = None) -> list[tuple]:
    """All rows of one statement on a psycopg2 (or psycopg 3) connection."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description is not None else []


def psql_query(dsn: str, sql: str, timeout: float = 30) -> str:
    """``psql -X -A -t -c sql`` against ``dsn`` (simple protocol, literals inline); its stdout."""
    proc = subprocess.run([str(PG_BINDIR / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
                          capture_output=True, text=True, env=client_env(), timeout=timeout)
    assert proc.returncode == 0, f"psql exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def run_node(script: str, *args: str, timeout: float = 60, cwd: Path = NODE_DIR) -> object:
    """Runs a Node.js snippet (``node -e``) with tests/integration/node's packages; parses its JSON stdout."""
    assert (NODE_DIR / "node_modules" / "pg").is_dir(), "run tests/integration/prepare.sh first (npm ci)"
    env = client_env(NODE_PATH=str(NODE_DIR / "node_modules"))
    proc = subprocess.run(["node", "-e", script, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)
    assert proc.returncode == 0, f"node exited {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)

