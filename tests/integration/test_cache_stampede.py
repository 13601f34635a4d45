"""Stampede protection: concurrent misses on one entry reach PostgreSQL once.

Within one instance, later misses wait for the first miss's result, woken
when it is there; across instances sharing Redis, the first miss of each
instance takes (or finds taken) a short lock in Redis, and an instance that
finds it taken polls for the entry. The cached statement takes 50 ms at the server
(pg_sleep, opted in with allow_volatile), so all clients, released together,
miss while the first one is still running; PostgreSQL's statement counter
says how many reached it. Without the protection every client would.
"""

from __future__ import annotations

import threading

import pytest

from cache_support import connect, counter, metric, query, redis_server, start_shelf_pair, write_rules

__all__ = ["counter", "redis_server"]  # module fixtures used below

PATTERN = "%stampede_items%"
SQL = "SELECT id, v, pg_sleep(0.05)::text AS slept FROM stampede_items WHERE id = %s"
CLIENTS_PER_INSTANCE = 8

RULES = """
[[cache]]
name  = "slow_item"
query = "SELECT id, v, pg_sleep(0.05)::text AS slept FROM stampede_items WHERE id = $1"
key   = "stampede:{id}"
ttl   = "120s"
allow_volatile = true
"""


@pytest.fixture(scope="module")
def shelves(pg, redis_server, tmp_path_factory):
    pg.psql("""
        CREATE TABLE stampede_items (id int PRIMARY KEY, v text);
        INSERT INTO stampede_items SELECT i, 'v' || i FROM generate_series(1, 10) AS i;
    """)
    rules = write_rules(tmp_path_factory.mktemp("rules"), RULES)
    a, b = start_shelf_pair(pg, redis_server, rules)
    yield a, b
    a.stop()
    b.stop()


def concurrent_reads(dsns: list[str], item: int) -> list:
    """A connection per dsn; all run SQL for ``item`` at once. Returns their results."""
    conns = [connect(dsn) for dsn in dsns]
    results: list = [None] * len(conns)
    errors: list[BaseException] = []
    start = threading.Barrier(len(conns), timeout=30)

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = query(conns[i], SQL, (item,))
        except BaseException as e:  # reported below, with the others
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conns))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for c in conns:
            c.close()
    assert not errors, errors
    return results


WAITED = 'pgshelf_cache_requests_total{outcome="waited"}'


def test_one_instance(pg, shelves, counter):
    a, _ = shelves
    before = counter.calls(PATTERN)
    polled_before = metric(a, WAITED)
    results = concurrent_reads([a.dsn()] * CLIENTS_PER_INSTANCE, 1)
    seen = counter.calls(PATTERN) - before
    assert all(r == [(1, "v1", "")] for r in results), results
    assert seen == 1, f"{seen} of {CLIENTS_PER_INSTANCE} concurrent misses on one entry reached PostgreSQL"
    # The others waited inside the instance, woken by the first: none of them
    # polled Redis for the entry (which costs up to 20 ms per miss).
    assert metric(a, WAITED) == polled_before


def test_two_instances(pg, shelves, counter):
    a, b = shelves
    before = counter.calls(PATTERN)
    results = concurrent_reads([a.dsn(), b.dsn()] * CLIENTS_PER_INSTANCE, 2)
    seen = counter.calls(PATTERN) - before
    assert all(r == [(2, "v2", "")] for r in results), results
    # One per instance at most would already be a stampede stopped; the
    # Redis lock makes it one in all (a second is tolerated for a client the
    # machine delays past the other instance's lock wait).
    assert seen <= 2, f"{seen} of {2 * CLIENTS_PER_INSTANCE} concurrent misses on one entry reached PostgreSQL"
