#!/usr/bin/python3
"""Cost growth benchmark: how pgshelf's costs grow with what it is given.

Four parts, each a series of points on one run on one machine:

- rules:   hit latency, start-up time and RSS against the number of [[cache]]
           rules (the statement measured matches the last rule of the file);
- size:    hit latency against the number of rows of the cached result,
           directly against PostgreSQL and through pgshelf (a hit);
- clients: TPS and latency of cache hits against the number of concurrent
           active clients;
- idle:    pgshelf's RSS against the number of idle client connections, with
           PgBouncer (transaction pooling) between pgshelf and PostgreSQL so
           that PostgreSQL does not need a backend per connection.

Latencies are per transaction, from pgbench's transaction log (-l); the
repetitions of the latency points of rules and size are interleaved so that
machine noise affects every point alike.

Run through bench/growth (which builds pgshelf first); see bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import errno
import json
import math
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
from passthrough import GuardedRun, fmt, load_harness, machine_info, wait_quiet  # noqa: E402

H = load_harness()

HOST = "127.0.0.1"
DB = "bench"
USER = "postgres"
PARTS = ["rules", "size", "clients", "idle"]
DEFAULT_POINTS = {
    "rules": [1, 10, 100, 1000, 10000],
    "size": [1, 10, 100, 1000, 10000],
    "clients": [1, 10, 100, 500, 2000],
    "idle": [0, 1000, 2500, 5000, 10000],
}
QUICK_POINTS = {
    "rules": [1, 100, 10000],
    "size": [1, 100, 1000],
    "clients": [1, 10, 100],
    "idle": [0, 1000, 2500],
}
ITEM_IDS = 8  # ids a single client asks for (rules, size parts): a few entries, all hits after the warm-up
CLIENT_ITEM_IDS = 100  # ids the concurrent clients ask for
ITEMS_QUERY = "SELECT id, v FROM growth_items WHERE id = $1"
ROWS_QUERY = "SELECT id, v FROM growth_rows WHERE id <= $1 ORDER BY id"
IDLE_INFLIGHT = 200  # handshakes in progress at once: well under the listen backlog
PROTOCOL_3_0 = 196608
TARGET_RULES_RATIO = 1.10
# A hit's p50 against the two round trips it cannot avoid: one to Redis, one like a client's to PostgreSQL.
TARGET_HIT_ROUND_TRIPS = 1.5
TARGET_IDLE_KIB = 64


# --------------------------------------------------------------------------- rules files and scripts

def cache_rule(name: str, query: str, key: str, extra: str = "") -> str:
    return f'[[cache]]\nname = "{name}"\nquery = "{query}"\nkey = "{key}"\nttl = "1h"\n{extra}\n'


def rules_file(path: Path, count: int) -> Path:
    """count [[cache]] rules on distinct tables; the last one is the statement the benchmark sends."""
    parts = [cache_rule(f"other_{i:05d}", f"SELECT id, v FROM growth_other_{i:05d} WHERE id = $1",
                        f"other_{i:05d}:{{id}}") for i in range(1, count)]
    parts.append(cache_rule("items", ITEMS_QUERY, "items:{id}"))
    path.write_text("\n".join(parts))
    return path


def main_rules_file(path: Path) -> Path:
    # Results of 10,000 rows are ~0.6 MB; the default max_entry_size (1MB) is too close for comfort.
    path.write_text(cache_rule("items", ITEMS_QUERY, "items:{id}")
                    + "\n" + cache_rule("rows", ROWS_QUERY, "rows:{$1}", 'max_entry_size = "64MB"\n'))
    return path


def items_script(path: Path, ids: int) -> Path:
    path.write_text(f"\\set id random(1, {ids})\nSELECT id, v FROM growth_items WHERE id = :id;\n")
    return path


def select1_script(path: Path) -> Path:
    path.write_text("SELECT 1;\n")
    return path


def redis_get_p50_us(port: int, requests: int = 20000) -> tuple[float | None, str | None]:
    """p50 of one client's GET round trips to Redis, from redis-benchmark (C, like pgbench)."""
    cmd = ["redis-benchmark", "-h", HOST, "-p", str(port), "-c", "1", "-n", str(requests), "-t", "get", "--csv"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"redis-benchmark: {e}"
    rows = list(csv.reader(out.stdout.splitlines()))
    if out.returncode != 0 or len(rows) < 2 or "p50_latency_ms" not in rows[0]:
        return None, f"redis-benchmark: exit {out.returncode}: {(out.stderr or out.stdout)[-200:]}"
    return float(rows[1][rows[0].index("p50_latency_ms")]) * 1000, None


def rows_script(path: Path, rows: int) -> Path:
    path.write_text(f"\\set n {rows}\nSELECT id, v FROM growth_rows WHERE id <= :n ORDER BY id;\n")
    return path


# --------------------------------------------------------------------------- measuring

def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def fd_limit(pid: int) -> int | None:
    """The soft RLIMIT_NOFILE of a process (inherited from this one by the servers it starts)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                value = line.split()[3]
                return None if value == "unlimited" else int(value)
    except OSError:
        pass
    return None


def percentile(sorted_xs: list[float], q: float) -> float | None:
    if not sorted_xs:
        return None
    return sorted_xs[min(len(sorted_xs) - 1, int(q * len(sorted_xs)))]


def scrape(shelf) -> str:
    with urllib.request.urlopen(f"http://{shelf.env['PGSHELF_ADMIN_LISTEN']}/metrics", timeout=30) as response:
        return response.read().decode()


RTT_BUCKET = "pgshelf_redis_command_duration_seconds_bucket{le="


def metrics(shelf) -> dict:
    """The cache counters of a pgshelf, from its admin port's /metrics; "redis_rtt" holds the cumulative
    buckets {upper bound in s: count} of its Redis round trips (one pipelined batch each)."""
    text = scrape(shelf)
    names = {
        'pgshelf_cache_requests_total{outcome="hit"}': "hit",
        'pgshelf_cache_requests_total{outcome="miss"}': "miss",
        'pgshelf_cache_requests_total{outcome="coalesced"}': "coalesced",
        'pgshelf_cache_requests_total{outcome="waited"}': "waited",
        "pgshelf_cache_served_bytes_total": "served_bytes",
        "pgshelf_redis_errors_total": "redis_errors",
        "pgshelf_server_connect_errors_total": "connect_errors",
        "pgshelf_client_connections_refused_total": "refused",
    }
    out = dict.fromkeys([*names.values(), "bypass"], 0.0)
    rtt = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        if series in names:
            out[names[series]] = float(value)
        elif series.startswith("pgshelf_cache_bypass_total{"):
            out["bypass"] += float(value)
        elif series.startswith(RTT_BUCKET):
            rtt[float(series[len(RTT_BUCKET):].strip('"}'))] = float(value)
    out["redis_rtt"] = rtt
    return out


def counters_delta(m0: dict, m1: dict) -> dict[str, float]:
    """Counter increases between two scrapes, with the p50/p99 Redis round trip of the interval as
    the upper bound of the histogram bucket it falls in (seconds; None without round trips)."""
    d = {k: m1[k] - m0[k] for k in m1 if k != "redis_rtt"}
    b0, b1 = m0["redis_rtt"], m1["redis_rtt"]
    bounds = sorted(b1)
    total = b1.get(float("inf"), 0.0) - b0.get(float("inf"), 0.0)
    for q, key in ((0.5, "redis_rtt_p50_s"), (0.99, "redis_rtt_p99_s")):
        d[key] = next((le for le in bounds if total and b1[le] - b0.get(le, 0.0) >= q * total), None)
    return d


class BreakerWatch:
    """Share of the time (sampled every 0.25 s) that some worker's Redis circuit breaker was open."""

    def __init__(self, shelf) -> None:
        self.shelf = shelf
        self.samples = self.open = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                text = scrape(self.shelf)
            except OSError:
                continue
            self.samples += 1
            self.open += any(line.startswith("pgshelf_redis_circuit_open ") and float(line.split()[1]) > 0
                             for line in text.splitlines())

    @property
    def share(self) -> float | None:
        return self.open / self.samples if self.samples else None

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(35)


class Pgbench:
    """pgbench runs with a per-transaction log, in a directory of their own."""

    def __init__(self, workdir: Path, threads: int) -> None:
        self.dir = workdir
        self.threads = threads
        self.runs = 0

    def run(self, port: int, script: Path, clients: int, seconds: int | None = None,
            transactions: int | None = None, log: bool = True) -> dict:
        self.runs += 1
        prefix = self.dir / f"tx{self.runs}"
        cmd = ["pgbench", "-n", "-h", HOST, "-p", str(port), "-U", USER, "-M", "prepared",
               "-c", str(clients), "-j", str(min(self.threads, clients)), "-f", str(script)]
        cmd += ["-T", str(seconds)] if seconds else ["-t", str(transactions)]
        if log:
            cmd += ["-l", f"--log-prefix={prefix}"]
        budget = (seconds or 0) + 120 + clients / 20  # connecting 2,000 clients takes a while
        r = {"clients": clients, "seconds": seconds, "tps": None, "transactions": None, "failed": None,
             "connect_ms": None, "aborted": 0, "latencies_us": [], "error": None}
        try:
            res = subprocess.run(cmd + [DB], env=H.client_env(PGSSLMODE="disable"), capture_output=True,
                                 text=True, timeout=budget, cwd=self.dir)
        except subprocess.TimeoutExpired:
            r["error"] = f"pgbench did not finish within {budget:.0f} s"
            return r
        finally:
            latencies, unlogged = [], 0
            for f in self.dir.glob(f"{prefix.name}.*"):
                with open(f) as fh:
                    for line in fh:
                        fields = line.split()
                        if len(fields) >= 3 and fields[2].isdigit():
                            latencies.append(int(fields[2]))
                        else:
                            unlogged += 1  # "failed" or "skipped" in place of a time
                f.unlink()
            latencies.sort()
            r["latencies_us"] = latencies

        def grab(pattern: str, conv=float):
            m = re.search(pattern, res.stdout, re.M)
            return conv(m.group(1)) if m else None
        r["tps"] = grab(r"^tps = ([0-9.]+) \(without initial connection time\)")
        r["transactions"] = grab(r"^number of transactions actually processed: (\d+)", int)
        r["failed"] = grab(r"^number of failed transactions: (\d+)", int) or 0
        r["connect_ms"] = grab(r"^initial connection time = ([0-9.]+) ms")
        r["aborted"] = len(re.findall(r"client \d+ aborted", res.stderr))
        if res.returncode != 0 or not r["transactions"] or r["failed"] or r["aborted"]:
            tail = (res.stderr + res.stdout).strip().splitlines()[-6:]
            r["error"] = (f"pgbench exit {res.returncode}, {r['failed']} failed transactions, "
                          f"{r['aborted']} clients aborted: " + " | ".join(tail))
        return r


def summarise_runs(runs: list[dict]) -> dict:
    """One point from its repetitions: TPS averaged, latencies pooled."""
    lat = sorted(x for r in runs for x in r["latencies_us"])
    tps = [r["tps"] for r in runs if r["tps"] is not None]
    return {
        "tps": statistics.mean(tps) if tps else None,
        "tps_runs": tps,
        "transactions": sum(r["transactions"] or 0 for r in runs),
        "logged": len(lat),
        "p50_us": percentile(lat, 0.50),
        "p99_us": percentile(lat, 0.99),
        "mean_us": statistics.mean(lat) if lat else None,
        "connect_ms": max((r["connect_ms"] for r in runs if r["connect_ms"] is not None), default=None),
        "errors": [r["error"] for r in runs if r["error"]],
    }


def startup_seconds(binary: Path, env: dict[str, str], reps: int) -> list[float]:
    """Time from exec to the listen port accepting, for a pgshelf started outside the harness so
    that the port can be polled finely (the harness polls every 50 ms). Median of reps taken later."""
    times = []
    for _ in range(reps):
        port = H.free_port()
        e = dict(env, PGSHELF_LISTEN=f"{HOST}:{port}", PGSHELF_ADMIN_LISTEN="off", PGSHELF_LOG_LEVEL="warn")
        t0 = time.monotonic()
        proc = subprocess.Popen([str(binary)], env=e, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = t0 + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"pgshelf exited with {proc.returncode} during start-up")
                if H.port_accepts(port, timeout=0.5):
                    times.append(time.monotonic() - t0)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("pgshelf did not listen within 60 s")
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
    return times


# --------------------------------------------------------------------------- idle connections

def startup_packet(app: str) -> bytes:
    pairs = (("user", USER), ("database", DB), ("application_name", app))
    body = struct.pack("!i", PROTOCOL_3_0) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in pairs) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def error_text(payload: bytes) -> str:
    fields = {f[:1]: f[1:].decode(errors="replace") for f in payload.split(b"\0") if f}
    return f"{fields.get(b'C', '?')} {fields.get(b'M', '?')}"


