"""Isolation: cached rows never leak between roles, search paths or databases.

The same statement text can mean different rows: under row-level security
each role sees its own rows, a role without the privilege must get
permission denied, an unqualified table name resolves by search_path, and
each database has its own tables. Every key is namespaced by database,
current role (SET ROLE / SET SESSION AUTHORIZATION included) and the
settings that change results, so:

- two roles (alice, bob) on an RLS table never see each other's cached
  rows; bob never gets alice's cached rows of a table he may not read;
- a superuser session that switches roles (SET ROLE, SET LOCAL ROLE, SET
  SESSION AUTHORIZATION, set_config) gets the rows of the role in effect;
- sessions with different search_path (SET search_path; the startup
  option ``-csearch_path=...``) over two schemas with same-named tables
  never share an entry;
- different databases never share an entry;
- tenants under row-level security chosen by a setting that a user
  function sets (set_config() inside it, out of pgshelf's sight): a session
  that called such a function gets no hits, so two tenants of one role
  never see each other's rows.

Each check first makes the "other" entry a proven cache hit, then asserts
the isolated session gets exactly what PostgreSQL gives it directly.
"""

from __future__ import annotations

import psycopg2
import pytest

from cache_support import connect, counter, query, redis_server, start_shelf, wait_for_hit, write_rules

__all__ = ["counter", "redis_server"]

RULES = """
[[cache]]
name  = "docs"
query = "SELECT id, owner, body FROM iso_docs WHERE id > $1 ORDER BY id"
key   = "docs:{$1}"
ttl   = "120s"

[[cache]]
name  = "secret"
query = "SELECT id, code FROM iso_secret WHERE id = $1"
key   = "secret:{id}"
ttl   = "120s"

[[cache]]
name  = "values"
query = "SELECT id, at, data, ratio, span FROM iso_values WHERE id = $1"
key   = "values:{id}"
ttl   = "120s"

[[cache]]
name  = "tenant_docs"
query = "SELECT id, body FROM iso_tenant_docs WHERE id > $1 ORDER BY id"
key   = "tenant_docs:{$1}"
ttl   = "120s"

[[cache]]
name  = "items"
query = "SELECT id, label FROM iso_items WHERE id = $1"
key   = "items:{id}"
ttl   = "120s"
"""

DOCS = "SELECT id, owner, body FROM iso_docs WHERE id > %s ORDER BY id"
SECRET = "SELECT id, code FROM iso_secret WHERE id = %s"
ITEMS = "SELECT id, label FROM iso_items WHERE id = %s"
VALUES = "SELECT id, at, data, ratio, span FROM iso_values WHERE id = %s"


@pytest.fixture(scope="module")
def pg_options():
    return {"hba_extra": [f"host all {role} 127.0.0.1/32 trust" for role in ("alice", "bob")]}


@pytest.fixture(scope="module")
def ishelf(pg, redis_server, tmp_path_factory):
    pg.psql("""
        CREATE ROLE alice LOGIN;
        CREATE ROLE bob LOGIN;
        CREATE TABLE iso_docs (id int PRIMARY KEY, owner text NOT NULL, body text);
        INSERT INTO iso_docs VALUES (1, 'alice', 'a1'), (2, 'alice', 'a2'), (3, 'bob', 'b3'), (4, 'bob', 'b4'),
                                    (5, 'carol', 'c5');
        ALTER TABLE iso_docs ENABLE ROW LEVEL SECURITY;
        CREATE POLICY own_rows ON iso_docs USING (owner = current_user);
        GRANT SELECT ON iso_docs TO alice, bob;
        CREATE TABLE iso_secret (id int PRIMARY KEY, code text);
        INSERT INTO iso_secret VALUES (1, 'for alice only');
        GRANT SELECT ON iso_secret TO alice;
        CREATE SCHEMA s1;
        CREATE SCHEMA s2;
        CREATE TABLE s1.iso_items (id int PRIMARY KEY, label text);
        CREATE TABLE s2.iso_items (id int PRIMARY KEY, label text);
        INSERT INTO s1.iso_items VALUES (1, 'from s1');
        INSERT INTO s2.iso_items VALUES (1, 'from s2');
        CREATE TABLE iso_values (id int PRIMARY KEY, at timestamptz, data bytea, ratio float8, span interval);
        INSERT INTO iso_values VALUES (1, '2026-03-01 12:00:00+00', '\\x00ff41', 1.0 / 3, '1 day 02:03:04');
        GRANT SELECT ON iso_values TO alice, bob;
        CREATE TABLE iso_tenant_docs (id int PRIMARY KEY, tenant int NOT NULL, body text);
        INSERT INTO iso_tenant_docs VALUES (1, 1, 'tenant 1 doc'), (2, 2, 'tenant 2 doc');
        ALTER TABLE iso_tenant_docs ENABLE ROW LEVEL SECURITY;
        CREATE POLICY by_tenant ON iso_tenant_docs
            USING (tenant = nullif(current_setting('app.tenant', true), '')::int);
        GRANT SELECT ON iso_tenant_docs TO alice;
        CREATE FUNCTION set_tenant(t int) RETURNS void LANGUAGE sql
            AS $$ SELECT set_config('app.tenant', t::text, false) $$;
        CREATE DATABASE iso_a;
        CREATE DATABASE iso_b;
    """)
    for db in ("iso_a", "iso_b"):
        pg.psql(f"CREATE TABLE iso_items (id int PRIMARY KEY, label text); INSERT INTO iso_items VALUES (1, '{db}');",
                dbname=db)
    rules = write_rules(tmp_path_factory.mktemp("rules"), RULES)
    proxy = start_shelf(pg, redis_server, rules)
    yield proxy
    proxy.stop()


