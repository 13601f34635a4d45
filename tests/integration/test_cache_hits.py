"""Cache hits through pgshelf, seen from every client the product supports.

One [[cache]] rule over ``hit_items``; every client sends the statement
its own way: psql with literals (simple protocol), psycopg2 (literals
interpolated on the client), psycopg 3 (server-side binding, prepare=True,
binary results), asyncpg (binary, named statements), node-postgres
(unnamed and named statements) and postgres.js (unnamed and prepared).
For each: once the entry is populated, executions are answered without
PostgreSQL seeing them (pg_stat_statements, read directly), and every
answer equals what the same client gets from PostgreSQL itself.

Also: literal-vs-parameter, whitespace, case, quoting and comment
variants share one entry; a different value in a slot the rule fixes as a
literal never hits; text and binary results are separate entries (byte
comparison over the raw protocol); transactions hit until they write;
partial fetches and pipelined requests stay correct.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import asyncpg
import psycopg
import pytest

import rawwire
from cache_support import (connect, counter, psql_query, query, reaches_server, redis_server, run_node,
                           served_from_cache, start_shelf, wait_for_hit, write_rules)
from pgshelf_harness import CONNECT_TIMEOUT

__all__ = ["counter", "redis_server"]  # module fixtures used below

PATTERN = "%hit_items%"
GROUPS = 16

RULES = """
[[cache]]
name  = "items"
query = "SELECT id, name, price, tags, created, payload FROM hit_items WHERE grp = $1 AND kind = 'book' ORDER BY id"
key   = "items:{grp}"
ttl   = "120s"