def open_idle(port: int, count: int, app: str, timeout: float) -> tuple[list[socket.socket], list[str]]:
    """count connections that finished startup and trust authentication (ReadyForQuery), left open.

    Non-blocking sockets under one selector: a thread or a libpq connection per connection would
    cost far more than pgshelf's side of it. Returns (the open sockets, errors)."""
    sel = selectors.DefaultSelector()
    packet = startup_packet(app)
    ready: list[socket.socket] = []
    errors: list[str] = []
    started = pending = 0
    deadline = time.monotonic() + timeout

    def fail(sock: socket.socket, why: str) -> None:
        nonlocal pending
        sel.unregister(sock)
        sock.close()
        errors.append(why)
        pending -= 1

    try:
        while (started < count or pending) and time.monotonic() < deadline:
            while started < count and pending < IDLE_INFLIGHT:
                started += 1
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex((HOST, port))
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    errors.append(f"connect: {os.strerror(err)}")
                    continue
                sel.register(sock, selectors.EVENT_WRITE, {"buf": bytearray(), "sent": False})
                pending += 1
            for key, _ in sel.select(timeout=0.5):
                sock, st = key.fileobj, key.data
                if not st["sent"]:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(sock, f"connect: {os.strerror(err)}")
                        continue
                    sock.send(packet)  # 60 bytes into an empty socket buffer: sent whole
                    st["sent"] = True
                    sel.modify(sock, selectors.EVENT_READ, st)
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(sock, f"recv: {e}")
                    continue
                if not data:
                    fail(sock, "closed by the server during startup")
                    continue
                buf = st["buf"]
                buf += data
                outcome = None
                while len(buf) >= 5:
                    kind = buf[:1]
                    size = struct.unpack_from("!i", buf, 1)[0]
                    if len(buf) < 1 + size:
                        break
                    payload = bytes(buf[5:1 + size])
                    del buf[:1 + size]
                    if kind == b"R" and struct.unpack_from("!i", payload)[0] != 0:
                        outcome = f"authentication request {struct.unpack_from('!i', payload)[0]} (trust expected)"
                    elif kind == b"E":
                        outcome = error_text(payload)
                    elif kind == b"Z":
                        outcome = "ready"
                    if outcome:
                        break
                if outcome == "ready":
                    sel.unregister(sock)
                    sock.setblocking(True)
                    ready.append(sock)
                    pending -= 1
                elif outcome:
                    fail(sock, outcome)
        for key in list(sel.get_map().values()):
            fail(key.fileobj, f"no ReadyForQuery within {timeout:.0f} s")
        errors += ["not started: time out"] * (count - started)
    finally:
        sel.close()
    return ready, errors


