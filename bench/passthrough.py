#!/usr/bin/python3
"""Passthrough benchmark: pgbench directly against PostgreSQL, through
PgBouncer (session pooling) and through pgshelf, in one run on one machine.

Every figure that matters is a ratio between targets measured in the same
run, interleaved (for rep: for mode: for target), so that machine noise and
the CPU shared by pgbench, the proxy and PostgreSQL affect every target
alike. Medians over the repetitions are reported.

Run through bench/run (which builds pgshelf first); see bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, asdict
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
DB = "bench"
USER = "postgres"
CLK_TCK = os.sysconf("SC_CLK_TCK")

MODES: dict[str, list[str]] = {
    "select-simple": ["-S", "-M", "simple"],
    "select-extended": ["-S", "-M", "extended"],
    "select-prepared": ["-S", "-M", "prepared"],
    "mix-extended": ["-f", str(BENCH_DIR / "mix.sql"), "-M", "extended"],
    "mix-prepared": ["-f", str(BENCH_DIR / "mix.sql"), "-M", "prepared"],
    # not in the default set, available with --modes:
    "mix-simple": ["-f", str(BENCH_DIR / "mix.sql"), "-M", "simple"],
}
DEFAULT_MODES = ["select-simple", "select-extended", "select-prepared", "mix-extended", "mix-prepared"]
TARGETS = ["direct", "pgbouncer", "pgshelf", "pgshelf-1w"]
TARGET_LABEL = {
    "direct": "direct",
    "pgbouncer": "PgBouncer",
    "pgshelf": "pgshelf (2 workers)",
    "pgshelf-1w": "pgshelf (1 worker)",
}


# --------------------------------------------------------------------------- servers

def load_harness():
    """tests/integration/pgshelf_harness.py: Postgres, PgBouncer, PgShelf (each started by its
    constructor, with .port, .pid of the server process itself, and .stop())."""
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    try:
        import pgshelf_harness
    finally:
        sys.path.pop(0)
    return pgshelf_harness


class GuardedRun:
    """The measuring part of a benchmark, as a ``with`` block: Ctrl-C (SIGTERM, SIGHUP) or an
    error ends it early and keeps what was measured (``interrupted``, ``failure`` say which);
    the servers of ``stack`` (a list that grows during the run) always stop, newest first, and
    the run's directory is removed. ``before_stop`` closes what uses the servers."""

    def __init__(self, stack: list, run_tmp: Path, before_stop=None) -> None:
        self.stack = stack
        self.run_tmp = run_tmp
        self.before_stop = before_stop
        self.interrupted = False
        self.failure: str | None = None

    def __enter__(self) -> "GuardedRun":
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.interrupted = True
            print(f"\ninterrupted ({str(error) or 'SIGINT'}): stopping servers", file=sys.stderr)
        elif kind is not None and issubclass(kind, Exception):
            self.failure = f"{kind.__name__}: {error}"
            traceback.print_exception(kind, error, tb)
            print("\nbenchmark failed: stopping servers", file=sys.stderr)
        # Ignore further Ctrl-C while stopping the servers.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if self.before_stop is not None:
                self.before_stop()
            for s in reversed(self.stack):
                try:
                    s.stop()
                except Exception as e:  # keep stopping the others
                    print(f"stopping {type(s).__name__}: {e}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, old)
        shutil.rmtree(self.run_tmp, ignore_errors=True)
        return self.interrupted or self.failure is not None


# --------------------------------------------------------------------------- CPU accounting

def proc_ticks(pid: int) -> tuple[int, int]:
    """(utime+stime of the process, all threads; cutime+cstime of reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:  # gone; the run is redone anyway (Bench.ensure_alive)
        return 0, 0
    fields = s[s.rindex(")") + 2:].split()  # fields from #3 (state) on
    ut, st, cut, cst = (int(fields[i]) for i in (11, 12, 13, 14))
    return ut + st, cut + cst


def tree_ticks(pid: int) -> int:
    """CPU ticks of a process, its reaped children and its live children (PostgreSQL: postmaster + backends)."""
    own, reaped = proc_ticks(pid)
    total = own + reaped
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total


def machine_ticks() -> tuple[int, int, int]:
    """(process time, interrupt time, total) jiffies of all CPUs from /proc/stat.

    Process time = user + nice + system: what the utime/stime of processes add
    up to. Interrupt time (irq + softirq) is mostly loopback TCP here and is
    not charged to any process.
    """
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2], v[5] + v[6], sum(v[:8])  # guest time is already in user/nice


def wait_quiet(max_wait: float, threshold: float = 0.10) -> float:
    """Wait (up to max_wait s) until the machine is mostly idle between runs; returns the last busy share."""
    deadline = time.monotonic() + max_wait
    while True:
        a = machine_ticks()
        time.sleep(0.5)
        b = machine_ticks()
        busy = (b[0] - a[0] + b[1] - a[1]) / max(1, b[2] - a[2])
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def ctx_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of a process."""
    total = 0
    for task in os.scandir(f"/proc/{pid}/task"):
        try:
            with open(f"{task.path}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def perf_works() -> bool:
    """perf can count syscall tracepoints here (root or perf_event_paranoid permitting)."""
    if shutil.which("perf") is None:
        return False
    r = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"],
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and "not supported" not in r.stderr and "<not counted>" not in r.stderr


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------- pgbench

@dataclass
class Run:
    rep: int
    mode: str
    target: str
    tps: float | None = None
    latency_ms: float | None = None
    transactions: int | None = None
    failed: int | None = None
    proxy_cpu_s: float | None = None
    postgres_cpu_s: float | None = None
    pgbench_cpu_s: float | None = None
    irq_cpu_s: float | None = None
    foreign_cpu_s: float | None = None
    foreign_share: float | None = None
    machine_util: float | None = None
    wall_s: float | None = None
    error: str | None = None

    def per_1000(self, cpu: float | None) -> float | None:
        if cpu is None or not self.transactions:
            return None
        return cpu / self.transactions * 1000


def parse_pgbench(out: str) -> dict:
    def grab(pattern: str, conv=float):
        m = re.search(pattern, out, re.M)
        return conv(m.group(1)) if m else None
    return {
        "tps": grab(r"^tps = ([0-9.]+) \(without initial connection time\)"),
        "latency_ms": grab(r"^latency average = ([0-9.]+) ms"),
        "transactions": grab(r"^number of transactions actually processed: (\d+)", int),
        "failed": grab(r"^number of failed transactions: (\d+)", int),
    }


class Bench:
    def __init__(self, args):
        self.args = args
        self.ports: dict[str, int] = {}
        self.proxy_pid: dict[str, int] = {}
        self.pg = None
        self.discarded: list[Run] = []
        self.stack: list = []  # every server started, in order; stopped newest first
        self.servers: dict[str, object] = {}
        self.factories: dict = {}
        self.restarts: list[dict] = []
        self.noise_budget = float(args.noise_budget)  # seconds left for waiting on / redoing noisy runs

    def add_proxy(self, target: str, factory) -> None:
        self.factories[target] = factory
        self._start(target)

    def _start(self, target: str) -> None:
        srv = self.factories[target]()
        self.stack.append(srv)
        self.servers[target] = srv
        self.ports[target], self.proxy_pid[target] = srv.port, srv.pid

    def ensure_alive(self, target: str) -> bool:
        """Restarts a proxy that something outside the benchmark ended (say, a `pkill pgshelf`
        elsewhere on a shared machine); True when it had to. PostgreSQL ending is fatal."""
        if not self.pg.alive():
            raise RuntimeError(f"PostgreSQL exited ({self.pg.proc.returncode}):\n{self.pg.log_tail(20)}")
        srv = self.servers.get(target)
        if srv is None or srv.alive():
            return False
        code = srv.proc.returncode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        if len(self.restarts) >= 20:
            raise RuntimeError(f"{target} ended ({how}) once too often: giving up")
        self.restarts.append({"target": target, "pid": srv.pid, "ended_by": how,
                              "time": dt.datetime.now(dt.timezone.utc).isoformat(), "log": srv.log_tail(20)})
        print(f"{target} (pid {srv.pid}) ended by {how}, not by the benchmark: restarting it", file=sys.stderr)
        self.stack.remove(srv)
        srv.stop()
        self._start(target)
        return True

    def measure_clean(self, rep: int, mode: str, target: str, seconds: int) -> Run:
        """measure(), repeated (up to --retries times) when processes outside the benchmark took
        more than --max-foreign of the machine during the run, and (up to 3 times) when the
        target was ended from outside during the run."""
        a = self.args
        attempt = restarted = 0
        while True:
            self.ensure_alive(target)
            t0 = time.monotonic()
            wait_quiet(min(a.quiet_wait, max(0.0, self.noise_budget)))
            self.noise_budget -= time.monotonic() - t0
            run = self.measure(rep, mode, target, seconds)
            if self.ensure_alive(target) and restarted < 3:
                restarted += 1
                self.discarded.append(run)
                continue
            if (run.error or run.foreign_share is None or run.foreign_share <= a.max_foreign
                    or attempt >= a.retries or self.noise_budget < seconds + 1):
                return run
            attempt += 1
            self.noise_budget -= run.wall_s or seconds
            self.discarded.append(run)
            print(f"rep {rep + 1}/{a.reps}  {mode:16} {target:11} discarded: other processes used "
                  f"{run.foreign_share:.0%} of the machine; again", file=sys.stderr)

    def pgbench_cmd(self, target: str, mode: str, seconds: int) -> list[str]:
        a = self.args
        cmd = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(self.ports[target]), "-U", USER,
               "-c", str(a.clients), "-j", str(a.threads), "-T", str(seconds)]
        cmd += MODES[mode]
        if mode.startswith("mix-"):
            cmd += ["-D", f"scale={a.scale}"]
        return cmd + [DB]

    def measure(self, rep: int, mode: str, target: str, seconds: int) -> Run:
        run = Run(rep, mode, target)
        env = dict(os.environ, PGSSLMODE="disable", PGAPPNAME=f"bench-{target}")
        pid = self.proxy_pid.get(target)
        pm = self.pg.pid
        proxies = list(self.proxy_pid.values())
        x0 = sum(proc_ticks(p)[0] for p in proxies)
        p0 = proc_ticks(pid)[0] if pid else None
        self_cpu0 = sum(os.times()[:2])
        g0, m0, c0, w0 = tree_ticks(pm), machine_ticks(), children_cpu(), time.monotonic()
        try:
            res = subprocess.run(self.pgbench_cmd(target, mode, seconds), env=env, capture_output=True,
                                 text=True, timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            run.error = "pgbench did not finish in time"
            return run
        w1, c1 = time.monotonic(), children_cpu()
        time.sleep(0.3)  # let the backends of the finished clients exit and be reaped
        g1, m1 = tree_ticks(pm), machine_ticks()
        p1 = proc_ticks(pid)[0] if pid else None
        x1 = sum(proc_ticks(p)[0] for p in proxies)
        self_cpu1 = sum(os.times()[:2])
        run.__dict__.update(parse_pgbench(res.stdout))
        run.wall_s = w1 - w0
        run.pgbench_cpu_s = c1 - c0
        run.postgres_cpu_s = (g1 - g0) / CLK_TCK
        if pid:
            run.proxy_cpu_s = (p1 - p0) / CLK_TCK
        run.irq_cpu_s = (m1[1] - m0[1]) / CLK_TCK
        ours = run.postgres_cpu_s + run.pgbench_cpu_s + (x1 - x0) / CLK_TCK + (self_cpu1 - self_cpu0)
        run.foreign_cpu_s = max(0.0, (m1[0] - m0[0]) / CLK_TCK - ours)
        capacity = (m1[2] - m0[2]) / CLK_TCK
        run.foreign_share = run.foreign_cpu_s / capacity if capacity else None
        run.machine_util = (m1[0] - m0[0] + m1[1] - m0[1]) / max(1, m1[2] - m0[2])
        if res.returncode != 0 or run.tps is None:
            tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
            run.error = f"pgbench exit {res.returncode}: " + " | ".join(tail)
        elif run.failed is None:
            run.failed = 0  # pgbench prints the line only from PostgreSQL 15 on
        return run

    def diagnose(self, mode: str, target: str, per_client: int, use_perf: bool) -> dict:
        """One fixed-size pgbench run through a proxy, counting the proxy's syscalls (perf) and context
        switches per transaction. Separate from the timed runs: perf's counting slows syscalls down."""
        pid = self.proxy_pid[target]
        out = Path(f"/tmp/pgshelf-bench-perf-{os.getpid()}.txt")
        perf = None
        if use_perf:
            perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(pid),
                                     "-o", str(out)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        cmd = self.pgbench_cmd(target, mode, 0)
        i = cmd.index("-T")
        cmd[i:i + 2] = ["-t", str(per_client)]
        cs0, t0 = ctx_switches(pid), proc_ticks(pid)[0]
        try:
            res = subprocess.run(cmd, env=dict(os.environ, PGSSLMODE="disable"), capture_output=True, text=True,
                                 timeout=600)
        finally:
            cs1, t1 = ctx_switches(pid), proc_ticks(pid)[0]
            syscalls = None
            if perf is not None:
                time.sleep(0.2)
                perf.send_signal(signal.SIGINT)
                try:
                    perf.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    perf.kill()
                    perf.wait()
                try:
                    for line in out.read_text().splitlines():
                        f = line.split(",")
                        if len(f) > 2 and "raw_syscalls:sys_enter" in line and f[0].strip().isdigit():
                            syscalls = int(f[0])
                    out.unlink()
                except OSError:
                    pass
        parsed = parse_pgbench(res.stdout)
        tx = parsed["transactions"] or 0
        return {
            "mode": mode, "target": target, "transactions": tx, "failed": parsed["failed"],
            "error": None if res.returncode == 0 and tx else f"pgbench exit {res.returncode}: {res.stderr.strip()[-300:]}",
            "syscalls_per_tx": syscalls / tx if syscalls is not None and tx else None,
            "ctx_switches_per_tx": (cs1 - cs0) / tx if tx else None,
            "cpu_us_per_tx": (t1 - t0) / CLK_TCK / tx * 1e6 if tx else None,
        }

    def check(self, target: str) -> None:
        out = subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(self.ports[target]), "-U", USER,
                              "-d", DB, "-c", "SELECT count(*) FROM pgbench_branches"],
                             env=dict(os.environ, PGSSLMODE="disable"), capture_output=True, text=True, timeout=30)
        if out.returncode != 0 or out.stdout.strip() != str(self.args.scale):
            raise RuntimeError(f"{target}: sanity query failed: {out.stdout.strip()} {out.stderr.strip()}")