[[cache]]
name  = "big_items"
query = "SELECT id, body FROM hit_big WHERE grp = $1 ORDER BY id"
key   = "big:{grp}"
ttl   = "120s"
max_entry_size = "8MB"
"""

SQL_PARAM = "SELECT id, name, price, tags, created, payload FROM hit_items WHERE grp = $1 AND kind = 'book' ORDER BY id"
SQL_PYFORMAT = SQL_PARAM.replace("$1", "%s")


def sql_literal(grp: int, kind: str = "book") -> str:
    return SQL_PARAM.replace("$1", str(grp)).replace("'book'", f"'{kind}'")


@pytest.fixture(scope="module")
def cshelf(pg, redis_server, tmp_path_factory):
    pg.psql(f"""
        CREATE TABLE hit_items (id int PRIMARY KEY, grp int NOT NULL, kind text NOT NULL, name text,
                                price numeric(10, 2), tags text[], created date, payload jsonb);
        INSERT INTO hit_items
        SELECT i, i % {GROUPS}, CASE WHEN i % 3 = 0 THEN 'pen' ELSE 'book' END, 'item ' || i || ' ünï ''q''',
               i * 1.25, ARRAY['t' || i % 3, NULL], date '2026-01-01' + i, jsonb_build_object('i', i, 'x', ARRAY[i])
        FROM generate_series(1, {GROUPS * 8}) AS i;
        CREATE TABLE hit_other (id int);
        CREATE TABLE hit_big (id int PRIMARY KEY, grp int NOT NULL, body text NOT NULL);
        INSERT INTO hit_big SELECT i, i % 2, repeat(md5(i::text), 1 + i % 13) FROM generate_series(1, 12000) AS i;
    """)
    rules = write_rules(tmp_path_factory.mktemp("rules"), RULES)
    proxy = start_shelf(pg, redis_server, rules)
    yield proxy
    proxy.stop()


# -------------------------------------------------------------- psql, psycopg2


def test_psql_literals(pg, cshelf, counter):
    sql = sql_literal(0)
    expected = psql_query(pg.dsn(), sql)
    assert expected.count("\n") >= 5
    first = wait_for_hit(counter, PATTERN, lambda: psql_query(cshelf.dsn(), sql), "psql (simple protocol)")
    assert first == expected
    for output in served_from_cache(counter, PATTERN, lambda: psql_query(cshelf.dsn(), sql), "psql"):
        assert output == expected


def test_psycopg2_client_side_interpolation(pg, cshelf, counter):
    direct, proxied = connect(pg.dsn()), connect(cshelf.dsn())
    try:
        expected = query(direct, SQL_PYFORMAT, (1,))
        assert len(expected) >= 5
        run = lambda: query(proxied, SQL_PYFORMAT, (1,))  # noqa: E731
        assert wait_for_hit(counter, PATTERN, run, "psycopg2") == expected
        for rows in served_from_cache(counter, PATTERN, run, "psycopg2"):
            assert rows == expected
    finally:
        direct.close()
        proxied.close()


def test_transactions_hit_until_they_write(pg, cshelf, counter):
    """Inside BEGIN a read may be answered from the cache until the transaction writes."""
    warm = connect(cshelf.dsn())
    tx = connect(cshelf.dsn(), autocommit=False)
    direct = connect(pg.dsn())
    try:
        expected = query(direct, SQL_PYFORMAT, (13,))
        wait_for_hit(counter, PATTERN, lambda: query(warm, SQL_PYFORMAT, (13,)), "psycopg2 autocommit")
        query(tx, "SELECT 1")  # psycopg2 sends BEGIN first
        for rows in served_from_cache(counter, PATTERN, lambda: query(tx, SQL_PYFORMAT, (13,)),
                                      "read in a transaction that has not written"):
            assert rows == expected
        query(tx, "INSERT INTO hit_other VALUES (1)")
        for rows in reaches_server(counter, PATTERN, lambda: query(tx, SQL_PYFORMAT, (13,)),
                                   "read after the transaction wrote", times=2):
            assert rows == expected
        tx.rollback()
        # Failed transaction state: the server must report the error, never the cache.
        query(tx, "SELECT 1")
        with pytest.raises(Exception) as excinfo:
            query(tx, "SELECT 1/0")
        assert getattr(excinfo.value, "pgcode", None) == "22012"
        with pytest.raises(Exception) as excinfo:
            query(tx, SQL_PYFORMAT, (13,))
        assert getattr(excinfo.value, "pgcode", None) == "25P02", \
            f"read in a failed transaction: expected 25P02 from the server, got {excinfo.value!r}"
        tx.rollback()
    finally:
        warm.close()
        tx.close()
        direct.close()


# -------------------------------------------------------------- psycopg 3


@pytest.mark.parametrize("grp,options", [(2, {}), (3, {"prepare": True}), (4, {"binary": True}),
                                         (14, {"binary": True, "prepare": True})],
                         ids=["server-binding", "prepare", "binary", "binary-prepare"])
def test_psycopg3(pg, cshelf, counter, grp, options):
    with psycopg.connect(pg.dsn(), autocommit=True) as direct, \
            psycopg.connect(cshelf.dsn(), autocommit=True, connect_timeout=CONNECT_TIMEOUT) as proxied:
        expected = direct.execute(SQL_PYFORMAT, (grp,), **options).fetchall()
        assert len(expected) >= 5
        run = lambda: proxied.execute(SQL_PYFORMAT, (grp,), **options).fetchall()  # noqa: E731
        assert wait_for_hit(counter, PATTERN, run, f"psycopg 3 {options}") == expected
        for rows in served_from_cache(counter, PATTERN, run, f"psycopg 3 {options}"):
            assert rows == expected
        if options.get("prepare"):
            names = proxied.execute("SELECT name FROM pg_prepared_statements").fetchall()
            assert names, "psycopg 3 prepare=True: the statement is no longer prepared at the server"


def test_literal_and_parameter_share_one_entry(pg, cshelf, counter):
    """psycopg2 inlines 5 (simple Query); psycopg 3 binds $1 = 5: the same key, the same entry."""
    literal = connect(cshelf.dsn())
    try:
        expected = query(literal, SQL_PYFORMAT, (5,))
        wait_for_hit(counter, PATTERN, lambda: query(literal, SQL_PYFORMAT, (5,)), "psycopg2 literal")
    finally:
        literal.close()
    with psycopg.connect(cshelf.dsn(), autocommit=True, connect_timeout=CONNECT_TIMEOUT) as bound:
        for options in ({}, {"prepare": True}):
            rows = served_from_cache(counter, PATTERN,
                                     lambda: bound.execute(SQL_PYFORMAT, (5,), **options).fetchall(),
                                     f"psycopg 3 {options} after psycopg2 populated the entry", times=1)[0]
            assert rows == expected


# -------------------------------------------------------------- asyncpg


@contextlib.contextmanager
def asyncpg_pair(pg, cshelf, timeout: float = 30):
    """(run, direct, proxied): asyncpg connections to PostgreSQL and to pgshelf, driven by ``run``."""
    loop = asyncio.new_event_loop()

    def run(coro):
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))

    try:
        direct = run(asyncpg.connect(pg.dsn(), timeout=CONNECT_TIMEOUT))
        try:
            proxied = run(asyncpg.connect(cshelf.dsn(), timeout=CONNECT_TIMEOUT))
            try:
                yield run, direct, proxied
            finally:
                run(proxied.close())
        finally:
            run(direct.close())
    finally:
        loop.close()


def test_asyncpg_binary_named_statements(pg, cshelf, counter):
    with asyncpg_pair(pg, cshelf) as (run, direct, proxied):
        expected = [tuple(r) for r in run(direct.fetch(SQL_PARAM, 6))]
        assert len(expected) >= 5
        fetch = lambda: [tuple(r) for r in run(proxied.fetch(SQL_PARAM, 6))]  # noqa: E731
        assert wait_for_hit(counter, PATTERN, fetch, "asyncpg fetch") == expected
        for rows in served_from_cache(counter, PATTERN, fetch, "asyncpg fetch"):
            assert rows == expected
        # An explicitly prepared statement: Bind/Execute/Sync on its name.
        statement = run(proxied.prepare(SQL_PARAM))
        for rows in served_from_cache(counter, PATTERN,
                                      lambda: [tuple(r) for r in run(statement.fetch(6))],
                                      "asyncpg prepared statement"):
            assert rows == expected


# -------------------------------------------------------------- Node.js

NODE_SCRIPT = r"""
'use strict';
const cfg = JSON.parse(process.argv[1]);
const COUNT = "SELECT coalesce(sum(calls), 0)::text AS n FROM pg_stat_statements " +
  "WHERE query ILIKE $1 AND query NOT ILIKE '%pg_stat_statements%'";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  let runProxy, runDirect, count, close;
  if (cfg.driver === 'pg') {
    const { Client } = require('pg');
    const proxy = new Client({ connectionString: cfg.proxy });
    const direct = new Client({ connectionString: cfg.direct });
    await proxy.connect();
    await direct.connect();
    const q = (c) => c.query(Object.assign({ text: cfg.sql, values: cfg.params }, cfg.name ? { name: cfg.name } : {}))
      .then((r) => r.rows);
    runProxy = () => q(proxy);
    runDirect = () => q(direct);
    count = async () => Number((await direct.query(COUNT, [cfg.pattern])).rows[0].n);
    close = () => Promise.all([proxy.end(), direct.end()]);
  } else {
    const postgres = require('postgres');
    const proxy = postgres(cfg.proxy, { max: 1, connect_timeout: 10 });
    const direct = postgres(cfg.direct, { max: 1, connect_timeout: 10 });
    const q = (s) => s.unsafe(cfg.sql, cfg.params, { prepare: !!cfg.prepare }).then((rows) => rows.map((r) => ({ ...r })));
    runProxy = () => q(proxy);
    runDirect = () => q(direct);
    count = async () => Number((await direct.unsafe(COUNT, [cfg.pattern]))[0].n);
    close = () => Promise.all([proxy.end({ timeout: 5 }), direct.end({ timeout: 5 })]);
  }
  const out = { expected: await runDirect(), hit: false, attempts: 0 };
  const deadline = Date.now() + cfg.timeoutMs;
  while (!out.hit) {
    const before = await count();
    out.first = await runProxy();
    out.attempts++;
    out.hit = (await count()) === before;
    if (out.hit || Date.now() > deadline) break;
    await sleep(20);
  }
  const before = await count();
  out.results = [];
  for (let i = 0; i < cfg.repeats; i++) out.results.push(await runProxy());
  out.received = (await count()) - before;
  await close();
  return out;
}
main().then((out) => { process.stdout.write(JSON.stringify(out)); process.exit(0); },
  (error) => { console.error(error && error.stack ? error.stack : error); process.exit(1); });
