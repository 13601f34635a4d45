"""psql scripts run directly and through pgshelf; their outputs must be identical.

Each script in psql/ runs with ``psql -X -a -v ON_ERROR_STOP=0 -f`` (input
echoed, stdout and stderr in one stream) in a fresh working directory, so
``\\copy`` files are local to the run, and ``$PGSHELF_IT_DSN`` names the same
endpoint for commands run with ``\\!``. Covered: several statements in one
Query, errors mid-script and mid-Query, notices, COPY in/out and \\copy,
LISTEN/NOTIFY, failed transactions and ROLLBACK, savepoints, \\gset,
\\gexec, \\gdesc, PREPARE/EXECUTE, large values, NULLs, unicode.

Only what legitimately differs between two sessions is normalised: the
backend pid in notification lines and the pg_temp_N schema number. Each
script also has markers that must appear, so the direct run can fail too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pgshelf_harness import PG_BINDIR, client_env

SCRIPTS = Path(__file__).parent / "psql"

# Lines each script's output must contain (beyond being equal to direct).
MARKERS = {
    "simple_queries": [
        " first \n-------\n     1\n(1 row)", " third \n-------\n     3",
        "ERROR:  division by zero", " after the error", "(null)", "😀👍", "Ελληνικά",
        "0123456789" * 2000, " 50000 | 50000000", "-[ RECORD 1 ]", " end\n(1 row)",
    ],
    "errors_transactions": [
        "42P01 relation \"missing_table\" does not exist", "ERROR:  25P02: current transaction is aborted",
        "  1 |     101\n  2 |      51", "COMMIT;\nROLLBACK", "P0042 custom failure 42", "script still running",
    ],
    "notices": [
        "NOTICE:  hello from DO", "WARNING:  warning with detail\nDETAIL:  the detail\nHINT:  the hint",
        "DEBUG:  debug now visible", "WARNING:  still shown", "NOTICE:  bulk notice 200", " done\n(1 row)",
    ],
    "copy": [
        "3\tcherry\t10\tünïcödé 😀", '"5","line\nbreak","5",', "2000\t08f90c1a417155361a5c4b8d297e0d78",
        "      5 | t", "    41 | 100 | 140",
        "ERROR:  invalid input syntax for type numeric", " after_rollback \n----------------\n              5",
        " 100000 | 5000050000 |     1",
    ],
    "listen_notify": [
        'Asynchronous notification "chan_a" received from server process with PID N.',
        'Asynchronous notification "Chan B" with payload "payload ünïcödé"',
        'Asynchronous notification "chan_a" with payload "at commit"',
        'with payload "' + "p" * 7000 + '"',
        'Asynchronous notification "chan_a" with payload "from another session"',
        'Asynchronous notification "Chan B" with payload "still listening"',
    ],
    "gset_prepare": [
        "42 forty two\n", "  49\n", " 33\n", " c      | timestamp with time zone", "     42\n(1 row)",
        " héhéhé", "prepared statement \"add_one\" does not exist", " 1\n 2\n(2 rows)",
    ],
}

# Output that must not appear (the input is echoed, so these name output forms).
ABSENT = {
    "listen_notify": ["rolled back\" received", "not listening any more\" received", "nobody\" received"],
    "notices": ["NOTICE:  suppressed", "LOG:  log level"],
    "simple_queries": ["\n never\n"],
}


def normalise(output: str) -> str:
    output = re.sub(r"server process with PID \d+", "server process with PID N", output)
    return re.sub(r"pg_temp_\d+", "pg_temp_N", output)


def run_script(name: str, dsn: str, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(PG_BINDIR / "psql"), "-X", "-a", "-v", "ON_ERROR_STOP=0", "-f", str(SCRIPTS / f"{name}.sql"), "-d", dsn],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=client_env(PGSHELF_IT_DSN=dsn), cwd=workdir,
        timeout=120)
    output = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, f"psql exited {proc.returncode}:\n{output[-3000:]}"
    return output


@pytest.mark.parametrize("script", sorted(MARKERS))
def test_psql_script(script, target, same_as_direct, tmp_path):
    output = same_as_direct(script, lambda t: run_script(script, t.dsn(), tmp_path / t.name), normalise)
    missing = [m for m in MARKERS[script] if m not in output]
    assert not missing, f"expected in {script} output: {missing}\n--- output:\n{output[-4000:]}"
    present = [m for m in ABSENT.get(script, []) if m in output]
    assert not present, f"unexpected in {script} output: {present}"


def test_every_script_is_checked():
    assert sorted(p.stem for p in SCRIPTS.glob("*.sql")) == sorted(MARKERS)
