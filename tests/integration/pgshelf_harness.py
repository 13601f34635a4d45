"""Process harness for pgshelf's integration tests and benchmarks.

Starts real servers on 127.0.0.1, each on its own free port and in its own
temporary directory, and stops each one by its pid within a bounded time:

- ``Postgres``  - PostgreSQL 15 (initdb + postgres) with one role per
  authentication method, optional server TLS and extra settings;
- ``PgShelf``   - the pgshelf binary, configured through its environment;
- ``PgBouncer`` - PgBouncer in front of a ``Postgres`` (benchmarks);
- ``Redis``     - redis-server without persistence (caching tests).

Plain Python (no pytest), so benchmark scripts can import it as well.
initdb, postgres and pgbouncer refuse to run as root: when the harness runs
as root they are started as the ``postgres`` user (``subprocess`` switches
user in the child, so the pid we hold is the server's own, not a wrapper's).

Logs go to ``<tempdir>/<name>.log``; ``live_logs()`` lists those of every
process not stopped yet, so a test runner can print their tails on failure.
Temporary directories are removed on ``stop()`` unless PGSHELF_IT_KEEP=1.
With PGSHELF_IT_SANITIZER_REPORTS=<dir>, a pgshelf log that holds a sanitizer
report is copied there on ``stop()`` (UBSan next to ASan in a GCC build
writes to stderr whatever its log_path says).
"""

from __future__ import annotations

import atexit
import functools
import os
import pwd
import random
import resource
import shutil
import signal
import socket
import subprocess
import threading
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

PG_BINDIR = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# Seconds a test connection may take: it bounds a hang, not a speed (a
# loaded 2-core CI machine has stalled a loopback connect for over 10 s).
CONNECT_TIMEOUT = 60

# One role per authentication method; pg_hba gives each its method.
# The superuser ``postgres`` always connects with trust.
ROLE_AUTH = {
    "trust_user": "trust",
    "pw_user": "password",
    "md5_user": "md5",
    "scram_user": "scram-sha-256",
}
PASSWORDS = {
    "trust_user": None,
    "pw_user": "pw-secret-1",
    "md5_user": "md5-secret-2",
    "scram_user": "scram-secret-3",
}

_KEEP_TEMP = os.environ.get("PGSHELF_IT_KEEP") == "1"
_SANITIZER_REPORTS = os.environ.get("PGSHELF_IT_SANITIZER_REPORTS")
_SANITIZER_MARKERS = (b"runtime error:", b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer",
                      b"WARNING: ThreadSanitizer", b"ERROR: ThreadSanitizer")
_RUNNING_AS_ROOT = os.geteuid() == 0


# --------------------------------------------------------------------------
# small helpers


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05,
               what: str = "condition") -> object:
    """Polls ``predicate`` until it returns a truthy value; bounded by ``timeout``.

    Returns that value; raises TimeoutError naming ``what`` otherwise.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


_handed_out_ports: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Chosen at random below the kernel's ephemeral range, so the many
    outgoing connections of a test cannot occupy it between this call and
    the server's bind, and parallel test processes rarely pick the same one.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(15000, 32000)
        if port in _handed_out_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _handed_out_ports.add(port)
        return port
    raise RuntimeError("no free TCP port found")


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raises this process's soft RLIMIT_NOFILE (inherited by the servers it starts); returns it.

    Tests with a thousand connections need ~2 descriptors each in pgshelf.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def make_dsn(host: str, port: int, user: str = "postgres", password: str | None = None,
             dbname: str = "postgres", **params: object) -> str:
    """A libpq connection URL; ``params`` become query parameters (sslmode=...)."""
    auth = urllib.parse.quote(user, safe="")
    if password is not None:
        auth += ":" + urllib.parse.quote(password, safe="")
    return f"postgresql://{auth}@{host}:{port}/{urllib.parse.quote(dbname, safe='')}" + query_string(params)


def query_string(params: Mapping[str, object]) -> str:
    """'?k=v&...' percent-encoded as libpq decodes it (a space is %20, never '+'); '' when empty."""
    if not params:
        return ""
    return "?" + urllib.parse.urlencode({k: str(v) for k, v in params.items()}, quote_via=urllib.parse.quote)


def client_env(**extra: str) -> dict[str, str]:
    """Environment for client programs: no inherited PG* settings, UTF-8."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGCLIENTENCODING="UTF8", LC_ALL="C.UTF-8", PGCONNECT_TIMEOUT=str(CONNECT_TIMEOUT))
    env.update(extra)
    return env


