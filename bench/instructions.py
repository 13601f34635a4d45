#!/usr/bin/python3
"""Instructions per statement, counted by valgrind's callgrind: a cost figure
that does not move with machine noise.

For each (target, mode) the proxy runs under callgrind twice, fresh each
time, while one pgbench client sends N1 and then N2 statements; the
difference of the two totals divided by N2 - N1 is the proxy's cost per
statement, with start-up, connection set-up and shutdown cancelled out.
Targets: PgBouncer (session pooling) and pgshelf without rules (the
passthrough path), and pgshelf with a rule caching the statement, one
client asking for the same row (the hit path). pg_stat_statements shows how
many of the statements reached PostgreSQL (1.00 passthrough, 0.00 hits).
With --workload mix, each pgbench transaction is bench/mix.sql (a point
select, a 10-row range select and a 10-row join): passthrough cost per
transaction, where results have several rows.

Run through bench/instructions (which builds pgshelf first); see
bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
MODES = ["simple", "extended", "prepared"]
TARGETS = ["pgbouncer", "pgshelf", "pgshelf-hit"]
TARGET_LABEL = {
    "pgbouncer": "PgBouncer (passthrough)",
    "pgshelf": "pgshelf, no rules (passthrough)",
    "pgshelf-hit": "pgshelf, cached (hit)",
}
STATEMENT = "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;"
RULES = """
[[cache]]
name  = "account_balance"
query = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
key   = "account:{aid}:balance"
ttl   = "3600s"
"""


sys.path.insert(0, str(BENCH_DIR))
from passthrough import load_harness  # noqa: E402

H = load_harness()


@dataclass
class Measurement:
    target: str
    mode: str
    instructions: list[int]  # callgrind totals of the two runs
    statements: list[int]  # N1, N2
    server_executions: list[int]  # pg_stat_statements calls during each run

    @property
    def per_statement(self) -> float:
        return (self.instructions[1] - self.instructions[0]) / (self.statements[1] - self.statements[0])

    @property
    def server_share(self) -> float:
        return (self.server_executions[1] - self.server_executions[0]) / (self.statements[1] - self.statements[0])


def callgrind_total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no total in {path}")


class Counter:
    """Executions of the benchmark statement that PostgreSQL saw."""

    def __init__(self, pg) -> None:
        self.pg = pg

    def calls(self) -> int:
        out = self.pg.psql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                           "WHERE query ILIKE 'SELECT abalance FROM pgbench_accounts%'")
        return int(out.strip() or 0)


def run_pgbench(dsn: str, mode: str, script: Path, transactions: int) -> None:
    cmd = [str(PG_BIN / "pgbench"), "-n", "-c", "1", "-j", "1", "-M", mode, "-t", str(transactions),
           "-f", str(script), dsn]
    result = subprocess.run(cmd, env=H.client_env(), capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or "number of failed transactions: 0" not in result.stdout:
        raise RuntimeError(f"pgbench failed ({' '.join(cmd)}):\n{result.stdout}\n{result.stderr}")


class Proxy:
    """One run of a proxy under callgrind; stop() returns its instruction total."""

    def __init__(self, target: str, pg, redis, workdir: Path, pgshelf_bin: Path, run: str) -> None:
        self.target = target
        self.port = H.free_port()
        self.out = workdir / f"callgrind.{target}.{run}.out"
        self.out.unlink(missing_ok=True)
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}"]
        if target == "pgbouncer":
            ini = workdir / "pgbouncer.ini"
            users = workdir / "userlist.txt"
            users.write_text('"postgres" ""\n')
            ini.write_text(textwrap.dedent(f"""\
                [databases]
                * = host={pg.host} port={pg.port}
                [pgbouncer]
                listen_addr = 127.0.0.1
                listen_port = {self.port}
                unix_socket_dir =
                auth_type = trust
                auth_file = {users}
                pool_mode = session
                ignore_startup_parameters = extra_float_digits
                log_connections = 0
                log_disconnections = 0
                """))
            cmd = ["runuser", "-u", "postgres", "--", *valgrind, "/usr/sbin/pgbouncer", str(ini)]
            self.stop_signal = "INT"
        else:
            env = {"PGSHELF_LISTEN": f"127.0.0.1:{self.port}", "PGSHELF_UPSTREAM": f"postgres://{pg.host}:{pg.port}",
                   "PGSHELF_PROXY_WORKERS": "1", "PGSHELF_LOG_LEVEL": "warn", "PGSHELF_ADMIN_LISTEN": "off"}
            if target == "pgshelf-hit":
                env.update(REDIS_URL=redis.url, PGSHELF_RULES=str(workdir / "rules.toml"))
            cmd = ["env", *(f"{k}={v}" for k, v in env.items()), *valgrind, str(pgshelf_bin)]
            self.stop_signal = "TERM"
        self.log = open(workdir / f"{target}.{run}.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)
        H.wait_until(lambda: self._ready(), 120, what=f"{target} under valgrind")
        self.dsn = H.make_dsn("127.0.0.1", self.port, "postgres", None, "postgres")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.target} exited: see {self.log.name}")
        return H.port_accepts(self.port)

    def stop(self) -> int:
        # Signal the program, not runuser/env: valgrind runs it in place of them.
        subprocess.run(["pkill", f"-{self.stop_signal}", "-f", f"callgrind-out-file={self.out}"], check=False)
        self.proc.wait(timeout=120)
        self.log.close()
        return callgrind_total(self.out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=str(REPO / "build-bench" / "app" / "pgshelf"))
    parser.add_argument("--statements", default="200,1200",
                        help="N1,N2: statements (transactions with --workload mix) of the two runs")
    parser.add_argument("--workload", choices=["point", "mix"], default="point",
                        help="point: one point select per transaction (default); mix: bench/mix.sql, "
                             "passthrough targets only")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--json", help="results file (default bench/results/instructions-<time>.json)")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep the callgrind files (callgrind.<target>.<run>.out) and logs in DIR, "
                             "for callgrind_annotate")
    args = parser.parse_args()
    n1, n2 = (int(x) for x in args.statements.split(","))
    if not 0 < n1 < n2:
        parser.error("--statements: need 0 < N1 < N2")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is missing: apt-get install valgrind")
    modes = args.modes.split(",")
    targets = args.targets.split(",")
    if args.workload == "mix" and "pgshelf-hit" in targets:
        if args.targets != parser.get_default("targets"):
            parser.error("--workload mix measures passthrough: targets pgbouncer and pgshelf")
        targets.remove("pgshelf-hit")
    unit = "transaction" if args.workload == "mix" else "statement"
    for name in modes + targets:
        if name not in MODES + TARGETS:
            parser.error(f"unknown mode or target {name!r}")
    started = dt.datetime.now(dt.timezone.utc)
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="pgshelf-instructions-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o777)  # PgBouncer runs as postgres and writes its callgrind file here
        (workdir / "rules.toml").write_text(RULES)
        hit_script = workdir / "hit.sql"
        hit_script.write_text(f"\\set aid 4242\n{STATEMENT}\n")
        miss_script = workdir / "point.sql"
        if args.workload == "mix":
            miss_script.write_text((BENCH_DIR / "mix.sql").read_text().replace(":scale", "1"))  # pgbench -i -s 1
        else:
            miss_script.write_text(f"\\set aid random(1, 100000)\n{STATEMENT}\n")
        with H.Postgres() as pg, H.Redis() as redis:
            subprocess.run([str(PG_BIN / "pgbench"), "-i", "-s", "1", "-q", pg.dsn()], env=H.client_env(),
                           check=True, capture_output=True, timeout=300)
            counter = Counter(pg)
            for target in targets:
                script = hit_script if target == "pgshelf-hit" else miss_script
                for mode in modes:
                    totals, executions = [], []
                    for run, n in enumerate((n1, n2)):
                        proxy = Proxy(target, pg, redis, workdir, Path(args.binary), f"{mode}.{run}")
                        try:
                            if target == "pgshelf-hit":
                                run_pgbench(proxy.dsn, mode, script, 2)  # fills the entry (kept across runs)
                            before = counter.calls()
                            run_pgbench(proxy.dsn, mode, script, n)
                            executions.append(counter.calls() - before)
                        finally:
                            totals.append(proxy.stop())
                    m = Measurement(target, mode, totals, [n1, n2], executions)
                    results.append(m)
                    print(f"{TARGET_LABEL[target]:34s} {mode:9s} {m.per_statement:9,.0f} instructions/{unit}"
                          f"  server executions/statement {m.server_share:.2f}", flush=True)
        if args.keep:
            keep = Path(args.keep)
            keep.mkdir(parents=True, exist_ok=True)
            for path in workdir.iterdir():
                if path.name.startswith("callgrind.") or path.suffix == ".log":
                    shutil.copy(path, keep / path.name)
    print()
    print(table(results, modes, targets, n1, n2, started, args.workload))
    out = Path(args.json) if args.json else BENCH_DIR / "results" / f"instructions-{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "started": started.isoformat(), "workload": args.workload, "statements": [n1, n2], "binary": args.binary,
        "results": [dict(asdict(m), per_statement=m.per_statement, server_share=m.server_share) for m in results],
    }, indent=2))
    print(f"\nresults: {out}")
    return 0


def table(results: list[Measurement], modes: list[str], targets: list[str], n1: int, n2: int,
          started: dt.datetime, workload: str = "point") -> str:
    by_key = {(m.target, m.mode): m for m in results}
    what = "transaction of bench/mix.sql (3 statements)" if workload == "mix" else "statement"
    runs = "transactions" if workload == "mix" else "statements"
    lines = [f"Instructions per {what} (callgrind), one pgbench client, runs of {n1} and {n2} {runs}; "
             f"{started:%Y-%m-%d %H:%M} UTC",
             "",
             "| target | " + " | ".join(f"-M {mode}" for mode in modes) + " | reached PostgreSQL |",
             "|---|" + "--:|" * len(modes) + "--:|"]
    for target in targets:
        cells = [f"{by_key[(target, mode)].per_statement:,.0f}" for mode in modes]
        share = max(by_key[(target, mode)].server_share for mode in modes)
        lines.append(f"| {TARGET_LABEL[target]} | " + " | ".join(cells) + f" | {share:.2f} |")
    if "pgbouncer" in targets and "pgshelf" in targets:
        ratios = [by_key[("pgshelf", mode)].per_statement / by_key[("pgbouncer", mode)].per_statement
                  for mode in modes]
        lines.append("| pgshelf / PgBouncer (passthrough) | " + " | ".join(f"{r:.2f}" for r in ratios) + " | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
