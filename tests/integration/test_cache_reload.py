"""Rules file reload on SIGHUP.

A good file takes effect for requests that start after the reload; a file
with errors is logged with file:line, counted, and changes nothing. A rule
that keeps its name and key template but changes its query never serves
rows stored for the old query (the rule's statement is in the namespace).
"""

from __future__ import annotations

import signal

import pytest

from cache_support import (connect, counter, metric, poll, query, reaches_server, redis_server, served_from_cache,
                           start_shelf, wait_for_hit, write_rules)

__all__ = ["counter", "redis_server"]  # module fixtures used below

PATTERN = "%reload_items%"
SQL_V = "SELECT v FROM reload_items WHERE id = %s"
SQL_W = "SELECT w FROM reload_items WHERE id = %s"
SQL_VW = "SELECT v, w FROM reload_items WHERE id = %s"

RULES_V = """
[[cache]]
name  = "item"
query = "SELECT v FROM reload_items WHERE id = $1"
key   = "reload:{id}"
ttl   = "120s"
"""

RULES_W = """
[[cache]]
name  = "item_w"
query = "SELECT w FROM reload_items WHERE id = $1"
key   = "reload_w:{id}"
ttl   = "120s"
"""

# Same name and key as RULES_V, another statement.
RULES_VW = """
[[cache]]
name  = "item"
query = "SELECT v, w FROM reload_items WHERE id = $1"
key   = "reload:{id}"
ttl   = "120s"
"""

RULES_BROKEN = """
[[cache]]
name  = "item"
query = "SELEC v FROM reload_items WHERE id = $1"
key   = "reload:{id}"
ttl   = "120s"
"""


@pytest.fixture(scope="module")
def setup(pg, redis_server, tmp_path_factory):
    pg.psql("""
        CREATE TABLE reload_items (id int PRIMARY KEY, v text, w text);
        INSERT INTO reload_items SELECT i, 'v' || i, 'w' || i FROM generate_series(1, 10) AS i;
    """)
    directory = tmp_path_factory.mktemp("rules")
    rules = write_rules(directory, RULES_V)
    shelf = start_shelf(pg, redis_server, rules)
    yield shelf, directory
    shelf.stop()


def reloads(shelf, outcome: str) -> float:
    return metric(shelf, f'pgshelf_config_reloads_total{{outcome="{outcome}"}}')


def reload(shelf, directory, text: str, outcome: str) -> None:
    before = reloads(shelf, outcome)
    write_rules(directory, text)
    shelf.signal(signal.SIGHUP)
    poll(lambda: reloads(shelf, outcome) == before + 1, 10, f"a reload counted as {outcome}")


def fresh_query(shelf, sql: str, params: tuple) -> list[tuple]:
    """On a new connection: a session takes up new rules between requests."""
    conn = connect(shelf.dsn())
    try:
        return query(conn, sql, params)
    finally:
        conn.close()


def test_reload(setup, pg, counter):
    shelf, directory = setup
    v1 = wait_for_hit(counter, PATTERN, lambda: fresh_query(shelf, SQL_V, (1,)), "rule item before any reload")
    assert v1 == [("v1",)]

    # A broken file: errors logged with file and line, old rules stay.
    reload(shelf, directory, RULES_BROKEN, "failed")
    log = shelf.log_tail(200)
    assert "rules.toml:" in log and "has errors; the rules in force are unchanged" in log, log
    served_from_cache(counter, PATTERN, lambda: fresh_query(shelf, SQL_V, (1,)), "rule item after a bad reload")
    assert shelf.alive()

    # A good file replaces the rules: the old statement now reaches PostgreSQL, the new one is cached.
    reload(shelf, directory, RULES_W, "ok")
    reaches_server(counter, PATTERN, lambda: fresh_query(shelf, SQL_V, (1,)), "rule item after it was removed")
    w1 = wait_for_hit(counter, PATTERN, lambda: fresh_query(shelf, SQL_W, (1,)), "rule item_w after the reload")
    assert w1 == [("w1",)]


def test_changed_query_under_the_same_name(setup, pg, counter):
    shelf, directory = setup
    reload(shelf, directory, RULES_V, "ok")
    assert wait_for_hit(counter, PATTERN, lambda: fresh_query(shelf, SQL_V, (2,)), "item, id 2") == [("v2",)]
    reload(shelf, directory, RULES_VW, "ok")
    # The entry under reload:{2} for rule "item" holds one column; the new
    # statement must get its own two-column rows, first from PostgreSQL.
    first, seen = counter.delta(PATTERN, lambda: fresh_query(shelf, SQL_VW, (2,)))
    assert first == [("v2", "w2")]
    assert seen == 1
    hit = wait_for_hit(counter, PATTERN, lambda: fresh_query(shelf, SQL_VW, (2,)), "item (v, w), id 2")
    assert hit == [("v2", "w2")]


def test_reload_between_a_write_and_its_commit(setup, pg, counter):
    """A transaction's pending invalidations name their rules, not positions in a rule set."""
    shelf, directory = setup
    reload(shelf, directory, RULES_V, "ok")
    assert wait_for_hit(counter, PATTERN, lambda: fresh_query(shelf, SQL_V, (3,)), "item, id 3") == [("v3",)]
    writer = connect(shelf.dsn(), autocommit=False)
    try:
        # No [[invalidate]] rule: the table fallback for rule "item" fires at COMMIT.
        query(writer, "UPDATE reload_items SET v = 'x3' WHERE id = 3")
        reload(shelf, directory, RULES_W, "ok")
        query(writer, "SELECT 1")  # the session takes up the new rules between requests
        writer.commit()
    finally:
        writer.close()
    reload(shelf, directory, RULES_V, "ok")
    assert fresh_query(shelf, SQL_V, (3,)) == [("x3",)]
    assert shelf.alive()
