"""The command-line tools: `pgshelf check FILE` and `pgshelf explain`.

No servers: both read files and print. Every test asserts what the output
says (the file:line of a problem and the problem, the rule a statement
hits and the key it renders, the suggestion for an uncached read), not
only the exit status. The central case is the round trip: explain a read no
rule caches, paste its suggested rule into a rules file, `check` it, and
explain the read again: it now hits the suggested rule.

Commands run with the file's directory as working directory and a relative
file name, so the file names in the output are the ones written here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from pgshelf_harness import find_pgshelf_bin

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "examples" / "telegram-bot"
EXAMPLE = "examples/telegram-bot/rules.toml"  # relative to ROOT, as the output names it
INDENT = " " * 13  # format_explanation's continuation lines

VARIABLES_READ = "SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2"
USAGE = ('usage: pgshelf explain --rules FILE [--param VALUE]... [--null-param] '
         '[--database NAME] [--role NAME] "SQL"\n')


# ---------------------------------------------------------------- helpers

def pgshelf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(find_pgshelf_bin()), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def explain(rules: str, sql: str, *options: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return pgshelf("explain", "--rules", rules, *options, sql, cwd=cwd)


def explained(rules: str, sql: str, *options: str, cwd: Path = ROOT) -> str:
    result = explain(rules, sql, *options, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout


def fields(output: str) -> dict[str, list[str]]:
    """explain's output as label -> lines (continuation lines appended)."""
    out: dict[str, list[str]] = {}
    label = None
    for line in output.splitlines():
        if line.startswith(INDENT):
            assert label is not None, output
            out[label].append(line[len(INDENT):])
            continue
        m = re.fullmatch(r"([a-z]+):\s+(.*)", line)
        assert m, f"unexpected line {line!r} in\n{output}"
        label = m.group(1)
        assert label not in out, f"{label} twice in\n{output}"
        out[label] = [m.group(2)]
    return out


def suggestion_of(output: str) -> str:
    """The suggested rule, as it would be pasted into a rules file."""
    lines = fields(output)["suggestion"]
    assert lines[0] == "(paste into the rules file, then reload with SIGHUP)", lines
    return "\n".join(lines[1:]) + "\n"


def rule_line(path: Path, name: str) -> int:
    """The line of the [[cache]]/[[invalidate]] header of the rule called `name`."""
    header = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip() in ("[[cache]]", "[[invalidate]]"):
            header = number
        if re.fullmatch(rf'\s*name\s*=\s*"{re.escape(name)}"\s*', line):
            return header
    raise AssertionError(f"no rule {name} in {path}")


def example_line(name: str) -> str:
    return f"{EXAMPLE}:{rule_line(ROOT / EXAMPLE, name)}"


def example_counts() -> tuple[int, int]:
    data = tomllib.loads((ROOT / EXAMPLE).read_text())
    return len(data["cache"]), len(data["invalidate"])


# ---------------------------------------------------------------- --version, --help

def test_version():
    result = pgshelf("--version")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"pgshelf \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_help_names_both_tools():
    result = pgshelf("--help")
    assert result.returncode == 0, result.stderr
    assert "    pgshelf check FILE\n" in result.stdout
    assert "    pgshelf explain --rules FILE [--param VALUE]... [--null-param]\n" in result.stdout
    assert "--null-param    The next parameter is NULL." in result.stdout
    assert "--param VALUE   The value of the next parameter ($1 first), as text." in result.stdout


def test_help_reads_like_a_man_page():
    text = pgshelf("--help").stdout
    sections = re.findall(r"^([A-Z][A-Z ]+)$", text, flags=re.MULTILINE)
    assert sections == ["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "ENVIRONMENT", "ADMINISTRATION",
                        "SIGNALS", "EXIT STATUS"], sections
    for command in ("SHOW RULES", "SHOW QUERIES", "INVALIDATE RULE", "INVALIDATE KEY", "RELOAD", "/readyz",
                    "/metrics", "SIGHUP"):
        assert command in text, command
    assert max(len(line) for line in text.splitlines()) <= 80


def test_unknown_argument():
    result = pgshelf("--frobnicate")
    assert result.returncode == 2
    assert result.stderr == "pgshelf: unknown argument '--frobnicate' (see pgshelf --help)\n"


# ---------------------------------------------------------------- check: files that are ok

