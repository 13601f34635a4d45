"""The harness itself, for the parts no other test file exercises.

PgBouncer (used by the benchmarks) relays sessions with trust and with
SCRAM; Redis (for the caching tests) answers, loses its data on kill and
comes back on the same port, and stops answering while paused; the TLS
files verify against their CA with the expected names; Postgres keeps its
data over restart and ``psql`` raises on SQL errors; stopping removes
temporary directories and leaves no process behind.
"""

from __future__ import annotations

import socket
import subprocess

import psycopg2
import pytest

from clients import fetch_one
from pgshelf_harness import (CONNECT_TIMEOUT, PASSWORDS, PgBouncer, Redis, RedisError, free_port, live_logs, make_tls_files,
                             port_accepts)


@pytest.mark.parametrize("auth_type", ["trust", "scram-sha-256"])
def test_pgbouncer_session_pool(pg, auth_type):
    with PgBouncer(pg, auth_type=auth_type) as bouncer:
        if auth_type == "trust":
            assert fetch_one(bouncer.dsn(), "SELECT current_user") == ("postgres",)
        assert fetch_one(bouncer.dsn(user="scram_user", password=PASSWORDS["scram_user"]),
                     "SELECT current_user, current_setting('port')::int") == ("scram_user", pg.port)
        if auth_type != "trust":
            with pytest.raises(psycopg2.OperationalError):
                psycopg2.connect(bouncer.dsn(user="scram_user", password="wrong"), connect_timeout=CONNECT_TIMEOUT)
        directory = bouncer.dir
    assert not bouncer.alive() and not directory.exists()


def test_redis_lifecycle():
    redis = Redis()
    try:
        assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
        assert redis.command("SET", "k", "v") == "OK"
        assert redis.command("GET", "k") == b"v"
        assert redis.command("INCR", "n") == 1
        with pytest.raises(RedisError):
            redis.command("INCR", "k")
        redis.pause()
        with socket.create_connection((redis.host, redis.port), timeout=30) as sock:
            sock.settimeout(0.5)
            sock.sendall(b"PING\r\n")
            with pytest.raises(socket.timeout):
                sock.recv(16)
        redis.resume()
        assert redis.command("PING") == "PONG"
        redis.kill()
        assert not redis.alive() and not port_accepts(redis.port)
        redis.start()
        assert redis.command("GET", "k") is None
    finally:
        redis.stop()
    assert not redis.dir.exists()


def test_tls_files_verify(tmp_path):
    files = make_tls_files(tmp_path, readable_by_postgres=False)
    for name in ("127.0.0.1", "localhost"):
        flag = "-verify_ip" if name[0].isdigit() else "-verify_hostname"
        result = subprocess.run(["openssl", "verify", "-CAfile", str(files.ca_cert), flag, name,
                                 str(files.server_cert)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    result = subprocess.run(["openssl", "verify", "-CAfile", str(files.ca_cert), "-verify_hostname", "example.com",
                             str(files.server_cert)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0


def test_postgres_restart_and_psql(pg):
    pg.psql("CREATE TABLE IF NOT EXISTS harness_t (v int); INSERT INTO harness_t VALUES (7)")
    pg.restart()
    assert pg.psql("SELECT sum(v) FROM harness_t") == "7"
    with pytest.raises(RuntimeError, match="division by zero"):
        pg.psql("SELECT 1/0")
    assert pg.psql("SHOW shared_preload_libraries") == "pg_stat_statements"
    assert pg.psql("SELECT rolname FROM pg_roles WHERE rolname LIKE '%\\_user' ORDER BY 1").split() == [
        "md5_user", "pw_user", "scram_user", "trust_user"]


def test_free_ports_are_distinct_and_unbound():
    ports = {free_port() for _ in range(50)}
    assert len(ports) == 50
    assert not any(port_accepts(p) for p in list(ports)[:10])


def test_live_logs_lists_running_servers(pg):
    assert ("postgres", pg.log_path) in live_logs()
