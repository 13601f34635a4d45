"""Redis with a password or an ACL user.

- ``requirepass`` and ``redis://:password@host:port/db``: reads hit;
- an ACL user limited to pgshelf's key namespace (``~pgshelf:*``) and
  ``redis://user:password@...``: reads hit, so pgshelf touches no key
  outside it;
- a wrong password: pgshelf starts and serves every statement from
  PostgreSQL, says why in one clear error line (rate-limited, not one per
  retry), and /readyz reports Redis as unavailable while staying ready.
"""

from __future__ import annotations

import http.client

import pytest

from cache_support import connect, counter, poll, query, served_from_cache, start_shelf, wait_for_hit, write_rules
from pgshelf_harness import Redis

__all__ = ["counter"]  # module fixture used below

PATTERN = "%auth_items%"
READ = "SELECT v FROM auth_items WHERE id = %s"
RULES = """
[[cache]]
name  = "auth_item"
query = "SELECT v FROM auth_items WHERE id = $1"
key   = "auth:{id}"
ttl   = "300s"
"""
PASSWORD = "redis-pass-31"
ACL_USER, ACL_PASSWORD = "shelf", "acl-pass-47"


@pytest.fixture(scope="module")
def protected_redis(pg):
    pg.psql("""
        CREATE TABLE auth_items (id int PRIMARY KEY, v text);
        INSERT INTO auth_items SELECT i, 'v' || i FROM generate_series(1, 20) AS i;
    """)
    redis = Redis()
    # The harness talks to Redis without a password: set them up last.
    redis.command("ACL", "SETUSER", ACL_USER, "on", f">{ACL_PASSWORD}", "resetkeys", "~pgshelf:*", "+@all")
    redis.command("CONFIG", "SET", "requirepass", PASSWORD)
    yield redis
    redis.stop()


def readyz(shelf) -> tuple[int, str]:
    host, port = shelf.env["PGSHELF_ADMIN_LISTEN"].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/readyz")
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize("credentials", [f":{PASSWORD}", f"{ACL_USER}:{ACL_PASSWORD}"], ids=["requirepass", "acl_user"])
def test_reads_hit_with_redis_credentials(pg, protected_redis, counter, tmp_path, credentials):
    rules = write_rules(tmp_path, RULES)
    with start_shelf(pg, protected_redis, rules,
                     REDIS_URL=f"redis://{credentials}@127.0.0.1:{protected_redis.port}/0") as shelf:
        conn = connect(shelf.dsn())
        try:
            item = 1 if credentials.startswith(":") else 2
            query(conn, READ, (item,))
            assert wait_for_hit(counter, PATTERN, lambda: query(conn, READ, (item,)), f"item {item}") == [(f"v{item}",)]
            served_from_cache(counter, PATTERN, lambda: query(conn, READ, (item,)), f"item {item}")
            assert readyz(shelf) == (200, "ready\npostgresql: ok\nredis: ok\n")
        finally:
            conn.close()
        assert "NOPERM" not in shelf.log_tail(200) and "WRONGPASS" not in shelf.log_tail(200)


def test_wrong_password_is_a_clear_error_and_reads_still_work(pg, protected_redis, tmp_path):
    rules = write_rules(tmp_path, RULES)
    with start_shelf(pg, protected_redis, rules, log_level="info",
                     REDIS_URL=f"redis://:wrong-password@127.0.0.1:{protected_redis.port}/0") as shelf:
        conn = connect(shelf.dsn())
        try:
            for _ in range(50):
                assert query(conn, READ, (3,)) == [("v3",)]
        finally:
            conn.close()
        errors = poll(lambda: [line for line in shelf.log_tail(500).splitlines() if "WRONGPASS" in line], 10,
                      "an error line naming the authentication failure")
        assert len(errors) <= 3, errors  # rate-limited, not one per reconnection attempt
        assert "AUTH failed" in errors[0] and "REDIS_URL" in errors[0], errors[0]
        assert "wrong-password" not in shelf.log_tail(500)
        status, body = readyz(shelf)
        assert status == 200 and "redis: ok" not in body, body