def rows_of(dsn: str, sql: str, params: tuple, setup: str | None = None) -> list[tuple]:
    conn = connect(dsn)
    try:
        if setup:
            query(conn, setup)
        return query(conn, sql, params)
    finally:
        conn.close()


def test_roles_under_row_level_security(pg, ishelf, counter):
    expected = {role: rows_of(pg.dsn(role), DOCS, (0,)) for role in ("alice", "bob")}
    assert expected["alice"] == [(1, "alice", "a1"), (2, "alice", "a2")]
    assert expected["bob"] == [(3, "bob", "b3"), (4, "bob", "b4")]
    alice, bob = connect(ishelf.dsn("alice")), connect(ishelf.dsn("bob"))
    try:
        assert wait_for_hit(counter, "%iso_docs%", lambda: query(alice, DOCS, (0,)), "alice's docs") == expected["alice"]
        for _ in range(3):
            assert query(bob, DOCS, (0,)) == expected["bob"], "bob got another role's cached rows"
        assert wait_for_hit(counter, "%iso_docs%", lambda: query(bob, DOCS, (0,)), "bob's docs") == expected["bob"]
        assert query(alice, DOCS, (0,)) == expected["alice"]
        # New sessions of each role, in the opposite order.
        assert rows_of(ishelf.dsn("bob"), DOCS, (0,)) == expected["bob"]
        assert rows_of(ishelf.dsn("alice"), DOCS, (0,)) == expected["alice"]
    finally:
        alice.close()
        bob.close()


def test_privileges(pg, ishelf, counter):
    alice, bob = connect(ishelf.dsn("alice")), connect(ishelf.dsn("bob"))
    try:
        assert wait_for_hit(counter, "%iso_secret%", lambda: query(alice, SECRET, (1,)), "alice's secret") == \
            [(1, "for alice only")]
        for attempt in range(3):
            with pytest.raises(psycopg2.Error) as excinfo:
                rows = query(bob, SECRET, (1,))
                pytest.fail(f"attempt {attempt}: bob read {rows} from a table he has no privilege on")
            assert excinfo.value.pgcode == "42501", f"bob: expected permission denied, got {excinfo.value!r}"
    finally:
        alice.close()
        bob.close()


