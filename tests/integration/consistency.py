#!/usr/bin/python3
"""Consistency checker: is a read ever older than an acknowledged write?

Writer and reader clients run against one or more pgshelf instances that
share a Redis, on a few hot keys, and record what they see:

- every write increments a row (``UPDATE ... SET v = v + 1 ... RETURNING v``),
  so the values of one key grow in commit order and "older" is well
  defined; a write records the value it produced and the time its commit
  was acknowledged (its autocommit statement or its COMMIT returned). A
  write whose acknowledgement never came (the connection died) is
  *uncertain*: it may or may not have committed, and is no evidence;
- every read records the time it started and the value it returned.

A read is **stale** when it started after a write of value w was
acknowledged and returned a value below w: exactly what pgshelf promises
never to serve (docs/rules.md, "The consistency promise"). A read that
fails is an error, never stale. All times come from ``time.monotonic()`` in
this one process, so "after" needs no clock agreement.

The keys are of two kinds, matching the two ways pgshelf invalidates:

- ``cc_precise``: a ``[[cache]]`` rule and an ``[[invalidate]]`` rule naming
  the key (precise invalidation); some writes use a shape no rule covers,
  so the table fallback drops the whole rule;
- ``cc_fallback``: a ``[[cache]]`` rule and no ``[[invalidate]]`` rule, so
  every write to it goes through the table fallback.

Reads use the simple protocol (psycopg2), the extended protocol with the
unnamed statement (psycopg 3) and with named prepared statements
(psycopg 3, ``prepare_threshold=0``), in autocommit and inside read
transactions; writes are autocommit or in explicit transactions (a few
rolled back), through psycopg2 and psycopg 3. Clients reconnect after any
error, with bounded retries; every loop ends at the run's deadline.

Hits come from each instance's ``/metrics`` (admin port), sampled during
the run; an instance restarted mid-run starts its counters from zero, which
the sampler notices, so its hits since its last sample before a kill are
the only ones missed.

As a module it serves tests/integration/test_consistency.py (which adds the
fault scenarios); standalone it runs a steady load against given DSNs::

    consistency.py --print-rules > rules.toml     # the rules pgshelf must load
    consistency.py --setup-dsn postgresql://127.0.0.1:5432/postgres \\
        --dsn postgresql://127.0.0.1:6432/postgres --metrics http://127.0.0.1:9930/metrics \\
        --dsn postgresql://127.0.0.1:6433/postgres --metrics http://127.0.0.1:9931/metrics

It exits 1 when it found a stale read.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import psycopg
import psycopg2

PRECISE = "cc_precise"
FALLBACK = "cc_fallback"
KEY_IDS = (1, 2, 3)  # few hot keys: hits, writes and invalidations interleave a lot
ALL_KEYS = tuple((table, key_id) for table in (PRECISE, FALLBACK) for key_id in KEY_IDS)

# TTLs far above a run's length, so expiry cannot hide a stale entry.
RULES = """\
[[cache]]
name  = "cc_precise"
query = "SELECT id, v FROM cc_precise WHERE id = $1"
key   = "ccp:{id}"
ttl   = "300s"

[[invalidate]]
name  = "cc_precise_bump"
query = "UPDATE cc_precise SET v = v + 1 WHERE id = $1 RETURNING v"
keys  = ["ccp:{id}"]

