#!/usr/bin/python3
"""Caching benchmark: the example chat-bot's database traffic
(examples/telegram-bot) with pgbench, directly against PostgreSQL, through
PgBouncer (session pooling, no cache), through pgpool-II with its in-memory
query cache and through pgshelf with the example's rules and Redis, in one
run on one machine.

Workloads, each in pgbench's simple, extended and prepared protocol modes:

- W2: the bot's four reads per message (variables, profile, waiting
  execution, active workflow), user ids Zipf-distributed; after a warm-up
  nearly all are cache hits;
- W1: the same reads plus, on about one message in ten, one of the bot's
  writes that invalidate them (payment, execution status, variable).
- W1-node: W1 as the bot itself sends it, from node-postgres
  (examples/telegram-bot/workload.js: a pool of clients, one chat's messages
  in order, workflow versions published now and then, stale reads checked);
  extended mode = unnamed statements, prepared = named ones.

Every figure that matters is a ratio between targets measured in the same
run, interleaved (for workload: for rep: for mode: for target, the target
order rotated), so that machine noise affects every target alike. Medians
over the repetitions are reported.

Run through bench/cache (which builds pgshelf and installs what is
missing); see bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, asdict, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
EXAMPLE = REPO / "examples" / "telegram-bot"
NODE_MODULES = REPO / "tests" / "integration" / "node" / "node_modules"  # pg, as the tests pin it
sys.path.insert(0, str(BENCH_DIR))
import passthrough as pt  # noqa: E402  (CPU accounting, machine description, harness loader)

DB = "bench"
USER = "postgres"
ZIPF = 1.2  # user popularity, as examples/telegram-bot/workload.js
WRITE_PERMILLE = 100  # W1: messages that write, per thousand

TARGETS = ["direct", "pgbouncer", "pgpool", "pgshelf"]
TARGET_LABEL = {"direct": "direct", "pgbouncer": "PgBouncer", "pgpool": "pgpool-II (query cache)",
                "pgshelf": "pgshelf (cache)"}
MODES = ["simple", "extended", "prepared"]
WORKLOADS = ["W2", "W1", "W1-node"]
NODE_WORKLOADS = {"W1-node"}  # run by workload.js, not pgbench: no simple mode (node-postgres binds parameters)
SWEEP_CLIENTS = [1, 4, 16, 64, 256]

# The bot's statements exactly as examples/telegram-bot/workload.js sends them (rules.toml matches
# these), with pgbench variables for the numeric values. The string values are literals: pgbench's
# simple mode pastes variables in unquoted, and pgshelf matches a literal like a parameter.
READS = {
    "variables": "SELECT key, value FROM user_variables WHERE user_id = :uid AND project_id = :pid;",
    "profile": """SELECT u.id, u.username, u.balance, u.level, u.referrals,
       count(t.id) AS transactions, coalesce(sum(t.amount), 0) AS transactions_total
FROM users u
LEFT JOIN transactions t ON t.user_id = u.id AND t.project_id = u.project_id
WHERE u.id = :uid AND u.project_id = :pid
GROUP BY u.id, u.project_id;""",
    "waiting": """SELECT id, workflow_version_id, state, updated_at
FROM workflow_executions
WHERE project_id = :pid AND chat_id = :uid AND status = 'waiting' AND wait_type = 'message'
ORDER BY updated_at DESC
LIMIT 1;""",
    "workflow": "SELECT id, version, definition FROM workflow_versions WHERE project_id = :pid AND is_active;",
}
# The example rules.toml's [[cache]] rules of the four reads.
READ_RULES = ["user_variables", "user_profile", "waiting_execution", "active_workflow"]
# pg_stat_statements text patterns (ILIKE) that tell the four reads apart.
READ_PATTERNS = {
    "variables": "SELECT key, value FROM user_variables%",
    "profile": "SELECT u.id, u.username%",
    "waiting": "SELECT id, workflow_version_id%",
    "workflow": "SELECT id, version, definition FROM workflow_versions%",
}
# W1's writes, each in an explicit transaction for every target: pgpool-II 4.3 loses autocommit
# writes sent with the extended protocol (pgpool/pgpool2#172), and the bot's payment is a
# transaction anyway. Shares of the writing messages as workload.js: 40 % payments, 30 %
# execution status changes, 30 % variable updates (publishing a workflow is left out: concurrent
# publishers collide on the one-active-version index, which the bot avoids with a lock).
WRITES = """\\set w random(1, 1000)
\\if :w <= {p_payment}
\\set amt random(100, 999) / 100.0
BEGIN;
UPDATE users SET balance = balance + :amt WHERE id = :uid AND project_id = :pid;
INSERT INTO transactions (user_id, project_id, amount, kind) VALUES (:uid, :pid, :amt, 'credit');
COMMIT;
\\elif :w <= {p_resume}
BEGIN;
UPDATE workflow_executions SET status = 'running', state = '{{"node": "resumed"}}', updated_at = now()
WHERE project_id = :pid AND chat_id = :uid AND wait_type = 'message' AND status = 'waiting';
COMMIT;
\\elif :w <= {p_wait}
BEGIN;
UPDATE workflow_executions SET status = 'waiting', wait_type = 'message', state = '{{"node": "ask"}}', updated_at = now()
WHERE project_id = :pid AND chat_id = :uid AND status = 'running';
COMMIT;
\\elif :w <= {p_variable}
\\set val random(1, 1000000)
BEGIN;
UPDATE user_variables SET value = :val WHERE user_id = :uid AND project_id = :pid AND key = 'step';
COMMIT;
\\endif
"""


def script(workload: str, users: int) -> str:
    head = f"\\set uid random_zipfian(1, {users}, {ZIPF})\n\\set pid 1\n"
    body = "\n".join(READS.values()) + "\n"
    if workload == "W1":
        w = WRITE_PERMILLE
        body += WRITES.format(p_payment=w * 40 // 100, p_resume=w * 55 // 100, p_wait=w * 70 // 100,
                              p_variable=w)
    return head + body


# The example's schema (examples/telegram-bot/schema.sql) with one project of `users` users and
# `transactions` transactions. A user's number of transactions falls with the user id (density
# ~ 1/sqrt(id)), and the Zipf-popular users are the low ids: active users pay more, so the profile
# query of a popular user aggregates thousands of rows, scattered over the table (inserted in
# golden-ratio order, deterministic), and costs milliseconds.
SEED = """
INSERT INTO users (id, project_id, username, balance, level, referrals)
SELECT u, 1, 'user' || u, (u * 37 % 1000)::numeric / 10, 1 + u % 20, u % 7 FROM generate_series(1, {users}) AS u;
INSERT INTO user_variables (user_id, project_id, key, value)
SELECT u, 1, k, k || '-' || u FROM generate_series(1, {users}) AS u, unnest(ARRAY['language', 'step', 'city', 'plan']) AS k;
INSERT INTO transactions (user_id, project_id, amount, kind, created_at)
SELECT 1 + floor({users} * power(i * 0.6180339887498949 - floor(i * 0.6180339887498949), 2))::bigint, 1,
       ((i * 7) % 500)::numeric / 10, CASE WHEN i % 3 = 0 THEN 'debit' ELSE 'credit' END,
       timestamptz '2026-01-01' + (i % 8760 || ' hours')::interval
