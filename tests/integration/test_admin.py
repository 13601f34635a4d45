"""Operating pgshelf: the HTTP admin port, the SQL admin console, signals.

- ``/healthz`` and ``/readyz`` answer; ``/metrics`` parses as Prometheus
  text (prometheus_client's parser) and its counters move as expected after
  a miss, hits, a key invalidation, a table fallback, a bypass and a Redis
  outage (errors counted, circuit open, still ready);
- ``/readyz`` answers 503 while PostgreSQL is stopped and during a drain;
- the console (virtual database ``pgshelf``) answers psql, psycopg2 and
  asyncpg (extended protocol, binary results) with ordinary result sets:
  SHOW RULES / STATS / CLIENTS / CONFIG / HELP agree with /metrics and with
  what the test did, INVALIDATE KEY / RULE make the next read reach
  PostgreSQL, RELOAD applies a good file and refuses a bad one;
- only roles in admin.console_users get in, with their PostgreSQL password;
- SHOW QUERIES suggests a rule that, appended to the rules file and loaded
  with SIGHUP, makes that statement hit (and leaves SHOW QUERIES);
- SIGTERM under a transactional load: every transaction that had begun
  commits, /readyz says draining, pgshelf exits 0 once the clients leave;
  a second SIGINT exits at once;
- JSON logs at info: one object per line with connection ids, and no
  password (PostgreSQL's, Redis's) or parameter value anywhere in them.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import subprocess
import threading

import asyncpg
import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cache_support import (connect, counter, poll, query, reaches_server, redis_server, served_from_cache,
                           start_shelf, wait_for_hit, write_rules)
from pgshelf_harness import CONNECT_TIMEOUT, PG_BINDIR, PASSWORDS, PgShelf, Postgres, Redis, client_env
from test_deploy import ALLOWED_METRICS

__all__ = ["counter", "redis_server"]  # module fixtures used below

PATTERN = "%adm_items%"
READ = "SELECT v FROM adm_items WHERE id = %s"
WRITE = "UPDATE adm_items SET v = %s WHERE id = %s"

RULES = """
[[cache]]
name  = "adm_item"
query = "SELECT v FROM adm_items WHERE id = $1"
key   = "adm:{id}"
ttl   = "300s"

[[invalidate]]
name  = "adm_item_changed"
query = "UPDATE adm_items SET v = $1 WHERE id = $2"
keys  = ["adm:{id}"]
"""

CONSOLE_USERS = "postgres,scram_user"


@pytest.fixture(scope="module")
def setup(pg, redis_server, tmp_path_factory):
    pg.psql("""
        CREATE TABLE adm_items (id int PRIMARY KEY, v text);
        INSERT INTO adm_items SELECT i, 'v' || i FROM generate_series(1, 50) AS i;
        CREATE TABLE adm_other (id int PRIMARY KEY, label text);
        INSERT INTO adm_other SELECT i, 'label ' || i FROM generate_series(1, 20) AS i;
        GRANT SELECT ON adm_items, adm_other TO PUBLIC;
    """)
    directory = tmp_path_factory.mktemp("rules")
    rules = write_rules(directory, RULES)
    shelf = start_shelf(pg, redis_server, rules, PGSHELF_ADMIN_CONSOLE_USERS=CONSOLE_USERS)
    yield shelf, rules
    assert shelf.alive(), shelf.log_tail()
    assert shelf.stop() == 0


@pytest.fixture
def shelf(setup):
    return setup[0]


# --------------------------------------------------------------------------
# helpers


def http_get(shelf: PgShelf, path: str) -> tuple[int, str, str]:
    """Status, content type and body of GET ``path`` on the admin port."""
    host, port = shelf.env["PGSHELF_ADMIN_LISTEN"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


def scrape(shelf: PgShelf) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, parsed by prometheus_client: (name, labels) -> value."""
    status, content_type, body = http_get(shelf, "/metrics")
    assert status == 200 and content_type.startswith("text/plain"), (status, content_type)
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def labels_of(samples: dict, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (sample_name, labels) in samples if sample_name == name]


