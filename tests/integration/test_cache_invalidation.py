"""Invalidation: the product promise of DESIGN §5, through two pgshelf instances.

Two pgshelf instances (A and B) share one Redis, as sidecars of two app
instances do. A read served from the cache must never be older than the
last committed write made through either instance that an [[invalidate]]
rule or the table fallback covers, and never older than its TTL:

- a write through A: the next read through B sees it;
- the table fallback: a write no [[invalidate]] rule covers, on a table a
  cache rule reads, invalidates every key of that rule;
- transactions: other sessions see the old committed value until COMMIT
  and the new one as soon as COMMIT has returned; ROLLBACK leaves the
  cached value correct;
- TTL: a write behind pgshelf's back shows once the entry's TTL ran out;
- a write too large for pgshelf to analyse (over 1 MiB of SQL, simple or
  extended protocol) invalidates every rule: its reads never outlive it.

Every test first proves the entry is served from the cache
(pg_stat_statements, or a write behind pgshelf's back that a cached read
does not see), so a passing test cannot come from caching being off.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from cache_support import (connect, counter, metric, poll, query, redis_server, served_from_cache,
                           start_shelf_pair, wait_for_hit, write_rules)

__all__ = ["counter", "redis_server"]

RULES = """
[[cache]]
name  = "account"
query = "SELECT id, balance, owner FROM inv_accounts WHERE id = $1"
key   = "acct:{id}"
ttl   = "120s"

[[invalidate]]
name  = "account_balance_set"
query = "UPDATE inv_accounts SET balance = $1 WHERE id = $2"
keys  = ["acct:{id}"]

[[cache]]
name  = "notes"
query = "SELECT note FROM inv_notes WHERE acct = $1 ORDER BY note"
key   = "notes:{acct}"
ttl   = "120s"

[[cache]]
name  = "short"
query = "SELECT v FROM inv_short WHERE id = $1"
key   = "short:{id}"
ttl   = "1s"
"""

ACCOUNT = "SELECT id, balance, owner FROM inv_accounts WHERE id = %s"
NOTES = "SELECT note FROM inv_notes WHERE acct = %s ORDER BY note"
SHORT = "SELECT v FROM inv_short WHERE id = %s"


@pytest.fixture(scope="module")
def shelves(pg, redis_server, tmp_path_factory):
    pg.psql("""
        CREATE TABLE inv_accounts (id int PRIMARY KEY, balance int NOT NULL, owner text NOT NULL);
        INSERT INTO inv_accounts SELECT i, 100 * i, 'owner' || i FROM generate_series(1, 50) AS i;
        CREATE TABLE inv_notes (acct int NOT NULL, note text NOT NULL);
        INSERT INTO inv_notes SELECT i % 5, 'note ' || i FROM generate_series(1, 20) AS i;
        CREATE TABLE inv_short (id int PRIMARY KEY, v text);
        INSERT INTO inv_short VALUES (1, 'old'), (2, 'old');
    """)
    rules = write_rules(tmp_path_factory.mktemp("rules"), RULES)
    a, b = start_shelf_pair(pg, redis_server, rules)
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def sessions(pg, shelves):
    """psycopg2 autocommit connections: direct, through A, through B (closed afterwards)."""
    a, b = shelves
    conns = [connect(pg.dsn()), connect(a.dsn()), connect(b.dsn())]
    yield conns
    for c in conns:
        c.close()


def balance(conn, account: int) -> int:
    rows = query(conn, ACCOUNT, (account,))
    assert len(rows) == 1
    return rows[0][1]


def try_hit(counter, pattern: str, run, timeout: float = 2.0) -> bool:
    """Whether ``run`` becomes a cache hit within ``timeout`` (each run must return True)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok, seen = counter.delta(pattern, run)
        assert ok
        if seen == 0:
            return True
        time.sleep(0.02)
    return False


def cached(counter, conn, sql: str, params: tuple, what: str):
    """Waits until ``sql`` is a hit on ``conn``; returns its rows."""
    table = sql.split(" FROM ")[1].split()[0]
    return wait_for_hit(counter, f"%{table}%", lambda: query(conn, sql, params), what)


def test_write_through_one_instance_is_seen_through_the_other(sessions, counter):
    direct, a, b = sessions
    assert cached(counter, b, ACCOUNT, (1,), "account 1 through B") == [(1, 100, "owner1")]
    for round_, value in enumerate((111, 222, 333)):
        query(a, "UPDATE inv_accounts SET balance = %s WHERE id = %s", (value, 1))
        got = balance(b, 1)
        assert got == value, f"round {round_}: after UPDATE ... = {value} through A, B read {got}"
        assert balance(direct, 1) == value
        # B caches the new value again (the invalidation did not disable caching).
        assert cached(counter, b, ACCOUNT, (1,), f"account 1 through B, round {round_}") == [(1, value, "owner1")]
        # And the write is visible through A as well.
        assert balance(a, 1) == value