FROM generate_series(1, {transactions}) AS i;
INSERT INTO workflow_versions (project_id, version, definition, is_active, published_at)
SELECT 1, v, jsonb_build_object('steps', v * 3, 'entry', 'start'), v = 3, timestamptz '2026-01-01' + (v || ' days')::interval
FROM generate_series(1, 3) AS v;
INSERT INTO workflow_executions (project_id, chat_id, workflow_version_id, status, wait_type, state)
SELECT 1, u, 3, CASE WHEN u % 4 = 0 THEN 'waiting' WHEN u % 4 = 1 THEN 'running' ELSE 'done' END,
       CASE WHEN u % 4 = 0 THEN 'message' END, jsonb_build_object('node', u % 5)
FROM generate_series(1, {users}) AS u;
"""

BOOKKEEPING = "pg_stat_statements"  # every query of ours names it: excluded from the counts


# --------------------------------------------------------------------------- pgpool-II

def pgpool_class(H):
    """A pgpool-II (Debian pgpool2, 4.3) class on the harness's process management."""

    class Pgpool(H._ManagedProcess):
        """pgpool-II in front of ``pg``, raw mode, one backend, in-memory query cache in shared memory.

        Runs as ``postgres`` in the foreground (-n) with every file, socket, pid file and log in its
        own temporary directory; stopped by its pid (SIGINT: fast shutdown)."""

        name = "pgpool"

        def __init__(self, pg, children: int, settings: dict | None = None, start_timeout: float = 60) -> None:
            super().__init__()
            self.host = H.HOST
            self.port = H.free_port()
            self.dir = H._make_temp_dir("pgpool", for_postgres=True)
            oiddir = self.dir / "oiddir"
            oiddir.mkdir()
            H._chown_to_postgres(oiddir)
            d = str(self.dir)
            conf = {
                "backend_clustering_mode": "'raw'",
                "listen_addresses": f"'{H.HOST}'", "port": self.port, "socket_dir": f"'{d}'",
                "pcp_listen_addresses": f"'{H.HOST}'", "pcp_port": H.free_port(), "pcp_socket_dir": f"'{d}'",
                "wd_ipc_socket_dir": f"'{d}'", "pid_file_name": f"'{d}/pgpool.pid'", "logdir": f"'{d}'",
                "backend_hostname0": f"'{pg.host}'", "backend_port0": pg.port, "backend_weight0": 1,
                "backend_flag0": "'DISALLOW_TO_FAILOVER'",
                "enable_pool_hba": "on", "pool_passwd": "''",
                # One pgpool child per client (a child serves one client at a time), one cached
                # backend connection each; children and their connections live for the whole run.
                "num_init_children": children, "max_pool": 1, "reserved_connections": 0,
                "child_life_time": 0, "child_max_connections": 0, "connection_life_time": 0,
                "client_idle_limit": 0,
                "load_balance_mode": "off", "health_check_period": 0, "sr_check_period": 0,
                "failover_on_backend_error": "off", "use_watchdog": "off",
                "memory_cache_enabled": "on", "memqcache_method": "'shmem'",
                "memqcache_total_size": "'256MB'", "memqcache_max_num_cache": 1000000,
                "memqcache_expire": 0, "memqcache_auto_cache_invalidation": "on",
                "memqcache_maxcache": "'400kB'", "memqcache_cache_block_size": "'1MB'",
                "memqcache_oiddir": f"'{oiddir}'",
                # Its best settings for this: temporary tables tracked from the session's own
                # CREATE instead of a catalog query per statement; relation info cached for good.
                "check_temp_table": "'trace'", "relcache_expire": 0,
                # Off: the shared relation cache lives in the query cache storage and its lookups
                # would count as query cache hits in SHOW POOL_CACHE.
                "enable_shared_relcache": "off",
                "log_destination": "'stderr'", "log_min_messages": "warning", "log_connections": "off",
            }
            conf.update(settings or {})
            files = {
                "pgpool.conf": "".join(f"{k} = {v}\n" for k, v in conf.items()),
                "pool_hba.conf": f"local all all trust\nhost all all {H.HOST}/32 trust\n",
                "pcp.conf": "postgres:e8a48653851e28c69d0506508fb27fc5\n",  # pcp is not used; pgpool wants the file
            }
            for name, text in files.items():
                (self.dir / name).write_text(text)
                H._chown_to_postgres(self.dir / name)
            self._spawn(["pgpool", "-n", "-f", f"{d}/pgpool.conf", "-F", f"{d}/pcp.conf", "-a", f"{d}/pool_hba.conf"],
                        self.dir / "pgpool.log", as_postgres=True, cwd=self.dir)
            try:
                H.wait_until(self._ready, start_timeout, 0.2, f"pgpool to accept queries on port {self.port}")
            except BaseException:
                self.stop()
                raise

        def _ready(self) -> bool:
            if not self.alive():
                raise RuntimeError(f"pgpool exited with {self.proc.returncode}:\n{self.log_tail()}")
            if not H.port_accepts(self.port):
                return False
            try:
                return bool(self.show_cache())
            except RuntimeError:
                return False

        def show_cache(self) -> dict[str, str]:
            """SHOW POOL_CACHE (answered by pgpool itself: PostgreSQL sees nothing)."""
            out = subprocess.run(["psql", "-X", "-A", "-F", "\t", "-P", "footer=off", "-h", self.host,
                                  "-p", str(self.port), "-U", USER, "-d", DB, "-c", "SHOW POOL_CACHE"],
                                 capture_output=True, text=True, timeout=30, env=H.client_env(PGSSLMODE="disable"))
            if out.returncode != 0:
                raise RuntimeError(out.stderr.strip())
            lines = out.stdout.strip().splitlines()
            return dict(zip(lines[0].split("\t"), lines[1].split("\t")))

        def stop(self, timeout: float = 30) -> int | None:
            code = self._terminate(signal.SIGINT, timeout)
            try:  # its children, should any outlive the main process (same process group, ours)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (OSError, AttributeError):
                pass
            H._remove_dir(self.dir)
            return code

    return Pgpool