[[cache]]
name  = "cc_fallback"
query = "SELECT id, v FROM cc_fallback WHERE id = $1"
key   = "ccf:{id}"
ttl   = "300s"
"""

SETUP_SQL = f"""
CREATE TABLE IF NOT EXISTS {PRECISE} (id int PRIMARY KEY, v bigint NOT NULL);
CREATE TABLE IF NOT EXISTS {FALLBACK} (id int PRIMARY KEY, v bigint NOT NULL);
INSERT INTO {PRECISE} SELECT i, 0 FROM generate_series(1, {len(KEY_IDS)}) AS i ON CONFLICT DO NOTHING;
INSERT INTO {FALLBACK} SELECT i, 0 FROM generate_series(1, {len(KEY_IDS)}) AS i ON CONFLICT DO NOTHING;
"""

READ_SQL = {table: f"SELECT id, v FROM {table} WHERE id = %s" for table in (PRECISE, FALLBACK)}

# Write shapes: (table, SQL). "uncovered" has a shape no [[invalidate]] rule
# matches, so on the precise table it exercises the table fallback too.
WRITE_SQL = {
    "covered": (PRECISE, f"UPDATE {PRECISE} SET v = v + 1 WHERE id = %s RETURNING v"),
    "uncovered": (PRECISE, f"UPDATE {PRECISE} SET v = v + 1 WHERE id = %s AND v >= 0 RETURNING v"),
    "fallback": (FALLBACK, f"UPDATE {FALLBACK} SET v = v + 1 WHERE id = %s RETURNING v"),
}
WRITE_MIX = ("covered",) * 5 + ("uncovered",) + ("fallback",) * 3

# Drivers: psycopg2 speaks the simple protocol; psycopg 3 the extended one,
# with the unnamed statement (prepare_threshold=None) or named prepared
# statements (prepare_threshold=0: prepared on first use).
DRIVERS = ("simple", "extended", "prepared")

MAX_DETAILS = 5  # stale reads / errors described in full in the report


def key_name(key: tuple[str, int]) -> str:
    return f"{key[0]}:{key[1]}"


@dataclass
class Endpoint:
    """One pgshelf: where clients connect and, optionally, its /metrics URL."""

    name: str
    dsn: str
    metrics_url: str | None = None


# --------------------------------------------------------------------------
# client connections


class Session:
    """One client connection through a driver; reconnects on demand until a deadline."""

    def __init__(self, dsn: str, driver: str, deadline: float) -> None:
        self.dsn = dsn
        self.driver = driver
        self.deadline = deadline
        self.conn = None
        self.fd: int | None = None
        self.autocommit = True
        self.connects = 0
        self.connect_failures = 0

    def ensure(self) -> bool:
        """Connected (retrying with backoff); False when the deadline passed first."""
        delay = 0.05
        while self.conn is None:
            if time.monotonic() >= self.deadline:
                return False
            try:
                self.conn = self._connect()
                self.fd = self.conn.fileno()
                self.autocommit = True
                self.connects += 1
            except Exception:  # noqa: BLE001 - any failure to connect is retried until the deadline
                self.connect_failures += 1
                time.sleep(min(delay, max(0.0, self.deadline - time.monotonic())))
                delay = min(delay * 2, 0.5)
        return True

    def _connect(self):
        if self.driver == "simple":
            conn = psycopg2.connect(self.dsn, connect_timeout=3)
            conn.autocommit = True
            return conn
        threshold = 0 if self.driver == "prepared" else None
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=3, prepare_threshold=threshold)

    def set_autocommit(self, on: bool) -> None:
        if self.autocommit != on:
            self.conn.autocommit = on
            self.autocommit = on

    def rows(self, sql: str, params: tuple) -> list[tuple]:
        if self.driver == "simple":
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        return self.conn.execute(sql, params).fetchall()

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def discard(self) -> None:
        conn, self.conn, self.fd = self.conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
                pass

    def unblock(self) -> None:
        """Shuts the socket down from another thread, so a client stuck in a read returns (with an error)."""
        fd = self.fd
        if fd is None:
            return
        try:
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class Write:
    key: tuple[str, int]
    value: int
    ack: float  # monotonic time the commit acknowledgement arrived
    endpoint: str
    client: str
    shape: str
    in_transaction: bool


@dataclass(frozen=True)
class Read:
    key: tuple[str, int]
    value: int
    start: float  # monotonic time the statement was sent
    end: float
    endpoint: str
    client: str
    in_transaction: bool


@dataclass
class ClientLog:
    """What one client thread did; merged after the run (no locking on the hot path)."""

    name: str
    reads: list[Read] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    read_errors: int = 0
    write_errors: int = 0  # failed before COMMIT was sent: certainly not committed
    writes_uncertain: int = 0  # failed while committing: no acknowledgement, no evidence
    rollbacks: int = 0
    bad_rows: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    session: Session | None = None

    def error(self, what: str, exc: BaseException, t0: float) -> None:
        if len(self.errors) < MAX_DETAILS:
            text = " ".join(str(exc).split())[:160]
            self.errors.append(f"{time.monotonic() - t0:6.2f}s {self.name} {what}: {type(exc).__name__}: {text}")


# --------------------------------------------------------------------------
# /metrics sampling


SERIES = {
    "hits": 'pgshelf_cache_requests_total{outcome="hit"}',
    "misses": 'pgshelf_cache_requests_total{outcome="miss"}',
    "stores": 'pgshelf_cache_stores_total{outcome="stored"}',
    "stores_refused_stale": 'pgshelf_cache_stores_total{outcome="stale"}',
    "invalidations_key": 'pgshelf_cache_invalidations_total{kind="key"}',
    "invalidations_fallback": 'pgshelf_cache_invalidations_total{kind="table_fallback"}',
    "invalidations_failed": 'pgshelf_cache_invalidations_total{kind="failed"}',
    "global_generation_bumps": "pgshelf_cache_global_generation_bumps_total",
    "redis_errors": "pgshelf_redis_errors_total",
    f"hits_{PRECISE}": f'pgshelf_rule_requests_total{{rule="{PRECISE}",outcome="hit"}}',
    f"hits_{FALLBACK}": f'pgshelf_rule_requests_total{{rule="{FALLBACK}",outcome="hit"}}',
}


def scrape(url: str, timeout: float = 2.0) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    by_series = {}
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        by_series[series] = value
    return {name: float(by_series.get(series, 0.0)) for name, series in SERIES.items()}


class MetricsTotals:
    """Counter increases of one instance over a run, across restarts of the instance.

    A restarted process counts from zero again: when hits + misses go down,
    the previous process's last sample is banked and counting goes on.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.base: dict[str, float] | None = None
        self.banked: Counter = Counter()
        self.last: dict[str, float] | None = None
        self.failures = 0
        self.restarts_seen = 0

    def sample(self) -> None:
        try:
            values = scrape(self.url)
        except Exception:  # noqa: BLE001 - an instance that is down has nothing to say
            self.failures += 1
            return
        if self.base is None:
            self.base = values
        elif values["hits"] + values["misses"] < self.last["hits"] + self.last["misses"]:
            self.banked.update(self.last)
            self.restarts_seen += 1
        self.last = values

    def totals(self) -> dict[str, float]:
        if self.base is None:
            return {}
        return {name: self.banked[name] + self.last[name] - self.base[name] for name in SERIES}

    def hits_so_far(self) -> float:
        return self.totals().get("hits", 0.0)


