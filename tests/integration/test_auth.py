"""Authentication relayed by pgshelf: trust, password, md5 and SCRAM-SHA-256.

Each role connects with its password (libpq via psycopg2, and asyncpg,
which implements the methods itself) and sees itself as current_user. A
wrong password is rejected with SQLSTATE 28P01 and the same message as
from PostgreSQL; trust ignores the password, as PostgreSQL does. Unknown
roles and databases get the server's own errors (28000, 3D000).
"""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg2
import pytest

from clients import assert_same, connect_error
from pgshelf_harness import CONNECT_TIMEOUT, PASSWORDS, ROLE_AUTH, wait_until

PASSWORD_ROLES = [role for role, method in ROLE_AUTH.items() if method != "trust"]


async def asyncpg_error(dsn: str) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as excinfo:
        await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    return excinfo.value


@pytest.mark.parametrize("role", list(ROLE_AUTH))
def test_right_password_connects_psycopg2(target, role):
    with psycopg2.connect(target.dsn(user=role, password=PASSWORDS[role]), connect_timeout=CONNECT_TIMEOUT) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, session_user, 6 * 7")
            assert cur.fetchone() == (role, role, 42)
    conn.close()


@pytest.mark.parametrize("role", list(ROLE_AUTH))
def test_right_password_connects_asyncpg(target, role):
    async def main():
        conn = await asyncpg.connect(target.dsn(user=role, password=PASSWORDS[role]), timeout=CONNECT_TIMEOUT)
        try:
            return await conn.fetchrow("SELECT current_user AS who, $1::int + 1 AS n", 41)
        finally:
            await conn.close()

    row = asyncio.run(main())
    assert (row["who"], row["n"]) == (role, 42)


@pytest.mark.parametrize("role", PASSWORD_ROLES)
def test_wrong_password_rejected(target, direct, role):
    message = connect_error(target.dsn(user=role, password="wrong-password"))
    assert f'password authentication failed for user "{role}"' in message
    assert_same(message, connect_error(direct.dsn(user=role, password="wrong-password")), "error message")

    error = asyncio.run(asyncpg_error(target.dsn(user=role, password="wrong-password")))
    assert error.sqlstate == "28P01"
    assert isinstance(error, asyncpg.InvalidPasswordError)


@pytest.mark.parametrize("role", PASSWORD_ROLES)
def test_missing_password_rejected(target, direct, role):
    # libpq has no password to send: the server's request ends the attempt.
    message = connect_error(target.dsn(user=role))
    assert "no password supplied" in message
    assert_same(message, connect_error(direct.dsn(user=role)), "error message")


def test_trust_ignores_password(target):
    with psycopg2.connect(target.dsn(user="trust_user", password="anything"), connect_timeout=CONNECT_TIMEOUT) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == ("trust_user",)
    conn.close()


def test_unknown_role_and_database(target, direct):
    error = asyncio.run(asyncpg_error(target.dsn(user="nobody_here")))
    assert error.sqlstate == "28000"
    assert_same(connect_error(target.dsn(user="nobody_here")), connect_error(direct.dsn(user="nobody_here")))

    error = asyncio.run(asyncpg_error(target.dsn(dbname="no_such_db")))
    assert error.sqlstate == "3D000"
    assert_same(connect_error(target.dsn(dbname="no_such_db")), connect_error(direct.dsn(dbname="no_such_db")))


def test_failed_attempts_leave_no_backends(target):
    for role in PASSWORD_ROLES:
        connect_error(target.dsn(user=role, password="wrong-password"))
    roles = ", ".join(f"'{r}'" for r in PASSWORD_ROLES)
    wait_until(lambda: target.pg.backends(f"usename IN ({roles})") == [], 10, what="no backends of failed logins")
