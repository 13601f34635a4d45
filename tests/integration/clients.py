"""Client-side helpers shared by the integration test files.

Short ways to run one query, to capture a connection failure as the client
sees it, and to name a session's sleeping query in pg_stat_activity.
"""

from __future__ import annotations

import difflib
import re
import subprocess

import psycopg2
import pytest

import rawwire
from pgshelf_harness import CONNECT_TIMEOUT, PG_BINDIR, client_env


def fetch_one(dsn: str, sql: str, params: tuple | None = None) -> tuple:
    """Runs one statement on a new psycopg2 connection and returns its first row."""
    conn = psycopg2.connect(dsn, connect_timeout=CONNECT_TIMEOUT)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()
    finally:
        conn.close()


def connect_error(dsn: str) -> str:
    """libpq's (psycopg2's) text for a connection that must fail, the port made neutral."""
    with pytest.raises(psycopg2.OperationalError) as excinfo:
        psycopg2.connect(dsn, connect_timeout=15)
    return re.sub(r"port \d+", "port N", str(excinfo.value))


def startup_error(endpoint, **params: str) -> rawwire.ServerError:
    """The ErrorResponse a raw startup as ``postgres`` must end with."""
    with pytest.raises(rawwire.ServerError) as excinfo:
        rawwire.Conn.connect(endpoint.host, endpoint.port, **params)
    return excinfo.value


def psql(dsn: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """psql -X with ``args`` against ``dsn``; output captured as text."""
    return subprocess.run([str(PG_BINDIR / "psql"), "-X", *args, "-d", dsn], capture_output=True, text=True,
                          env=client_env(), timeout=timeout)


def sleeping(app: str) -> str:
    """pg_stat_activity condition: this application's session is running pg_sleep."""
    return f"application_name = '{app}' AND state = 'active' AND query LIKE '%pg_sleep%'"


def assert_same(actual: object, expected: object, what: str = "output") -> None:
    """Asserts equality; for text, the message is a unified diff (expected = direct)."""
    if actual == expected:
        return
    if isinstance(actual, str) and isinstance(expected, str):
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), actual.splitlines(),
                                              "direct", "through pgshelf", lineterm=""))
        pytest.fail(f"{what} differs from direct PostgreSQL:\n{diff}", pytrace=False)
    pytest.fail(f"{what} differs from direct PostgreSQL:\n direct:  {expected!r}\n pgshelf: {actual!r}",
                pytrace=False)