# --------------------------------------------------------------------------
# the run


class Run:
    """A load against endpoints; fault scenarios call ``event``/``sleep_until`` while it runs."""

    def __init__(self, endpoints: list[Endpoint], duration: float, readers_per_endpoint: int,
                 writers_per_endpoint: int, write_pause: float, seed: int) -> None:
        self.endpoints = endpoints
        self.duration = duration
        self.readers_per_endpoint = readers_per_endpoint
        self.writers_per_endpoint = writers_per_endpoint
        self.write_pause = write_pause
        self.seed = seed
        self.t0 = 0.0
        self.deadline = 0.0
        self.events: list[str] = []
        self.metrics = {e.name: MetricsTotals(e.metrics_url) for e in endpoints if e.metrics_url}
        self.logs: list[ClientLog] = []
        self.hit_samples: list[tuple[float, float]] = []  # (seconds into the run, hits of all instances so far)
        self.stuck_clients: list[str] = []
        self._stop = threading.Event()
        self._sampling = threading.Lock()

    def now(self) -> float:
        """Seconds since the load started."""
        return time.monotonic() - self.t0

    def event(self, what: str) -> None:
        self.events.append(f"{self.now():6.2f}s {what}")

    def sleep_until(self, at: float) -> None:
        """Sleeps until ``at`` seconds into the run (bounded by the run's end)."""
        time.sleep(max(0.0, min(self.t0 + at, self.deadline) - time.monotonic()))

    def sample_metrics(self) -> None:
        """Samples every instance's counters now (e.g. right before killing one)."""
        with self._sampling:
            for totals in self.metrics.values():
                totals.sample()
            self.hit_samples.append((self.now(), sum(t.hits_so_far() for t in self.metrics.values())))

    # -- clients

    def _reader(self, log: ClientLog, endpoint: Endpoint, driver: str, rng: random.Random) -> None:
        session = log.session = Session(endpoint.dsn, driver, self.deadline)
        try:
            while time.monotonic() < self.deadline and session.ensure():
                in_tx = rng.random() < 0.2
                try:
                    session.set_autocommit(not in_tx)
                    for _ in range(2 if in_tx else 1):
                        key = rng.choice(ALL_KEYS)
                        start = time.monotonic()
                        rows = session.rows(READ_SQL[key[0]], (key[1],))
                        end = time.monotonic()
                        if len(rows) != 1 or rows[0][0] != key[1] or not isinstance(rows[0][1], int):
                            log.bad_rows.append(f"{key_name(key)} read {rows!r}")
                            continue
                        log.reads.append(Read(key, rows[0][1], start, end, endpoint.name, log.name, in_tx))
                    if in_tx:
                        session.commit()
                except Exception as e:  # noqa: BLE001 - an error is counted, never stale; reconnect
                    log.read_errors += 1
                    log.error("read", e, self.t0)
                    session.discard()
                    time.sleep(0.02)
        finally:
            session.discard()

    def _writer(self, log: ClientLog, endpoint: Endpoint, driver: str, rng: random.Random) -> None:
        session = log.session = Session(endpoint.dsn, driver, self.deadline)
        try:
            while time.monotonic() < self.deadline and session.ensure():
                in_tx = rng.random() < 0.4
                shapes = {}
                for _ in range(rng.choice((1, 2)) if in_tx else 1):
                    shape = rng.choice(WRITE_MIX)
                    shapes[(WRITE_SQL[shape][0], rng.choice(KEY_IDS))] = shape
                # One lock order for every writer: transactions never deadlock.
                plan = sorted(shapes.items())
                rollback = in_tx and rng.random() < 0.1
                committing = False
                try:
                    session.set_autocommit(not in_tx)
                    values = []
                    for key, shape in plan:
                        committing = not in_tx
                        rows = session.rows(WRITE_SQL[shape][1], (key[1],))
                        if len(rows) != 1 or not isinstance(rows[0][0], int):
                            raise RuntimeError(f"{key_name(key)} write returned {rows!r}")
                        values.append(rows[0][0])
                    if rollback:
                        session.rollback()
                        log.rollbacks += 1
                    else:
                        if in_tx:
                            committing = True
                            session.commit()
                        ack = time.monotonic()
                        for (key, shape), value in zip(plan, values):
                            log.writes.append(Write(key, value, ack, endpoint.name, log.name, shape, in_tx))
                except Exception as e:  # noqa: BLE001 - uncertain or failed write; reconnect
                    if committing:
                        log.writes_uncertain += len(plan)
                    else:
                        log.write_errors += 1
                    log.error("write", e, self.t0)
                    session.discard()
                    time.sleep(0.02)
                    continue
                if self.write_pause:
                    time.sleep(rng.uniform(0, self.write_pause))
        finally:
            session.discard()

    def _guard(self, target: Callable, *args) -> Callable[[], None]:
        def run() -> None:
            try:
                target(*args)
            except BaseException as e:  # noqa: BLE001 - reported, never lost with the thread
                args[0].errors.append(f"{self.now():6.2f}s client thread crashed: {type(e).__name__}: {e}")
        return run

    def execute(self, faults: Callable[["Run"], None] | None = None, grace: float = 15.0) -> None:
        """Runs the load for ``duration`` seconds with ``faults`` injected meanwhile; bounded in time."""
        rng = random.Random(self.seed)
        threads = []
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.duration
        self.sample_metrics()
        for e_index, endpoint in enumerate(self.endpoints):
            for i in range(self.readers_per_endpoint):
                driver = DRIVERS[(i + e_index) % len(DRIVERS)]
                log = ClientLog(f"{endpoint.name}/reader{i}-{driver}")
                threads.append(threading.Thread(target=self._guard(self._reader, log, endpoint, driver,
                                                                   random.Random(rng.random())),
                                                name=log.name, daemon=True))
                self.logs.append(log)
            for i in range(self.writers_per_endpoint):
                driver = ("simple", "extended")[(i + e_index) % 2]
                log = ClientLog(f"{endpoint.name}/writer{i}-{driver}")
                threads.append(threading.Thread(target=self._guard(self._writer, log, endpoint, driver,
                                                                   random.Random(rng.random())),
                                                name=log.name, daemon=True))
                self.logs.append(log)
        sampler = threading.Thread(target=self._sample_loop, name="metrics", daemon=True)
        for t in threads:
            t.start()
        sampler.start()
        fault_error = None
        try:
            if faults is not None:
                faults(self)
        except BaseException as e:  # noqa: BLE001 - stop the clients first, then re-raise
            fault_error = e
            self.event(f"fault injection failed: {type(e).__name__}: {e}")
        finally:
            if fault_error is not None:
                self.deadline = time.monotonic()
                for log in self.logs:
                    if log.session:
                        log.session.deadline = self.deadline
            self.sleep_until(self.duration)
            self._join(threads, grace)
            self._stop.set()
            sampler.join(timeout=10)
            self.sample_metrics()
        if fault_error is not None:
            raise fault_error

    def _join(self, threads: list[threading.Thread], grace: float) -> None:
        # A client stuck past the deadline (a statement that never returns) is
        # unblocked by shutting its socket down, and reported.
        end = time.monotonic() + grace
        for t in threads:
            t.join(timeout=max(0.0, end - time.monotonic()))
        stuck = [t for t in threads if t.is_alive()]
        if stuck:
            self.event(f"{len(stuck)} client(s) still busy {grace:g}s after the end: "
                       f"{', '.join(t.name for t in stuck)}; unblocking their sockets")
            for log in self.logs:
                if log.session:
                    log.session.unblock()
            for t in stuck:
                t.join(timeout=10)
        self.stuck_clients = [t.name for t in stuck]
        still = [t.name for t in threads if t.is_alive()]
        if still:
            raise RuntimeError(f"client threads did not stop: {still}")

    def _sample_loop(self) -> None:
        while not self._stop.wait(0.5):
            self.sample_metrics()