"""


def node_case(pg, cshelf, driver: str, grp: int, **extra) -> dict:
    cfg = {"driver": driver, "proxy": cshelf.dsn(), "direct": pg.dsn(), "sql": SQL_PARAM, "params": [grp],
           "pattern": PATTERN, "timeoutMs": 5000, "repeats": 3, **extra}
    out = run_node(NODE_SCRIPT, json.dumps(cfg))
    what = f"{driver} {extra or ''}"
    assert len(out["expected"]) >= 5
    assert out["hit"], f"{what}: never served from the cache: PostgreSQL received each of {out['attempts']} attempts"
    assert out["first"] == out["expected"], f"{what}: first hit differs from PostgreSQL's rows"
    assert out["received"] == 0, f"{what}: PostgreSQL received {out['received']} of 3 executions after the hit"
    for rows in out["results"]:
        assert rows == out["expected"], f"{what}: cached rows differ from PostgreSQL's"
    return out


@pytest.mark.parametrize("grp,extra", [(7, {}), (8, {"name": "items_by_group"})], ids=["unnamed", "named"])
def test_node_postgres(pg, cshelf, counter, grp, extra):
    node_case(pg, cshelf, "pg", grp, **extra)


@pytest.mark.parametrize("grp,extra", [(9, {}), (10, {"prepare": True})], ids=["unnamed", "prepared"])
def test_postgres_js(pg, cshelf, counter, grp, extra):
    node_case(pg, cshelf, "postgres", grp, **extra)


# -------------------------------------------------------------- matching


VARIANTS = [
    "select id,name,price,tags,created,payload from hit_items where grp=11 and kind='book' order by id",
    "SELECT  id ,\n   name , price,tags, created, payload\n\tFROM   HIT_ITEMS\n  WHERE grp = 11 AND kind = 'book'"
    "  ORDER  BY  id  -- trailing comment",
    "/* leading comment */ SELECT \"id\", \"name\", price, tags, created, payload FROM \"hit_items\" "
    "WHERE grp = 11 AND kind = 'book' ORDER BY id;",
    "SeLeCt id, name, price, tags, created, payload /* inner */ FrOm hit_items WhErE grp = 11 AnD kind = 'book' "
    "OrDeR bY id",
]


def test_text_variants_share_one_entry(pg, cshelf, counter):
    proxied, direct = connect(cshelf.dsn()), connect(pg.dsn())
    try:
        expected = query(direct, sql_literal(11))
        wait_for_hit(counter, PATTERN, lambda: query(proxied, sql_literal(11)), "canonical text")
        for variant in VARIANTS:
            rows = served_from_cache(counter, PATTERN, lambda: query(proxied, variant),
                                     f"variant {variant!r}", times=1)[0]
            assert rows == expected, f"variant {variant!r}"
    finally:
        proxied.close()
        direct.close()


def test_other_literal_in_a_rule_literal_slot_never_hits(pg, cshelf, counter):
    proxied, direct = connect(cshelf.dsn()), connect(pg.dsn())
    try:
        wait_for_hit(counter, PATTERN, lambda: query(proxied, sql_literal(12)), "kind = 'book'")
        expected = query(direct, sql_literal(12, "pen"))
        assert expected and expected != query(direct, sql_literal(12))
        for rows in reaches_server(counter, PATTERN, lambda: query(proxied, sql_literal(12, "pen")),
                                   "kind = 'pen' (the rule fixes 'book')", times=4):
            assert rows == expected
        # The same with the literal as a bound parameter.
        with psycopg.connect(cshelf.dsn(), autocommit=True) as bound:
            sql = SQL_PYFORMAT.replace("'book'", "%s")
            for rows in reaches_server(counter, PATTERN,
                                       lambda: bound.execute(sql, (12, "pen")).fetchall(),
                                       "kind = $2 bound to 'pen'", times=3):
                assert rows == expected
    finally:
        proxied.close()
        direct.close()


# -------------------------------------------------------------- raw protocol


def extended(conn: rawwire.Conn, grp: int, result_formats: tuple[int, ...] = (), describe: bool = True,
             max_rows: int = 0) -> list[tuple[bytes, bytes]]:
    """Parse/Bind/Describe(P)/Execute/Sync of the rule's statement; the result messages (T, D, C, s)."""
    messages = [rawwire.parse(SQL_PARAM), rawwire.bind((str(grp),), result_formats=result_formats)]
    if describe:
        messages.append(rawwire.describe(b"P"))
    conn.send(*messages, rawwire.execute(max_rows=max_rows), rawwire.sync())
    reply = conn.recv_until_ready()
    errors = [rawwire.error_fields(body) for kind, body in reply if kind == b"E"]
    assert not errors, errors
    return [(kind, body) for kind, body in reply if kind in (b"T", b"D", b"C", b"s")]


