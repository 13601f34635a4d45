"""Query cancellation through pgshelf (CancelRequest mapped to the server's key).

``SELECT pg_sleep(30)`` is cancelled by: psql on SIGINT (libpq PQcancel),
psycopg2 ``conn.cancel()`` (PQcancel), psycopg 3 ``conn.cancel()``, and a
raw CancelRequest carrying the BackendKeyData the client received. Each
time the query must end with SQLSTATE 57014 within a bounded wait and the
session must stay usable. A CancelRequest with a wrong key cancels
nothing, cancelling one session leaves another one's query running,
every session's BackendKeyData is distinct, and a CancelRequest sent to a
second pgshelf instance reaches a session on the first (DESIGN §3).
"""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess

import psycopg
import psycopg2
import psycopg2.errors
import pytest

import rawwire
from clients import sleeping
from pgshelf_harness import CONNECT_TIMEOUT, PG_BINDIR, Redis, client_env

CANCEL_BOUND = 15  # seconds from cancel to the query's end, at most


@pytest.fixture
def executor():
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def test_psql_sigint_cancels(target):
    app = f"it_psql_cancel_{target.name}"
    proc = subprocess.Popen([str(PG_BINDIR / "psql"), "-X", "-v", "VERBOSITY=verbose", "-c", "SELECT pg_sleep(30)",
                             "-d", target.dsn(application_name=app)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client_env())
    try:
        target.pg.wait_for_backends(sleeping(app))
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=CANCEL_BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1, (stdout, stderr)
    assert "ERROR:  57014: canceling statement due to user request" in stderr
    target.pg.wait_no_backends(sleeping(app))


def test_psycopg2_cancel(target, executor):
    app = f"it_pg2_cancel_{target.name}"
    conn = psycopg2.connect(target.dsn(application_name=app), connect_timeout=CONNECT_TIMEOUT)
    try:
        def sleep():
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(30)")

        future = executor.submit(sleep)
        target.pg.wait_for_backends(sleeping(app))
        conn.cancel()
        with pytest.raises(psycopg2.errors.QueryCanceled) as excinfo:
            future.result(timeout=CANCEL_BOUND)
        assert excinfo.value.pgcode == "57014"
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT 'usable'")
            assert cur.fetchone() == ("usable",)
    finally:
        conn.close()


def test_psycopg3_cancel(target, executor):
    app = f"it_pg3_cancel_{target.name}"
    with psycopg.connect(target.dsn(application_name=app), connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        future = executor.submit(conn.execute, "SELECT pg_sleep(30)")
        target.pg.wait_for_backends(sleeping(app))
        conn.cancel()
        with pytest.raises(psycopg.errors.QueryCanceled) as excinfo:
            future.result(timeout=CANCEL_BOUND)
        assert excinfo.value.sqlstate == "57014"
        assert conn.execute("SELECT 'usable'").fetchone() == ("usable",)


def test_cancel_hits_only_its_session(target, executor):
    victim_app, bystander_app = f"it_victim_{target.name}", f"it_bystander_{target.name}"
    victim = psycopg2.connect(target.dsn(application_name=victim_app), connect_timeout=CONNECT_TIMEOUT)
    bystander = psycopg2.connect(target.dsn(application_name=bystander_app), connect_timeout=CONNECT_TIMEOUT)
    try:
        def sleep(conn, seconds):
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(%s), 'finished'", (seconds,))
                return cur.fetchone()[1]

        victim_future = executor.submit(sleep, victim, 30)
        bystander_future = executor.submit(sleep, bystander, 3)
        target.pg.wait_for_backends(sleeping(victim_app))
        target.pg.wait_for_backends(sleeping(bystander_app))
        victim.cancel()
        with pytest.raises(psycopg2.errors.QueryCanceled):
            victim_future.result(timeout=CANCEL_BOUND)
        assert bystander_future.result(timeout=CANCEL_BOUND) == "finished"
    finally:
        victim.close()
        bystander.close()


def send_cancel(target, key: tuple[int, int]) -> None:
    """A CancelRequest on its own connection, which the server then closes."""
    with rawwire.Conn.open(target.host, target.port) as conn:
        conn.send(rawwire.cancel_request(*key))
        conn.sock.settimeout(10)
        assert conn.sock.recv(1) == b""


def test_raw_cancel_request_key_mapping(target):
    app = f"it_raw_cancel_{target.name}"
    with rawwire.Conn.connect(target.host, target.port, application_name=app) as conn:
        assert conn.backend_key is not None
        pid, secret = conn.backend_key

        # A wrong secret must cancel nothing: the sleep completes normally
        # (long enough for the poll of pg_stat_activity to see it running).
        conn.send(rawwire.query("SELECT pg_sleep(5), 'completed'"))
        target.pg.wait_for_backends(sleeping(app))
        send_cancel(target, (pid, secret ^ 0x5A5A5A5A))
        messages = conn.recv_until_ready()
        assert rawwire.kinds(messages) == "TDCZ"
        assert rawwire.data_row(messages[1][1]) == [b"", b"completed"]

        # The key the client was given cancels its query.
        conn.send(rawwire.query("SELECT pg_sleep(30)"))
        target.pg.wait_for_backends(sleeping(app))
        send_cancel(target, (pid, secret))
        conn.sock.settimeout(CANCEL_BOUND)
        messages = conn.recv_until_ready()
        assert rawwire.kinds(messages) == "TEZ"
        error = rawwire.error_fields(dict(messages)[b"E"])
        assert error["C"] == "57014", error
        assert rawwire.kinds(conn.simple("SELECT 1")) == "TDCZ"


def test_backend_keys_are_distinct(target):
    """Every session gets its own key; otherwise a cancel could hit a neighbour."""
    connections = [rawwire.Conn.connect(target.host, target.port) for _ in range(20)]
    try:
        keys = [conn.backend_key for conn in connections]
    finally:
        for conn in connections:
            conn.close()
    assert None not in keys
    assert len(set(keys)) == len(keys)


def test_cancel_through_another_instance(make_shelf, pg, request):
    """DESIGN §3: a CancelRequest reaching any instance finds its target.

    Two pgshelfs in front of one PostgreSQL (as behind a load balancer),
    sharing one Redis as deployed; the session runs on the first, its
    CancelRequest arrives at the second.
    """
    redis = Redis()
    request.addfinalizer(redis.stop)
    first = make_shelf(pg, env={"REDIS_URL": redis.url})
    second = make_shelf(pg, env={"REDIS_URL": redis.url})
    app = "it_cross_instance_cancel"
    with rawwire.Conn.connect(first.host, first.port, application_name=app) as conn:
        conn.send(rawwire.query("SELECT pg_sleep(8), 'completed'"))
        pg.wait_for_backends(sleeping(app))
        send_cancel(second, conn.backend_key)
        conn.sock.settimeout(CANCEL_BOUND)
        messages = conn.recv_until_ready()
        assert rawwire.kinds(messages) == "TEZ", "the query was not cancelled: it ran to completion"
        assert rawwire.error_fields(dict(messages)[b"E"])["C"] == "57014"