# --------------------------------------------------------------------------
# analysis


def find_stale(writes: list[Write], reads: list[Read]) -> tuple[list[dict], int]:
    """Stale reads (with the write each contradicts) and how many reads had an acknowledged write before them.

    For each key, the acknowledged writes sorted by ack time give the
    highest value acknowledged before any instant; a read that started
    later and returned less is stale.
    """
    by_key: dict[tuple[str, int], list[Write]] = {}
    for w in writes:
        by_key.setdefault(w.key, []).append(w)
    timelines = {}
    for key, ws in by_key.items():
        ws.sort(key=lambda w: w.ack)
        best: list[Write] = []
        for w in ws:
            best.append(w if not best or w.value > best[-1].value else best[-1])
        timelines[key] = ([w.ack for w in ws], best)
    stale, constrained = [], 0
    for r in reads:
        if r.key not in timelines:
            continue
        acks, best = timelines[r.key]
        i = bisect.bisect_left(acks, r.start) - 1  # acknowledged strictly before the read started
        if i < 0:
            continue
        constrained += 1
        w = best[i]
        if r.value < w.value:
            stale.append({"read": r, "write": w})
    stale.sort(key=lambda s: s["read"].start)
    return stale, constrained


@dataclass
class Report:
    scenario: str
    duration: float
    events: list[str]
    reads: int
    reads_constrained: int
    reads_by_endpoint: dict[str, int]
    reads_in_transactions: int
    writes_acked: int
    writes_acked_in_transactions: int
    writes_uncertain: int
    write_errors: int
    rollbacks: int
    read_errors: int
    reconnects: int
    bad_rows: list[str]
    stale: int
    stale_details: list[str]
    error_samples: list[str]
    stuck_clients: list[str]
    metrics: dict[str, dict[str, float]]
    hits: float | None
    misses: float | None
    hits_per_second: list[int]

    @property
    def hit_ratio(self) -> float | None:
        if self.hits is None or not self.hits + self.misses:
            return None
        return self.hits / (self.hits + self.misses)

    def summary(self) -> str:
        ratio = "n/a" if self.hit_ratio is None else f"{self.hit_ratio:.3f}"
        hits = "n/a" if self.hits is None else f"{self.hits:.0f}"
        return (f"[{self.scenario}] reads={self.reads} writes_acked={self.writes_acked} "
                f"writes_uncertain={self.writes_uncertain} read_errors={self.read_errors} "
                f"write_errors={self.write_errors} hits={hits} hit_ratio={ratio} stale={self.stale}")

    def text(self) -> str:
        lines = [
            f"consistency report: {self.scenario} ({self.duration:.1f}s)",
            f"  reads             {self.reads} (by instance: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.reads_by_endpoint.items()))
            + f"; in transactions {self.reads_in_transactions}; after an acknowledged write of their key "
              f"{self.reads_constrained})",
            f"  writes acked      {self.writes_acked} (in transactions {self.writes_acked_in_transactions}; "
            f"rolled back on purpose {self.rollbacks})",
            f"  writes uncertain  {self.writes_uncertain} (no acknowledgement: not used as evidence)",
            f"  errors            reads {self.read_errors}, writes {self.write_errors}, "
            f"reconnects {self.reconnects}",
        ]
        if self.hits is None:
            lines.append("  hits              n/a (no /metrics)")
        else:
            ratio = "n/a" if self.hit_ratio is None else f"{self.hit_ratio:.3f}"
            lines.append(f"  hits              {self.hits:.0f} of {self.hits + self.misses:.0f} lookups, "
                         f"hit ratio {ratio}")
            for name, values in sorted(self.metrics.items()):
                lines.append(f"    {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in values.items()))
            lines.append("    hits per second: " + " ".join(str(n) for n in self.hits_per_second))
        lines.append(f"  stale reads       {self.stale}")
        lines += [f"    {d}" for d in self.stale_details]
        if self.bad_rows:
            lines.append(f"  wrong rows        {len(self.bad_rows)}: {self.bad_rows[:MAX_DETAILS]}")
        if self.stuck_clients:
            lines.append(f"  stuck clients     {self.stuck_clients}")
        if self.events:
            lines.append("  events")
            lines += [f"    {e}" for e in self.events]
        if self.error_samples:
            lines.append("  first errors")
            lines += [f"    {e}" for e in self.error_samples]
        return "\n".join(lines)

    def to_json(self) -> dict:
        data = {k: v for k, v in self.__dict__.items()}
        data["hit_ratio"] = self.hit_ratio
        return data


def per_second(samples: list[tuple[float, float]], duration: float) -> list[int]:
    """Increase of a sampled running total in each whole second of the run (the last sample before each edge)."""
    edges = []
    for second in range(int(duration) + 1):
        before = [total for at, total in samples if at <= second] or [0.0]
        edges.append(before[-1])
    return [round(b - a) for a, b in zip(edges, edges[1:])]


def report(run: Run, scenario: str) -> Report:
    reads = [r for log in run.logs for r in log.reads]
    writes = [w for log in run.logs for w in log.writes]
    stale, constrained = find_stale(writes, reads)
    details = []
    for s in stale[:MAX_DETAILS]:
        r, w = s["read"], s["write"]
        details.append(
            f"{key_name(r.key)}: read by {r.client} at {r.start - run.t0:.4f}s "
            f"(took {1000 * (r.end - r.start):.1f} ms{', in a transaction' if r.in_transaction else ''}) "
            f"returned {r.value}, but {w.client} had its write of {w.value} ({w.shape}"
            f"{', in a transaction' if w.in_transaction else ''}) acknowledged at {w.ack - run.t0:.4f}s, "
            f"{1000 * (r.start - w.ack):.1f} ms before the read started")
    metrics = {name: totals.totals() for name, totals in run.metrics.items()}
    for name, totals in run.metrics.items():
        if totals.restarts_seen:
            metrics[name]["restarts_seen"] = totals.restarts_seen
    hits = misses = None
    if metrics and all(metrics.values()):
        hits = sum(m["hits"] for m in metrics.values())
        misses = sum(m["misses"] for m in metrics.values())
    errors = sorted(e for log in run.logs for e in log.errors)  # each starts with its time, fixed width
    return Report(
        scenario=scenario,
        duration=run.duration,
        events=run.events,
        reads=len(reads),
        reads_constrained=constrained,
        reads_by_endpoint=dict(Counter(r.endpoint for r in reads)),
        reads_in_transactions=sum(r.in_transaction for r in reads),
        writes_acked=len(writes),
        writes_acked_in_transactions=sum(w.in_transaction for w in writes),
        writes_uncertain=sum(log.writes_uncertain for log in run.logs),
        write_errors=sum(log.write_errors for log in run.logs),
        rollbacks=sum(log.rollbacks for log in run.logs),
        read_errors=sum(log.read_errors for log in run.logs),
        reconnects=sum(max(0, log.session.connects - 1) for log in run.logs if log.session),
        bad_rows=[b for log in run.logs for b in log.bad_rows],
        stale=len(stale),
        stale_details=details,
        error_samples=errors[:MAX_DETAILS * 2],
        stuck_clients=run.stuck_clients,
        metrics=metrics,
        hits=hits,
        misses=misses,
        hits_per_second=per_second(run.hit_samples, run.duration) if run.metrics else [],
    )


def check(endpoints: list[Endpoint], *, scenario: str = "steady", duration: float = 20.0,
          faults: Callable[[Run], None] | None = None, readers_per_endpoint: int = 4,
          writers_per_endpoint: int = 2, write_pause: float = 0.02, seed: int | None = None) -> Report:
    """Runs the load (with ``faults`` injected by the calling thread meanwhile) and returns its report."""
    run = Run(endpoints, duration, readers_per_endpoint, writers_per_endpoint, write_pause,
              seed if seed is not None else random.SystemRandom().randrange(1 << 30))
    run.execute(faults)
    return report(run, scenario)


def setup_tables(direct_dsn: str) -> None:
    """Creates the checker's tables (idempotent), directly on PostgreSQL."""
    conn = psycopg2.connect(direct_dsn, connect_timeout=60)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(SETUP_SQL)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Reads and writes through pgshelf instances sharing a Redis; reports stale reads "
                    "(a read that started after a write's commit was acknowledged but returned an older "
                    "value) and the hit ratio. Exit status 1 when a stale read was found.")
    parser.add_argument("--dsn", action="append", default=[], metavar="DSN",
                        help="a pgshelf to connect through (repeat for each instance)")
    parser.add_argument("--metrics", action="append", default=[], metavar="URL",
                        help="the /metrics URL of each --dsn, in the same order (for hits)")
    parser.add_argument("--setup-dsn", metavar="DSN",
                        help="PostgreSQL itself: create the checker's tables there first")
    parser.add_argument("--print-rules", action="store_true",
                        help="print the rules file the pgshelf instances must load, and exit")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    parser.add_argument("--readers", type=int, default=4, help="reader clients per instance (default 4)")
    parser.add_argument("--writers", type=int, default=2, help="writer clients per instance (default 2)")
    parser.add_argument("--write-pause", type=float, default=0.02,
                        help="a writer sleeps up to this many seconds between writes (default 0.02)")
    parser.add_argument("--seed", type=int, help="random seed (default: random)")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args(argv)
    if args.print_rules:
        sys.stdout.write(RULES)
        return 0
    if not args.dsn:
        parser.error("at least one --dsn is needed")
    if args.metrics and len(args.metrics) != len(args.dsn):
        parser.error("give one --metrics per --dsn, or none")
    if args.setup_dsn:
        setup_tables(args.setup_dsn)
    metrics = args.metrics or [None] * len(args.dsn)
    endpoints = [Endpoint(f"pgshelf{i + 1}", dsn, url) for i, (dsn, url) in enumerate(zip(args.dsn, metrics))]
    result = check(endpoints, duration=args.duration, readers_per_endpoint=args.readers,
                   writers_per_endpoint=args.writers, write_pause=args.write_pause, seed=args.seed)
    print(result.text())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_json(), f, indent=2, default=str)
    return 1 if result.stale else 0


if __name__ == "__main__":
    sys.exit(main())