def test_binary_and_text_results_are_separate_entries(pg, cshelf, counter):
    with rawwire.Conn.connect(pg.host, pg.port) as direct, rawwire.Conn.connect(cshelf.host, cshelf.port) as proxied:
        text_expected = extended(direct, 15)
        binary_expected = extended(direct, 15, (1,))
        assert text_expected != binary_expected
        assert rawwire.kinds(text_expected).count("D") >= 5
        first = wait_for_hit(counter, PATTERN, lambda: extended(proxied, 15), "text results")
        assert first == text_expected
        # Binary results of the same statement and parameters: not the text entry.
        got = reaches_server(counter, PATTERN, lambda: extended(proxied, 15, (1,)),
                             "first binary request after the text entry was populated", times=1)[0]
        assert got == binary_expected, "binary request answered with text rows"
        first = wait_for_hit(counter, PATTERN, lambda: extended(proxied, 15, (1,)), "binary results")
        assert first == binary_expected
        for got in served_from_cache(counter, PATTERN, lambda: extended(proxied, 15, (1,)), "binary"):
            assert got == binary_expected
        for got in served_from_cache(counter, PATTERN, lambda: extended(proxied, 15), "text"):
            assert got == text_expected
        # Without Describe the client gets only the rows (no RowDescription).
        rows_only = served_from_cache(counter, PATTERN, lambda: extended(proxied, 15, describe=False),
                                      "text without Describe", times=1)[0]
        assert rows_only == [m for m in text_expected if m[0] != b"T"]