def _as_postgres_user() -> dict:
    """Popen keyword arguments that run the child as ``postgres`` when we are root."""
    if not _RUNNING_AS_ROOT:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _chown_to_postgres(path: Path) -> None:
    if _RUNNING_AS_ROOT:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _run(cmd: list[str], *, as_postgres: bool = False, timeout: float = 120, input: str | None = None,
         env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> str:
    """Runs a one-shot command, bounded in time; raises with its output on failure."""
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                          env=dict(env) if env is not None else client_env(), cwd=cwd,
                          **(_as_postgres_user() if as_postgres else {}))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                           f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc.stdout


def _make_temp_dir(name: str, for_postgres: bool) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"pgshelf-it-{name}-"))
    if for_postgres:
        _chown_to_postgres(path)
    return path


def tail(path: Path | str, lines: int = 60) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------
# managed processes


_live: list["_ManagedProcess"] = []


def live_logs() -> list[tuple[str, Path]]:
    """(name, log path) of every harness process started and not stopped yet.

    That includes processes that died on their own (a crash): their name
    then says how they ended, e.g. "pgshelf (exited -6)".
    """
    return [(p.name if p.alive() else f"{p.name} (exited {p.proc.returncode})", p.log_path) for p in _live]


class _ManagedProcess:
    """A child process with a log file, stopped by pid within bounded time."""

    name = "process"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def _spawn(self, cmd: list[str], log_path: Path, *, env: Mapping[str, str] | None = None,
               as_postgres: bool = False, cwd: Path | None = None) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            # A new session keeps the terminal's Ctrl-C away from the servers:
            # the harness decides when they stop.
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(env) if env is not None else None, cwd=cwd,
                                         start_new_session=True, **(_as_postgres_user() if as_postgres else {}))
        _live.append(self)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Sends ``sig`` to the process (only while it runs)."""
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        """Waits for the process to exit; returns its exit code (negative: killed by signal).

        Raises subprocess.TimeoutExpired when it is still running after ``timeout``.
        """
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def _terminate(self, sig: int, timeout: float) -> int | None:
        """Sends ``sig``; after ``timeout`` seconds SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if self in _live:
            _live.remove(self)
        return self.proc.returncode

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines) if self.log_path else ""


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_live):
        if process.alive():
            os.kill(process.pid, signal.SIGKILL)
            process.proc.wait(timeout=30)
    _live.clear()