def check_answers(sock: socket.socket) -> str | None:
    """Runs SELECT 1 on an idle connection; None when it answers T, D, C, Z."""
    sock.settimeout(30)
    body = b"SELECT 1\0"
    try:
        sock.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
        kinds, buf = b"", bytearray()
        while not kinds.endswith(b"Z"):
            data = sock.recv(65536)
            if not data:
                return "closed"
            buf += data
            while len(buf) >= 5 and len(buf) >= 1 + struct.unpack_from("!i", buf, 1)[0]:
                size = struct.unpack_from("!i", buf, 1)[0]
                if buf[:1] == b"E":
                    return error_text(bytes(buf[5:1 + size]))
                kinds += bytes(buf[:1])
                del buf[:1 + size]
        return None if kinds == b"TDCZ" else f"unexpected messages {kinds!r}"
    except OSError as e:
        return str(e)


# --------------------------------------------------------------------------- the run

class Growth:
    def __init__(self, args, workdir: Path) -> None:
        self.a = args
        self.dir = workdir
        self.stack: list = []  # every server started, in order; stopped newest first
        self.pg = None
        self.redis = None
        self.bench = Pgbench(workdir, args.threads)
        self.results: dict[str, list[dict]] = {}

    # -- servers

    def add(self, server):
        self.stack.append(server)
        return server

    def drop(self, server) -> None:
        if server in self.stack:
            self.stack.remove(server)
        server.stop()

    def shelf(self, rules: Path, upstream=None, env: dict[str, str] | None = None):
        settings = {"REDIS_URL": self.redis.url, "PGSHELF_RULES": str(rules)}
        settings.update(env or {})
        return self.add(H.PgShelf(upstream or self.pg, binary=self.a.binary, workers=self.a.workers,
                                  log_level="warn", upstream_params={"sslmode": "disable"}, env=settings))

    def start_base(self, max_clients: int, max_rows: int) -> None:
        self.pg = self.add(H.Postgres(settings={
            "max_connections": max(200, max_clients + 100),
            "shared_buffers": "128MB",
            "shared_preload_libraries": "",  # no pg_stat_statements: plain per-query cost
            "autovacuum": "off", "jit": "off",
        }))
        self.pg.psql(f"CREATE DATABASE {DB}")
        self.pg.psql(f"""
            CREATE TABLE growth_items (id int PRIMARY KEY, v text NOT NULL);
            INSERT INTO growth_items SELECT i, 'item ' || i FROM generate_series(1, {CLIENT_ITEM_IDS}) i;
            CREATE TABLE growth_rows (id int PRIMARY KEY, v text NOT NULL);
            INSERT INTO growth_rows SELECT i, 'row ' || lpad(i::text, 8, '0') || repeat('x', 28)
              FROM generate_series(1, {max(1, max_rows)}) i;
            VACUUM ANALYZE; CHECKPOINT;""", dbname=DB)
        self.redis = self.add(H.Redis())

    def quiet(self) -> float:
        return wait_quiet(self.a.quiet_wait)

    # -- part 1: rules

    def part_rules(self, counts: list[int]) -> None:
        a = self.a
        script = items_script(self.dir / "items8.sql", ITEM_IDS)
        shelves, rows = {}, {}
        try:
            for n in counts:
                rules = rules_file(self.dir / f"rules-{n}.toml", n)
                env = {"PGSHELF_UPSTREAM": f"postgres://{HOST}:{self.pg.port}?sslmode=disable",
                       "PGSHELF_PROXY_WORKERS": str(a.workers), "REDIS_URL": self.redis.url,
                       "PGSHELF_RULES": str(rules), "PATH": os.environ.get("PATH", "")}
                starts = startup_seconds(a.binary, env, a.startup_reps)
                shelf = shelves[n] = self.shelf(rules)
                rss_start = rss_kib(shelf.pid)
                warm = self.bench.run(shelf.port, script, 1, transactions=ITEM_IDS * 30, log=False)
                rows[n] = {"rules": n, "startup_ms": [s * 1000 for s in starts],
                           "startup_ms_median": statistics.median(starts) * 1000, "rss_start_kib": rss_start,
                           "runs": [], "warmup_error": warm["error"]}
                print(f"rules {n:6d}: start-up {rows[n]['startup_ms_median']:.1f} ms, RSS {rss_start} KiB"
                      + (f"  warm-up: {warm['error']}" if warm["error"] else ""), file=sys.stderr)
            for rep in range(a.reps):
                k = rep % len(counts)  # rotate so no count always runs first
                for n in counts[k:] + counts[:k]:
                    shelf = shelves[n]
                    self.quiet()
                    m0 = metrics(shelf)
                    r = self.bench.run(shelf.port, script, 1, seconds=a.duration)
                    m1 = metrics(shelf)
                    for key, value in counters_delta(m0, m1).items():
                        if not key.startswith("redis_rtt"):
                            rows[n][key] = rows[n].get(key, 0.0) + value
                    rows[n]["runs"].append(r)
                    lat = r["latencies_us"]
                    print(f"rules {n:6d} rep {rep + 1}/{a.reps}: "
                          + (r["error"] or f"{r['tps']:8.0f} tps  p50 {fmt(percentile(lat, .5), '.0f')} us  "
                                            f"p99 {fmt(percentile(lat, .99), '.0f')} us"), file=sys.stderr)
            for n in counts:
                rows[n]["rss_end_kib"] = rss_kib(shelves[n].pid)
        finally:
            for shelf in shelves.values():
                self.drop(shelf)
        out = []
        for n in counts:
            row = rows[n]
            s = summarise_runs(row.pop("runs"))
            row.update(s)
            if row.get("warmup_error"):
                row["errors"].append("warm-up: " + row["warmup_error"])
            row["hit_share"] = row.get("hit", 0.0) / s["transactions"] if s["transactions"] else None
            out.append(row)
        base = out[0]
        for row in out:
            row["p50_ratio"] = row["p50_us"] / base["p50_us"] if row["p50_us"] and base["p50_us"] else None
            row["p99_ratio"] = row["p99_us"] / base["p99_us"] if row["p99_us"] and base["p99_us"] else None
        self.results["rules"] = out

    # -- part 2: result size

    def part_size(self, sizes: list[int], shelf) -> None:
        a = self.a
        scripts = {n: rows_script(self.dir / f"rows{n}.sql", n) for n in sizes}
        runs = {(n, t): [] for n in sizes for t in ("direct", "pgshelf")}
        counters = {n: {} for n in sizes}
        warm_errors = {}
        for n in sizes:
            w = self.bench.run(shelf.port, scripts[n], 1, transactions=20, log=False)
            warm_errors[n] = w["error"]
        for rep in range(a.reps):
            for i, n in enumerate(sizes):
                order = ("direct", "pgshelf") if (rep + i) % 2 == 0 else ("pgshelf", "direct")
                for target in order:
                    port = self.pg.port if target == "direct" else shelf.port
                    self.quiet()
                    m0 = metrics(shelf) if target == "pgshelf" else None
                    r = self.bench.run(port, scripts[n], 1, seconds=a.duration)
                    if m0 is not None:
                        m1 = metrics(shelf)
                        for key, value in counters_delta(m0, m1).items():
                            if not key.startswith("redis_rtt"):
                                counters[n][key] = counters[n].get(key, 0.0) + value
                    runs[(n, target)].append(r)
                    lat = r["latencies_us"]
                    print(f"rows {n:6d} {target:8} rep {rep + 1}/{a.reps}: "
                          + (r["error"] or f"{r['tps']:8.0f} tps  p50 {fmt(percentile(lat, .5), '.0f')} us  "
                                            f"p99 {fmt(percentile(lat, .99), '.0f')} us"), file=sys.stderr)
        out = []
        for n in sizes:
            d, p = summarise_runs(runs[(n, "direct")]), summarise_runs(runs[(n, "pgshelf")])
            c = counters[n]
            row = {"rows": n, "direct": d, "pgshelf": p, **c,
                   "hit_share": c.get("hit", 0.0) / p["transactions"] if p["transactions"] else None,
                   "entry_bytes": c["served_bytes"] / c["hit"] if c.get("hit") else None,
                   "p50_ratio": p["p50_us"] / d["p50_us"] if p["p50_us"] and d["p50_us"] else None,
                   "p99_ratio": p["p99_us"] / d["p99_us"] if p["p99_us"] and d["p99_us"] else None,
                   "errors": d["errors"] + p["errors"] + ([f"warm-up: {warm_errors[n]}"] if warm_errors[n] else [])}
            out.append(row)
        self.results["size"] = out
        # The floor a hit is measured against, in the same run: a Redis GET round trip plus a
        # client's round trip to PostgreSQL for the cheapest statement.
        self.quiet()
        select1 = summarise_runs([self.bench.run(self.pg.port, select1_script(self.dir / "select1.sql"), 1,
                                                 seconds=a.duration)])
        self.quiet()
        redis_p50, redis_error = redis_get_p50_us(self.redis.port)
        self.results["round_trips"] = {"select1": select1, "redis_get_p50_us": redis_p50,
                                       "errors": select1["errors"] + ([redis_error] if redis_error else [])}

    # -- part 3: concurrent clients

    def part_clients(self, counts: list[int], shelf) -> None:
        a = self.a
        script = items_script(self.dir / "items100.sql", CLIENT_ITEM_IDS)
        warm = self.bench.run(shelf.port, script, 1, transactions=CLIENT_ITEM_IDS * 20, log=False)
        out = []
        for n in counts:
            self.quiet()
            m0 = metrics(shelf)
            # pgbench's -T includes connecting its clients (a backend fork each, about 2 ms on 2 cores):
            # add that, so that every point runs about -T seconds of transactions.
            with H.RssSampler(shelf) as rss, BreakerWatch(shelf) as breaker:
                r = self.bench.run(shelf.port, script, n, seconds=a.duration + math.ceil(n / 400))
            m1 = metrics(shelf)
            lat = r["latencies_us"]
            row = {"clients": n, "tps": r["tps"], "transactions": r["transactions"], "logged": len(lat),
                   "p50_us": percentile(lat, .5), "p99_us": percentile(lat, .99),
                   "mean_us": statistics.mean(lat) if lat else None, "connect_ms": r["connect_ms"],
                   "failed": r["failed"], "aborted": r["aborted"], "rss_peak_kib": rss.peak_kib,
                   "breaker_open_share": breaker.share, **counters_delta(m0, m1),
                   "errors": [r["error"]] if r["error"] else []}
            if n == counts[0] and warm["error"]:
                row["errors"].append("warm-up: " + warm["error"])
            row["hit_share"] = row["hit"] / r["transactions"] if r["transactions"] else None
            out.append(row)
            print(f"clients {n:5d}: " + (r["error"] or "")
                  + (f" {r['tps']:8.0f} tps  p50 {row['p50_us'] / 1000:.3f} ms  p99 {row['p99_us'] / 1000:.3f} ms  "
                     f"connect {fmt(r['connect_ms'], '.0f')} ms  RSS peak {rss.peak_kib} KiB"
                     if r["tps"] and lat else ""), file=sys.stderr)
            # Let the previous clients' backends exit before the next, larger point connects.
            H.wait_until(lambda: shelf_clients(shelf) == 0, 60, 0.2, "pgshelf's clients to leave")
        self.results["clients"] = out

    # -- part 4: idle connections

    def part_idle(self, counts: list[int]) -> None:
        a = self.a
        top = max(counts)
        bouncer = self.add(H.PgBouncer(self.pg, pool_mode="transaction", pool_size=4,
                                       max_client_conn=top + 200, settings={"stats_period": 3600}))
        rules = main_rules_file(self.dir / "rules-idle.toml")
        # The default proxy.max_connections (10,000) is what is measured; raised only for more.
        env = {"PGSHELF_PROXY_MAX_CONNECTIONS": str(top)} if top > 10000 else {}
        shelf = self.shelf(rules, upstream=f"postgres://{HOST}:{bouncer.port}", env=env)
        held: list[socket.socket] = []
        out = []
        info = {"pgshelf_fd_limit": fd_limit(shelf.pid), "pgbouncer_fd_limit": fd_limit(bouncer.pid),
                "client_fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
        try:
            # Warm-up: worker threads, allocator arenas and the session code paths are in place.
            warm, errs = open_idle(shelf.port, 32, "growth-warmup", 60)
            for s in warm:
                s.close()
            H.wait_until(lambda: shelf_clients(shelf) == 0, 30, 0.1, "warm-up connections to close")
            time.sleep(1)
            base_rss, base_fds, bouncer_rss = rss_kib(shelf.pid), fd_count(shelf.pid), rss_kib(bouncer.pid)
            # pgshelf holds two descriptors per client (client and upstream socket).
            limit = info["pgshelf_fd_limit"]
            capacity = (limit - base_fds - 16) // 2 if limit else None
            info.update(base_rss_kib=base_rss, base_fds=base_fds, capacity=capacity)
            for n in counts:
                want = n
                capped = capacity is not None and n > capacity and not a.no_fd_cap
                if capped:
                    want = capacity
                t0 = time.monotonic()
                new, errors = open_idle(shelf.port, max(0, want - len(held)), "growth-idle", a.idle_timeout)
                held += new
                took = time.monotonic() - t0
                time.sleep(1)  # let pgshelf finish what the handshakes started
                rss, fds, brss = rss_kib(shelf.pid), fd_count(shelf.pid), rss_kib(bouncer.pid)
                row = {"idle": n, "target": want, "capped_by_fd_limit": capped, "connected": len(held),
                       "open_seconds": took, "rss_kib": rss, "fds": fds,
                       "kib_per_conn": (rss - base_rss) / len(held) if held else None,
                       "pgbouncer_rss_kib": brss,
                       "pgbouncer_kib_per_conn": (brss - bouncer_rss) / len(held) if held else None,
                       "errors": sorted(set(errors)), "error_count": len(errors)}
                if len(held) < want and not errors:
                    row["errors"].append(f"only {len(held)} of {want} connections open")
                out.append(row)
                print(f"idle {n:6d}: {len(held)} open in {took:.1f} s, pgshelf RSS {rss} KiB "
                      f"({fmt(row['kib_per_conn'], '.1f')} KiB/conn), {fds} fds"
                      + (f", capped at {want} by pgshelf's descriptor limit {limit}" if capped else "")
                      + (f", {len(errors)} errors: {'; '.join(row['errors'][:3])}" if errors else ""),
                      file=sys.stderr)
            # Every held connection still answers (a sample of them; each one passes through PgBouncer).
            step = max(1, len(held) // 20)
            bad = [e for e in (check_answers(s) for s in held[::step]) if e]
            info["answers_checked"] = len(held[::step])
            if bad and out:
                out[-1]["errors"].append(f"{len(bad)} of {len(held[::step])} sampled connections did not answer "
                                         f"SELECT 1: {bad[0]}")
            # Close them all, then open as many again: RSS that stays up after the close but does not
            # grow on the second round is memory kept for reuse (allocator), not leaked per session.
            top_open = len(held)
            for s in held:
                s.close()
            held = []
            H.wait_until(lambda: shelf_clients(shelf) == 0, 60, 0.2, "idle connections to close")
            time.sleep(1)
            info["rss_after_close_kib"] = rss_kib(shelf.pid)
            info["fds_after_close"] = fd_count(shelf.pid)
            held, errors = open_idle(shelf.port, top_open, "growth-idle-again", a.idle_timeout)
            time.sleep(1)
            info["reopened"] = len(held)
            info["rss_reopened_kib"] = rss_kib(shelf.pid)
            if errors and out:
                out[-1]["errors"].append(f"reopening {top_open}: {len(errors)} errors: {sorted(set(errors))[0]}")
        finally:
            for s in held:
                s.close()
            self.drop(shelf)
            self.drop(bouncer)
        self.results["idle"] = out
        self.results["idle_info"] = info


def shelf_clients(shelf) -> float:
    with urllib.request.urlopen(f"http://{shelf.env['PGSHELF_ADMIN_LISTEN']}/metrics", timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("pgshelf_client_connections "):
                return float(line.split()[1])
    return 0.0


# --------------------------------------------------------------------------- reporting

def us(x) -> str:
    return fmt(x, ",.0f")


def ms(x) -> str:
    return "–" if x is None else f"{x / 1000:,.3f}"


def mib(kib) -> str:
    return "–" if kib is None else f"{kib / 1024:,.1f}"


def share(x) -> str:
    return "–" if x is None else f"{x:.1%}"


def errors_cell(errors: list[str]) -> str:
    return str(len(errors)) if errors else "0"


def markdown(results: dict, header: list[str]) -> str:
    out = header[:]
    if "rules" in results:
        out += ["", "**Hit latency against the number of rules** (1 client, `pgbench -M prepared`, the statement "
                "matches the last rule of the file; latencies per transaction, all repetitions pooled):", "",
                "| rules | TPS | p50 (µs) | p99 (µs) | p50 / 1 rule | p99 / 1 rule | hits | start-up (ms) "
                "| RSS at start (MiB) | RSS after runs (MiB) | errors |",
                "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in results["rules"]:
            out.append(f"| {r['rules']:,} | {fmt(r['tps'], ',.0f')} | {us(r['p50_us'])} | {us(r['p99_us'])} "
                       f"| {fmt(r['p50_ratio'], '.3f')} | {fmt(r['p99_ratio'], '.3f')} | {share(r['hit_share'])} "
                       f"| {fmt(r['startup_ms_median'], '.1f')} | {mib(r['rss_start_kib'])} | {mib(r['rss_end_kib'])} "
                       f"| {errors_cell(r['errors'])} |")
    if "size" in results:
        out += ["", "**Hit latency against the result size** (1 client, `pgbench -M prepared`, "
                "rows of ~60 bytes on the wire; direct = PostgreSQL executes the query each time):", "",
                "| rows | cached entry (KiB) | direct TPS | direct p50 (µs) | direct p99 (µs) | pgshelf TPS "
                "| pgshelf p50 (µs) | pgshelf p99 (µs) | p50 pgshelf / direct | p99 pgshelf / direct | hits | errors |",
                "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in results["size"]:
            d, p = r["direct"], r["pgshelf"]
            out.append(f"| {r['rows']:,} | {fmt(r['entry_bytes'] / 1024 if r['entry_bytes'] else None, ',.1f')} "
                       f"| {fmt(d['tps'], ',.0f')} | {us(d['p50_us'])} | {us(d['p99_us'])} "
                       f"| {fmt(p['tps'], ',.0f')} | {us(p['p50_us'])} | {us(p['p99_us'])} "
                       f"| {fmt(r['p50_ratio'], '.3f')} | {fmt(r['p99_ratio'], '.3f')} | {share(r['hit_share'])} "
                       f"| {errors_cell(r['errors'])} |")
    trips = results.get("round_trips")
    if trips:
        floor = hit_floor_us(trips)
        out += ["", f"Round trips in the same run (1 client): PostgreSQL `SELECT 1` (`pgbench -M prepared`) p50 "
                f"{us(trips['select1']['p50_us'])} µs, Redis `GET` (`redis-benchmark -c 1`) p50 "
                f"{fmt(trips['redis_get_p50_us'], '.0f')} µs; sum {fmt(floor, '.0f')} µs"
                + (f"; errors: {errors_cell(trips['errors'])}" if trips["errors"] else "") + "."]
    if "clients" in results:
        out += ["", "**Concurrent active clients, all cache hits** (`pgbench -M prepared -j 2`, 100 ids):", "",
                "| clients | TPS | p50 (ms) | p99 (ms) | connecting (s) | hits | misses | Redis errors "
                "| Redis round trip p99 (ms, ≤) | Redis breaker open | pgshelf peak RSS (MiB) | failed tx "
                "| aborted clients | errors |",
                "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in results["clients"]:
            out.append(f"| {r['clients']:,} | {fmt(r['tps'], ',.0f')} | {ms(r['p50_us'])} | {ms(r['p99_us'])} "
                       f"| {fmt(r['connect_ms'] / 1000 if r['connect_ms'] is not None else None, '.2f')} "
                       f"| {share(r['hit_share'])} | {r['miss'] + r['coalesced'] + r['waited']:,.0f} "
                       f"| {r['redis_errors']:,.0f} | {fmt(r['redis_rtt_p99_s'] * 1000 if r['redis_rtt_p99_s'] else None, 'g')} "
                       f"| {share(r['breaker_open_share'])} | {mib(r['rss_peak_kib'])} | {fmt(r['failed'], 'd')} "
                       f"| {r['aborted']} | {errors_cell(r['errors'])} |")
    if "idle" in results:
        info = results.get("idle_info", {})
        out += ["", f"**RSS against idle connections** (raw protocol clients: startup, trust, ReadyForQuery, then "
                f"nothing; pgshelf → PgBouncer transaction pooling, pool 4 → PostgreSQL; pgshelf RSS with no "
                f"connection: {mib(info.get('base_rss_kib'))} MiB, after all closed: "
                f"{mib(info.get('rss_after_close_kib'))} MiB, with {fmt(info.get('reopened'), ',d')} opened again: "
                f"{mib(info.get('rss_reopened_kib'))} MiB; descriptor limit of pgshelf "
                f"{fmt(info.get('pgshelf_fd_limit'), 'd')}):", "",
                "| idle connections | connected | pgshelf RSS (MiB) | KiB / connection | pgshelf fds "
                "| PgBouncer KiB / connection | connect time (s) | errors |",
                "|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in results["idle"]:
            conn = f"{r['connected']:,}" + (" (capped: fd limit)" if r["capped_by_fd_limit"] else "")
            out.append(f"| {r['idle']:,} | {conn} | {mib(r['rss_kib'])} | {fmt(r['kib_per_conn'], '.1f')} "
                       f"| {fmt(r['fds'], ',d')} | {fmt(r['pgbouncer_kib_per_conn'], '.1f')} "
                       f"| {r['open_seconds']:.1f} | {r['error_count'] or errors_cell(r['errors'])} |")
    return "\n".join(out) + "\n"


def hit_floor_us(trips: dict) -> float | None:
    if trips["select1"]["p50_us"] is None or trips["redis_get_p50_us"] is None:
        return None
    return trips["select1"]["p50_us"] + trips["redis_get_p50_us"]


def verdict(results: dict) -> list[str]:
    lines = []
    size, trips = results.get("size"), results.get("round_trips")
    if size and trips and hit_floor_us(trips) and size[0]["pgshelf"]["p50_us"]:
        hit, floor = size[0]["pgshelf"]["p50_us"], hit_floor_us(trips)
        ratio = hit / floor
        lines.append(f"Hit latency: p50 of a {size[0]['rows']:,}-row hit {hit:.0f} µs = {ratio:.2f} × (Redis GET "
                     f"+ PostgreSQL SELECT 1 round trips, {floor:.0f} µs): target ≤ {TARGET_HIT_ROUND_TRIPS} "
                     + ("met." if ratio <= TARGET_HIT_ROUND_TRIPS else "NOT met."))
    rules = results.get("rules")
    if rules and len(rules) > 1 and rules[-1]["p50_ratio"]:
        top = rules[-1]
        ok = top["p50_ratio"] <= TARGET_RULES_RATIO
        lines.append(f"Rules: {top['rules']:,} rules p50 = {top['p50_ratio']:.3f} × the {rules[0]['rules']}-rule p50 "
                     f"(p99 {fmt(top['p99_ratio'], '.3f')}×): target ≤ {TARGET_RULES_RATIO} "
                     + ("met." if ok else "NOT met."))
    for part in ("rules", "size", "clients"):
        low = [r for r in results.get(part, []) if r.get("hit_share") is not None and r["hit_share"] < 0.99]
        for r in low:
            point = r.get("rules") or r.get("rows") or r.get("clients")
            why = ""
            if r.get("redis_errors"):
                why = (f": {r['redis_errors']:,.0f} Redis lookups failed or timed out (redis.command_timeout) and went "
                       f"to PostgreSQL" + (f"; a Redis circuit breaker was open {r['breaker_open_share']:.0%} of the time"
                                           if r.get("breaker_open_share") else ""))
            lines.append(f"{part} {point:,}: only {r['hit_share']:.1%} of the statements were cache hits{why}.")
    idle = results.get("idle")
    if idle:
        top = idle[-1]
        info = results.get("idle_info", {})
        ok = top["kib_per_conn"] is not None and top["kib_per_conn"] <= TARGET_IDLE_KIB
        lines.append(f"Idle: {top['connected']:,} idle connections cost {fmt(top['kib_per_conn'], '.1f')} KiB each "
                     f"in pgshelf: target ≤ {TARGET_IDLE_KIB} KiB " + ("met" if ok else "NOT met")
                     + (f"; {top['error_count']} connection errors" if top["error_count"] else "; no connection errors")
                     + (f"; {info['answers_checked']} sampled connections answered SELECT 1" if info.get("answers_checked") else "")
                     + ".")
        if top["capped_by_fd_limit"]:
            lines.append(f"Idle: {top['idle']:,} connections need {2 * top['idle']:,}+ descriptors in pgshelf but its "
                         f"limit is {info.get('pgshelf_fd_limit')} (this process cannot raise the hard limit): "
                         f"measured up to {top['target']:,}.")
    return lines


def plots(results: dict, stem: Path) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (apt-get install python3-matplotlib): no plots", file=sys.stderr)
        return []
    written = []

    def save(fig, name):
        path = stem.with_name(f"{stem.name}-{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if results.get("rules"):
        rs = [r for r in results["rules"] if r["p50_us"]]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        x = [r["rules"] for r in rs]
        ax.plot(x, [r["p50_us"] for r in rs], "o-", label="p50")
        ax.plot(x, [r["p99_us"] for r in rs], "s-", label="p99")
        if rs:
            ax.axhline(rs[0]["p50_us"] * TARGET_RULES_RATIO, ls="--", c="gray", lw=1,
                       label=f"{TARGET_RULES_RATIO} × p50 of {rs[0]['rules']} rule")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("[[cache]] rules")
        ax.set_ylabel("hit latency per transaction (µs)")
        ax.set_title("pgshelf hit latency vs number of rules")
        ax.grid(True, which="both", alpha=.3)
        ax.legend()
        save(fig, "rules")
    if results.get("size"):
        rs = results["size"]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        x = [r["rows"] for r in rs]
        for target, style, color in (("direct", "o", "C0"), ("pgshelf", "s", "C1")):
            ax.plot(x, [r[target]["p50_us"] for r in rs], style + "-", c=color, label=f"{target} p50")
            ax.plot(x, [r[target]["p99_us"] for r in rs], style + ":", c=color, label=f"{target} p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows in the result")
        ax.set_ylabel("latency per transaction (µs)")
        ax.set_title("direct PostgreSQL vs pgshelf cache hit, by result size")
        ax.grid(True, which="both", alpha=.3)
        ax.legend()
        save(fig, "size")
    if results.get("clients"):
        rs = [r for r in results["clients"] if r["tps"]]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
        x = [r["clients"] for r in rs]
        ax1.plot(x, [r["tps"] for r in rs], "o-")
        ax1.set_xscale("log")
        ax1.set_ylim(bottom=0)
        ax1.set_xlabel("concurrent clients")
        ax1.set_ylabel("TPS (cache hits)")
        ax1.set_title("TPS vs clients")
        ax2.plot(x, [r["p50_us"] / 1000 for r in rs], "o-", label="p50")
        ax2.plot(x, [r["p99_us"] / 1000 for r in rs], "s-", label="p99")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("concurrent clients")
        ax2.set_ylabel("latency per transaction (ms)")
        ax2.set_title("latency vs clients")
        ax2.legend()
        for ax in (ax1, ax2):
            ax.grid(True, which="both", alpha=.3)
        save(fig, "clients")
    if results.get("idle"):
        rs = results["idle"]
        base = results.get("idle_info", {}).get("base_rss_kib")
        fig, ax = plt.subplots(figsize=(7, 4.5))
        x = [r["connected"] for r in rs]
        ax.plot(x, [r["rss_kib"] / 1024 for r in rs], "o-", label="pgshelf VmRSS")
        if base:
            ax.plot([0, max(x)], [base / 1024, (base + TARGET_IDLE_KIB * max(x)) / 1024], "--", c="gray", lw=1,
                    label=f"budget: {TARGET_IDLE_KIB} KiB per connection")
        ax.set_xlabel("idle client connections")
        ax.set_ylabel("RSS (MiB)")
        ax.set_ylim(bottom=0)
        ax.set_title("pgshelf RSS vs idle connections")
        ax.grid(True, alpha=.3)
        ax.legend()
        save(fig, "idle")
    return written


# --------------------------------------------------------------------------- main

def int_list(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def main() -> int:
    ap = argparse.ArgumentParser(description="How pgshelf's costs grow: rules, result size, clients, idle "
                                             "connections (see bench/README.md)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (about 1-2 minutes): fewer and smaller points, 2 s runs, 1 repetition")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list from {','.join(PARTS)} (default: all)")
    ap.add_argument("-T", "--duration", type=int, help="seconds per pgbench run (default 5, --quick 2)")
    ap.add_argument("-r", "--reps", type=int,
                    help="interleaved repetitions of each rules and size point (default 3, --quick 1)")
    ap.add_argument("--rules", type=int_list, help="rules counts (default 1,10,100,1000,10000)")
    ap.add_argument("--rows", type=int_list, help="result sizes in rows (default 1,10,100,1000,10000)")
    ap.add_argument("--clients", type=int_list, help="concurrent clients (default 1,10,100,500,2000)")
    ap.add_argument("--idle", type=int_list, help="idle connections (default 0,1000,2500,5000,10000)")
    ap.add_argument("-j", "--threads", type=int, default=2, help="pgbench threads (default 2)")
    ap.add_argument("--workers", type=int, default=2, help="pgshelf worker threads (default 2)")
    ap.add_argument("--startup-reps", type=int, default=3, help="start-ups timed per rules count (default 3)")
    ap.add_argument("--quiet-wait", type=float, default=2,
                    help="before each timed run, wait up to this many seconds for the machine to be idle (default 2)")
    ap.add_argument("--idle-timeout", type=float, default=180,
                    help="seconds allowed to open the connections of one idle point (default 180)")
    ap.add_argument("--no-fd-cap", action="store_true",
                    help="open every idle connection asked for even beyond pgshelf's descriptor limit "
                         "(to see how it refuses them; counted as errors)")
    ap.add_argument("--binary", type=Path, default=REPO / "build-bench" / "app" / "pgshelf",
                    help="pgshelf binary (default build-bench/app/pgshelf, which bench/growth builds)")
    ap.add_argument("--json", type=Path, help="results file (default bench/results/growth-<time>.json; the .md "
                                              "and the plots -<part>.png go next to it)")
    a = ap.parse_args()

    parts = [p for p in a.parts.split(",") if p]
    for p in parts:
        if p not in PARTS:
            ap.error(f"unknown part {p}")
    defaults = QUICK_POINTS if a.quick else DEFAULT_POINTS
    given = {"rules": a.rules, "size": a.rows, "clients": a.clients, "idle": a.idle}
    points = {p: given[p] or defaults[p] for p in PARTS if p in parts}
    a.duration = a.duration or (2 if a.quick else 5)
    a.reps = a.reps or (1 if a.quick else 3)
    if a.duration < 1 or a.reps < 1:
        ap.error("-T and -r must be at least 1")
    if any(n < 1 for n in points.get("rules", []) + points.get("size", []) + points.get("clients", [])):
        ap.error("rules, rows and clients start at 1")
    if not a.binary.is_file():
        ap.error(f"no pgshelf binary at {a.binary} (bench/growth builds it)")
    for tool in ("pgbench", "psql", "redis-server") + (("pgbouncer",) if "idle" in parts else ()):
        if shutil.which(tool) is None and not (tool == "pgbouncer" and Path("/usr/sbin/pgbouncer").exists()):
            ap.error(f"{tool} not found")

    # SIGTERM/SIGHUP behave like Ctrl-C: unwind, stop every server.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    # Inherited by every server and pgbench started from here on: 2,000 pgbench clients, 10,000 idle
    # connections (pgshelf holds two descriptors for each, PgBouncer one).
    fd_soft = H.raise_fd_limit(1 << 20)
    # The servers' temporary directories go under a directory of this run's own, out of reach of a
    # clean-up of the harness's usual pgshelf-it-* directories elsewhere on a shared machine.
    run_tmp = Path(tempfile.mkdtemp(prefix="pgshelf-growth-"))
    run_tmp.chmod(0o755)  # PostgreSQL and PgBouncer run as postgres and need to reach their directories
    tempfile.tempdir = str(run_tmp)
    workdir = run_tmp / "work"
    workdir.mkdir()
    workdir.chmod(0o777)  # pgbench writes its logs here

    machine = machine_info(a.binary)
    stamp = dt.datetime.now(dt.timezone.utc)
    started = time.monotonic()
    # Rough: pgbench runs plus warm-ups, connecting (about 150 clients/s through pgshelf to new
    # backends here) and opening idle connections (about 1,000/s).
    est = (len(points.get("rules", [])) * (a.reps * (a.duration + 1) + 3)
           + len(points.get("size", [])) * (2 * a.reps * (a.duration + 1) + 2)
           + sum(a.duration + 3 + n / 150 for n in points.get("clients", []))
           + (max(points["idle"]) / 1000 + 5 * len(points["idle"]) if "idle" in points else 0) + 20)
    print(f"growth benchmark: parts {', '.join(points)}; -T {a.duration}, {a.reps} reps; about "
          f"{int(est) // 60} min {int(est) % 60} s", file=sys.stderr)

    g = Growth(a, workdir)
    with GuardedRun(g.stack, run_tmp) as guard:
        g.start_base(max(points.get("clients", [0]), default=0), max(points.get("size", [0]), default=0))
        if "rules" in points:
            g.part_rules(points["rules"])
        main_shelf = None
        if "size" in points or "clients" in points:
            main_shelf = g.shelf(main_rules_file(workdir / "rules-main.toml"))
        if "size" in points:
            g.part_size(points["size"], main_shelf)
        if "clients" in points:
            g.part_clients(points["clients"], main_shelf)
        if main_shelf is not None:
            g.drop(main_shelf)
        if "idle" in points:
            g.part_idle(points["idle"])
    interrupted, failure = guard.interrupted, guard.failure

    results = g.results
    if not any(results.get(p) for p in PARTS):
        return 130 if interrupted else 1
    header = [f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, "
              f"{machine['postgresql']}, {machine['pgbouncer']}, pgshelf {machine['pgshelf']}; {machine['date']}",
              "",
              f"bench/growth: pgbench runs of {a.duration} s, {a.reps} interleaved repetitions per rules and size "
              f"point, pgshelf with {a.workers} workers and Redis, descriptor limit {fd_soft}; wall time "
              f"{time.monotonic() - started:.0f} s"
              + (" (INTERRUPTED: partial)" if interrupted else "") + (" (FAILED: partial)" if failure else "")]
    md = markdown(results, header)
    v = verdict(results)
    errors = sum(len(r["errors"]) for p in PARTS for r in results.get(p, []))
    print(md)
    for line in v:
        print(line)
    if errors:
        print(f"\nWARNING: {errors} points had errors (see the JSON)")

    out = a.json
    if out is None:
        (BENCH_DIR / "results").mkdir(exist_ok=True)
        out = BENCH_DIR / "results" / f"growth-{stamp:%Y%m%dT%H%M%SZ}.json"
    pngs = plots(results, out.with_suffix(""))
    out.write_text(json.dumps({
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
        | {"points": points, "fd_limit": fd_soft, "interrupted": interrupted, "failure": failure},
        "results": results,
        "markdown": md,
        "verdict": v,
        "plots": [str(p) for p in pngs],
    }, indent=2))
    out.with_suffix(".md").write_text(md + ("\n" + "\n".join(v) + "\n" if v else ""))
    print(f"\nresults: {out}" + "".join(f"\nplot: {p}" for p in pngs), file=sys.stderr)
    if interrupted:
        return 130
    return 1 if errors or failure else 0


if __name__ == "__main__":
    sys.exit(main())