def test_result_spanning_many_reads_is_stored_whole(pg, cshelf, counter):
    """A result of megabytes arrives in many reads, with rows split between them: the hit equals it."""
    sql = "SELECT id, body FROM hit_big WHERE grp = 1 ORDER BY id"
    expected = psql_query(pg.dsn(), sql)
    assert len(expected) > 1_000_000
    assert wait_for_hit(counter, "%hit_big%", lambda: psql_query(cshelf.dsn(), sql), "a result of megabytes") == expected
    # Byte for byte, frame by frame. (A hit this large can miss Redis's
    # command timeout on a loaded machine and go to PostgreSQL instead:
    # hence wait_for_hit, not a fixed count of hits.)
    def raw(conn: rawwire.Conn) -> list:
        conn.send(rawwire.query(sql))
        return conn.recv_until_ready()

    with rawwire.Conn.connect(pg.host, pg.port) as direct, rawwire.Conn.connect(cshelf.host, cshelf.port) as proxied:
        expected_frames = raw(direct)
        assert wait_for_hit(counter, "%hit_big%", lambda: raw(proxied), "raw protocol") == expected_frames


def test_damaged_entry_is_served_by_postgres_and_replaced(pg, cshelf, counter, redis_server):
    """An entry whose stamps are current but whose messages are not whole (one byte cut out of its
    middle, as a faulty writer or a damaged Redis could leave it) is never replayed: the statement
    goes to PostgreSQL, and its answer is stored again."""
    sql = "SELECT id, body FROM hit_big WHERE grp = 0 ORDER BY id"
    expected = psql_query(pg.dsn(), sql)
    assert wait_for_hit(counter, "%hit_big%", lambda: psql_query(cshelf.dsn(), sql), "grp 0") == expected
    warning = "a cached entry is not a sequence of whole protocol messages"
    warned_before = (cshelf.dir / "pgshelf.log").read_text(errors="replace").count(warning)
    damaged_reads = 4
    for round_ in range(damaged_reads):
        keys = [k for k in redis_server.command("KEYS", "*{big:0}:big_items:*") if not k.endswith(b":lock")]
        assert len(keys) == 1, keys
        value = redis_server.command("GET", keys[0])
        middle = len(value) // 2
        redis_server.command("SET", keys[0], value[:middle] + value[middle + 1:])
        for output in reaches_server(counter, "%hit_big%", lambda: psql_query(cshelf.dsn(), sql),
                                     f"damaged entry, round {round_}", times=1):
            assert output == expected
        assert wait_for_hit(counter, "%hit_big%", lambda: psql_query(cshelf.dsn(), sql),
                            f"entry stored again, round {round_}") == expected
    # Said, but not once per damaged entry: a Redis full of them must not flood the log.
    warned = (cshelf.dir / "pgshelf.log").read_text(errors="replace").count(warning) - warned_before
    assert 1 <= warned < damaged_reads, warned


