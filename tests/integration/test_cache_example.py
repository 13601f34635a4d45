"""The example chat-bot end to end: schema, seed, rules and workload.

Loads examples/telegram-bot/schema.sql and seed.sql (1000 users x 3
projects) into a fresh database, runs pgshelf with
examples/telegram-bot/rules.toml, and replays the bot's traffic with
examples/telegram-bot/workload.js (node-postgres, Zipf-like users, ~10 %
writes) for a bounded number of messages. The workload measures what
PostgreSQL received through pg_stat_statements over a direct connection.
Asserts: no errors, no stale reads (every message sees what the chat's
previous message wrote), a read hit rate of at least 80 %, and at least
half the throughput of the same traffic straight to PostgreSQL; the same
with named prepared statements. The figures are printed (pytest -s).

The README tutorial, as a newcomer follows it: pgshelf with an empty rules
file, the workload, the admin console's SHOW QUERIES suggestions appended
to the file (which `pgshelf check` accepts) and loaded with RELOAD, the
workload again: reads are hits now, with no stale read and no error.
"""

from __future__ import annotations

import json
import os
import subprocess

import psycopg2
import pytest

from cache_support import NODE_DIR, redis_server, start_shelf, write_rules
from pgshelf_harness import CONNECT_TIMEOUT, REPO_ROOT, Redis, client_env, find_pgshelf_bin

__all__ = ["redis_server"]

EXAMPLE = REPO_ROOT / "examples" / "telegram-bot"
MESSAGES = int(os.environ.get("PGSHELF_IT_EXAMPLE_MESSAGES", "6000"))
MIN_HIT_RATE = 0.80


@pytest.fixture(scope="module")
def bot_db(pg):
    pg.psql("CREATE DATABASE bot")
    pg.psql("CREATE EXTENSION pg_stat_statements", dbname="bot")
    pg.psql((EXAMPLE / "schema.sql").read_text(), dbname="bot")
    pg.psql((EXAMPLE / "seed.sql").read_text(), dbname="bot", timeout=120)
    assert pg.psql("SELECT count(*) FROM users", dbname="bot") == "3000"
    return "bot"


@pytest.fixture(scope="module")
def bot_shelf(pg, redis_server, bot_db):
    proxy = start_shelf(pg, redis_server, EXAMPLE / "rules.toml", log_level="debug")
    yield proxy
    proxy.stop()


def run_workload(pg, shelf, *args: str, timeout: float = 240) -> dict:
    """Runs workload.js --json against ``shelf`` (a PgShelf, or ``pg`` itself for a baseline)."""
    # The example's own node_modules when installed (npm ci there), else the
    # integration tests' (same pg package).
    own = EXAMPLE / "node_modules" / "pg"
    modules = EXAMPLE / "node_modules" if own.is_dir() else NODE_DIR / "node_modules"
    assert (modules / "pg").is_dir(), "run tests/integration/prepare.sh first (npm ci)"
    env = client_env(NODE_PATH=str(modules), DATABASE_URL=shelf.dsn(dbname="bot"),  # type: ignore[union-attr]
                     DIRECT_DATABASE_URL=pg.dsn(dbname="bot"))
    proc = subprocess.run(["node", str(EXAMPLE / "workload.js"), "--json", *args], capture_output=True, text=True,
                          env=env, cwd=EXAMPLE, timeout=timeout)
    assert proc.returncode in (0, 1), f"workload.js exited {proc.returncode}\n{proc.stderr[-4000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    summary["stderr"] = proc.stderr[-3000:]
    return summary