def console_dsn(shelf: PgShelf, user: str = "postgres", password: str | None = None) -> str:
    return shelf.dsn(user=user, password=password, dbname="pgshelf")


def psql(dsn: str, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PG_BINDIR / "psql"), "-X", "-A", "-F", "|", "-P", "footer=off", "-v", "ON_ERROR_STOP=1",
                           "-d", dsn, "-c", sql], capture_output=True, text=True, env=client_env(), timeout=30)


def console(shelf: PgShelf, sql: str, user: str = "postgres", password: str | None = None) -> list[dict]:
    """Rows of one console command, as dicts by column name, typed by psycopg2 (int8, float8, bool)."""
    conn = psycopg2.connect(console_dsn(shelf, user, password), connect_timeout=CONNECT_TIMEOUT)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            if cur.description is None:
                return []
            names = [column.name for column in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        conn.close()


def psql_rows(shelf: PgShelf, sql: str) -> list[dict[str, str]]:
    """Rows of a console command run by psql (unaligned, one line per row: no multi-line values)."""
    proc = psql(console_dsn(shelf), sql)
    assert proc.returncode == 0, f"psql {sql!r} exited {proc.returncode}: {proc.stderr}"
    lines = proc.stdout.splitlines()
    header = lines[0].split("|")
    return [dict(zip(header, line.split("|", len(header) - 1))) for line in lines[1:]]


def console_error(shelf: PgShelf, sql: str, user: str = "postgres", password: str | None = None) -> str:
    proc = psql(console_dsn(shelf, user, password), sql)
    assert proc.returncode != 0, f"psql {sql!r} succeeded: {proc.stdout}"
    return proc.stderr


def stats(shelf: PgShelf) -> dict[str, float]:
    return {row["stat"]: row["value"] or 0.0 for row in console(shelf, "SHOW STATS")}


def rule_row(shelf: PgShelf, name: str) -> dict[str, str]:
    rows = [row for row in console(shelf, "SHOW RULES") if row["rule"] == name]
    assert len(rows) == 1, f"SHOW RULES has {len(rows)} rows for {name}"
    return rows[0]


def read(conn, item: int) -> str:
    return query(conn, READ, (item,))[0][0]


# --------------------------------------------------------------------------
# HTTP admin port


def test_health_endpoints(shelf):
    assert http_get(shelf, "/healthz")[0] == 200
    status, _, body = http_get(shelf, "/readyz")
    assert status == 200, body
    assert "postgresql: ok" in body and "redis: " in body
    assert http_get(shelf, "/nothing")[0] == 404


def test_metrics_parse_and_serve_every_dashboard_series(shelf):
    families = {family.name: family.type
                for family in text_string_to_metric_families(http_get(shelf, "/metrics")[2])}
    expected = {
        "pgshelf_ready": "gauge",
        "pgshelf_draining": "gauge",
        "pgshelf_client_connections": "gauge",
        "pgshelf_client_connections_accepted": "counter",
        "pgshelf_server_connections": "gauge",
        "pgshelf_cache_requests": "counter",
        "pgshelf_cache_bypass": "counter",
        "pgshelf_redis_command_duration_seconds": "histogram",
        "pgshelf_cache_hit_duration_seconds": "histogram",
        "pgshelf_cache_miss_duration_seconds": "histogram",
        "pgshelf_redis_circuit_open": "gauge",
        "pgshelf_config_reloads": "counter",
        "pgshelf_protocol_errors": "counter",
    }
    for name, kind in expected.items():
        assert families.get(name) == kind, f"{name}: {families.get(name)} (families: {sorted(families)})"
    # Every series the Grafana dashboard plots exists (the parser names a
    # counter's family without its _total suffix).
    for name in ALLOWED_METRICS:
        assert name in families or name.removesuffix("_total") in families, f"the dashboard plots missing {name}"


def test_metrics_move_with_miss_hit_invalidation_fallback_and_bypass(shelf, counter):
    conn = connect(shelf.dsn())
    try:
        before = scrape(shelf)
        # A miss, then hits.
        reaches_server(counter, PATTERN, lambda: read(conn, 1), "first read of item 1", times=1)
        wait_for_hit(counter, PATTERN, lambda: read(conn, 1), "item 1")
        served_from_cache(counter, PATTERN, lambda: read(conn, 1), "item 1", times=3)
        after_hits = scrape(shelf)
        rule_hits = sample(after_hits, "pgshelf_rule_requests_total", rule="adm_item", outcome="hit") - \
            sample(before, "pgshelf_rule_requests_total", rule="adm_item", outcome="hit")
        assert rule_hits >= 4
        assert sample(after_hits, "pgshelf_rule_requests_total", rule="adm_item", outcome="miss") > \
            sample(before, "pgshelf_rule_requests_total", rule="adm_item", outcome="miss")
        assert sample(after_hits, "pgshelf_cache_requests_total", outcome="hit") - \
            sample(before, "pgshelf_cache_requests_total", outcome="hit") >= 4
        assert sample(after_hits, "pgshelf_rule_stores_total", rule="adm_item", outcome="stored") > \
            sample(before, "pgshelf_rule_stores_total", rule="adm_item", outcome="stored")
        assert sample(after_hits, "pgshelf_cache_served_bytes_total") > sample(before, "pgshelf_cache_served_bytes_total")
        assert sample(after_hits, "pgshelf_cache_hit_duration_seconds_count") - \
            sample(before, "pgshelf_cache_hit_duration_seconds_count") >= 4
        assert sample(after_hits, "pgshelf_redis_command_duration_seconds_count") > \
            sample(before, "pgshelf_redis_command_duration_seconds_count")

        # A covered write: one key invalidation, and the next read misses.
        query(conn, WRITE, ("changed 1", 1))
        after_write = scrape(shelf)
        assert sample(after_write, "pgshelf_rule_invalidations_total", rule="adm_item", kind="key") == \
            sample(after_hits, "pgshelf_rule_invalidations_total", rule="adm_item", kind="key") + 1
        assert reaches_server(counter, PATTERN, lambda: read(conn, 1), "item 1 after its update", times=1) == \
            ["changed 1"]

        # A write no [[invalidate]] rule covers: the table fallback.
        query(conn, "DELETE FROM adm_items WHERE id = 1000")
        after_fallback = scrape(shelf)
        assert sample(after_fallback, "pgshelf_rule_invalidations_total", rule="adm_item", kind="table_fallback") == \
            sample(after_write, "pgshelf_rule_invalidations_total", rule="adm_item", kind="table_fallback") + 1
        assert labels_of(after_fallback, "pgshelf_cache_table_fallback_total") == [
            {"rule": "adm_item", "table": "adm_items"}]
        assert sample(after_fallback, "pgshelf_cache_table_fallback_total", rule="adm_item", table="adm_items") > \
            sample(after_write, "pgshelf_cache_table_fallback_total", rule="adm_item", table="adm_items")

        # Bypasses by reason.
        query(conn, "SELECT label FROM adm_other WHERE id = 1")
        # A read the rule matches, after a write in the same transaction.
        query(conn, "BEGIN")
        query(conn, WRITE, ("changed 2", 2))
        assert read(conn, 2) == "changed 2"
        query(conn, "ROLLBACK")
        after_bypass = scrape(shelf)
        for reason in ("no_rule", "transaction_wrote"):
            assert sample(after_bypass, "pgshelf_cache_bypass_total", reason=reason) > \
                sample(after_fallback, "pgshelf_cache_bypass_total", reason=reason), reason
        assert sample(after_bypass, "pgshelf_client_connections_accepted_total") >= 1
        assert sample(after_bypass, "pgshelf_client_connections") >= 1
        assert sample(after_bypass, "pgshelf_server_connections") >= 1
    finally:
        conn.close()


def test_redis_outage_is_counted_and_not_unready(pg, tmp_path):
    redis = Redis()
    try:
        rules = write_rules(tmp_path, RULES)
        with start_shelf(pg, redis, rules) as shelf:
            conn = connect(shelf.dsn())
            try:
                for item in range(1, 4):
                    read(conn, item)
                before = scrape(shelf)
                assert sample(before, "pgshelf_redis_circuit_open") == 0
                log_before = len(shelf.log_path.read_text())
                redis.kill()
                # Reads go on, answered by PostgreSQL.
                for _ in range(200):
                    assert read(conn, 3) == "v3"
                during = poll(lambda: (s := scrape(shelf)) and sample(s, "pgshelf_redis_circuit_open") > 0 and s,
                              10, "the circuit breaker to open")
                assert sample(during, "pgshelf_redis_errors_total") > sample(before, "pgshelf_redis_errors_total")
                status, _, body = http_get(shelf, "/readyz")
                assert status == 200, f"Redis down must not make pgshelf unready: {body}"
                assert "redis: ok" not in body, body
                # Warnings about Redis are rate-limited, not one per statement.
                warnings = [line for line in shelf.log_path.read_text()[log_before:].splitlines()
                            if "redis" in line and ("[warning]" in line or "[error]" in line)]
                assert 1 <= len(warnings) <= 10, warnings

                redis.start()
                # Without traffic too: an idle instance must not stay "broken".
                poll(lambda: sample(scrape(shelf), "pgshelf_redis_circuit_open") == 0, 20,
                     "the circuit breakers to close after Redis came back", interval=0.2)
                assert "redis: ok" in http_get(shelf, "/readyz")[2]
                assert read(conn, 3) == "v3"
            finally:
                conn.close()
    finally:
        redis.stop()


def test_readyz_follows_postgres(tmp_path, redis_server):
    own_pg = Postgres()
    try:
        rules = write_rules(tmp_path, RULES)
        with start_shelf(own_pg, redis_server, rules) as shelf:
            assert http_get(shelf, "/readyz")[0] == 200
            own_pg.shut_down()
            status, _, body = http_get(shelf, "/readyz")
            assert status == 503 and "postgresql" in body, (status, body)
            assert sample(scrape(shelf), "pgshelf_ready") == 0
            own_pg.start()
            poll(lambda: http_get(shelf, "/readyz")[0] == 200, 20, "/readyz to answer 200 again")
            assert sample(scrape(shelf), "pgshelf_ready") == 1
    finally:
        own_pg.stop()


# --------------------------------------------------------------------------
# SQL admin console


def test_console_show_rules_matches_metrics(shelf, counter):
    conn = connect(shelf.dsn())
    try:
        read(conn, 7)
        wait_for_hit(counter, PATTERN, lambda: read(conn, 7), "item 7")
    finally:
        conn.close()
    row = [r for r in psql_rows(shelf, "SHOW RULES") if r["rule"] == "adm_item"][0]
    samples = scrape(shelf)
    hits = sample(samples, "pgshelf_rule_requests_total", rule="adm_item", outcome="hit")
    misses = sample(samples, "pgshelf_rule_requests_total", rule="adm_item", outcome="miss")
    assert int(row["hits"]) == hits and hits >= 1
    assert int(row["misses"]) == misses and misses >= 1
    assert float(row["hit_ratio"]) == pytest.approx(hits / (hits + misses), abs=1e-3)
    assert float(row["ttl_s"]) == 300
    assert row["key"] == "adm:{id}"
    assert row["source"].endswith("rules.toml:2")
    assert int(row["stores"]) == sample(samples, "pgshelf_rule_stores_total", rule="adm_item", outcome="stored")


def test_console_show_stats_matches_metrics(shelf):
    values = stats(shelf)
    samples = scrape(shelf)
    assert values["cache_hits"] == sample(samples, "pgshelf_cache_requests_total", outcome="hit")
    assert values["cache_misses"] == sample(samples, "pgshelf_cache_requests_total", outcome="miss")
    assert values["bypass_no_rule"] == sample(samples, "pgshelf_cache_bypass_total", reason="no_rule")
    assert values["draining"] == 0
    assert values["client_connections"] >= 1  # this console session


def test_console_show_clients_and_config(shelf, pg):
    conn = connect(shelf.dsn(user="trust_user", application_name="adm_clients"), autocommit=False)
    try:
        query(conn, "SELECT 1")  # a transaction is open now
        rows = [row for row in console(shelf, "SHOW CLIENTS") if row["user"] == "trust_user"]
        assert len(rows) == 1, rows
        assert rows[0]["database"] == "postgres"
        assert rows[0]["state"] == "idle in transaction"
        assert rows[0]["peer"].startswith("127.0.0.1:")
        assert rows[0]["server_requests"] >= 1 and rows[0]["tls"] is False
        conn.rollback()
    finally:
        conn.close()
    poll(lambda: not [r for r in console(shelf, "SHOW CLIENTS") if r["user"] == "trust_user"], 10,
         "the closed client to leave SHOW CLIENTS")

    # A statement running on the server: "active", then "idle" again.
    busy = connect(shelf.dsn(user="md5_user", password=PASSWORDS["md5_user"]))
    try:
        sleeper = threading.Thread(target=query, args=(busy, "SELECT pg_sleep(1.5)"))
        sleeper.start()
        states = lambda: [r["state"] for r in console(shelf, "SHOW CLIENTS") if r["user"] == "md5_user"]  # noqa: E731
        poll(lambda: states() == ["active"], 10, "SHOW CLIENTS to show the running statement as active")
        sleeper.join(10)
        assert states() == ["idle"]
    finally:
        busy.close()

    config = {row["setting"]: row["value"] for row in console(shelf, "SHOW CONFIG")}
    assert config["listen.address"] == f"127.0.0.1:{shelf.port}"
    assert config["admin.console_users"] == "postgres,scram_user"
    assert config["upstream.port"] == str(pg.port)
    assert config["proxy.workers"] == "2"


def test_console_help_and_errors(shelf):
    commands = [row["command"] for row in console(shelf, "SHOW HELP")]
    assert "SHOW QUERIES" in commands and "RELOAD" in commands
    stderr = console_error(shelf, "DROP TABLE adm_items")
    assert "SHOW RULES" in stderr, f"an unknown command must list the commands: {stderr}"
    stderr = console_error(shelf, "INVALIDATE RULE no_such_rule")
    assert "no_such_rule" in stderr
    # Several commands in one Query, as psql sends a script line.
    proc = psql(console_dsn(shelf), "SET application_name = 'x'; SHOW HELP; SHOW CONFIG")
    assert proc.returncode == 0 and "listen" in proc.stdout, proc.stderr


def test_console_verbose_errors_carry_sqlstate(shelf):
    proc = subprocess.run([str(PG_BINDIR / "psql"), "-X", "-v", "VERBOSITY=verbose", "-d", console_dsn(shelf),
                           "-c", "INVALIDATE RULE no_such_rule"], capture_output=True, text=True, env=client_env(),
                          timeout=30)
    assert proc.returncode != 0 and "42704" in proc.stderr, proc.stderr
    proc = subprocess.run([str(PG_BINDIR / "psql"), "-X", "-v", "VERBOSITY=verbose", "-d", console_dsn(shelf),
                           "-c", "VACUUM"], capture_output=True, text=True, env=client_env(), timeout=30)
    assert proc.returncode != 0 and "42601" in proc.stderr, proc.stderr


def test_console_invalidate_key_and_rule(shelf, counter):
    conn = connect(shelf.dsn())
    try:
        for item in (11, 12):
            read(conn, item)
            wait_for_hit(counter, PATTERN, lambda item=item: read(conn, item), f"item {item}")
        console(shelf, "INVALIDATE KEY 'adm:11'")
        reaches_server(counter, PATTERN, lambda: read(conn, 11), "item 11 after INVALIDATE KEY", times=1)
        served_from_cache(counter, PATTERN, lambda: read(conn, 12), "item 12 after INVALIDATE KEY 'adm:11'")

        wait_for_hit(counter, PATTERN, lambda: read(conn, 11), "item 11 again")
        before = rule_row(shelf, "adm_item")
        console(shelf, "INVALIDATE RULE adm_item")
        for item in (11, 12):
            reaches_server(counter, PATTERN, lambda item=item: read(conn, item),
                           f"item {item} after INVALIDATE RULE", times=1)
        assert rule_row(shelf, "adm_item")["invalidations_fallback"] > before["invalidations_fallback"]
    finally:
        conn.close()


def test_console_reload(setup, tmp_path):
    shelf, rules = setup
    original = rules.read_text()
    try:
        rules.write_text(original + """
[[cache]]
name  = "adm_label"
query = "SELECT label FROM adm_other WHERE id = $1"
key   = "adm_label:{id}"
ttl   = "60s"
""")
        proc = psql(console_dsn(shelf), "RELOAD")
        assert proc.returncode == 0, proc.stderr
        assert "adm_label" in [row["rule"] for row in console(shelf, "SHOW RULES")]
        # A new rule's series exist at 0 before its first request.
        samples = scrape(shelf)
        for outcome in ("hit", "miss"):
            assert ("pgshelf_rule_requests_total", frozenset({"rule": "adm_label", "outcome": outcome}.items())) \
                in samples, outcome

        ok_before = stats(shelf)["reloads_failed"]
        rules.write_text(original + '\n[[cache]]\nname = "broken"\nquery = "SELEC 1"\nkey = "b"\nttl = "1s"\n')
        stderr = console_error(shelf, "RELOAD")
        assert "rules.toml:" in stderr, stderr
        assert stats(shelf)["reloads_failed"] == ok_before + 1
        names = [row["rule"] for row in console(shelf, "SHOW RULES")]
        assert "adm_label" in names and "broken" not in names, "a bad file must keep the rules in force"
    finally:
        rules.write_text(original)
        assert psql(console_dsn(shelf), "RELOAD").returncode == 0


def test_console_from_drivers(shelf):
    conn = psycopg2.connect(console_dsn(shelf), connect_timeout=CONNECT_TIMEOUT)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SHOW STATS")
            assert [d.name for d in cur.description] == ["stat", "value"]
            rows = dict(cur.fetchall())
            assert "cache_hits" in rows and isinstance(rows["cache_hits"], float)
    finally:
        conn.close()

    async def with_asyncpg():
        # asyncpg: extended protocol, named statements, binary int8/float8/bool.
        c = await asyncpg.connect(console_dsn(shelf), timeout=CONNECT_TIMEOUT)
        try:
            rules = await c.fetch("SHOW RULES")
            clients = await c.fetch("SHOW CLIENTS")
            return rules, clients
        finally:
            await c.close()

    rules, clients = asyncio.run(with_asyncpg())
    row = [r for r in rules if r["rule"] == "adm_item"][0]
    assert isinstance(row["hits"], int) and isinstance(row["ttl_s"], float) and row["ttl_s"] == 300.0
    assert any(isinstance(c["tls"], bool) and c["database"] == "pgshelf" for c in clients)


def test_console_access_is_limited_to_listed_roles(shelf):
    # Listed, authenticated by PostgreSQL with SCRAM.
    rows = console(shelf, "SHOW HELP", user="scram_user", password=PASSWORDS["scram_user"])
    assert rows
    stderr = console_error(shelf, "SHOW HELP", user="scram_user", password="wrong password")
    assert "password authentication failed" in stderr, stderr
    # Not listed: refused before any authentication.
    stderr = console_error(shelf, "SHOW HELP", user="pw_user", password=PASSWORDS["pw_user"])
    assert "not allowed to use the admin console" in stderr, stderr
    # A listed role still reaches ordinary databases as usual.
    conn = connect(shelf.dsn(user="scram_user", password=PASSWORDS["scram_user"]))
    try:
        assert query(conn, "SELECT current_user")[0][0] == "scram_user"
    finally:
        conn.close()


# --------------------------------------------------------------------------
# SHOW QUERIES → a rule → SIGHUP → hits


def test_show_queries_suggestion_makes_the_statement_hit(setup, counter):
    shelf, rules = setup
    original = rules.read_text()
    sql = "SELECT id, label FROM adm_other WHERE id = %s AND label <> %s"
    conn = connect(shelf.dsn())
    try:
        for item in range(1, 11):
            query(conn, sql, (item, "nothing"))
        rows = [row for row in console(shelf, "SHOW QUERIES") if "adm_other" in row["query"] and "label <>" in
                row["query"]]
        assert len(rows) == 1, rows
        suggestion = rows[0]
        assert suggestion["calls"] >= 10
        assert suggestion["mean_server_ms"] > 0
        assert "[[cache]]" in suggestion["suggested_rule"]

        before = stats(shelf)["reloads_ok"]
        rules.write_text(original + "\n" + suggestion["suggested_rule"] + "\n")
        shelf.signal(signal.SIGHUP)
        poll(lambda: stats(shelf)["reloads_ok"] > before, 10, "the SIGHUP reload")

        query(conn, sql, (4, "nothing"))
        got = wait_for_hit(counter, "%adm_other%label <>%", lambda: query(conn, sql, (4, "nothing")),
                           "the statement SHOW QUERIES suggested a rule for")
        assert got == [(4, "label 4")]
        rows = [row for row in console(shelf, "SHOW QUERIES") if "label <>" in row["query"]]
        assert rows == [], "a statement a rule now caches must leave SHOW QUERIES"
    finally:
        conn.close()
        rules.write_text(original)
        shelf.signal(signal.SIGHUP)


# --------------------------------------------------------------------------
# SIGTERM under load


def test_sigterm_under_load_fails_no_begun_transaction(pg, redis_server, tmp_path):
    pg.psql("CREATE TABLE IF NOT EXISTS adm_load (worker int, n int, PRIMARY KEY (worker, n))")
    rules = write_rules(tmp_path, RULES)
    shelf = start_shelf(pg, redis_server, rules, PGSHELF_PROXY_SHUTDOWN_TIMEOUT="30s")
    workers = 6
    stop = threading.Event()
    signalled = threading.Event()
    committed = [0] * workers
    after_signal = [0] * workers
    failures: list[str] = []
    conns = [connect(shelf.dsn(), autocommit=False) for _ in range(workers)]

    def work(index: int) -> None:
        conn = conns[index]
        n = 0
        try:
            while not stop.is_set():
                n += 1
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO adm_load VALUES (%s, %s)", (index, n))
                    cur.execute(READ, (n % 50 + 1,))
                    cur.fetchone()
                    cur.execute("SELECT pg_sleep(0.005)")
                conn.commit()
                committed[index] += 1
                if signalled.is_set():
                    after_signal[index] += 1
        except Exception as e:  # noqa: BLE001 - every failure is a test failure
            failures.append(f"worker {index} transaction {n}: {type(e).__name__}: {e}")
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    try:
        poll(lambda: min(committed) >= 5, 30, "every worker to commit a few transactions")
        shelf.signal(signal.SIGTERM)
        signalled.set()
        status, _, body = http_get(shelf, "/readyz")
        assert status == 503 and "draining" in body, (status, body)
        assert sample(scrape(shelf), "pgshelf_draining") == 1
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(shelf.dsn(), connect_timeout=5)
        # The sessions already open keep working during the drain.
        poll(lambda: min(after_signal) >= 5, 30, "every worker to commit during the drain")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures
    assert shelf.wait(40) == 0, shelf.log_tail()
    rows = query_direct(pg, "SELECT count(*) FROM adm_load")
    assert rows == sum(committed), f"{rows} rows in adm_load, {sum(committed)} commits acknowledged"


def query_direct(pg: Postgres, sql: str) -> int:
    conn = connect(pg.dsn())
    try:
        return int(query(conn, sql)[0][0])
    finally:
        conn.close()


def test_second_sigint_exits_at_once(pg, redis_server, tmp_path):
    rules = write_rules(tmp_path, RULES)
    shelf = start_shelf(pg, redis_server, rules, PGSHELF_PROXY_SHUTDOWN_TIMEOUT="300s")
    conn = connect(shelf.dsn(), autocommit=False)
    try:
        query(conn, "SELECT 1")  # idle in transaction: holds the drain open
        shelf.signal(signal.SIGINT)
        poll(lambda: "draining" in shelf.log_tail(5), 10, "pgshelf to start draining")
        assert shelf.alive(), "a session in a transaction must hold the drain open"
        shelf.signal(signal.SIGINT)
        assert shelf.wait(20) == 0, "the second signal must not wait for the 300 s shutdown timeout"
    finally:
        conn.close()
        shelf.stop()


# --------------------------------------------------------------------------
# logs


def test_json_logs_carry_no_secrets(pg, tmp_path):
    redis_password = "redis-secret-9"
    redis = Redis()
    try:
        redis.command("CONFIG", "SET", "requirepass", redis_password)
        rules = write_rules(tmp_path, RULES)
        shelf = start_shelf(pg, redis, rules, log_level="info",
                            REDIS_URL=f"redis://:{redis_password}@127.0.0.1:{redis.port}/0",
                            PGSHELF_LOG_FORMAT="json", PGSHELF_ADMIN_CONSOLE_USERS="postgres")
        try:
            secret_value = "param-value-4711"
            for user in ("pw_user", "md5_user", "scram_user"):
                conn = connect(shelf.dsn(user=user, password=PASSWORDS[user]))
                try:
                    query(conn, "SELECT %s::text", (secret_value,))
                    query(conn, READ, (987654321,))
                finally:
                    conn.close()
            with pytest.raises(psycopg2.OperationalError):
                psycopg2.connect(shelf.dsn(user="pw_user", password="wrong-password-77"),
                                 connect_timeout=CONNECT_TIMEOUT)
            config = {row["setting"]: row["value"] for row in console(shelf, "SHOW CONFIG")}
            assert redis_password not in config["redis.url"] and "***" in config["redis.url"], config["redis.url"]
            shelf.signal(signal.SIGTERM)
            assert shelf.wait(30) == 0
            lines = [line for line in shelf.log_path.read_text().splitlines() if line.strip()]
        finally:
            shelf.stop()
        assert lines
        records = [json.loads(line) for line in lines]
        assert all({"ts", "level", "msg"} <= set(r) for r in records)
        opened = [r["msg"] for r in records if " open from " in r["msg"]]
        assert len(opened) >= 3 and all(m.startswith("conn ") for m in opened), opened
        text = "\n".join(lines)
        for secret in (*(PASSWORDS[u] for u in ("pw_user", "md5_user", "scram_user")), "wrong-password-77",
                       redis_password, secret_value, "adm:987654321"):
            assert secret not in text, f"{secret!r} appears in the log"
    finally:
        redis.stop()