def test_large_result_in_binary_over_the_extended_protocol(pg, cshelf, counter):
    """The same result in binary, Parse/Bind/Execute (asyncpg): stored whole and answered identically."""
    sql = "SELECT id, body FROM hit_big WHERE grp = $1 ORDER BY id"
    with asyncpg_pair(pg, cshelf, timeout=60) as (run, direct, proxied):
        expected = [tuple(r) for r in run(direct.fetch(sql, 0))]
        assert len(expected) == 6000
        fetch = lambda: [tuple(r) for r in run(proxied.fetch(sql, 0))]  # noqa: E731
        assert wait_for_hit(counter, "%hit_big%", fetch, "asyncpg, a result of megabytes") == expected


def test_partial_fetch_goes_to_the_server(pg, cshelf, counter):
    """Execute with a row limit is never answered from the cache, even when the entry exists."""
    with rawwire.Conn.connect(pg.host, pg.port) as direct, rawwire.Conn.connect(cshelf.host, cshelf.port) as proxied:
        wait_for_hit(counter, PATTERN, lambda: extended(proxied, 15), "text results")
        expected = extended(direct, 15, max_rows=2)
        assert rawwire.kinds(expected) == "TDDs"
        for got in reaches_server(counter, PATTERN, lambda: extended(proxied, 15, max_rows=2), "row limit 2",
                                  times=2):
            assert got == expected


def test_pipelined_requests_stay_correct(pg, cshelf, counter):
    """Several batches sent before reading any answer: every answer is PostgreSQL's, in order."""
    def pipeline(conn: rawwire.Conn) -> list:
        batches = []
        for grp in (0, 1, 15, 3, 0):
            batches += [rawwire.parse(SQL_PARAM), rawwire.bind((str(grp),)), rawwire.describe(b"P"),
                        rawwire.execute(), rawwire.sync()]
        batches += [rawwire.query("SELECT count(*) FROM hit_items")]
        conn.send(*batches)
        return [conn.recv_until_ready() for _ in range(6)]

    with rawwire.Conn.connect(pg.host, pg.port) as direct, rawwire.Conn.connect(cshelf.host, cshelf.port) as proxied:
        wait_for_hit(counter, PATTERN, lambda: extended(proxied, 0), "grp 0 via the raw protocol")
        expected = pipeline(direct)
        for _ in range(3):
            assert pipeline(proxied) == expected