@pytest.fixture(scope="module")
def baseline(pg, bot_db) -> dict:
    """The same traffic straight to PostgreSQL (before pgshelf caches anything)."""
    s = run_workload(pg, pg, "--messages", str(MESSAGES // 2), "--concurrency", "8", "--seed", "6")
    print(f"\ndirect to PostgreSQL: {s['messages']} messages in {s['seconds']} s ({s['messages_per_second']}/s), "
          f"errors {s['errors']}, stale reads {s['stale_reads']}")
    assert s["errors"] == 0 and s["stale_reads"] == 0, s["stderr"]
    assert s["hit_rate"] == 0
    return s


def report(name: str, s: dict) -> None:
    print(f"\n{name}: {s['messages']} messages in {s['seconds']} s ({s['messages_per_second']}/s); "
          f"sent {s['sent']['total']} statements ({s['sent']['reads']} reads); "
          f"PostgreSQL received {s['received']['total']} ({s['received']['reads']} reads); "
          f"read hit rate {s['hit_rate'] * 100:.1f} % {s['hit_rate_by_read']}; "
          f"errors {s['errors']}; stale reads {s['stale_reads']}")


@pytest.mark.parametrize("mode", ["unnamed", "prepared"])
def test_example_workload(pg, bot_shelf, baseline, mode):
    args = ["--messages", str(MESSAGES if mode == "unnamed" else MESSAGES // 2), "--concurrency", "8",
            "--seed", "7" if mode == "unnamed" else "8"]
    if mode == "prepared":
        args.append("--prepared")
    s = run_workload(pg, bot_shelf, *args)
    report(mode, s)
    details = f"\nworkload stderr:\n{s['stderr']}\npgshelf log:\n{bot_shelf.log_tail(30)}"
    assert s["errors"] == 0, f"{s['errors']} errors" + details
    assert s["stale_reads"] == 0, f"{s['stale_reads']} stale reads" + details
    assert s["sent"]["reads"] >= 4 * s["messages"]
    # Everything the app sent that was not a hit reached PostgreSQL.
    assert s["received"]["total"] <= s["sent"]["total"]
    assert s["hit_rate"] >= MIN_HIT_RATE, \
        f"read hit rate {s['hit_rate'] * 100:.1f} % < {MIN_HIT_RATE * 100:.0f} % (by read: {s['hit_rate_by_read']})" \
        + details
    # Speed is the benchmarks' job (bench/); here it is only reported.
    print(f"{mode}: {s['messages_per_second']} messages/s through pgshelf vs "
          f"{baseline['messages_per_second']}/s straight to PostgreSQL "
          f"({s['messages_per_second'] / baseline['messages_per_second']:.2f}x)")


def test_readme_tutorial_from_no_rules(pg, bot_db, tmp_path):
    redis = Redis()
    rules = write_rules(tmp_path, "")
    shelf = start_shelf(pg, redis, rules, log_level="info", PGSHELF_ADMIN_CONSOLE_USERS="postgres")
    console = psycopg2.connect(shelf.dsn(dbname="pgshelf"), connect_timeout=CONNECT_TIMEOUT)
    console.autocommit = True

    def command(sql: str) -> list[dict]:
        with console.cursor() as cur:
            cur.execute(sql)
            names = [column.name for column in cur.description or []]
            return [dict(zip(names, row)) for row in cur.fetchall()] if names else []

    try:
        before = run_workload(pg, shelf, "--messages", "1500", "--concurrency", "4", "--seed", "11")
        report("no rules", before)
        assert before["errors"] == 0 and before["hit_rate"] == 0, before["stderr"]

        suggestions = [row for row in command("SHOW QUERIES") if row["suggested_rule"]]
        assert len(suggestions) >= 4, [row["query"] for row in suggestions]
        with open(rules, "a") as f:
            f.write("\n".join(row["suggested_rule"] for row in suggestions))
        check = subprocess.run([str(find_pgshelf_bin()), "check", str(rules)], capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, check.stderr
        command("RELOAD")
        assert len(command("SHOW RULES")) == len(suggestions)

        after = run_workload(pg, shelf, "--messages", "3000", "--concurrency", "4", "--seed", "12")
        report("suggested rules", after)
        details = f"\nworkload stderr:\n{after['stderr']}\npgshelf log:\n{shelf.log_tail(30)}"
        assert after["errors"] == 0, details
        assert after["stale_reads"] == 0, details
        # The tutorial saw about half the reads hit at this step (writes
        # without [[invalidate]] rules drop whole rules).
        assert after["hit_rate"] >= 0.3, f"read hit rate {after['hit_rate'] * 100:.1f} %" + details
        cached = {row["query"] for row in suggestions}
        assert not cached & {row["query"] for row in command("SHOW QUERIES")}, \
            "a statement a rule caches now must leave SHOW QUERIES"
    finally:
        console.close()
        shelf.stop()
        redis.stop()