def test_role_switches_in_a_superuser_session(pg, ishelf, counter):
    every = rows_of(pg.dsn(), DOCS, (0,))
    alice_rows = rows_of(pg.dsn("alice"), DOCS, (0,))
    bob_rows = rows_of(pg.dsn("bob"), DOCS, (0,))
    assert len(every) == 5 and alice_rows != bob_rows
    # Every role's entry exists and is served from the cache first.
    for role, expected in (("alice", alice_rows), ("bob", bob_rows)):
        conn = connect(ishelf.dsn(role))
        try:
            assert wait_for_hit(counter, "%iso_docs%", lambda: query(conn, DOCS, (0,)), role) == expected
        finally:
            conn.close()
    su = connect(ishelf.dsn())
    try:
        assert wait_for_hit(counter, "%iso_docs%", lambda: query(su, DOCS, (0,)), "superuser") == every
        steps = [
            ("SET ROLE bob", bob_rows),
            ("SET ROLE alice", alice_rows),
            ("RESET ROLE", every),
            ("SET SESSION AUTHORIZATION bob", bob_rows),
            ("RESET SESSION AUTHORIZATION", every),
            ("SELECT set_config('role', 'bob', false)", bob_rows),
            ("SELECT set_config('role', 'none', false)", every),
            ("SET ROLE alice", alice_rows),
            ("SET ROLE NONE", every),
        ]
        for statement, expected in steps:
            query(su, statement)
            for attempt in range(3):
                got = query(su, DOCS, (0,))
                assert got == expected, f"after {statement!r} (read {attempt}): got {got}, expected {expected}"
        # SET LOCAL ROLE lasts until the end of the transaction.
        su.autocommit = False
        query(su, "SET LOCAL ROLE bob")
        assert query(su, DOCS, (0,)) == bob_rows, "after SET LOCAL ROLE bob"
        su.commit()
        assert query(su, DOCS, (0,)) == every, "after the transaction with SET LOCAL ROLE bob"
        query(su, "SET ROLE alice")
        assert query(su, DOCS, (0,)) == alice_rows, "after SET ROLE alice in a transaction"
        su.rollback()
        assert query(su, DOCS, (0,)) == every, "after a rolled back SET ROLE alice"
        su.rollback()
    finally:
        su.close()


def test_role_from_startup_options(pg, ishelf, counter):
    """``options=-crole=...`` makes a superuser's session run as that role from the start."""
    alice_rows = rows_of(pg.dsn("alice"), DOCS, (0,))
    bob_rows = rows_of(pg.dsn("bob"), DOCS, (0,))
    for options, what in (("", "superuser"), ("-crole=alice", "options=-crole=alice")):
        su = connect(ishelf.dsn(options=options) if options else ishelf.dsn())
        try:
            got = wait_for_hit(counter, "%iso_docs%", lambda: query(su, DOCS, (0,)), what)
            if options:
                assert got == alice_rows, f"{what} got {got}"
        finally:
            su.close()
    as_bob = connect(ishelf.dsn(options="-crole=bob"))
    try:
        assert query(as_bob, "SELECT current_user") == [("bob",)]
        for attempt in range(3):
            got = query(as_bob, DOCS, (0,))
            assert got == bob_rows, f"read {attempt} with options=-crole=bob got {got}, expected bob's {bob_rows}"
    finally:
        as_bob.close()


def raw_values(conn) -> list[tuple]:
    """Rows of VALUES for id 1 as the server's text (no client-side parsing)."""
    raw = psycopg2.extensions.new_type((1184, 17, 701, 1186), "RAW_TEXT", lambda value, cur: value)
    psycopg2.extensions.register_type(raw, conn)
    return query(conn, VALUES, (1,))


@pytest.mark.parametrize("setting", ["TimeZone=Asia/Tokyo", "IntervalStyle=sql_standard", "bytea_output=escape",
                                     "extra_float_digits=-2"])
def test_output_settings(pg, ishelf, counter, setting):
    """Settings that change how values are printed, set with SET and in the startup packet."""
    name, value = setting.split("=")
    plain = connect(ishelf.dsn())
    try:
        default = wait_for_hit(counter, "%iso_values%", lambda: raw_values(plain), "default settings")
    finally:
        plain.close()
    direct = connect(pg.dsn(options=f"-c{name}={value}"))
    try:
        expected = raw_values(direct)
    finally:
        direct.close()
    assert expected != default, f"{setting} does not change the output (test premise)"
    for how in ("SET", "startup options"):
        if how == "SET":
            conn = connect(ishelf.dsn())
            query(conn, f"SET {name} = '{value}'")
        else:
            conn = connect(ishelf.dsn(options=f"-c{name}={value}"))
        try:
            for attempt in range(2):
                got = raw_values(conn)
                assert got == expected, \
                    f"{setting} via {how}, read {attempt}: got {got}, PostgreSQL sends {expected}"
        finally:
            conn.close()


