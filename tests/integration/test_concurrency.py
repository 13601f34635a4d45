"""Many clients at once through pgshelf.

- 500 asyncpg connections open at the same time (PostgreSQL allows 600),
  each running several short queries before and after all of them are
  connected; every result must be right, no connection may fail, and
  PostgreSQL must see all 500 sessions at once.
- Connection churn: threads with psycopg2 connect, query and disconnect in
  a loop; afterwards pgshelf's open file descriptors return to where they
  were (no leaked sockets).
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import asyncpg
import psycopg2
import pytest

from pgshelf_harness import CONNECT_TIMEOUT, wait_until

CLIENTS = 500
QUERIES = 4


@pytest.fixture(scope="module")
def pg_options():
    return {"settings": {"max_connections": 600}}


async def one_client(target, index: int, app: str, all_connected: asyncio.Event, counter: list) -> list:
    conn = await asyncpg.connect(target.dsn(), timeout=60, server_settings={"application_name": app})
    try:
        results = [await conn.fetchrow("SELECT $1::int * 2 AS doubled, $2::text AS label", index * 10 + q,
                                       f"c{index}q{q}") for q in range(QUERIES)]
        counter[0] += 1
        if counter[0] == CLIENTS:
            all_connected.set()
        await asyncio.wait_for(all_connected.wait(), 120)
        results += [await conn.fetchrow("SELECT $1::int * 2 AS doubled, $2::text AS label", -q, f"after{index}")
                    for q in range(QUERIES)]
        results.append(await conn.fetchrow("SELECT sum(g) AS doubled, 'sum' AS label FROM generate_series(1, $1) g",
                                           index))
        return [tuple(r) for r in results]
    finally:
        await conn.close()


def test_500_concurrent_connections(target):
    app = f"it_conc_{target.name}"

    async def main():
        all_connected = asyncio.Event()
        counter = [0]
        tasks = [asyncio.create_task(one_client(target, i, app, all_connected, counter)) for i in range(CLIENTS)]
        await asyncio.wait_for(all_connected.wait(), 180)
        sessions = await asyncio.to_thread(target.pg.backends, f"application_name = '{app}'")
        return len(sessions), await asyncio.wait_for(asyncio.gather(*tasks), 180)

    seen_at_once, results = asyncio.run(main())
    assert seen_at_once == CLIENTS
    for index, rows in enumerate(results):
        expected = [((index * 10 + q) * 2, f"c{index}q{q}") for q in range(QUERIES)]
        expected += [(-q * 2, f"after{index}") for q in range(QUERIES)]
        expected.append((index * (index + 1) // 2 if index else None, "sum"))
        assert rows == expected, f"client {index}"
    target.pg.wait_no_backends(f"application_name = '{app}'", 30)


def test_connection_churn_leaks_no_descriptors(target):
    fds_before = target.endpoint.fd_count() if target.is_proxy else None

    def churn(worker: int) -> int:
        done = 0
        for i in range(40):
            conn = psycopg2.connect(target.dsn(application_name="it_churn"), connect_timeout=CONNECT_TIMEOUT)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT %s::int + %s::int", (worker, i))
                    assert cur.fetchone() == (worker + i,)
                    done += 1
            finally:
                conn.close()
        return done

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(churn, range(8), timeout=240)) == [40] * 8
    target.pg.wait_no_backends("application_name = 'it_churn'", 30)
    if target.is_proxy:
        wait_until(lambda: target.endpoint.fd_count() <= fds_before, 10, 0.1, "pgshelf's descriptors to be closed")