def test_write_with_client_side_and_server_side_parameters(pg, shelves, sessions, counter):
    """The invalidation rule matches the write whether its values are literals or bound parameters."""
    direct, a, b = sessions
    cached(counter, b, ACCOUNT, (2,), "account 2 through B")
    with psycopg.connect(shelves[0].dsn(), autocommit=True) as bound:
        bound.execute("UPDATE inv_accounts SET balance = %s WHERE id = %s", (2020, 2))
        assert balance(b, 2) == 2020
        cached(counter, b, ACCOUNT, (2,), "account 2 through B after the write")
        bound.execute("UPDATE inv_accounts SET balance = %s WHERE id = %s", (2021, 2), prepare=True)
        assert balance(b, 2) == 2021


def test_other_keys_stay_cached(sessions, counter):
    """An explicit invalidation is precise: other keys of the rule keep hitting."""
    direct, a, b = sessions
    cached(counter, b, ACCOUNT, (3,), "account 3")
    cached(counter, b, ACCOUNT, (4,), "account 4")
    query(a, "UPDATE inv_accounts SET balance = %s WHERE id = %s", (404, 4))
    assert balance(b, 4) == 404
    served_from_cache(counter, "%inv_accounts%", lambda: query(b, ACCOUNT, (3,)), "account 3 after a write to 4")


def fallback_count(shelf, rule: str, table: str) -> float:
    return metric(shelf, f'pgshelf_cache_table_fallback_total{{rule="{rule}",table="{table}"}}')


def test_table_fallback_for_an_uncovered_write(sessions, counter, shelves):
    direct, a, b = sessions
    before_1 = cached(counter, b, NOTES, (1,), "notes of 1")
    before_2 = cached(counter, b, NOTES, (2,), "notes of 2")
    # Behind pgshelf's back: the cached entry of account 2 is now stale (TTL-bounded only).
    query(direct, "INSERT INTO inv_notes VALUES (2, 'direct 2')")
    assert query(b, NOTES, (2,)) == before_2, "notes of 2 not served from the cache (test premise)"
    # Through A, a write no [[invalidate]] rule covers: the whole 'notes' rule is invalid,
    # and A counts it per (rule, table), so users see which [[invalidate]] rule to add.
    fallbacks_before = fallback_count(shelves[0], "notes", "inv_notes")
    query(a, "INSERT INTO inv_notes (acct, note) VALUES (%s, %s)", (1, "via A"))
    assert fallback_count(shelves[0], "notes", "inv_notes") == fallbacks_before + 1
    assert query(b, NOTES, (1,)) == sorted(before_1 + [("via A",)]), "notes of 1 after an uncovered INSERT"
    assert query(b, NOTES, (2,)) == sorted(before_2 + [("direct 2",)]), \
        "notes of 2: the table fallback must invalidate every key of the rule"
    # An uncovered UPDATE / DELETE on a table with an [[invalidate]] rule of another shape.
    cached(counter, b, ACCOUNT, (5,), "account 5")
    query(a, "UPDATE inv_accounts SET balance = balance + 1 WHERE id = 5")
    assert balance(b, 5) == 501, "account 5 after an UPDATE no [[invalidate]] rule matches"
    cached(counter, b, ACCOUNT, (5,), "account 5 again")
    query(a, "DELETE FROM inv_notes WHERE note = 'via A'")
    assert query(b, NOTES, (1,)) == before_1


PADDING = "x" * (2 * 1024 * 1024)  # above pgshelf's 1 MiB analysis limit


def test_write_too_large_to_analyse_invalidates_everything(shelves, sessions, counter):
    direct, a, b = sessions
    cached(counter, b, ACCOUNT, (40,), "account 40")
    notes = cached(counter, b, NOTES, (3,), "notes of 3")
    # Simple protocol: the 2 MiB literal is inlined by psycopg2.
    query(a, "UPDATE inv_accounts SET balance = %s WHERE id = %s AND %s <> ''", (606, 40, PADDING))
    assert balance(b, 40) == 606, "a read after a write pgshelf could not analyse served the old value"
    assert query(b, NOTES, (3,)) == notes
    # Extended protocol, a named statement whose text is above the limit.
    cached(counter, b, ACCOUNT, (40,), "account 40 again")
    with psycopg.connect(shelves[0].dsn(), autocommit=True) as bound:
        bound.execute(f"UPDATE inv_accounts SET balance = %s WHERE id = %s AND '{PADDING}' <> ''", (607, 40),
                      prepare=True)
        assert balance(b, 40) == 607
        cached(counter, b, ACCOUNT, (40,), "account 40 after the prepared write")
        bound.execute(f"UPDATE inv_accounts SET balance = %s WHERE id = %s AND '{PADDING}' <> ''", (608, 40),
                      prepare=True)
        assert balance(b, 40) == 608, "the second execution of a prepared write pgshelf could not analyse"


