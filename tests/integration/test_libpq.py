"""libpq from C++ (libpq_client.cpp) directly and through pgshelf: identical output.

The client prints every result of: text and binary parameters and results,
named prepared statements and Describe, pipeline mode with an error in the
middle (PGRES_PIPELINE_ABORTED until the sync, then recovery) and a flush
request, single-row mode, COPY in/out and CopyFail, PQfn (FunctionCall),
notices, error fields, transaction status and reported parameters. Its
stdout through pgshelf must equal the direct one; key lines are checked
so that the direct run is verified too.
"""

from __future__ import annotations

import subprocess

from pgshelf_harness import client_env, find_built

EXPECTED_LINES = [
    "connected: protocol=3 server_version=15",
    "  row 42 héllo! t",
    "  row -123456 -9000000000000000001 bin€ \\x0001feff NULL -246912 4",
    "  row 3 30000000000 row 3 \\xababab",
    "describe_prepared: PGRES_COMMAND_OK nparams=2 param0=23 param1=25 field=tripled:23 field=shout:25",
    "execute_prepared_1#0: PGRES_TUPLES_OK columns=tripled:23:1,shout:25:1 tag=SELECT 1 rows=1",
    "describe_portal#0: PGRES_COMMAND_OK columns=one:20:0,two:25:0 tag=- rows=0",
    "pipeline_11: PGRES_TUPLES_OK columns=?column?:23:1 tag=SELECT 1 rows=1",
    "pipeline_12: PGRES_FATAL_ERROR sqlstate=22012 message=division by zero",
    "pipeline_29: PGRES_PIPELINE_ABORTED tag=- rows=0",
    "pipeline_sync: PGRES_PIPELINE_SYNC tag=- rows=0",
    "  row 107",
    "flush_request: PGRES_TUPLES_OK columns=?column?:23:0 tag=SELECT 1 rows=1",
    "single_row#5: PGRES_TUPLES_OK columns=g:23:0,repeat:25:0 tag=SELECT 5 rows=0",
    "single_row_error#2: PGRES_FATAL_ERROR sqlstate=22012 message=division by zero",
    "copy_in#0: PGRES_COMMAND_OK tag=COPY 1000 rows=0",
    "copy_out: 750\tname 750",
    "copy_fail#0: PGRES_FATAL_ERROR sqlstate=57014 message=COPY from stdin failed: client aborted the copy",
    "pqfn: PGRES_COMMAND_OK len=4 value=42",
    "pqfn_overflow: PGRES_FATAL_ERROR sqlstate=22003 message=integer out of range",
    "status_failed: 3",
    "status_after_rollback: 0",
    "parameter application_name=libpq changed",
    "multi_statement#3: PGRES_FATAL_ERROR sqlstate=22012 message=division by zero",
    "notice: WARNING:  three",
    "  row done",
]


def run_client(dsn: str) -> str:
    binary = find_built("LIBPQ_CLIENT", "tests/integration/libpq_client")
    proc = subprocess.run([str(binary), dsn], capture_output=True, text=True, env=client_env(), timeout=120)
    assert proc.returncode == 0, f"libpq_client exited {proc.returncode}\n{proc.stderr}\n{proc.stdout[-3000:]}"
    return proc.stdout


def test_libpq_client(target, same_as_direct):
    output = same_as_direct("libpq_client", lambda t: run_client(t.dsn()))
    lines = output.splitlines()
    missing = [line for line in EXPECTED_LINES if line not in lines]
    assert not missing, f"missing from libpq_client output: {missing}"
    assert lines.count("pipeline_13: PGRES_PIPELINE_ABORTED tag=- rows=0") == 1
    assert lines[-1] == "  row done"