def test_search_path_set_in_the_session(pg, ishelf, counter):
    s1, s2 = connect(ishelf.dsn()), connect(ishelf.dsn())
    try:
        query(s1, "SET search_path = s1")
        query(s2, "SET search_path TO s2, public")
        assert wait_for_hit(counter, "%iso_items%", lambda: query(s1, ITEMS, (1,)), "search_path s1") == \
            [(1, "from s1")]
        for _ in range(3):
            assert query(s2, ITEMS, (1,)) == [(1, "from s2")], "search_path s2 got the s1 entry"
        assert wait_for_hit(counter, "%iso_items%", lambda: query(s2, ITEMS, (1,)), "search_path s2") == \
            [(1, "from s2")]
        assert query(s1, ITEMS, (1,)) == [(1, "from s1")]
        query(s1, "SET search_path = s2")
        assert query(s1, ITEMS, (1,)) == [(1, "from s2")], "after switching search_path from s1 to s2"
        query(s1, "RESET search_path")
        with pytest.raises(psycopg2.Error) as excinfo:
            rows = query(s1, ITEMS, (1,))
            pytest.fail(f"default search_path (no iso_items in public) read {rows}")
        assert excinfo.value.pgcode == "42P01"
    finally:
        s1.close()
        s2.close()


def test_search_path_from_startup_options(pg, ishelf, counter):
    # These entries exist first; a session whose search_path came with the
    # startup packet must not be served from them.
    s1 = connect(ishelf.dsn(options="-csearch_path=s1"))
    s2 = connect(ishelf.dsn(options="-csearch_path=s2"))
    try:
        assert query(s1, "SHOW search_path") == [("s1",)]
        assert wait_for_hit(counter, "%iso_items%", lambda: query(s1, ITEMS, (1,)), "options search_path=s1") == \
            [(1, "from s1")]
        for attempt in range(3):
            got = query(s2, ITEMS, (1,))
            assert got == [(1, "from s2")], \
                f"read {attempt} with options=-csearch_path=s2 got {got} (the search_path=s1 session's entry)"
        # A session with the default search_path (no iso_items in public) must get the server's error.
        plain = connect(ishelf.dsn())
        try:
            with pytest.raises(psycopg2.Error) as excinfo:
                rows = query(plain, ITEMS, (1,))
                pytest.fail(f"default search_path read {rows}: another session's cached rows")
            assert excinfo.value.pgcode == "42P01"
        finally:
            plain.close()
    finally:
        s1.close()
        s2.close()


def test_databases_never_share(pg, ishelf, counter):
    a, b = connect(ishelf.dsn(dbname="iso_a")), connect(ishelf.dsn(dbname="iso_b"))
    try:
        assert wait_for_hit(counter, "%iso_items%", lambda: query(a, ITEMS, (1,)), "iso_a") == [(1, "iso_a")]
        for _ in range(3):
            assert query(b, ITEMS, (1,)) == [(1, "iso_b")], "database iso_b got iso_a's cached rows"
        assert wait_for_hit(counter, "%iso_items%", lambda: query(b, ITEMS, (1,)), "iso_b") == [(1, "iso_b")]
        assert query(a, ITEMS, (1,)) == [(1, "iso_a")]
    finally:
        a.close()
        b.close()


TENANT_DOCS = "SELECT id, body FROM iso_tenant_docs WHERE id > %s ORDER BY id"


def test_tenant_chosen_by_a_function_never_sees_another_tenants_rows(pg, ishelf, counter):
    expected = {t: rows_of(pg.dsn("alice"), TENANT_DOCS, (0,), setup=f"SELECT set_tenant({t})") for t in (1, 2)}
    assert expected == {1: [(1, "tenant 1 doc")], 2: [(2, "tenant 2 doc")]}
    # A session that never calls the function caches (no tenant: no rows).
    plain = connect(ishelf.dsn("alice"))
    try:
        assert wait_for_hit(counter, "%iso_tenant_docs%", lambda: query(plain, TENANT_DOCS, (0,)), "no tenant") == []
    finally:
        plain.close()
    tenants = {t: connect(ishelf.dsn("alice")) for t in (1, 2)}
    try:
        for t, conn in tenants.items():
            query(conn, f"SELECT set_tenant({t})")
        for _ in range(5):
            for t, conn in tenants.items():
                assert query(conn, TENANT_DOCS, (0,)) == expected[t], f"tenant {t} got another tenant's cached rows"
    finally:
        for conn in tenants.values():
            conn.close()
