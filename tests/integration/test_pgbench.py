"""pgbench through pgshelf: initialisation and TPC-B-like runs in every query mode.

``pgbench -i -s 1`` creates and loads its tables (COPY, DDL, VACUUM) through
the target; then 4 clients on 2 threads run a fixed number of transactions
with ``-M simple``, ``-M extended`` and ``-M prepared``. Every transaction
must be processed and none may fail, and the server's pgbench_history must
have grown by exactly that many rows.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from pgshelf_harness import PG_BINDIR, client_env

CLIENTS = 4
TRANSACTIONS_PER_CLIENT = 150


def pgbench(dsn: str, *args: str, timeout: float = 180) -> str:
    proc = subprocess.run([str(PG_BINDIR / "pgbench"), *args, dsn], capture_output=True, text=True,
                          env=client_env(), timeout=timeout)
    assert proc.returncode == 0, f"pgbench {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def history_rows(target) -> int:
    return int(target.pg.psql("SELECT count(*) FROM pgbench_history"))


@pytest.fixture(scope="module")
def initialised(pg):
    """Which targets have run ``pgbench -i`` (the test below does it per target)."""
    return set()


def test_pgbench_init(target, initialised):
    output = pgbench(target.dsn(), "-i", "-s", "1", "-q")
    assert "done in" in output
    assert target.pg.psql("SELECT count(*) FROM pgbench_accounts") == "100000"
    assert target.pg.psql("SELECT count(*) FROM pgbench_branches") == "1"
    initialised.add(target.name)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_run(target, initialised, mode):
    if target.name not in initialised:
        pgbench(target.dsn(), "-i", "-s", "1", "-q")
        initialised.add(target.name)
    before = history_rows(target)
    output = pgbench(target.dsn(), "-M", mode, "-c", str(CLIENTS), "-j", "2", "-t", str(TRANSACTIONS_PER_CLIENT),
                     "--no-vacuum")
    expected = CLIENTS * TRANSACTIONS_PER_CLIENT
    processed = re.search(r"number of transactions actually processed: (\d+)/(\d+)", output)
    assert processed, output
    assert int(processed.group(1)) == expected > 0, output
    failed = re.search(r"number of failed transactions: (\d+)", output)
    assert failed and int(failed.group(1)) == 0, output
    assert history_rows(target) - before == expected