def _remove_dir(path: Path | None) -> None:
    if path is not None and not _KEEP_TEMP:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# TLS material


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def make_tls_files(directory: Path | str, readable_by_postgres: bool = True) -> TlsFiles:
    """Generates a CA and a server certificate for 127.0.0.1 / localhost.

    The server certificate carries SAN IP:127.0.0.1 and DNS:localhost, so
    verify-full works with either host name. With ``readable_by_postgres``
    (and when running as root) the server key is owned by ``postgres`` with
    mode 0600, which PostgreSQL insists on.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(["openssl", "req", "-x509", *ec, "-keyout", str(files.ca_key), "-out", str(files.ca_cert),
          "-days", "3650", "-subj", "/CN=pgshelf integration test CA",
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    csr = d / "server.csr"
    _run(["openssl", "req", "-new", *ec, "-keyout", str(files.server_key), "-out", str(csr),
          "-subj", "/CN=localhost"])
    ext = d / "server.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(files.ca_cert), "-CAkey", str(files.ca_key),
          "-CAcreateserial", "-out", str(files.server_cert), "-days", "3650", "-extfile", str(ext)])
    for path in (files.ca_cert, files.server_cert):
        path.chmod(0o644)
    files.server_key.chmod(0o600)
    if readable_by_postgres:
        _chown_to_postgres(d)
        for path in (files.ca_cert, files.server_cert, files.server_key):
            _chown_to_postgres(path)
    return files


# --------------------------------------------------------------------------
# PostgreSQL


class Postgres(_ManagedProcess):
    """A PostgreSQL 15 server on 127.0.0.1:``port`` in a fresh data directory.

    ``settings`` go to postgresql.conf (e.g. ``{"max_connections": 600}``).
    With ``tls=True`` the server has ``ssl=on`` and a certificate from
    ``make_tls_files`` (``.tls`` holds the paths, ``.tls.ca_cert`` is the CA
    for verify-full); with ``hostssl_only=True`` pg_hba accepts only TLS
    connections over TCP. ``hba_extra`` lines are added before the defaults.
    """

    name = "postgres"

    DEFAULT_SETTINGS = {
        "listen_addresses": HOST,
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_preload_libraries": "pg_stat_statements",
        "max_connections": 100,
        "shared_buffers": "64MB",
        "log_min_messages": "warning",
        "log_min_error_statement": "panic",  # the errors tests provoke on purpose, without their SQL
        "log_line_prefix": "%m [%p] %u@%d ",
    }

    def __init__(self, port: int | None = None, settings: Mapping[str, object] | None = None,
                 tls: bool = False, hostssl_only: bool = False, hba_extra: Iterable[str] = (),
                 start_timeout: float = 60) -> None:
        super().__init__()
        self.host = HOST
        self.port = port or free_port()
        self.dir = _make_temp_dir("pg", for_postgres=True)
        self.datadir = self.dir / "data"
        self.tls: TlsFiles | None = None
        self.start_timeout = start_timeout
        try:
            self._initdb()
            self._configure(settings or {}, tls, hostssl_only, list(hba_extra))
            self.start()
            self._create_roles()
        except BaseException:
            self._shutdown()
            _remove_dir(self.dir)
            raise

    # -- setup

    def _initdb(self) -> None:
        _run([str(PG_BINDIR / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
              "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"],
             as_postgres=True, cwd=self.dir, timeout=120)

    def _configure(self, settings: Mapping[str, object], tls: bool, hostssl_only: bool,
                   hba_extra: list[str]) -> None:
        conf = dict(self.DEFAULT_SETTINGS)
        conf.update(port=self.port, unix_socket_directories=str(self.dir))
        if tls:
            self.tls = make_tls_files(self.dir / "tls")
            conf.update(ssl="on", ssl_cert_file=str(self.tls.server_cert), ssl_key_file=str(self.tls.server_key))
        conf.update(settings)
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\n# pgshelf integration harness\n")
            for key, value in conf.items():
                f.write(f"{key} = '{value}'\n")
        host = "hostssl" if hostssl_only else "host"
        hba = ["local all all trust", *hba_extra, f"{host} all postgres {HOST}/32 trust"]
        hba += [f"{host} all {role} {HOST}/32 {method}" for role, method in ROLE_AUTH.items()]
        (self.datadir / "pg_hba.conf").write_text("\n".join(hba) + "\n")

    def _create_roles(self) -> None:
        sql = ["CREATE EXTENSION IF NOT EXISTS pg_stat_statements;"]
        for role in ROLE_AUTH:
            password = PASSWORDS[role]
            encryption = "md5" if role == "md5_user" else "scram-sha-256"
            sql.append(f"SET password_encryption = '{encryption}';")
            sql.append(f"CREATE ROLE {role} LOGIN" + (f" PASSWORD '{password}';" if password else ";"))
        self.psql("\n".join(sql))

    # -- lifecycle

    def start(self) -> None:
        """Starts the server and waits (bounded) until it accepts queries."""
        self._spawn([str(PG_BINDIR / "postgres"), "-D", str(self.datadir)], self.dir / "postgres.log",
                    as_postgres=True, cwd=self.dir)
        wait_until(self._ready, self.start_timeout, what=f"postgres on port {self.port} to start")

    def _ready(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            lines = (self.datadir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def _shutdown(self, timeout: float = 30) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back and disconnect sessions.
        self._terminate(signal.SIGINT, timeout)

    def shut_down(self) -> None:
        """Fast shutdown, keeping the data directory: ``start()`` brings the server back."""
        self._shutdown()

    def restart(self) -> None:
        """Fast shutdown, then start again on the same port and data directory."""
        self._shutdown()
        self.start()

    def stop(self) -> None:
        """Stops the server and removes its directory."""
        self._shutdown()
        _remove_dir(self.dir)

    def __enter__(self) -> "Postgres":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients

    def dsn(self, user: str = "postgres", password: str | None = None, dbname: str = "postgres",
            **params: object) -> str:
        """libpq URL to this server (TCP); ``params`` e.g. sslmode='require'."""
        return make_dsn(self.host, self.port, user, password, dbname, **params)

    def psql(self, sql: str, user: str = "postgres", dbname: str = "postgres", timeout: float = 60) -> str:
        """Runs ``sql`` as ``user`` over the Unix socket; returns unaligned tuples-only output.

        Stops at the first error (raises RuntimeError with psql's output).
        """
        return _run([str(PG_BINDIR / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                     "-h", str(self.dir), "-p", str(self.port), "-U", user, "-d", dbname, "-f", "-"],
                    input=sql, timeout=timeout).rstrip("\n")

    def backends(self, where: str = "true") -> list[dict[str, str]]:
        """Client backends from pg_stat_activity matching the SQL condition ``where``.

        Each is a dict with pid, usename, application_name, state, query. The
        calling psql session itself is excluded.
        """
        rows = self.psql(
            "SELECT pid, usename, application_name, state, replace(query, E'\\n', ' ') "
            "FROM pg_stat_activity WHERE backend_type = 'client backend' "
            f"AND pid <> pg_backend_pid() AND ({where}) ORDER BY pid")
        keys = ("pid", "usename", "application_name", "state", "query")
        return [dict(zip(keys, line.split("|", 4))) for line in rows.splitlines() if line]

    def wait_for_backends(self, where: str, count: int = 1, timeout: float = 10) -> list[dict[str, str]]:
        """Waits (bounded) until at least ``count`` backends match ``where``; returns them."""
        def enough() -> list[dict[str, str]] | None:
            rows = self.backends(where)
            return rows if len(rows) >= count else None

        return wait_until(enough, timeout, 0.1, f"{count} backend(s) where {where}")

    def wait_no_backends(self, where: str, timeout: float = 10) -> None:
        """Waits (bounded) until no backend matches ``where``."""
        wait_until(lambda: not self.backends(where), timeout, 0.1, f"no backend where {where}")


# --------------------------------------------------------------------------
# pgshelf


def find_built(env_var: str, relative_path: str) -> Path:
    """A build output: $``env_var`` (as ctest sets it), else the first build/*/``relative_path``."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    for build in ("build", "build-it", "build-release", "build-lead"):
        candidate = REPO_ROOT / build / relative_path
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{relative_path} not found under {REPO_ROOT}/build*: build it or set {env_var}")


def find_pgshelf_bin() -> Path:
    """The pgshelf binary: $PGSHELF_BIN, else the first one built under the repo."""
    return find_built("PGSHELF_BIN", "app/pgshelf")


_SANITIZER_SYMBOLS = {"address": "__asan_init", "thread": "__tsan_init", "undefined": "__ubsan_handle_"}


@functools.lru_cache(maxsize=None)
def pgshelf_sanitizers() -> frozenset[str]:
    """Sanitizers the pgshelf binary was built with (PGSHELF_SANITIZE), e.g. {"address", "undefined"}.

    Read from the dynamic symbols of their runtimes; empty for a plain
    build or when no binary is built. Checks of pgshelf's own memory use
    (RSS budgets) or of its shipped dependencies mean nothing for such a build.
    """
    try:
        binary = find_pgshelf_bin()
    except FileNotFoundError:
        return frozenset()
    if not binary.is_file():
        return frozenset()
    symbols = subprocess.run(["nm", "-D", str(binary)], capture_output=True, text=True, check=True).stdout
    return frozenset(name for name, symbol in _SANITIZER_SYMBOLS.items() if symbol in symbols)


class PgShelf(_ManagedProcess):
    """pgshelf on 127.0.0.1:``port`` in front of ``upstream``.

    ``upstream`` is a ``Postgres`` (its port) or a full upstream URL;
    ``upstream_params`` become the URL's query (sslmode, sslrootcert, ...).
    ``tls_cert``/``tls_key`` turn on TLS to clients. ``env`` adds or
    overrides PGSHELF_* variables. Each pgshelf gets its own HTTP admin port
    (``env["PGSHELF_ADMIN_LISTEN"]``). Ready when the listen port accepts.
    """

    name = "pgshelf"

    def __init__(self, upstream: Postgres | str, *, binary: str | Path | None = None, port: int | None = None,
                 upstream_params: Mapping[str, object] | None = None, workers: int = 2,
                 shutdown_timeout: str = "5s", tls_cert: Path | str | None = None, tls_key: Path | str | None = None,
                 log_level: str = "info", env: Mapping[str, str] | None = None, start_timeout: float = 60) -> None:
        super().__init__()
        self.binary = Path(binary) if binary else find_pgshelf_bin()
        self.host = HOST
        self.port = port or free_port()
        self.dir = _make_temp_dir("pgshelf", for_postgres=False)
        if isinstance(upstream, Postgres):
            upstream = f"postgres://{upstream.host}:{upstream.port}"
        upstream += query_string(upstream_params or {})
        self.upstream_url = upstream
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PGSHELF_", "REDIS_URL", "DATABASE_URL"))}
        self.env.update({
            "PGSHELF_LISTEN": f"{self.host}:{self.port}",
            "PGSHELF_UPSTREAM": upstream,
            "PGSHELF_PROXY_WORKERS": str(workers),
            "PGSHELF_PROXY_SHUTDOWN_TIMEOUT": shutdown_timeout,
            "PGSHELF_LOG_LEVEL": log_level,
            # Its own admin port: pgshelfs run side by side here.
            "PGSHELF_ADMIN_LISTEN": f"{self.host}:{free_port()}",
        })
        if tls_cert:
            self.env.update(PGSHELF_TLS_CERT_FILE=str(tls_cert), PGSHELF_TLS_KEY_FILE=str(tls_key))
        self.env.update(env or {})
        self._spawn([str(self.binary)], self.dir / "pgshelf.log", env=self.env, cwd=self.dir)
        try:
            wait_until(self._ready, start_timeout, what=f"pgshelf to listen on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"pgshelf exited with {self.proc.returncode}:\n{self.log_tail()}")
        return port_accepts(self.port)

    def dsn(self, user: str = "postgres", password: str | None = None, dbname: str = "postgres",
            **params: object) -> str:
        """libpq URL to pgshelf; the same arguments as ``Postgres.dsn``."""
        return make_dsn(self.host, self.port, user, password, dbname, **params)

    def rss_kib(self) -> int:
        """Resident set size (VmRSS) in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("VmRSS missing from /proc status")

    def fd_count(self) -> int:
        """Number of open file descriptors."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, wait up to ``timeout`` (then SIGKILL); returns the exit code."""
        code = self._terminate(signal.SIGTERM, timeout)
        self._keep_sanitizer_report()
        _remove_dir(self.dir)
        return code

    def _keep_sanitizer_report(self) -> None:
        if not _SANITIZER_REPORTS or not self.log_path or not self.log_path.is_file():
            return
        log = self.log_path.read_bytes()
        if any(marker in log for marker in _SANITIZER_MARKERS):
            shutil.copyfile(self.log_path, Path(_SANITIZER_REPORTS) / f"pgshelf-log.{self.proc.pid}")

    def __enter__(self) -> "PgShelf":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RssSampler:
    """Peak RSS of a pgshelf, sampled every 50 ms in a thread while in the ``with`` block; no-op for None."""

    def __init__(self, shelf: "PgShelf | None") -> None:
        self.shelf = shelf
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.shelf.rss_kib())
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self):
        if self.shelf:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.shelf:
            self._stop.set()
            self._thread.join(10)


# --------------------------------------------------------------------------
# PgBouncer


class PgBouncer(_ManagedProcess):
    """PgBouncer in front of ``pg`` (all databases), for comparison benchmarks.

    ``auth_type`` is one of PgBouncer's methods (trust, plain, md5,
    scram-sha-256). Its auth_file lists ``users`` {name: password}, by
    default ``postgres`` and the harness roles with their passwords (even
    trust needs the user names there). ``settings`` override [pgbouncer] keys.
    """

    name = "pgbouncer"

    def __init__(self, pg: Postgres, *, port: int | None = None, pool_mode: str = "session",
                 auth_type: str = "trust", users: Mapping[str, str] | None = None, pool_size: int = 20,
                 max_client_conn: int = 1000, settings: Mapping[str, object] | None = None,
                 start_timeout: float = 60) -> None:
        super().__init__()
        self.host = HOST
        self.port = port or free_port()
        self.dir = _make_temp_dir("pgbouncer", for_postgres=True)
        conf = {
            "listen_addr": HOST,
            "listen_port": self.port,
            "unix_socket_dir": str(self.dir),
            "auth_type": auth_type,
            "pool_mode": pool_mode,
            "default_pool_size": pool_size,
            "max_client_conn": max_client_conn,
            "admin_users": "postgres",
            "ignore_startup_parameters": "extra_float_digits",
            "log_connections": 0,
            "log_disconnections": 0,
        }
        if users is None:
            users = {"postgres": "", **{role: password or "" for role, password in PASSWORDS.items()}}
        auth_file = self.dir / "userlist.txt"
        auth_file.write_text("".join(f'"{u}" "{p}"\n' for u, p in users.items()))
        _chown_to_postgres(auth_file)
        conf["auth_file"] = str(auth_file)
        conf.update(settings or {})
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(f"[databases]\n* = host={pg.host} port={pg.port}\n\n[pgbouncer]\n"
                       + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        _chown_to_postgres(ini)
        self._spawn(["/usr/sbin/pgbouncer", str(ini)], self.dir / "pgbouncer.log", as_postgres=True, cwd=self.dir)
        try:
            wait_until(self._ready, start_timeout, what=f"pgbouncer to listen on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log_tail()}")
        return port_accepts(self.port)

    def dsn(self, user: str = "postgres", password: str | None = None, dbname: str = "postgres",
            **params: object) -> str:
        return make_dsn(self.host, self.port, user, password, dbname, **params)

    def stop(self, timeout: float = 30) -> int | None:
        # SIGINT: PgBouncer's safe shutdown (waits for clients), bounded by timeout.
        code = self._terminate(signal.SIGINT, timeout)
        _remove_dir(self.dir)
        return code

    def __enter__(self) -> "PgBouncer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------
# Redis


def resp_command(port: int, *args: str | bytes, host: str = HOST, timeout: float = 5) -> object:
    """Sends one command to Redis and returns its decoded reply (RESP2).

    Errors come back as RedisError exceptions; bulk strings as bytes.
    """
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        return _RespReader(sock).read()


class RedisError(Exception):
    pass


class _RespReader:
    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rb")

    def read(self) -> object:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by Redis")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"bad RESP reply {line!r}")


class Redis(_ManagedProcess):
    """redis-server on 127.0.0.1:``port``, no persistence; ``.url`` for REDIS_URL."""

    name = "redis"

    def __init__(self, port: int | None = None, extra_args: Iterable[str] = (), start_timeout: float = 60) -> None:
        super().__init__()
        self.host = HOST
        self.port = port or free_port()
        self.dir = _make_temp_dir("redis", for_postgres=False)
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    def start(self) -> None:
        """Starts redis-server (again, after ``kill()``) on the same port; empty dataset."""
        self._spawn(["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                     "--dir", str(self.dir), "--daemonize", "no", *self.extra_args],
                    self.dir / "redis.log", cwd=self.dir)
        wait_until(self._ready, self.start_timeout, what=f"redis to answer on port {self.port}")

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _ready(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            return self.command("PING") == "PONG"
        except OSError:
            return False

    def command(self, *args: str | bytes) -> object:
        """One Redis command on a fresh connection; see ``resp_command``."""
        return resp_command(self.port, *args, host=self.host)

    def pause(self) -> None:
        """SIGSTOP: Redis stops answering but keeps its connections (a 'slow' Redis)."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash; ``start()`` brings it back on the same port."""
        if self.alive():
            self.signal(signal.SIGCONT)
            self._terminate(signal.SIGKILL, 10)

    def stop(self, timeout: float = 20) -> int | None:
        self.signal(signal.SIGCONT)
        code = self._terminate(signal.SIGTERM, timeout)
        _remove_dir(self.dir)
        return code

    def __enter__(self) -> "Redis":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