# --------------------------------------------------------------------------- reporting

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(runs: list[Run], modes: list[str], targets: list[str]) -> list[dict]:
    rows = []
    for mode in modes:
        med = {}
        for target in targets:
            rs = [r for r in runs if r.mode == mode and r.target == target and r.error is None]
            errs = [r.error for r in runs if r.mode == mode and r.target == target and r.error]
            med[target] = {
                "mode": mode,
                "target": target,
                "runs": len(rs),
                "errors": errs,
                "tps": median(r.tps for r in rs),
                "tps_min": min((r.tps for r in rs), default=None),
                "tps_max": max((r.tps for r in rs), default=None),
                "latency_ms": median(r.latency_ms for r in rs),
                "failed": sum(r.failed or 0 for r in rs),
                "proxy_cpu_s_per_1000tx": median(r.per_1000(r.proxy_cpu_s) for r in rs),
                "postgres_cpu_s_per_1000tx": median(r.per_1000(r.postgres_cpu_s) for r in rs),
                "pgbench_cpu_s_per_1000tx": median(r.per_1000(r.pgbench_cpu_s) for r in rs),
                "total_cpu_s_per_1000tx": median(r.per_1000((r.proxy_cpu_s or 0) + r.postgres_cpu_s + r.pgbench_cpu_s)
                                                 for r in rs if r.postgres_cpu_s is not None and r.pgbench_cpu_s is not None),
                "irq_cpu_s_per_1000tx": median(r.per_1000(r.irq_cpu_s) for r in rs),
                "foreign_share_max": max((r.foreign_share or 0 for r in rs), default=None),
                "machine_util": median(r.machine_util for r in rs),
            }
        for target in targets:
            row = med[target]
            for ref, key in (("direct", "ratio_direct"), ("pgbouncer", "ratio_pgbouncer")):
                base = med.get(ref, {}).get("tps")
                row[key] = row["tps"] / base if row["tps"] and base else None
            rows.append(row)
    return rows


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def markdown(rows: list[dict], machine: str, config: str) -> str:
    out = [machine, "", config, "",
           "| mode | target | TPS | TPS min–max | mean latency (ms) | TPS / direct | TPS / PgBouncer "
           "| proxy CPU s/1000 tx | PostgreSQL CPU s/1000 tx | pgbench CPU s/1000 tx | sum CPU s/1000 tx "
           "| failed tx |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        failed = str(r["failed"]) + (f" ({len(r['errors'])} runs aborted)" if r["errors"] else "")
        out.append(
            f"| {r['mode']} | {TARGET_LABEL[r['target']]} | {fmt(r['tps'], ',.0f')} "
            f"| {fmt(r['tps_min'], '.0f')}–{fmt(r['tps_max'], '.0f')} | {fmt(r['latency_ms'], '.3f')} "
            f"| {fmt(r['ratio_direct'], '.3f')} | {fmt(r['ratio_pgbouncer'], '.3f')} "
            f"| {fmt(r['proxy_cpu_s_per_1000tx'], '.4f')} | {fmt(r['postgres_cpu_s_per_1000tx'], '.4f')} "
            f"| {fmt(r['pgbench_cpu_s_per_1000tx'], '.4f')} | {fmt(r['total_cpu_s_per_1000tx'], '.4f')} "
            f"| {failed} |")
    return "\n".join(out) + "\n"


def verdict(rows: list[dict]) -> str:
    lines = []
    for target in ("pgshelf", "pgshelf-1w"):
        rs = [r for r in rows if r["target"] == target and r["ratio_pgbouncer"] is not None]
        if not rs:
            continue
        worse = [r for r in rs if r["ratio_pgbouncer"] < 1.0]
        if not worse:
            lines.append(f"{TARGET_LABEL[target]}: TPS >= PgBouncer in every mode "
                         f"(ratios {min(r['ratio_pgbouncer'] for r in rs):.3f}–{max(r['ratio_pgbouncer'] for r in rs):.3f}).")
        else:
            lines.append(f"{TARGET_LABEL[target]}: TPS below PgBouncer in "
                         + ", ".join(f"{r['mode']} ({r['ratio_pgbouncer']:.3f})" for r in worse) + ".")
    return "\n".join(lines)


def cmd_out(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"


def machine_info(binary: Path) -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = cmd_out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = cmd_out(["git", "-C", str(REPO), "diff", "--name-only", "HEAD"])  # tracked files, staged or not
    built = "?"
    if binary.is_file():
        mtime = binary.stat().st_mtime
        built = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        head_time = cmd_out(["git", "-C", str(REPO), "log", "-1", "--format=%ct"])
        if head_time.isdigit() and int(head_time) > mtime:
            print(f"WARNING: {binary} was built before the last commit; PGSHELF_BENCH_REBUILD=1 bench/run "
                  "rebuilds it", file=sys.stderr)
            built += ", before the last commit"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "postgresql": cmd_out([str(PG_BIN / "postgres"), "--version"]),
        "pgbouncer": (cmd_out(["pgbouncer", "--version"]).splitlines() or ["?"])[0],
        "pgbench": cmd_out(["pgbench", "--version"]),
        "pgshelf": f"built {built} from the tree at {commit}"
                   + (f" with uncommitted changes to {', '.join(dirty.splitlines())}" if dirty else ""),
    }


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description="pgbench direct vs PgBouncer vs pgshelf (see bench/README.md)")
    ap.add_argument("-T", "--duration", type=int, default=10, help="seconds per pgbench run (default 10)")
    ap.add_argument("-r", "--reps", type=int, default=3, help="repetitions per (mode, target); medians are reported (default 3)")
    ap.add_argument("-c", "--clients", type=int, default=8, help="pgbench clients (default 8)")
    ap.add_argument("-j", "--threads", type=int, default=2, help="pgbench threads (default 2)")
    ap.add_argument("-s", "--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per target before measuring (default 3, 0 = none)")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma list from {','.join(MODES)}")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma list from {','.join(TARGETS)}")
    ap.add_argument("--max-foreign", type=float, default=0.10,
                    help="redo a run when processes outside the benchmark used more than this share of the machine (default 0.10)")
    ap.add_argument("--retries", type=int, default=2, help="redos per run for --max-foreign (default 2)")
    ap.add_argument("--quiet-wait", type=float, default=20,
                    help="before each run, wait up to this many seconds for the machine to be idle (default 20)")
    ap.add_argument("--noise-budget", type=float, default=600,
                    help="total seconds that waiting for quiet and redoing runs may add to the whole benchmark (default 600)")
    ap.add_argument("--diag-transactions", type=int, default=1000,
                    help="per-client transactions of the extra syscall/context-switch run per (mode, proxy); 0 = skip (default 1000)")
    ap.add_argument("--nice", type=int, default=0,
                    help="scheduling priority of the benchmark and every server it starts, e.g. -10 on a shared "
                         "machine so other work disturbs the runs less (negative values need root; default 0)")
    ap.add_argument("--binary", type=Path, default=REPO / "build-bench" / "app" / "pgshelf",
                    help="pgshelf binary (default build-bench/app/pgshelf, which bench/run builds)")
    ap.add_argument("--json", type=Path, help="results file (default bench/results/passthrough-<time>.json)")
    a = ap.parse_args()

    modes = [m for m in a.modes.split(",") if m]
    targets = [t for t in a.targets.split(",") if t]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m}")
    for t in targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t}")
    if any(t.startswith("pgshelf") for t in targets) and not a.binary.is_file():
        ap.error(f"no pgshelf binary at {a.binary} (bench/run builds it)")
    for tool in ("pgbench", "psql", "pgbouncer"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found on PATH")

    # SIGTERM/SIGHUP behave like Ctrl-C: unwind, stop every server.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    if a.nice:
        # Inherited by every process started from here on: PostgreSQL and its backends,
        # PgBouncer, both pgshelf (all threads), pgbench.
        os.setpriority(os.PRIO_PROCESS, 0, a.nice)
    # The servers' temporary directories go under a directory of this run's own, so that a clean-up
    # of the harness's usual /tmp/pgshelf-it-* elsewhere on a shared machine cannot remove them.
    run_tmp = Path(tempfile.mkdtemp(prefix="pgshelf-bench-"))
    run_tmp.chmod(0o755)  # PostgreSQL and PgBouncer run as postgres and need to reach their directories
    tempfile.tempdir = str(run_tmp)
    H = load_harness()
    machine = machine_info(a.binary)
    started = time.monotonic()
    est = int(len(modes) * len(targets) * a.reps * (a.duration + 1.5) + len(targets) * a.warmup * 2 + 60
              + (len(modes) * 3 * a.diag_transactions * a.clients / 3000 if a.diag_transactions > 0 else 0))
    print(f"passthrough benchmark: {len(modes)} modes x {len(targets)} targets x {a.reps} reps x {a.duration}s: "
          f"about {est // 60} min {est % 60} s, at most {a.noise_budget / 60:.0f} min more on a busy machine",
          file=sys.stderr)

    runs: list[Run] = []
    diags: list[dict] = []
    bench = Bench(a)
    with GuardedRun(bench.stack, run_tmp) as guard:
        pool = a.clients + 2
        # The harness defaults already have fsync, synchronous_commit and full_page_writes off.
        pg = H.Postgres(settings={
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": max(100, 3 * pool + 20), "shared_buffers": "256MB",
            "shared_preload_libraries": "",  # no pg_stat_statements: plain per-query cost
            "autovacuum": "off", "jit": "off", "log_min_messages": "warning",
        })
        bench.stack.append(pg)
        bench.pg = pg
        pg.psql(f"CREATE DATABASE {DB}")
        print(f"initialising pgbench data (scale {a.scale}) ...", file=sys.stderr)
        subprocess.run(["pgbench", "-i", "-q", "-s", str(a.scale), "-h", "127.0.0.1", "-p", str(pg.port),
                        "-U", USER, DB], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=dict(os.environ, PGSSLMODE="disable"), timeout=600)
        pg.psql("CHECKPOINT", dbname=DB)

        bench.ports["direct"] = pg.port
        if "pgbouncer" in targets:
            bench.add_proxy("pgbouncer", lambda: H.PgBouncer(
                pg, pool_mode="session", pool_size=pool, max_client_conn=4 * pool, settings={"stats_period": 3600}))
        for t, workers in (("pgshelf", 2), ("pgshelf-1w", 1)):
            if t in targets:
                bench.add_proxy(t, lambda workers=workers: H.PgShelf(
                    pg, binary=a.binary, workers=workers, log_level="warn", upstream_params={"sslmode": "disable"}))
        for t in targets:
            bench.check(t)

        if a.warmup > 0:
            for t in targets:
                for m in dict.fromkeys([modes[0]] + [x for x in modes if x.startswith("mix-")][:1]):
                    bench.ensure_alive(t)
                    w = bench.measure(-1, m, t, a.warmup)
                    if w.error:
                        print(f"warm-up {m} {t}: {w.error}", file=sys.stderr)

        for rep in range(a.reps):
            for mi, mode in enumerate(modes):
                k = (rep + mi) % len(targets)  # rotate so no target always runs first or last
                for target in targets[k:] + targets[:k]:
                    r = bench.measure_clean(rep, mode, target, a.duration)
                    runs.append(r)
                    status = r.error or (f"{r.tps:9.0f} tps  {r.latency_ms:.3f} ms  failed {r.failed}"
                                         + (f"  proxy cpu {r.per_1000(r.proxy_cpu_s):.4f} s/1000tx" if r.proxy_cpu_s is not None else "")
                                         + f"  other load {r.foreign_share:.0%}")
                    print(f"rep {rep + 1}/{a.reps}  {mode:16} {target:11} {status}", file=sys.stderr)

        proxies = [t for t in targets if t in bench.proxy_pid]
        if a.diag_transactions > 0 and proxies:
            use_perf = perf_works()
            if not use_perf:
                print("note: perf cannot count syscalls here; diagnostics without syscall counts", file=sys.stderr)
            for mode in modes:
                for target in proxies:
                    bench.ensure_alive(target)
                    d = bench.diagnose(mode, target, a.diag_transactions, use_perf)
                    diags.append(d)
                    print(f"diag  {mode:16} {target:11} syscalls/tx {fmt(d['syscalls_per_tx'], '.2f')}  "
                          f"context switches/tx {fmt(d['ctx_switches_per_tx'], '.2f')}  {d['error'] or ''}",
                          file=sys.stderr)
    interrupted, failure = guard.interrupted, guard.failure

    if not runs:
        return 130 if interrupted else 1
    if failure:
        print(f"WARNING: the benchmark stopped early ({failure}); partial results follow\n")

    rows = summarise(runs, modes, targets)
    machine_line = (f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, "
                    f"{machine['postgresql']}, {machine['pgbouncer']}, pgshelf {machine['pgshelf']}; {machine['date']}")
    config_line = (f"pgbench -c {a.clients} -j {a.threads} -T {a.duration}, scale {a.scale}, "
                   + (f"nice {a.nice}, " if a.nice else "") +
                   f"median of {a.reps} interleaved runs; PgBouncer pool_mode=session; "
                   f"wall time {time.monotonic() - started:.0f} s"
                   + (" (INTERRUPTED: partial)" if interrupted else "") + (" (FAILED: partial)" if failure else ""))
    shares = [r.foreign_share for r in runs if r.foreign_share is not None and r.error is None]
    if shares:
        config_line += (f"; CPU used by other processes during the kept runs: median {statistics.median(shares):.1%}, "
                        f"max {max(shares):.1%} of the machine ({len(bench.discarded)} runs redone)")
    if bench.restarts:
        config_line += (f"; proxies ended from outside the benchmark and restarted {len(bench.restarts)} times ("
                        + ", ".join(f"{r['target']} by {r['ended_by']}" for r in bench.restarts) + "), runs redone")
    md = markdown(rows, machine_line, config_line)
    if diags:
        md += ("\nProxy process per transaction, from one extra fixed-size run per (mode, proxy) with "
               f"`pgbench -t {a.diag_transactions}` per client (syscalls counted by `perf stat -e raw_syscalls:sys_enter`, "
               "context switches from /proc/PID/task/*/status):\n\n"
               "| mode | target | syscalls/tx | context switches/tx |\n|---|---|--:|--:|\n")
        for d in diags:
            md += (f"| {d['mode']} | {TARGET_LABEL[d['target']]} | {fmt(d['syscalls_per_tx'], '.2f')} "
                   f"| {fmt(d['ctx_switches_per_tx'], '.2f')} |\n")
    v = verdict(rows)
    failed = sum(r["failed"] for r in rows)
    aborted = sum(len(r["errors"]) for r in rows)
    print(md)
    if v:
        print(v)
    if failed or aborted:
        print(f"\nWARNING: {failed} failed transactions, {aborted} aborted pgbench runs (see JSON for details)")

    out = a.json
    if out is None:
        (BENCH_DIR / "results").mkdir(exist_ok=True)
        out = BENCH_DIR / "results" / f"passthrough-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()} | {
            "modes": modes, "targets": targets, "interrupted": interrupted, "failure": failure},
        "summary": rows,
        "runs": [asdict(r) for r in runs],
        "diagnostics": diags,
        "discarded_runs": [asdict(r) for r in bench.discarded],
        "proxy_restarts": bench.restarts,
        "markdown": md,
        "verdict": v,
    }, indent=2))
    out.with_suffix(".md").write_text(md + ("\n" + v + "\n" if v else ""))
    print(f"\nresults: {out}", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if failed or aborted or failure else 0


if __name__ == "__main__":
    sys.exit(main())