def test_check_example_rules():
    cache, invalidate = example_counts()
    assert cache >= 4 and invalidate >= 9
    result = pgshelf("check", EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{EXAMPLE}: ok, {cache} cache rules, {invalidate} invalidation rules\n"
    assert result.stderr == ""


def test_check_config_naming_a_rules_file(tmp_path: Path):
    rules = tmp_path / "rules.toml"
    shutil.copy(ROOT / EXAMPLE, rules)
    (tmp_path / "pgshelf.toml").write_text(
        '[listen]\naddress = "127.0.0.1:7000"\n\n[log]\nlevel = "debug"\n\n'
        f'[rules]\nfile = "{rules}"\n')
    result = pgshelf("check", "pgshelf.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cache, invalidate = example_counts()
    # The rules file the config names is the one checked and reported.
    assert result.stdout == f"{rules}: ok, {cache} cache rules, {invalidate} invalidation rules\n"


def test_check_config_with_rules_inline(tmp_path: Path):
    (tmp_path / "pgshelf.toml").write_text(
        '[listen]\naddress = "127.0.0.1:7000"\n\n'
        '[[cache]]\nname = "users"\nquery = "SELECT name FROM users WHERE id = $1"\n'
        'key = "user:{id}"\nttl = "30s"\n\n'
        '[[invalidate]]\nname = "user_renamed"\nquery = "UPDATE users SET name = $1 WHERE id = $2"\n'
        'keys = ["user:{id}"]\n')
    result = pgshelf("check", "pgshelf.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pgshelf.toml: ok, 1 cache rules, 1 invalidation rules\n"


# ---------------------------------------------------------------- check: broken files

RULE = '[[cache]]\nname = "a"\nquery = "SELECT x FROM t WHERE id = $1"\nkey = "a:{id}"\nttl = "5s"\n'

BROKEN = {
    "toml_syntax": (
        '[[cache]]\nname = "a"\nquery = "SELECT 1\n',
        3, "Error while parsing string"),
    "unknown_key": (
        RULE + 'colour = "red"\n',
        6, "rule 'a': unknown setting 'colour' in [[cache]]"),
    "bad_ttl": (
        RULE.replace('ttl = "5s"', 'ttl = "5 parsecs"'),
        5, "rule 'a': 'ttl' must be a positive duration such as 30s, 2m or 1h"),
    "zero_ttl": (
        RULE.replace('ttl = "5s"', 'ttl = "0s"'),
        5, "rule 'a': 'ttl' must be a positive duration such as 30s, 2m or 1h"),
    "query_does_not_parse": (
        RULE.replace("SELECT x", "SELEC x"),
        3, "rule 'a': query does not parse: syntax error at or near \"SELEC\" at character 1"),
    "unknown_placeholder": (
        RULE.replace('"a:{id}"', '"a:{id}:{colour}"'),
        4, "rule 'a': key 'a:{id}:{colour}' names {colour}, but the query compares no value "
           "with a column of that name"),
    "parameter_left_out_of_key": (
        RULE.replace("id = $1", "id = $1 AND k = $2"),
        4, "rule 'a': key does not include $2 (k): different values would share one cache entry; "
           "add {$2} or {k}"),
    "duplicate_name": (
        RULE + "\n" + RULE.replace("SELECT x", "SELECT y").replace('"a:{id}"', '"b:{id}"'),
        7, "rule 'a': duplicate rule name"),
    "invalidate_key_of_no_cache_rule": (
        RULE + '\n[[invalidate]]\nname = "w"\nquery = "UPDATE t SET x = 1 WHERE id = $1"\nkeys = ["zzz:{id}"]\n',
        7, "rule 'w': key 'zzz:{id}' has the shape of no [[cache]] rule's key, so it would delete nothing"),
    "bad_setting": (
        '[listen]\naddress = "127.0.0.1:7000"\n\n[proxy]\nworkers = "many"\n',
        5, "proxy.workers: expected a whole number from 0 to 1024"),
    "unknown_section": (
        '[proxy2]\nx = 1\n',
        1, "proxy2: unknown section [proxy2]"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_reports_file_line_and_problem(case: str, tmp_path: Path):
    text, line, problem = BROKEN[case]
    (tmp_path / "broken.toml").write_text(text)
    result = pgshelf("check", "broken.toml", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    messages = result.stderr.splitlines()
    assert any(m.startswith(f"broken.toml:{line}: {problem}") for m in messages), result.stderr
    # Nothing else is wrong with these files.
    assert all(m.startswith(f"broken.toml:{line}: ") for m in messages), result.stderr


@pytest.mark.parametrize("text", [None, '[[cache]]\nname = "a\n'])
def test_check_reports_a_problem_once(text: str | None, tmp_path: Path):
    if text is not None:
        (tmp_path / "rules.toml").write_text(text)
    result = pgshelf("check", "rules.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_check_reports_every_problem_of_a_file(tmp_path: Path):
    text = (RULE.replace('ttl = "5s"', 'ttl = "soon"') + "\n"
            + RULE.replace('name = "a"', 'name = "b"').replace("SELECT x", "SELECT z")
                  .replace('"a:{id}"', '"b:{nope}"'))
    (tmp_path / "rules.toml").write_text(text)
    result = pgshelf("check", "rules.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "rules.toml:5: rule 'a': 'ttl' must be a positive duration such as 30s, 2m or 1h",
        "rules.toml:10: rule 'b': key 'b:{nope}' names {nope}, but the query compares no value "
        "with a column of that name",
    ]


def test_check_missing_file(tmp_path: Path):
    result = pgshelf("check", "nope.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and set(lines) == {"nope.toml: File could not be opened for reading"}, result.stderr


def test_check_config_naming_a_missing_rules_file(tmp_path: Path):
    (tmp_path / "pgshelf.toml").write_text(f'[rules]\nfile = "{tmp_path}/gone.toml"\n')
    result = pgshelf("check", "pgshelf.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"{tmp_path}/gone.toml: File could not be opened for reading\n"


# ---------------------------------------------------------------- explain: reads with a rule

def test_explain_cached_read_with_parameters():
    output = explained(EXAMPLE, VARIABLES_READ, "--param", "42", "--param", "7")
    assert output == (
        f"statement:   {VARIABLES_READ}\n"
        "kind:        SELECT\n"
        "reads:       user_variables\n"
        "writes:      -\n"
        "verdict:     cacheable\n"
        f"rule:        user_variables ({example_line('user_variables')}, ttl 120s)\n"
        "key:         user:42:7:variables\n"
        f"invalidated: variable_upserted ({example_line('variable_upserted')})\n"
        f"             variable_updated ({example_line('variable_updated')})\n"
        "fallback:    writes to user_variables that no rule above covers drop every user_variables entry\n"
        "action:      look up user:42:7:variables in Redis; on a miss, query PostgreSQL and store the result\n")


def test_explain_same_read_with_literals():
    output = explained(EXAMPLE, "select KEY, \"value\" from user_variables /* hi */ where user_id=42 and project_id = 7")
    f = fields(output)
    assert f["statement"] == ['select KEY, "value" from user_variables /* hi */ where user_id=$1 and project_id = $2']
    assert f["rule"] == [f"user_variables ({example_line('user_variables')}, ttl 120s)"]
    assert f["key"] == ["user:42:7:variables"]
    assert f["invalidated"] == [f"variable_upserted ({example_line('variable_upserted')})",
                                f"variable_updated ({example_line('variable_updated')})"]
    assert "suggestion" not in f


def test_explain_multi_line_rule_with_positional_key():
    sql = ("SELECT u.id, u.username, u.balance, u.level, u.referrals, count(t.id) AS transactions, "
           "coalesce(sum(t.amount), 0) AS transactions_total FROM users u "
           "LEFT JOIN transactions t ON t.user_id = u.id AND t.project_id = u.project_id "
           "WHERE u.id = 42 AND u.project_id = 7 GROUP BY u.id, u.project_id")
    f = fields(explained(EXAMPLE, sql))
    assert f["reads"] == ["users, transactions"]
    assert f["rule"] == [f"user_profile ({example_line('user_profile')}, ttl 30s)"]
    assert f["key"] == ["user:42:7:profile"]
    assert f["invalidated"] == [f"balance_changed ({example_line('balance_changed')})",
                                f"transaction_recorded ({example_line('transaction_recorded')})"]
    assert f["fallback"] == ["writes to users, transactions that no rule above covers drop every user_profile entry"]


def test_explain_null_parameter():
    f = fields(explained(EXAMPLE, VARIABLES_READ, "--null-param", "--param", "7"))
    assert f["key"] == ["user:\\N:7:variables"]
    assert f["action"] == ["look up user:\\N:7:variables in Redis; on a miss, query PostgreSQL and store the result"]


def test_explain_missing_parameters_is_not_a_missing_rule():
    f = fields(explained(EXAMPLE, VARIABLES_READ, "--param", "42"))
    assert f["rule"] == ["none: rule 'user_variables' has this shape, but parameters are missing: "
                         "the statement uses $2 and 1 values were given (--param)"]
    assert f["action"] == ["forward to PostgreSQL (no_rule)"]
    assert "suggestion" not in f


def test_explain_database_and_role_in_key(tmp_path: Path):
    (tmp_path / "rules.toml").write_text(
        '[[cache]]\nname = "settings"\nquery = "SELECT v FROM settings WHERE k = $1"\n'
        'key = "{db}:{role}:settings:{k}"\nttl = "10s"\n')
    f = fields(explained("rules.toml", "SELECT v FROM settings WHERE k = 'lang'",
                         "--database", "shop", "--role=bot", cwd=tmp_path))
    assert f["rule"] == ["settings (rules.toml:1, ttl 10s)"]
    assert f["key"] == ["shop:bot:settings:lang"]
    assert f["invalidated"] == ["by no [[invalidate]] rule"]
    # Defaults: postgres for both.
    f = fields(explained("rules.toml", "SELECT v FROM settings WHERE k = 'lang'", cwd=tmp_path))
    assert f["key"] == ["postgres:postgres:settings:lang"]


# ---------------------------------------------------------------- explain: reads without a rule

def test_explain_uncached_read_suggests_a_rule():
    output = explained(EXAMPLE, "SELECT id, username FROM users WHERE id = 42 AND project_id = 7")
    f = fields(output)
    assert f["statement"] == ["SELECT id, username FROM users WHERE id = $1 AND project_id = $2"]
    assert f["verdict"] == ["cacheable"]
    assert f["rule"] == ["none: no rule has this statement's shape"]
    assert f["action"] == ["forward to PostgreSQL (no_rule)"]
    assert suggestion_of(output) == (
        "[[cache]]\n"
        'name = "users_by_id_project_id"\n'
        'query = "SELECT id, username FROM users WHERE id = $1 AND project_id = $2"\n'
        'key = "users_by_id_project_id:{id}:{project_id}"\n'
        'ttl = "60s"\n')


ROUND_TRIPS = {
    "literals": ("SELECT id, username FROM users WHERE id = 42 AND project_id = 7", [],
                 "users_by_id_project_id", "users_by_id_project_id:42:7"),
    "parameters": ("SELECT id FROM users WHERE id = $1 AND level > $2", ["--param", "9", "--param", "3"],
                   "users_by_id_level", "users_by_id_level:9:3"),
    "quotes_limit_offset": ("SELECT * FROM users WHERE username = 'o''brien' ORDER BY id LIMIT 10 OFFSET 20", [],
                            "users_by_username", "users_by_username:o'brien:10:20"),
    "in_list_multi_line": ("SELECT id\n  FROM users\n  WHERE id IN (1, 2, 3) AND project_id = 7", [],
                           "users_by_id_project_id", "users_by_id_project_id:1:2:3:7"),
    "quoted_identifiers": ('SELECT "Weird Col" FROM "My Table" WHERE "Weird Col" = 5', [],
                           "my_table_by_weird_col", "my_table_by_weird_col:5"),
    "no_where": ("SELECT id FROM projects ORDER BY id", [], "projects", "projects"),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_suggestion_round_trip(case: str, tmp_path: Path):
    """Explain, paste the suggestion into a rules file, check it, explain again: a hit."""
    sql, options, name, key = ROUND_TRIPS[case]
    suggestion = suggestion_of(explained(EXAMPLE, sql, *options))
    assert f'name = "{name}"\n' in suggestion and 'ttl = "60s"\n' in suggestion, suggestion
    (tmp_path / "rules.toml").write_text(suggestion)
    check = pgshelf("check", "rules.toml", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout == "rules.toml: ok, 1 cache rules, 0 invalidation rules\n"
    f = fields(explained("rules.toml", sql, *options, cwd=tmp_path))
    assert f["rule"] == [f"{name} (rules.toml:1, ttl 60s)"]
    assert f["key"] == [key]
    assert f["action"] == [f"look up {key} in Redis; on a miss, query PostgreSQL and store the result"]
    assert "suggestion" not in f


def test_suggestion_round_trip_into_the_example_rules(tmp_path: Path):
    """Pasted at the end of the file explain read, next to the rules already there."""
    rules = tmp_path / "rules.toml"
    sql = "SELECT id, username FROM users WHERE id = 42 AND project_id = 7"
    original = (ROOT / EXAMPLE).read_text()
    rules.write_text(original + "\n" + suggestion_of(explained("rules.toml", sql, cwd=EXAMPLE_DIR)))
    cache, invalidate = example_counts()
    check = pgshelf("check", "rules.toml", cwd=tmp_path)
    assert check.stdout == f"rules.toml: ok, {cache + 1} cache rules, {invalidate} invalidation rules\n", check.stderr
    f = fields(explained("rules.toml", sql, cwd=tmp_path))
    assert f["rule"] == [f"users_by_id_project_id (rules.toml:{len(original.splitlines()) + 2}, ttl 60s)"]
    assert f["key"] == ["users_by_id_project_id:42:7"]
    # The rule reads users: UPDATE users without an [[invalidate]] rule for it drops it whole.
    f = fields(explained("rules.toml", "UPDATE users SET username = 'x' WHERE id = 42", cwd=tmp_path))
    assert f["fallback"] == ["user_profile (whole rule: writes users)",
                             "users_by_id_project_id (whole rule: writes users)"]


def test_suggested_name_avoids_the_rules_already_there(tmp_path: Path):
    # "user_variables" is the name derived for this read, and taken.
    sql = "SELECT key, value FROM user_variables"
    suggestion = suggestion_of(explained("rules.toml", sql, cwd=EXAMPLE_DIR))
    assert 'name = "user_variables_2"\n' in suggestion and 'key = "user_variables_2"\n' in suggestion, suggestion
    rules = tmp_path / "rules.toml"
    rules.write_text((ROOT / EXAMPLE).read_text() + "\n" + suggestion)
    check = pgshelf("check", "rules.toml", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert fields(explained("rules.toml", sql, cwd=tmp_path))["key"] == ["user_variables_2"]


def test_suggestion_overlapping_a_rule_with_literals_says_so(tmp_path: Path):
    sql = ("SELECT id, workflow_version_id, state, updated_at FROM workflow_executions "
           "WHERE project_id = 7 AND chat_id = 99 AND status = 'done' AND wait_type = 'text' "
           "ORDER BY updated_at DESC LIMIT 1")
    output = explained(EXAMPLE, sql)
    f = fields(output)
    assert f["rule"] == ["none: rule 'waiting_execution' has this shape, but literals differ: "
                         "the rule has 'waiting' for status, the statement 'done'"]
    suggestion = suggestion_of(output)
    assert suggestion.startswith(
        f"# Overlaps rule 'waiting_execution' ({example_line('waiting_execution')}), which has this shape too:\n"
        "# a statement both match may be served by either; write literals where it does.\n[[cache]]\n"), suggestion
    rules = tmp_path / "rules.toml"
    rules.write_text((ROOT / EXAMPLE).read_text() + "\n" + suggestion)
    assert pgshelf("check", "rules.toml", cwd=tmp_path).returncode == 0
    f = fields(explained("rules.toml", sql, cwd=tmp_path))
    assert f["key"] == ["workflow_executions_by_project_id_chat_id_status_wait_type:7:99:done:text:1"]


@pytest.mark.parametrize("sql, function", [
    ("SELECT id, now() FROM users WHERE id = 42", "now"),
    ("SELECT random()", "random"),
])
def test_explain_volatile_read(sql: str, function: str):
    f = fields(explained(EXAMPLE, sql))
    assert f["verdict"] == [f"volatile_function ({function})"]
    assert f["action"] == ["forward to PostgreSQL (no_rule)"]
    assert "suggestion" not in f and "key" not in f


def test_explain_locking_read_has_no_suggestion():
    f = fields(explained(EXAMPLE, "SELECT id FROM users WHERE id = 1 FOR UPDATE"))
    assert f["verdict"] == ["locking_clause"]
    assert "suggestion" not in f


# ---------------------------------------------------------------- explain: writes

def test_explain_covered_update():
    output = explained(EXAMPLE, "UPDATE users SET balance = balance + $1 WHERE id = $2 AND project_id = $3",
                       "--param", "5", "--param", "42", "--param", "7")
    assert output == (
        "statement:   UPDATE users SET balance = balance + $1 WHERE id = $2 AND project_id = $3\n"
        "kind:        UPDATE\n"
        "reads:       -\n"
        "writes:      users\n"
        "verdict:     not_select (UPDATE)\n"
        f"invalidate:  balance_changed ({example_line('balance_changed')})\n"
        "keys:        user:42:7:profile\n"
        "fallback:    -\n"
        "action:      forward to PostgreSQL; when it completes, invalidate 1 key(s) and 0 whole rule(s)\n")


def test_explain_covered_upsert_with_literals():
    f = fields(explained(EXAMPLE, "INSERT INTO user_variables (user_id, project_id, key, value) "
                                  "VALUES (42, 7, 'lang', 'en') ON CONFLICT (user_id, project_id, key) "
                                  "DO UPDATE SET value = EXCLUDED.value"))
    assert f["invalidate"] == [f"variable_upserted ({example_line('variable_upserted')})"]
    assert f["keys"] == ["user:42:7:variables"]
    assert f["fallback"] == ["-"]


def test_explain_uncovered_update_falls_back_to_the_table():
    f = fields(explained(EXAMPLE, "UPDATE users SET username = 'x' WHERE id = 42"))
    assert f["statement"] == ["UPDATE users SET username = $1 WHERE id = $2"]
    assert f["invalidate"] == ["none: no rule has this statement's shape"]
    assert f["keys"] == ["-"]
    assert f["fallback"] == ["user_profile (whole rule: writes users)"]
    assert f["action"] == ["forward to PostgreSQL; when it completes, invalidate 0 key(s) and 1 whole rule(s)"]
    assert "suggestion" not in f


# ---------------------------------------------------------------- explain: several statements

def test_explain_multi_statement_read():
    f = fields(explained(EXAMPLE, "SELECT key, value FROM user_variables WHERE user_id = 42 AND project_id = 7; SELECT 1"))
    assert f["statement"] == ["SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2; SELECT $3"]
    assert f["statements"] == ["1. SELECT, reads user_variables, writes -", "2. SELECT, reads -, writes -"]
    assert f["verdict"] == ["multi_statement (2 statements)"]
    assert f["action"] == ["forward to PostgreSQL (multi_statement)"]
    assert "rule" not in f and "suggestion" not in f


def test_explain_multi_statement_writes():
    f = fields(explained(EXAMPLE, "UPDATE users SET username = 'x' WHERE id = 42; "
                                  "DELETE FROM user_variables WHERE user_id = 1"))
    assert f["statements"] == ["1. UPDATE, reads -, writes users", "2. DELETE, reads -, writes user_variables"]
    assert f["fallback"] == ["user_profile (whole rule: writes users)",
                             "user_variables (whole rule: writes user_variables)"]
    assert f["action"] == ["forward to PostgreSQL; when it completes, invalidate 0 key(s) and 2 whole rule(s)"]


# ---------------------------------------------------------------- explain: errors

def test_explain_sql_syntax_error():
    sql = "SELECT key FROM user_variables WHERE user_id = 1 AND"
    result = explain(EXAMPLE, sql)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"pgshelf explain: SQL does not parse: syntax error at end of input at character {len(sql) + 1}\n"


def test_explain_sql_syntax_error_position():
    result = explain(EXAMPLE, "SELECT id FROM users WHERE id = = 1")
    assert result.returncode == 2
    assert result.stderr == 'pgshelf explain: SQL does not parse: syntax error at or near "=" at character 33\n'


@pytest.mark.parametrize("args, problem", [
    (["SELECT 1"], "--rules FILE is required"),
    (["--rules", EXAMPLE, "--frobnicate", "SELECT 1"], "unknown or incomplete option '--frobnicate'"),
    (["--rules", EXAMPLE], "the SQL statement is missing"),
    (["--rules", EXAMPLE, "SELECT", "1"], "give the SQL as one argument (quote it)"),
    (["--rules", EXAMPLE, "SELECT 1", "--param"], "unknown or incomplete option '--param'"),
])
def test_explain_usage_errors(args: list[str], problem: str):
    result = pgshelf("explain", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"pgshelf explain: {problem}\n{USAGE}"


def test_explain_with_broken_rules(tmp_path: Path):
    (tmp_path / "rules.toml").write_text(RULE.replace('"a:{id}"', '"a:{id}:{colour}"'))
    result = explain("rules.toml", "SELECT x FROM t WHERE id = 1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == ("rules.toml:4: rule 'a': key 'a:{id}:{colour}' names {colour}, but the query "
                             "compares no value with a column of that name\n")


def test_explain_with_missing_rules_file(tmp_path: Path):
    result = explain("gone.toml", "SELECT 1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "gone.toml: File could not be opened for reading\n"
