"""pgshelf's lifecycle: unreachable upstream, vanishing clients and servers, SIGTERM.

- Upstream unreachable: the client's connection attempt fails with an
  ErrorResponse of SQLSTATE class 08; pgshelf keeps running and serves as
  soon as a PostgreSQL listens on that port.
- A client killed during ``pg_sleep``: its server backend goes away. (The
  direct variant lets PostgreSQL notice through client_connection_check_
  interval; through pgshelf that setting is not used - pgshelf must end the
  server's work itself.)
- PostgreSQL restarted under open sessions: the clients get the server's
  error, pgshelf keeps running and new sessions work.
- SIGTERM with a query running: new connections are refused, the query
  completes with its result, the session goes on serving until its client
  leaves, then pgshelf exits 0 within the shutdown timeout.
- SIGTERM with an idle session or one idle in a transaction that outlives
  the timeout: pgshelf exits 0 (bounded wait) and the server session ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import subprocess

import asyncpg
import psycopg2
import pytest

from clients import fetch_one, sleeping, startup_error
from pgshelf_harness import CONNECT_TIMEOUT, PG_BINDIR, PgShelf, Postgres, client_env, free_port, port_accepts, wait_until

SHUTDOWN_TIMEOUT_S = 8
EXIT_MARGIN_S = 10  # scheduling slack on top of the shutdown timeout


def test_upstream_unreachable_then_available(make_shelf):
    upstream_port = free_port()
    shelf = make_shelf(f"postgres://127.0.0.1:{upstream_port}", env={"PGSHELF_UPSTREAM_CONNECT_TIMEOUT": "3s"})

    error = startup_error(shelf)
    assert error.sqlstate.startswith("08"), error.fields
    assert error.fields.get("S") in ("FATAL", "ERROR")

    async def asyncpg_error():
        with pytest.raises(asyncpg.PostgresError) as excinfo:
            await asyncpg.connect(shelf.dsn(), timeout=15)
        return excinfo.value

    assert asyncio.run(asyncpg_error()).sqlstate.startswith("08")
    with pytest.raises(psycopg2.OperationalError) as excinfo:
        psycopg2.connect(shelf.dsn(), connect_timeout=15)
    assert error.fields["M"] in str(excinfo.value)
    assert shelf.alive()

    with Postgres(port=upstream_port) as late_pg:
        assert fetch_one(shelf.dsn(), "SELECT 'served', current_setting('port')::int") == ("served", late_pg.port)
    assert shelf.alive()


def test_client_killed_mid_query(target):
    app = f"it_killed_client_{target.name}"
    params = {"application_name": app}
    if not target.is_proxy:
        params["options"] = "-c client_connection_check_interval=200"
    client = subprocess.Popen([str(PG_BINDIR / "psql"), "-X", "-c", "SELECT pg_sleep(60)", "-d", target.dsn(**params)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=client_env())
    try:
        target.pg.wait_for_backends(sleeping(app))
        client.kill()
        client.wait(10)
    finally:
        if client.poll() is None:
            client.kill()
    target.pg.wait_no_backends(f"application_name = '{app}'", 15)
    if target.is_proxy:
        assert target.endpoint.alive()


def test_server_restart_under_open_sessions(pgshelf_bin):
    with Postgres() as pg, PgShelf(pg, binary=pgshelf_bin) as shelf:
        conn = psycopg2.connect(shelf.dsn(), connect_timeout=CONNECT_TIMEOUT)
        conn.autocommit = True
        pg.restart()
        with pytest.raises(psycopg2.OperationalError):
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        conn.close()
        assert shelf.alive()
        assert fetch_one(shelf.dsn(), "SELECT 'after restart'") == ("after restart",)


def test_sigterm_lets_running_query_finish(make_shelf, pg):
    shelf = make_shelf(shutdown_timeout=f"{SHUTDOWN_TIMEOUT_S}s")
    app = "it_sigterm_busy"
    conn = psycopg2.connect(shelf.dsn(application_name=app), connect_timeout=CONNECT_TIMEOUT)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            def long_query():
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_sleep(3), 'completed'")
                    return cur.fetchone()[1]

            future = pool.submit(long_query)
            pg.wait_for_backends(f"application_name = '{app}' AND state = 'active'")
            shelf.signal(signal.SIGTERM)
            wait_until(lambda: not port_accepts(shelf.port), 10, what="pgshelf to stop accepting")
            with pytest.raises(psycopg2.OperationalError):
                psycopg2.connect(shelf.dsn(), connect_timeout=5)
            assert future.result(timeout=SHUTDOWN_TIMEOUT_S + EXIT_MARGIN_S) == "completed"
        # The session keeps serving during the drain: its application may
        # still be finishing its own work.
        assert fetch_one_on(conn, "SELECT 'still served'") == "still served"
        assert shelf.alive()
        conn.close()
        assert shelf.wait(SHUTDOWN_TIMEOUT_S + EXIT_MARGIN_S) == 0
    finally:
        conn.close()
    pg.wait_no_backends(f"application_name = '{app}'", 10)


def fetch_one_on(conn, sql: str) -> object:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


@pytest.mark.parametrize("in_transaction", [False, True], ids=["idle", "idle_in_transaction"])
def test_sigterm_with_lingering_session_exits_after_timeout(make_shelf, pg, in_transaction):
    shelf = make_shelf(shutdown_timeout="2s")
    app = f"it_sigterm_{'tx' if in_transaction else 'idle'}"
    conn = psycopg2.connect(shelf.dsn(application_name=app), connect_timeout=CONNECT_TIMEOUT)
    conn.autocommit = not in_transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        pg.wait_for_backends(f"application_name = '{app}'")
        shelf.signal(signal.SIGTERM)
        assert shelf.wait(2 + EXIT_MARGIN_S) == 0
        pg.wait_no_backends(f"application_name = '{app}'", 10)
        with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):
            with conn.cursor() as cur:
                cur.execute("SELECT 2")
    finally:
        conn.close()
