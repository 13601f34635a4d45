"""Node.js drivers through pgshelf: node-postgres (pg) and postgres.js.

Each script in node/ connects to the DSN it is given and prints its results
as JSON: parameterised and named prepared queries, errors and recovery,
pipelined queries (pg's ``pipeline: true``; postgres.js with ``max: 1``
and hundreds of concurrent queries on one connection), transactions,
cursors, COPY out, notices and a real query cancel (CancelRequest). The
results through pgshelf must equal the direct ones, and key values are
checked explicitly. Needs ``tests/integration/prepare.sh`` (npm ci) first.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from clients import sleeping
from pgshelf_harness import client_env

NODE_DIR = Path(__file__).parent / "node"


def run_node(script: str, dsn: str) -> dict:
    assert (NODE_DIR / "node_modules" / "pg").is_dir(), "run tests/integration/prepare.sh first (npm ci)"
    proc = subprocess.run(["node", str(NODE_DIR / script), dsn], capture_output=True, text=True,
                          env=client_env(), cwd=NODE_DIR, timeout=90)
    assert proc.returncode == 0, f"node {script} exited {proc.returncode}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def assert_sleep_stopped(target, app: str) -> None:
    """The cancelled pg_sleep really ended on the server."""
    target.pg.wait_no_backends(sleeping(app), 10)


def pretty(result: dict) -> str:
    return json.dumps(result, indent=1, ensure_ascii=False, sort_keys=True)


def test_node_postgres(target, same_as_direct):
    text = same_as_direct("node-postgres", lambda t: pretty(run_node("node_postgres.js", t.dsn())))
    out = json.loads(text)
    assert out["params"] == [{"sum": 42, "text": "ünï 😀 '\"", "bytes": {"type": "Buffer", "data": [0, 1, 255]},
                              "nothing": None, "doc": {"a": [1, None]}}]
    assert out["named"] == [0, 10, 20]
    assert out["prepared"] == [{"name": "it-named", "statement": "SELECT $1::int * 10 AS x"}]
    assert out["error"]["code"] == "22012" and out["afterError"] == [{"ok": "ok"}]
    assert (out["inTransaction"]["code"], out["aborted"]["code"]) == ("42P01", "25P02")
    assert out["notices"] == ["NOTICE: node notice 1"]
    assert out["pipelined"] == [i if i != 50 else "22012" for i in range(100)]
    assert out["cancel"] == "57014" and out["afterCancel"] == [{"two": 2}]
    assert_sleep_stopped(target, "it_node_pg")


def test_postgres_js(target, same_as_direct):
    text = same_as_direct("postgres.js", lambda t: pretty(run_node("postgres_js.js", t.dsn())))
    out = json.loads(text)
    assert out["params"] == [{"sum": 42, "t": "ünï 😀", "n": None}]
    assert out["pipelined"] == [[i, hashlib.md5(str(i).encode()).hexdigest()] for i in range(300)]
    assert out["pipelineWithError"] == [[{"a": 1}], {"code": "22012"}, [{"c": 3}], {"code": "42P01"}, [{"e": 5}]]
    assert out["prepared"] is True
    assert out["transaction"] == [{"ids": [1, 2, 3]}]
    assert out["rolledBack"] == "22012" and out["tableAfterRollback"] is None
    assert out["cursorBatches"] == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert out["copyOut"] == ["999\tx999", "1000\tx1000", ""]
    assert out["notices"] == ["NOTICE: postgres.js notice"]
    assert out["cancel"] == "57014" and out["afterCancel"] == [{"s": "usable"}]
    assert_sleep_stopped(target, "it_node_postgresjs")