# --------------------------------------------------------------------------- one run

@dataclass
class Run:
    workload: str
    mode: str
    target: str
    rep: int
    clients: int
    tps: float | None = None
    transactions: int | None = None
    failed: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    pg_queries: int | None = None
    pg_reads: dict = field(default_factory=dict)  # per read statement
    cache_hits: int | None = None  # the proxy's own counters
    cache_lookups: int | None = None
    cache_waited: int | None = None  # pgshelf: misses that polled for another fetch of the entry
    stale_reads: int | None = None  # W1-node: reads that missed a write already committed (must be 0)
    proxy_cpu_s: float | None = None  # the proxy process (pgpool: with its children)
    redis_cpu_s: float | None = None
    foreign_share: float | None = None
    wall_s: float | None = None
    error: str | None = None

    @property
    def queries_per_tx(self):
        return self.pg_queries / self.transactions if self.transactions and self.pg_queries is not None else None

    def us_per_tx(self, cpu: float | None) -> float | None:
        return cpu / self.transactions * 1e6 if cpu is not None and self.transactions else None

    @property
    def hit_ratio(self):
        return self.cache_hits / self.cache_lookups if self.cache_lookups else None

    @property
    def reads_skipped(self):
        """Share of the four reads PostgreSQL never received (pg_stat_statements), for every target."""
        if not self.transactions or not self.pg_reads:
            return None
        return 1 - sum(self.pg_reads.values()) / (len(READS) * self.transactions)


def percentile(sorted_xs: list[float], q: float) -> float | None:
    if not sorted_xs:
        return None
    return sorted_xs[min(len(sorted_xs) - 1, int(q * len(sorted_xs)))]


def parse_shelf_metrics(text: str) -> tuple[int, int, int]:
    """(hits, hits + misses, waited) of pgshelf_cache_requests_total in a /metrics page."""
    got = {}
    for outcome in ("hit", "miss", "waited"):
        m = re.search(rf'^pgshelf_cache_requests_total\{{outcome="{outcome}"\}} ([0-9.e+]+)$', text, re.M)
        got[outcome] = int(float(m.group(1))) if m else 0
    return got["hit"], got["hit"] + got["miss"], got["waited"]