def test_writes_in_a_transaction_show_at_commit(pg, shelves, sessions, counter):
    direct, a, b = sessions
    other_a = connect(shelves[0].dsn())
    writer = connect(shelves[0].dsn(), autocommit=False)
    try:
        assert balance(b, 6) == 600
        cached(counter, b, ACCOUNT, (6,), "account 6 through B")
        cached(counter, other_a, ACCOUNT, (6,), "account 6 through A")
        query(writer, "UPDATE inv_accounts SET balance = %s WHERE id = %s", (6006, 6))
        # The writer sees its own write (no hit after the transaction wrote) ...
        assert balance(writer, 6) == 6006
        # ... others keep seeing the committed value, repeatedly; they may even
        # repopulate the entry with it, which COMMIT must invalidate again.
        for _ in range(5):
            assert balance(b, 6) == 600
            assert balance(other_a, 6) == 600
            time.sleep(0.02)
        repopulated = try_hit(counter, "%inv_accounts%", lambda: balance(b, 6) == 600)
        writer.commit()
        # COMMIT returned: every read that starts now sees the new value.
        assert balance(b, 6) == 6006, \
            f"through B right after COMMIT (old value repopulated during the transaction: {repopulated})"
        assert balance(other_a, 6) == 6006, "through A right after COMMIT"
        # Several writes in one transaction, one of them uncovered.
        cached(counter, b, ACCOUNT, (7,), "account 7 through B")
        cached(counter, b, NOTES, (3,), "notes of 3 through B")
        query(writer, "UPDATE inv_accounts SET balance = %s WHERE id = %s", (7007, 7))
        query(writer, "INSERT INTO inv_notes VALUES (3, 'in tx')")
        for _ in range(3):
            assert balance(b, 7) == 700
            assert ("in tx",) not in query(b, NOTES, (3,))
        writer.commit()
        assert balance(b, 7) == 7007
        assert ("in tx",) in query(b, NOTES, (3,))
    finally:
        other_a.close()
        writer.close()


def test_explicit_begin_commit_statements(shelves, sessions, counter):
    """BEGIN/COMMIT sent as statements (simple protocol), the commit via another client library."""
    direct, a, b = sessions
    cached(counter, b, ACCOUNT, (8,), "account 8")
    with psycopg.connect(shelves[0].dsn(), autocommit=True) as writer:
        writer.execute("BEGIN")
        writer.execute("UPDATE inv_accounts SET balance = %s WHERE id = %s", (8008, 8))
        assert balance(b, 8) == 800
        writer.execute("COMMIT")
        assert balance(b, 8) == 8008


def test_rollback_leaves_cached_values_correct(shelves, sessions, counter):
    direct, a, b = sessions
    writer = connect(shelves[0].dsn(), autocommit=False)
    try:
        cached(counter, b, ACCOUNT, (9,), "account 9")
        query(writer, "UPDATE inv_accounts SET balance = %s WHERE id = %s", (9999, 9))
        assert balance(b, 9) == 900
        writer.rollback()
        for conn, name in ((b, "B"), (a, "A"), (direct, "PostgreSQL")):
            assert balance(conn, 9) == 900, f"after ROLLBACK through {name}"
        # A failed transaction rolled back: still correct.
        query(writer, "UPDATE inv_accounts SET balance = %s WHERE id = %s", (9998, 9))
        with pytest.raises(Exception):
            query(writer, "SELECT 1/0")
        writer.rollback()
        assert balance(b, 9) == 900
        # The rule keeps caching afterwards.
        cached(counter, b, ACCOUNT, (9,), "account 9 after ROLLBACK")
        assert balance(b, 9) == 900
    finally:
        writer.close()


def test_ttl_bounds_writes_behind_pgshelfs_back(sessions, counter):
    direct, a, b = sessions
    assert cached(counter, b, SHORT, (1,), "short 1 (ttl 1s)") == [("old",)]
    hit_at = time.monotonic()
    query(direct, "UPDATE inv_short SET v = 'new' WHERE id = 1")
    first = query(b, SHORT, (1,))
    if time.monotonic() - hit_at < 0.5:
        assert first == [("old",)], "a write behind pgshelf's back showed before the TTL (entry not cached?)"
    poll(lambda: query(b, SHORT, (1,)) == [("new",)], 5, "the direct write to show after the 1s TTL")
    # And through the other instance as well.
    assert query(a, SHORT, (1,)) == [("new",)]


def test_first_read_after_a_write_is_not_delayed(shelves, sessions, counter):
    """A miss right after an invalidation goes to PostgreSQL at once.

    (Waiting for another fetch of the same entry is only worth it while one
    is really running; here none is, so any wait would be pure added
    latency. pgshelf counts such waits as outcome="waited".)
    """
    direct, a, b = sessions
    waits = 'pgshelf_cache_requests_total{outcome="waited"}'
    waited_before = metric(shelves[1], waits)
    for round_ in range(5):
        cached(counter, b, ACCOUNT, (10,), f"account 10, round {round_}")
        query(a, "UPDATE inv_accounts SET balance = %s WHERE id = %s", (1000 + round_, 10))
        got, executed = counter.delta("%inv_accounts%", lambda: balance(b, 10))
        assert got == 1000 + round_
        assert executed == 1, f"round {round_}: the first read after the write ran {executed} times on PostgreSQL"
    assert metric(shelves[1], waits) == waited_before, \
        "a miss after an invalidation waited for a fetch that was not running (a fetch lock outlived its store)"