class Bench:
    def __init__(self, args, H, tmp: Path):
        self.a = args
        self.H = H
        self.tmp = tmp
        self.stack: list = []
        self.ports: dict[str, int] = {}
        self.procs: dict[str, object] = {}
        self.pg = None
        self.stats = None  # psycopg2 connection for pg_stat_statements
        self.scripts: dict[str, Path] = {}
        self.latencies: dict[tuple[str, str], list[float]] = {}  # (workload, target) -> prepared-mode samples
        self.n = 0
        self.node_seed = 0  # a new random sequence per workload.js run

    # -- servers

    def start(self, targets: list[str], max_clients: int) -> None:
        H, a = self.H, self.a
        pool = max_clients + 4
        pg = H.Postgres(settings={
            "max_connections": 3 * pool + 20, "shared_buffers": "512MB", "autovacuum": "off", "jit": "off",
            "shared_preload_libraries": "pg_stat_statements",  # what PostgreSQL received, per statement
            "pg_stat_statements.track": "top", "pg_stat_statements.max": 10000,
        })
        self.stack.append(pg)
        self.pg = pg
        self.ports["direct"] = pg.port
        pg.psql(f"CREATE DATABASE {DB}")
        pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=DB)
        t0 = time.monotonic()
        print(f"loading the example schema: {a.users:,} users, {a.transactions:,} transactions ...", file=sys.stderr)
        pg.psql((EXAMPLE / "schema.sql").read_text(), dbname=DB, timeout=900)
        pg.psql(SEED.format(users=a.users, transactions=a.transactions), dbname=DB, timeout=1800)
        pg.psql("VACUUM ANALYZE", dbname=DB, timeout=900)
        pg.psql("CHECKPOINT", dbname=DB)
        print(f"loaded in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        import psycopg2
        self.stats = psycopg2.connect(pg.dsn(dbname=DB), connect_timeout=H.CONNECT_TIMEOUT)
        self.stats.autocommit = True

        if "pgbouncer" in targets:
            self._add("pgbouncer", H.PgBouncer(pg, pool_mode="session", pool_size=pool, max_client_conn=2 * pool,
                                               settings={"stats_period": 3600, "server_idle_timeout": 30}))
        if "pgpool" in targets:
            self._add("pgpool", pgpool_class(H)(pg, children=pool))
        if "pgshelf" in targets:
            self.redis = H.Redis()
            self.stack.append(self.redis)
            self._add("pgshelf", H.PgShelf(pg, binary=a.binary, workers=2, log_level="warn",
                                           upstream_params={"sslmode": "disable"},
                                           env={"REDIS_URL": self.redis.url,
                                                "PGSHELF_RULES": str(EXAMPLE / "rules.toml"),
                                                # INVALIDATE RULE before W1-node runs
                                                "PGSHELF_ADMIN_CONSOLE_USERS": USER}))
        for w in WORKLOADS:
            if w in NODE_WORKLOADS:
                continue
            path = self.tmp / f"{w}.sql"
            path.write_text(script(w, a.users))
            self.scripts[w] = path

    def _add(self, target: str, srv) -> None:
        self.stack.append(srv)
        self.procs[target] = srv
        self.ports[target] = srv.port

    def check_alive(self) -> None:
        for name, srv in [("postgres", self.pg), *self.procs.items()]:
            if not srv.alive():
                raise RuntimeError(f"{name} exited ({srv.proc.returncode}):\n{srv.log_tail(20)}")

    # -- counters

    def pg_counts(self) -> tuple[int, dict[str, int]]:
        """(all statements PostgreSQL executed except ours, executions of each of the four reads)."""
        cases = ", ".join("coalesce(sum(calls) FILTER (WHERE query ILIKE %s), 0)::bigint" for _ in READ_PATTERNS)
        with self.stats.cursor() as cur:
            cur.execute(f"SELECT coalesce(sum(calls), 0)::bigint, {cases} FROM pg_stat_statements "
                        f"WHERE query NOT ILIKE '%%{BOOKKEEPING}%%'", list(READ_PATTERNS.values()))
            row = cur.fetchone()
        return int(row[0]), dict(zip(READ_PATTERNS, (int(x) for x in row[1:])))

    def cache_counters(self, target: str) -> tuple[int, int, int | None] | None:
        """(hits, lookups, waited) from the proxy's own statistics; None for targets without a cache."""
        if target == "pgshelf":
            address = self.procs["pgshelf"].env["PGSHELF_ADMIN_LISTEN"]
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
                return parse_shelf_metrics(response.read().decode())
        if target == "pgpool":
            c = self.procs["pgpool"].show_cache()
            hits, misses = int(c["num_cache_hits"]), int(c["num_selects"])  # num_selects: SELECTs not from the cache
            return hits, hits + misses, None
        return None

    # -- node-postgres (examples/telegram-bot/workload.js)

    def node_cmd(self, mode: str, target: str, seconds: int, clients: int) -> tuple[list[str], dict]:
        url = f"postgresql://{USER}@127.0.0.1:{self.ports[target]}/{DB}?sslmode=disable"
        direct = f"postgresql://{USER}@127.0.0.1:{self.ports['direct']}/{DB}?sslmode=disable"
        self.node_seed += 1
        # --direct: users, projects and workflow versions from PostgreSQL itself. Every write in
        # an explicit transaction, for every target, as in W1 (pgpool/pgpool2#172). --rank-by-id:
        # the popular users are the low ids, as with pgbench's random_zipfian, whose profile
        # queries aggregate the most transactions.
        cmd = ["node", str(EXAMPLE / "workload.js"), "--json", "--url", url, "--direct", direct,
               "--seconds", str(seconds), "--messages", "0", "--concurrency", str(clients),
               "--write-ratio", str(WRITE_PERMILLE / 1000), "--zipf", str(ZIPF), "--seed", str(self.node_seed),
               "--write-transactions", "--rank-by-id"]
        if mode == "prepared":
            cmd.append("--prepared")
        return cmd, self.H.client_env(NODE_PATH=str(NODE_MODULES))

    def forget_foreign_writes(self) -> None:
        """Drops pgshelf's entries of the four reads (admin console, INVALIDATE RULE).

        The other targets' runs write to the same rows behind pgshelf's back; an entry cached
        before them is out of date, and workload.js would count a read of it, or the read after
        its own write that shows them, as stale. pgshelf only promises freshness for writes it
        sees, so each W1-node run starts from entries consistent with PostgreSQL (a colder start
        than pgpool's, whose 4.3 has no command to drop its cache)."""
        shelf = self.procs["pgshelf"]
        cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", shelf.dsn(dbname="pgshelf", sslmode="disable")]
        for rule in READ_RULES:
            cmd += ["-c", f"INVALIDATE RULE {rule}"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60, env=self.H.client_env())

    @staticmethod
    def node_summary(res) -> dict | None:
        """workload.js's JSON summary; exit 1 means errors or stale reads, which the summary counts."""
        if res.returncode not in (0, 1):
            return None
        try:
            return json.loads(res.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return None

    # -- pgbench

    def pgbench_cmd(self, workload: str, mode: str, target: str, seconds: int, clients: int,
                    log_prefix: Path | None) -> list[str]:
        a = self.a
        cmd = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(self.ports[target]), "-U", USER,
               "-c", str(clients), "-j", str(min(a.threads, clients)), "-T", str(seconds),
               "-M", mode, "-f", str(self.scripts[workload])]
        if log_prefix is not None:
            cmd += ["-l", "--log-prefix", str(log_prefix)]
        return cmd + [DB]

    def measure(self, workload: str, mode: str, target: str, rep: int, seconds: int,
                clients: int | None = None, keep_latencies: bool = False) -> Run:
        clients = clients or self.a.clients
        run = Run(workload, mode, target, rep, clients)
        self.check_alive()
        pt.wait_quiet(self.a.quiet_wait)
        self.n += 1
        log_dir = self.tmp / f"log{self.n}"
        log_dir.mkdir()
        ours = [self.pg.pid, *(s.pid for s in self.procs.values())]
        if getattr(self, "redis", None):
            ours.append(self.redis.pid)
        # The proxy's counters first: asking pgpool opens a connection through it, whose start-up
        # queries to PostgreSQL (if any) must not fall into the counted window.
        c0 = self.cache_counters(target)
        q0, r0 = self.pg_counts()
        t0 = sum(pt.tree_ticks(p) for p in ours)
        proxy = self.procs.get(target)
        redis = getattr(self, "redis", None) if target == "pgshelf" else None
        x0 = pt.tree_ticks(proxy.pid) if proxy else None
        y0 = pt.proc_ticks(redis.pid)[0] if redis else None
        m0, ch0, self0, w0 = pt.machine_ticks(), pt.children_cpu(), sum(os.times()[:2]), time.monotonic()
        if workload in NODE_WORKLOADS:
            if target == "pgshelf":
                self.forget_foreign_writes()
            cmd, env = self.node_cmd(mode, target, seconds, clients)
        else:
            cmd = self.pgbench_cmd(workload, mode, target, seconds, clients, log_dir / "tx")
            env = self.H.client_env(PGSSLMODE="disable", PGAPPNAME=f"bench-{target}")
        try:
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            run.error = "pgbench did not finish in time"
            return run
        w1, ch1 = time.monotonic(), pt.children_cpu()
        time.sleep(0.3)  # pgshelf stores a miss's result in the background; backends exit
        m1, self1 = pt.machine_ticks(), sum(os.times()[:2])
        t1 = sum(pt.tree_ticks(p) for p in ours)
        if proxy:
            run.proxy_cpu_s = (pt.tree_ticks(proxy.pid) - x0) / pt.CLK_TCK
        if redis:
            run.redis_cpu_s = (pt.proc_ticks(redis.pid)[0] - y0) / pt.CLK_TCK
        q1, r1 = self.pg_counts()
        c1 = self.cache_counters(target)
        node = self.node_summary(res) if workload in NODE_WORKLOADS else None
        if node:
            run.tps, run.transactions = node["messages_per_second"], node["messages"]
            run.failed, run.stale_reads = node["errors"], node["stale_reads"]
            run.p50_ms, run.p99_ms = node["latency_ms"]["p50"], node["latency_ms"]["p99"]
        elif workload not in NODE_WORKLOADS:
            parsed = pt.parse_pgbench(res.stdout)
            run.tps, run.transactions, run.failed = parsed["tps"], parsed["transactions"], parsed["failed"]
        run.wall_s = w1 - w0
        run.pg_queries = q1 - q0
        run.pg_reads = {k: r1[k] - r0[k] for k in READS}
        if c0 and c1:
            run.cache_hits, run.cache_lookups = c1[0] - c0[0], c1[1] - c0[1]
            if c1[2] is not None:
                run.cache_waited = c1[2] - c0[2]
        ours_cpu = (t1 - t0) / pt.CLK_TCK + (ch1 - ch0) + (self1 - self0)
        capacity = (m1[2] - m0[2]) / pt.CLK_TCK
        run.foreign_share = max(0.0, (m1[0] - m0[0]) / pt.CLK_TCK - ours_cpu) / capacity if capacity else None
        if workload in NODE_WORKLOADS:
            shutil.rmtree(log_dir, ignore_errors=True)
            if node is None:
                tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
                run.error = f"workload.js exit {res.returncode}: " + " | ".join(tail)
            return run
        lat = []
        for path in glob.glob(str(log_dir / "tx.*")):
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[2].isdigit():
                        lat.append(int(parts[2]) / 1000.0)
        shutil.rmtree(log_dir, ignore_errors=True)
        lat.sort()
        run.p50_ms, run.p99_ms = percentile(lat, 0.50), percentile(lat, 0.99)
        if keep_latencies and lat:
            # A random sample bounds memory and plotting time; it keeps the distribution.
            sample = lat if len(lat) <= 20000 else random.Random(self.n).sample(lat, 20000)
            self.latencies.setdefault((workload, target), []).extend(sample)
        if res.returncode != 0 or run.tps is None:
            tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
            run.error = f"pgbench exit {res.returncode}: " + " | ".join(tail)
        elif run.failed is None:
            run.failed = 0
        return run


# --------------------------------------------------------------------------- reporting

def modes_of(workload: str, modes: list[str]) -> list[str]:
    return [m for m in modes if m != "simple"] if workload in NODE_WORKLOADS else modes


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(runs: list[Run], workloads, modes, targets) -> list[dict]:
    rows = []
    for w in workloads:
        for mode in modes_of(w, modes):
            med = {}
            for t in targets:
                rs = [r for r in runs if (r.workload, r.mode, r.target) == (w, mode, t) and r.error is None]
                errs = [r.error for r in runs if (r.workload, r.mode, r.target) == (w, mode, t) and r.error]
                med[t] = {
                    "workload": w, "mode": mode, "target": t, "runs": len(rs), "errors": errs,
                    "tps": median(r.tps for r in rs),
                    "tps_min": min((r.tps for r in rs), default=None),
                    "tps_max": max((r.tps for r in rs), default=None),
                    "p50_ms": median(r.p50_ms for r in rs),
                    "p99_ms": median(r.p99_ms for r in rs),
                    "pg_queries_per_tx": median(r.queries_per_tx for r in rs),
                    "pg_reads_per_tx": {k: median(r.pg_reads.get(k, 0) / r.transactions for r in rs if r.transactions)
                                        for k in READS},
                    "hit_ratio": median(r.hit_ratio for r in rs),
                    "waited_per_1000_lookups": median(1000 * r.cache_waited / r.cache_lookups for r in rs
                                                      if r.cache_waited is not None and r.cache_lookups),
                    "reads_skipped": median(r.reads_skipped for r in rs),
                    "proxy_cpu_us_per_tx": median(r.us_per_tx(r.proxy_cpu_s) for r in rs),
                    "redis_cpu_us_per_tx": median(r.us_per_tx(r.redis_cpu_s) for r in rs),
                    "failed": sum(r.failed or 0 for r in rs),
                    "stale_reads": sum(r.stale_reads or 0 for r in rs) if any(r.stale_reads is not None for r in rs)
                    else None,
                    "foreign_share_max": max((r.foreign_share or 0 for r in rs), default=None),
                }
            for t in targets:
                row = med[t]
                for ref in ("direct", "pgbouncer", "pgpool"):
                    base = med.get(ref, {}).get("tps")
                    row[f"ratio_{ref}"] = row["tps"] / base if row["tps"] and base else None
                rows.append(row)
    return rows


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def markdown(rows: list[dict], header: list[str]) -> str:
    out = header + [
        "",
        "| workload | mode | target | TPS | TPS min–max | p50 ms | p99 ms | PostgreSQL queries/tx "
        "| hit ratio | reads not received by PostgreSQL | proxy CPU µs/tx | TPS / direct | TPS / PgBouncer "
        "| TPS / pgpool | failed tx |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        failed = str(r["failed"]) + (f" ({len(r['errors'])} runs aborted)" if r["errors"] else "")
        cpu = fmt(r["proxy_cpu_us_per_tx"], ".0f")
        if r["redis_cpu_us_per_tx"] is not None:
            cpu += f" + {r['redis_cpu_us_per_tx']:.0f} Redis"
        out.append(
            f"| {r['workload']} | {r['mode']} | {TARGET_LABEL[r['target']]} | {fmt(r['tps'], ',.0f')} "
            f"| {fmt(r['tps_min'], '.0f')}–{fmt(r['tps_max'], '.0f')} | {fmt(r['p50_ms'], '.2f')} "
            f"| {fmt(r['p99_ms'], '.2f')} | {fmt(r['pg_queries_per_tx'], '.2f')} "
            f"| {fmt(r['hit_ratio'], '.1%')} | {fmt(r['reads_skipped'], '.1%')} | {cpu} "
            f"| {fmt(r['ratio_direct'], '.2f')} | {fmt(r['ratio_pgbouncer'], '.2f')} | {fmt(r['ratio_pgpool'], '.2f')} "
            f"| {failed} |")
    return "\n".join(out) + "\n"


def per_read_table(rows: list[dict]) -> str:
    out = ["PostgreSQL executions per transaction of each read (1.00: every one reached PostgreSQL):", "",
           "| workload | mode | target | " + " | ".join(READS) + " |",
           "|---|---|---|" + "--:|" * len(READS)]
    for r in rows:
        out.append(f"| {r['workload']} | {r['mode']} | {TARGET_LABEL[r['target']]} | "
                   + " | ".join(fmt(r["pg_reads_per_tx"][k], ".2f") for k in READS) + " |")
    return "\n".join(out) + "\n"


# Targets of the issue, per mode: (workload, reference target, minimum TPS ratio).
TARGET_RATIOS = [("W2", "direct", 5.0), ("W2", "pgpool", 1.5), ("W1", "direct", 3.0), ("W1", "pgpool", 1.0),
                 ("W1-node", "direct", 3.0), ("W1-node", "pgpool", 1.0)]


def verdict(rows: list[dict]) -> str:
    lines = []
    for w, ref, want in TARGET_RATIOS:
        rs = [r for r in rows if r["workload"] == w and r["target"] == "pgshelf" and r[f"ratio_{ref}"] is not None]
        if not rs:
            continue
        got = ", ".join(f"{r['mode']} {r[f'ratio_{ref}']:.2f}×" for r in rs)
        ok = all(r[f"ratio_{ref}"] >= want for r in rs)
        lines.append(f"- {w}: pgshelf ≥ {want:g}× {TARGET_LABEL[ref]} in every mode: "
                     f"{'met' if ok else 'NOT met'} ({got})")
    return ("Targets (pgshelf TPS):\n\n" + "\n".join(lines) + "\n") if lines else ""


def sweep_markdown(sweep: list[Run], targets: list[str]) -> str:
    counts = sorted({r.clients for r in sweep})
    out = ["W2, -M prepared, TPS by number of clients (one run each):", "",
           "| target | " + " | ".join(f"{c} clients" for c in counts) + " |",
           "|---|" + "--:|" * len(counts)]
    for t in targets:
        cells = []
        for c in counts:
            r = next((r for r in sweep if r.target == t and r.clients == c), None)
            cells.append("–" if r is None else (r.error and "error") or fmt(r.tps, ",.0f"))
        out.append(f"| {TARGET_LABEL[t]} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plots(bench: Bench, sweep: list[Run], targets: list[str], stem: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []
    workloads = sorted({w for w, _ in bench.latencies}, key=WORKLOADS.index)
    if workloads:
        fig, axes = plt.subplots(1, len(workloads), figsize=(6.5 * len(workloads), 4.5), squeeze=False)
        for ax, w in zip(axes[0], workloads):
            for t in targets:
                xs = sorted(bench.latencies.get((w, t), []))
                if xs:
                    ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=TARGET_LABEL[t])
            ax.set_xscale("log")
            ax.set_xlabel("transaction latency (ms, log scale)")
            ax.set_ylabel("share of transactions")
            ax.set_title(f"{w}, pgbench -M prepared")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = stem.with_name(stem.name + "-latency-cdf.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if sweep:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for t in targets:
            pts = sorted((r.clients, r.tps) for r in sweep if r.target == t and r.tps)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=TARGET_LABEL[t])
        ax.set_xscale("log", base=2)
        counts = sorted({r.clients for r in sweep})
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("pgbench clients")
        ax.set_ylabel("TPS")
        ax.set_title("W2, pgbench -M prepared")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = stem.with_name(stem.name + "-tps-vs-clients.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def machine_info(binary: Path) -> dict:
    m = pt.machine_info(binary)
    try:  # pgpool prints its version on stderr
        r = subprocess.run(["pgpool", "--version"], capture_output=True, text=True, timeout=10)
        m["pgpool"] = (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        m["pgpool"] = "pgpool ?"
    m["redis"] = pt.cmd_out(["redis-server", "--version"]).split(" sha=")[0]
    return m


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description="the example chat-bot's reads (W2) and read/write mix (W1): direct "
                                             "vs PgBouncer vs pgpool-II's query cache vs pgshelf (see bench/README.md)")
    ap.add_argument("--quick", action="store_true",
                    help="small data and short runs (a smoke run of 2-3 minutes); explicit options still apply")
    ap.add_argument("-T", "--duration", type=int, help="seconds per pgbench run (default 5; --quick 3)")
    ap.add_argument("-r", "--reps", type=int, help="repetitions per (workload, mode, target); medians are reported "
                                                   "(default 3; --quick 1)")
    ap.add_argument("-c", "--clients", type=int, default=8, help="pgbench clients (default 8)")
    ap.add_argument("-j", "--threads", type=int, default=2, help="pgbench threads (default 2)")
    ap.add_argument("--users", type=int, help="users (default 100000; --quick 10000)")
    ap.add_argument("--transactions", type=int, help="rows of the transactions table (default 2000000; --quick 200000)")
    ap.add_argument("--warmup", type=int, help="seconds of warm-up per (workload, mode) of the caching targets "
                                               "(pgpool, pgshelf; the others get 1 s) before the first repetition "
                                               "(default 4; --quick 1)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list from W2,W1,W1-node")
    ap.add_argument("--modes", default=",".join(MODES), help="comma list from simple,extended,prepared")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma list from {','.join(TARGETS)}")
    ap.add_argument("--sweep", default=None,
                    help="client counts of the W2 prepared TPS-vs-clients runs, comma list, '' for none "
                         f"(default {','.join(map(str, SWEEP_CLIENTS))}; --quick 1,16)")
    ap.add_argument("--sweep-duration", type=int, help="seconds per sweep run (default 3; --quick 2)")
    ap.add_argument("--quiet-wait", type=float, default=2,
                    help="before each run, wait up to this many seconds for the machine to be idle (default 2)")
    ap.add_argument("--binary", type=Path, default=REPO / "build-bench" / "app" / "pgshelf",
                    help="pgshelf binary (default build-bench/app/pgshelf, which bench/cache builds)")
    ap.add_argument("--json", type=Path, help="results file (default bench/results/cache-<time>.json; the .md and "
                                              "the plots go next to it)")
    a = ap.parse_args()
    quick = a.quick
    for name, full, small in (("duration", 5, 3), ("reps", 3, 1), ("users", 100_000, 10_000),
                              ("transactions", 2_000_000, 200_000), ("warmup", 4, 1), ("sweep_duration", 3, 2)):
        if getattr(a, name) is None:
            setattr(a, name, small if quick else full)
    if a.sweep is None:
        a.sweep = "1,16" if quick else ",".join(map(str, SWEEP_CLIENTS))
    sweep_clients = [int(x) for x in a.sweep.split(",") if x]
    workloads = [w for w in a.workloads.split(",") if w]
    modes = [m for m in a.modes.split(",") if m]
    targets = [t for t in a.targets.split(",") if t]
    for xs, allowed, what in ((workloads, WORKLOADS, "workload"), (modes, MODES, "mode"), (targets, TARGETS, "target")):
        for x in xs:
            if x not in allowed:
                ap.error(f"unknown {what} {x}")
    if "pgshelf" in targets and not a.binary.is_file():
        ap.error(f"no pgshelf binary at {a.binary} (bench/cache builds it)")
    if NODE_WORKLOADS & set(workloads) and not (NODE_MODULES / "pg").is_dir():
        ap.error(f"no node-postgres in {NODE_MODULES} (bench/cache installs it: tests/integration/prepare.sh)")
    for tool in ("pgbench", "psql", "pgbouncer", "pgpool", "redis-server", "node"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found on PATH (bench/cache installs it)")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    # Servers' directories under one of this run's own (see passthrough.py).
    run_tmp = Path(tempfile.mkdtemp(prefix="pgshelf-bench-cache-"))
    run_tmp.chmod(0o755)  # PostgreSQL, PgBouncer and pgpool run as postgres and need to reach their directories
    tempfile.tempdir = str(run_tmp)
    H = pt.load_harness()
    machine = machine_info(a.binary)
    started = time.monotonic()
    n_runs = sum(len(modes_of(w, modes)) for w in workloads) * len(targets)
    est = int(n_runs * (a.reps * (a.duration + 2) + (a.warmup + 1) / 2 + 2)
              + len(sweep_clients) * len(targets) * (a.sweep_duration + 2.5) + 20 + a.transactions / 100000)
    print(f"cache benchmark: {n_runs // len(targets)} (workload, mode) pairs x {len(targets)} targets x {a.reps} reps "
          f"x {a.duration}s, sweep {sweep_clients or 'off'}: about {est // 60} min {est % 60} s", file=sys.stderr)

    runs: list[Run] = []
    sweep: list[Run] = []
    bench = Bench(a, H, run_tmp)
    profile_ms = None
    with pt.GuardedRun(bench.stack, run_tmp, before_stop=lambda: bench.stats and bench.stats.close()) as guard:
        max_clients = max([a.clients, *sweep_clients])
        bench.start(targets, max_clients)
        for w in workloads:
            for mode in modes_of(w, modes):
                if a.warmup > 0:
                    # Fills the caches (pgpool keeps one entry per protocol mode: the statement text
                    # differs) and PostgreSQL's buffers; not measured.
                    for t in targets:
                        r = bench.measure(w, mode, t, -1, a.warmup if t in ("pgpool", "pgshelf") else 1)
                        if r.error:
                            print(f"warm-up {w} {mode} {t}: {r.error}", file=sys.stderr)
            for rep in range(a.reps):
                for mi, mode in enumerate(modes_of(w, modes)):
                    k = (rep + mi) % len(targets)  # rotate so no target always runs first or last
                    for t in targets[k:] + targets[:k]:
                        r = bench.measure(w, mode, t, rep, a.duration, keep_latencies=(mode == "prepared"))
                        runs.append(r)
                        status = r.error or (
                            f"{r.tps:8.0f} tps  p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms  "
                            f"pg q/tx {fmt(r.queries_per_tx, '.2f')}  hit {fmt(r.hit_ratio, '.1%')}  "
                            f"skipped {fmt(r.reads_skipped, '.1%')}  failed {r.failed}  other load {r.foreign_share:.0%}")
                        print(f"{w} rep {rep + 1}/{a.reps}  {mode:8} {t:9} {status}", file=sys.stderr)
        if sweep_clients and "W2" in workloads:
            for c in sweep_clients:
                for t in targets:
                    r = bench.measure("W2", "prepared", t, 0, a.sweep_duration, clients=c)
                    sweep.append(r)
                    print(f"sweep {c:4} clients {t:9} {r.error or f'{r.tps:8.0f} tps  failed {r.failed}'}",
                          file=sys.stderr)
        with bench.stats.cursor() as cur:  # what the cached profile query costs PostgreSQL, on average
            cur.execute(f"SELECT sum(total_exec_time) / nullif(sum(calls), 0) FROM pg_stat_statements "
                        f"WHERE query ILIKE %s AND query NOT ILIKE '%%{BOOKKEEPING}%%'", [READ_PATTERNS["profile"]])
            profile_ms = cur.fetchone()[0]
    interrupted, failure = guard.interrupted, guard.failure

    if not runs:
        return 130 if interrupted else 1
    if failure:
        print(f"WARNING: the benchmark stopped early ({failure}); partial results follow\n")

    rows = summarise(runs, workloads, modes, targets)
    shares = [r.foreign_share for r in runs if r.foreign_share is not None and r.error is None]
    header = [
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, {machine['postgresql']}, "
        f"{machine['pgbouncer']}, {machine['pgpool']}, {machine['redis']}, pgshelf {machine['pgshelf']}; "
        f"{machine['date']}",
        "",
        f"pgbench -c {a.clients} -j {a.threads} -T {a.duration}, median of {a.reps} interleaved runs; "
        f"{a.users:,} users, {a.transactions:,} transactions (profile query: "
        f"{fmt(profile_ms, '.2f')} ms mean execution in PostgreSQL), user ids random_zipfian {ZIPF}; "
        f"W1 writes on {WRITE_PERMILLE / 10:g} % of messages; wall time {time.monotonic() - started:.0f} s"
        + (" (INTERRUPTED: partial)" if interrupted else "") + (" (FAILED: partial)" if failure else "")
        + (f"; CPU used by other processes during the runs: median {statistics.median(shares):.1%}, "
           f"max {max(shares):.1%} of the machine" if shares else ""),
    ]
    md = markdown(rows, header)
    md += "\n" + verdict(rows)
    md += "\n" + per_read_table(rows)
    stale = [r for r in rows if r.get("stale_reads") is not None]
    if stale:
        md += ("\nW1-node stale reads (reads that did not show a write the workload had already seen committed; "
               "must be 0): " + ", ".join(f"{r['mode']} {TARGET_LABEL[r['target']]} {r['stale_reads']}"
                                         for r in stale) + "\n")
    waits = [r for r in rows if r.get("waited_per_1000_lookups") is not None]
    if waits:
        md += ("\npgshelf misses that found another fetch of the same entry under way and polled Redis for its "
               "result (every 20 ms), per 1000 lookups: "
               + ", ".join(f"{r['workload']} {r['mode']} {r['waited_per_1000_lookups']:.1f}" for r in waits) + "\n")
    if sweep:
        md += "\n" + sweep_markdown(sweep, targets)
    failed = sum(r["failed"] for r in rows) + sum(r.failed or 0 for r in sweep)
    aborted = sum(len(r["errors"]) for r in rows) + sum(1 for r in sweep if r.error)
    print(md)
    if failed or aborted:
        print(f"WARNING: {failed} failed transactions, {aborted} aborted pgbench runs (see JSON for details)")

    out = a.json
    if out is None:
        (BENCH_DIR / "results").mkdir(exist_ok=True)
        out = BENCH_DIR / "results" / f"cache-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    images = []
    try:
        images = plots(bench, sweep, targets, out.with_suffix(""))
    except Exception as e:  # the table matters more than the pictures
        print(f"plots failed: {type(e).__name__}: {e}", file=sys.stderr)
    out.write_text(json.dumps({
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()} | {
            "workloads": workloads, "modes": modes, "targets": targets, "interrupted": interrupted,
            "failure": failure, "profile_query_mean_ms": profile_ms},
        "scripts": {w: script(w, a.users) for w in workloads},
        "summary": rows,
        "runs": [asdict(r) | {"queries_per_tx": r.queries_per_tx, "hit_ratio": r.hit_ratio,
                              "reads_skipped": r.reads_skipped} for r in runs],
        "sweep": [asdict(r) for r in sweep],
        "latency_percentiles_prepared": {
            f"{w}/{t}": {f"p{q}": percentile(sorted(xs), q / 100) for q in (50, 90, 99, 99.9)}
            for (w, t), xs in bench.latencies.items()},
        "plots": [p.name for p in images],
        "markdown": md,
    }, indent=2))
    out.with_suffix(".md").write_text(md)
    print(f"\nresults: {out}" + "".join(f"\nplot: {p}" for p in images), file=sys.stderr)
    if interrupted:
        return 130
    return 1 if failed or aborted or failure else 0


if __name__ == "__main__":
    sys.exit(main())
