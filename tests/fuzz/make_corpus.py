#!/usr/bin/python3
"""Writes the fuzz seed corpus, one small file each.

corpus/frontend/*:     realistic PostgreSQL v3 message sequences a client
                       sends (startup packet, then typed frames).
corpus/backend/*:      the same for a server (typed frames).
corpus/rules/*:        rules files (TOML) that load and that do not: the
                       repository's examples and the unit tests' cases.
corpus/key_template/*: a key template, then the database, the role and slot
                       values, one per line (see fuzz_key_template.cpp).
Wire format: https://www.postgresql.org/docs/15/protocol-message-formats.html

Usage: tests/fuzz/make_corpus.py [output-dir]   (default: tests/fuzz/corpus)
Deterministic: re-running produces identical files.
"""
import os
import struct
import sys

PROTOCOL_V3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


def i16(v):
    return struct.pack("!h", v)


def u16(v):
    return struct.pack("!H", v)


def i32(v):
    return struct.pack("!i", v)


def u32(v):
    return struct.pack("!I", v)


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def frame(t, body=b""):
    return t.encode() + i32(len(body) + 4) + body


def value(v):
    return i32(-1) if v is None else i32(len(v)) + v


# ---------------------------------------------------------------- frontend

def startup(params, version=PROTOCOL_V3):
    body = i32(version) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return i32(len(body) + 4) + body


def query(sql):
    return frame("Q", cstr(sql))


def parse(name, sql, types=()):
    return frame("P", cstr(name) + cstr(sql) + u16(len(types)) + b"".join(u32(t) for t in types))


def bind(portal, stmt, fmts=(), params=(), rfmts=()):
    return frame("B", cstr(portal) + cstr(stmt) + u16(len(fmts)) + b"".join(i16(f) for f in fmts) +
                 u16(len(params)) + b"".join(value(p) for p in params) +
                 u16(len(rfmts)) + b"".join(i16(f) for f in rfmts))


def describe(kind, name):
    return frame("D", kind.encode() + cstr(name))


def execute(portal, max_rows=0):
    return frame("E", cstr(portal) + i32(max_rows))


def close(kind, name):
    return frame("C", kind.encode() + cstr(name))


SYNC = frame("S")
FLUSH = frame("H")
TERMINATE = frame("X")
USER = [("user", "app"), ("database", "shop")]


def frontend_corpus():
    c = {}
    c["startup_simple_query"] = startup(USER) + query("SELECT 1") + TERMINATE
    c["startup_many_params"] = startup(USER + [("application_name", "psql"), ("client_encoding", "UTF8"),
                                               ("DateStyle", "ISO, MDY"), ("options", "-c search_path=app"),
                                               ("replication", "false")])
    c["startup_v3_2_pq_option"] = startup([("user", "bob"), ("_pq_.compression", "on")], 196610)
    c["startup_no_params"] = startup([])
    c["ssl_request"] = i32(8) + i32(SSL_REQUEST)
    c["gssenc_request"] = i32(8) + i32(GSSENC_REQUEST)
    c["cancel_request"] = i32(16) + i32(CANCEL_REQUEST) + i32(4242) + i32(-559038737)
    c["extended_unnamed"] = (startup(USER) + parse("", "SELECT * FROM user_variables WHERE user_id = $1 AND project_id = $2",
                                                   (23, 23)) +
                             bind("", "", (0,), (b"42", b"7"), ()) + describe("P", "") + execute("") + SYNC)
    c["extended_named"] = (startup(USER) + parse("s1", "SELECT $1::text", (25,)) + describe("S", "s1") + SYNC +
                           bind("p1", "s1", (), (b"hello",), (1,)) + execute("p1", 10) + execute("p1", 10) +
                           close("P", "p1") + close("S", "s1") + SYNC)
    c["extended_pipeline"] = (parse("", "UPDATE t SET v = $1 WHERE id = $2") +
                              b"".join(bind("", "", (1, 0), (i32(n), str(n).encode()), ()) + execute("")
                                       for n in range(4)) + SYNC)
    c["bind_binary_nulls"] = bind("", "st", (1,), (None, b"", b"\x00\x00\x00\x2a"), (1, 0, 1)) + FLUSH
    c["bind_many_formats"] = bind("p", "s", tuple([0, 1] * 8), tuple(b"%d" % i for i in range(16)), (0,))
    c["parse_many_types"] = parse("ins", "INSERT INTO t VALUES ($1,$2,$3,$4,$5)", (20, 21, 23, 1700, 2950)) + SYNC
    c["multi_statement_query"] = query("BEGIN; UPDATE users SET balance = balance - 1 WHERE id = 42; COMMIT")
    c["listen_notify"] = query("LISTEN jobs") + query("NOTIFY jobs, 'hi'")
    c["empty_query"] = query("")
    c["password_cleartext"] = startup(USER) + frame("p", cstr("secret"))
    c["password_md5"] = startup(USER) + frame("p", cstr("md5" + "0123456789abcdef" * 2))
    c["sasl_exchange"] = (startup(USER) +
                          frame("p", cstr("SCRAM-SHA-256") + value(b"n,,n=,r=rOprNGfwEbeRWgbNEkqO")) +
                          frame("p", b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
    c["sasl_no_initial_response"] = frame("p", cstr("SCRAM-SHA-256") + i32(-1))
    c["copy_in"] = (query("COPY t FROM STDIN") + frame("d", b"1\tfoo\n") + frame("d", b"2\tbar\n") +
                    frame("c"))
    c["copy_fail"] = query("COPY t FROM STDIN") + frame("d", b"1\t") + frame("f", cstr("client aborted"))
    c["function_call"] = frame("F", u32(1598) + u16(1) + i16(0) + u16(2) + value(b"abc") + value(None) + i16(1))
    c["unknown_type"] = frame("z", b"opaque") + query("SELECT 2")
    c["bad_frame_then_good"] = startup(USER) + frame("D", b"Xbad\0") + query("SELECT 3") + SYNC
    c["terminate"] = TERMINATE
    c["flush_sync"] = FLUSH + SYNC + FLUSH
    c["describe_statement"] = describe("S", "stmt") + describe("P", "portal") + SYNC
    return c


# ---------------------------------------------------------------- backend

def auth(code, rest=b""):
    return frame("R", i32(code) + rest)


def param_status(k, v):
    return frame("S", cstr(k) + cstr(v))


def key_data(pid, key):
    return frame("K", i32(pid) + i32(key))


def ready(status="I"):
    return frame("Z", status.encode())


def field(name, table=0, attr=0, typ=25, size=-1, mod=-1, fmt=0):
    return cstr(name) + u32(table) + i16(attr) + u32(typ) + i16(size) + i32(mod) + i16(fmt)


def row_description(*fields):
    return frame("T", u16(len(fields)) + b"".join(fields))


def data_row(*vals):
    return frame("D", u16(len(vals)) + b"".join(value(v) for v in vals))


def complete(tag):
    return frame("C", cstr(tag))


def notice_fields(fields):
    return b"".join(k.encode() + cstr(v) for k, v in fields) + b"\0"


def error(fields):
    return frame("E", notice_fields(fields))


def notice(fields):
    return frame("N", notice_fields(fields))


def copy_response(t, fmt, cols):
    return frame(t, bytes([fmt]) + u16(len(cols)) + b"".join(i16(c) for c in cols))


STARTUP_TAIL = (param_status("server_version", "15.4") + param_status("client_encoding", "UTF8") +
                param_status("DateStyle", "ISO, MDY") + param_status("TimeZone", "UTC") +
                param_status("integer_datetimes", "on") + key_data(31337, 123456789) + ready("I"))


def backend_corpus():
    c = {}
    c["auth_trust"] = auth(0) + STARTUP_TAIL
    c["auth_cleartext"] = auth(3)
    c["auth_md5"] = auth(5, b"\x9a\x01\xff\x10") + auth(0) + STARTUP_TAIL
    c["auth_scram"] = (auth(10, cstr("SCRAM-SHA-256") + cstr("SCRAM-SHA-256-PLUS") + b"\0") +
                       auth(11, b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096") +
                       auth(12, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") + auth(0) + STARTUP_TAIL)
    c["auth_gss"] = auth(7) + auth(8, b"gss-token") + auth(9)
    c["auth_unknown_code"] = auth(99, b"??")
    c["simple_query_rows"] = (row_description(field("key", 16384, 1, 25), field("value", 16384, 2, 25)) +
                              data_row(b"balance", b"100") + data_row(b"level", b"3") + data_row(b"note", None) +
                              complete("SELECT 3") + ready("I"))
    c["simple_query_empty_result"] = row_description(field("id", 1, 1, 23, 4)) + complete("SELECT 0") + ready("T")
    c["error_failed_tx"] = (error([("S", "ERROR"), ("V", "ERROR"), ("C", "42P01"),
                                   ("M", 'relation "nope" does not exist'), ("P", "15"),
                                   ("F", "parse_relation.c"), ("L", "1392"), ("R", "parserOpenTable")]) +
                            ready("E"))
    c["notice"] = notice([("S", "NOTICE"), ("V", "NOTICE"), ("C", "00000"), ("M", "table does not exist, skipping")]) + \
        complete("DROP TABLE") + ready("I")
    c["extended_result"] = (frame("1") + frame("2") + frame("t", u16(2) + u32(23) + u32(25)) +
                            row_description(field("n", 0, 0, 23, 4, -1, 1)) + data_row(i32(42)) +
                            complete("SELECT 1") + ready("I"))
    c["extended_no_data"] = frame("1") + frame("t", u16(0)) + frame("n") + frame("2") + complete("UPDATE 1") + frame("3") + ready("T")
    c["portal_suspended"] = frame("2") + data_row(b"1") + data_row(b"2") + frame("s") + data_row(b"3") + complete("SELECT 1") + ready("I")
    c["extended_error_skip"] = frame("1") + error([("S", "ERROR"), ("C", "22P02"), ("M", "invalid input syntax")]) + ready("I")
    c["copy_out"] = (copy_response("H", 0, (0, 0)) + frame("d", b"1\tfoo\n") + frame("d", b"2\tbar\n") +
                     frame("c") + complete("COPY 2") + ready("I"))
    c["copy_in"] = copy_response("G", 1, (1, 1, 1))
    c["copy_both"] = copy_response("W", 0, ()) + frame("d", b"w\0\0\0\0")
    c["notification"] = frame("A", i32(4242) + cstr("jobs") + cstr('{"id": 1}')) + ready("I")
    c["function_call_response"] = frame("V", value(b"result")) + frame("V", value(None)) + ready("I")
    c["negotiate_protocol_version"] = frame("v", i32(0) + i32(1) + cstr("_pq_.compression")) + auth(0)
    c["empty_query"] = frame("I") + ready("I")
    c["multi_statement"] = (complete("BEGIN") + complete("UPDATE 1") + complete("COMMIT") +
                            param_status("is_superuser", "off") + ready("I"))
    c["wide_row"] = (row_description(*[field("c%d" % i, 16384, i, 23 if i % 2 else 25) for i in range(12)]) +
                     data_row(*[None if i % 3 == 0 else b"%d" % i for i in range(12)]) + complete("SELECT 1"))
    c["unknown_type"] = frame("Y", b"future") + ready("I")
    c["bad_frame_then_good"] = frame("Z", b"II") + ready("I")
    return c


# ---------------------------------------------------------------- rules

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def repo_file(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def cache_rule(name, query, key, ttl='"60s"', extra=""):
    return ('[[cache]]\nname  = "%s"\nquery = "%s"\nkey   = "%s"\nttl   = %s\n%s\n' %
            (name, query, key, ttl, extra)).encode()


def invalidate_rule(name, query, keys):
    return ('[[invalidate]]\nname  = "%s"\nquery = "%s"\nkeys  = [%s]\n\n' %
            (name, query, ", ".join('"%s"' % k for k in keys))).encode()


USER_VARIABLES = cache_rule("user_variables",
                            "SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2",
                            "user:{user_id}:{project_id}:variables", '"120s"')


def rules_corpus():
    c = {}
    # The repository's own files.
    c["telegram_bot"] = repo_file("examples/telegram-bot/rules.toml")
    c["deploy_rules_comments_only"] = repo_file("deploy/rules.toml")
    c["deploy_settings_no_rules"] = repo_file("deploy/pgshelf.toml")
    c["empty"] = b""
    # Files that load.
    c["cache_and_invalidate"] = (
        USER_VARIABLES +
        cache_rule("waiting_execution",
                   "SELECT id, state FROM workflow_executions WHERE project_id = $1 AND chat_id = $2 "
                   "AND status = 'waiting' AND wait_type = $3",
                   "workflow:execution:waiting:{$1}:{$2}:{wait_type}", '"5m"') +
        invalidate_rule("variables_changed",
                        "UPDATE user_variables SET value = $1 WHERE user_id = $2 AND project_id = $3 AND key = $4",
                        ["user:{user_id}:{project_id}:variables"]))
    c["db_role_integer_ttl"] = cache_rule("per_role", "SELECT * FROM t WHERE id = $1", "{db}:{role}:t:{$1}", "10")
    c["all_settings"] = cache_rule("clock", "SELECT now(), name FROM app.settings WHERE id = $1", "clock:{id}",
                                   '"1s"', 'allow_volatile = true\nshare_across_roles = true\n'
                                   'max_entry_size = "64kB"\n')
    c["literals_null_and_shared_parameter"] = cache_rule(
        "open_orders", "SELECT id FROM orders WHERE (buyer = $1 OR seller = $1) AND status = 'open' "
        "AND deleted_at IS NULL AND region = 3 LIMIT 10", "orders:{$1}:open", '"2m"',
        "max_entry_size = 4096\n")
    c["literal_and_parameter_rules"] = (
        cache_rule("fixed_project", "SELECT * FROM items WHERE project_id = 7 AND id = $1", "items:7:{id}") +
        cache_rule("any_project", "SELECT * FROM items WHERE project_id = $1 AND id = $2",
                   "items:{project_id}:{id}") +
        invalidate_rule("item_deleted", "DELETE FROM items WHERE project_id = $1 AND id = $2",
                        ["items:{project_id}:{id}", "items:{$1}:{$2}"]))
    c["multiline_and_literal_strings"] = (
        b"[[cache]]\nname = 'report'\nquery = '''\nSELECT r.id, sum(l.amount)\n  FROM reports r\n"
        b"  JOIN lines l ON l.report_id = r.id\n WHERE r.owner = $1\n GROUP BY r.id\n'''\n"
        b"key = 'report:{owner}:{{sum}}'\nttl = \"1h\"\n")
    c["inline_tables"] = (
        b'cache = [{name = "a", query = "SELECT a FROM t WHERE id = $1", key = "a:{$1}", ttl = "1s"}]\n'
        b'invalidate = [{name = "b", query = "UPDATE t SET a = 1 WHERE id = $1", keys = ["a:{id}"]}]\n')
    c["with_proxy_settings"] = (b'[listen]\naddress = "127.0.0.1:6432"\n\n[rules]\nfile = "rules.toml"\n\n' +
                                USER_VARIABLES)
    c["insert_upsert_invalidate"] = (
        USER_VARIABLES +
        invalidate_rule("variable_upserted",
                        "INSERT INTO user_variables (user_id, project_id, key, value) VALUES ($1, $2, $3, $4) "
                        "ON CONFLICT (user_id, project_id, key) DO UPDATE SET value = EXCLUDED.value",
                        ["user:{user_id}:{project_id}:variables"]))
    # Files with errors: the cases of tests/unit/cache_rules/rules_test.cpp and a few more.
    c["error_sql_syntax"] = cache_rule("a", "SELEC * FROM t", "k", '"1s"')
    c["error_not_a_read"] = cache_rule("a", "DELETE FROM t", "k", '"1s"')
    c["error_for_update"] = cache_rule("a", "SELECT * FROM t WHERE id = $1 FOR UPDATE", "{$1}", '"1s"')
    c["error_volatile"] = cache_rule("a", "SELECT now()", "k", '"1s"')
    c["error_unknown_parameter"] = cache_rule("a", "SELECT * FROM t WHERE id = $1", "t:{$2}", '"1s"')
    c["error_unknown_column"] = cache_rule("a", "SELECT * FROM t WHERE id = $1", "t:{user_id}", '"1s"')
    c["error_ambiguous_column"] = cache_rule("a", "SELECT * FROM t WHERE id = $1 OR id = $2", "t:{id}", '"1s"')
    c["error_parameter_missing_from_key"] = cache_rule("a", "SELECT * FROM t WHERE id = $1 AND p = $2", "t:{id}",
                                                       '"1s"')
    c["error_bad_ttl"] = cache_rule("a", "SELECT 1", "k", '"soon"')
    c["error_negative_ttl"] = cache_rule("a", "SELECT 1", "k", "-5")
    c["error_bad_max_entry_size"] = cache_rule("a", "SELECT 1", "k", '"1s"', 'max_entry_size = "lots"\n')
    c["error_missing_ttl"] = b'[[cache]]\nname = "a"\nquery = "SELECT 1"\nkey = "k"\n'
    c["error_missing_query_and_key"] = b'[[cache]]\nname = "a"\nttl = 1\n[[invalidate]]\nname = "b"\n'
    c["error_bad_name"] = cache_rule("a b", "SELECT 1", "k", "1")
    c["error_unknown_setting"] = b'[[cache]]\nname = "a"\nquery = "SELECT 1"\nkey = "k"\nttl = 1\ntll = 2\n'
    c["error_duplicate"] = cache_rule("a", "SELECT 1", "k", "1") + cache_rule("a", "SELECT 2", "j", "1")
    c["error_same_query"] = cache_rule("a", "SELECT 1", "k", "1") + cache_rule("b", "select  1", "j", "1")
    c["error_invalidate_read"] = invalidate_rule("i", "SELECT 1", ["k"])
    c["error_invalidate_orphan_key"] = (cache_rule("a", "SELECT 1", "k", "1") +
                                        invalidate_rule("i", "DELETE FROM t WHERE id = $1", ["other:{id}"]))
    c["error_invalidate_keys_not_strings"] = b'[[invalidate]]\nname = "i"\nquery = "DELETE FROM t"\nkeys = [1, []]\n'
    c["error_bad_template"] = cache_rule("a", "SELECT 1", "k{", "1")
    c["error_toml_syntax"] = b'[[cache]]\nname = "a\nquery = 1\n'
    c["error_not_arrays_of_tables"] = b'cache = 1\ninvalidate = [1, "x"]\n'
    c["error_cache_table"] = b'[cache]\nname = "a"\n'
    c["error_two_statements"] = cache_rule("a", "SELECT 1; SELECT 2", "k", "1")
    return c


# ---------------------------------------------------------------- key templates

def key_template_case(template, database="shop", role="app", values=()):
    return "\n".join([template, database, role] + list(values)).encode()


def key_template_corpus():
    c = {}
    c["columns"] = key_template_case("user:{user_id}:{project_id}:variables", values=["42", "7"])
    c["parameters_and_column"] = key_template_case("workflow:execution:waiting:{$1}:{$2}:{wait_type}",
                                                   values=["3", "99", "message"])
    c["db_role"] = key_template_case("{db}:{role}:t:{$1}", "bot", "app", ["5"])
    c["escaped_braces"] = key_template_case("a{{b}}c:{$1}", values=["x"])
    c["values_to_escape"] = key_template_case("k:{$1}:{$2}:{$3}:{$4}",
                                              values=["a:b{c}%d\\e f", "\\N", "", "\x01\x7f\u00fc"])
    c["same_column_twice"] = key_template_case("{id}-{id}-{$1}", values=["1", "2"])
    c["large_parameter"] = key_template_case("p:{$2147483647}:{$10}", values=["a", "b", "c"])
    c["text_only"] = key_template_case("static:key")
    c["no_values"] = key_template_case("{$3}{col}", "", "")
    c["template_only"] = b"user:{$1}"
    c["error_unterminated"] = key_template_case("a{b")
    c["error_unmatched_close"] = key_template_case("a}b")
    c["error_parameter_zero"] = key_template_case("{$0}")
    c["error_parameter_not_number"] = key_template_case("{$x}")
    c["error_parameter_overflow"] = key_template_case("{$99999999999}")
    c["error_bad_column"] = key_template_case("{a-b}")
    c["error_empty_placeholder"] = key_template_case("x{}y")
    c["error_empty"] = key_template_case("")
    return c


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    for direction, corpus in (("frontend", frontend_corpus()), ("backend", backend_corpus()),
                              ("rules", rules_corpus()), ("key_template", key_template_corpus())):
        d = os.path.join(out_dir, direction)
        os.makedirs(d, exist_ok=True)
        for name, data in sorted(corpus.items()):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print("%s: %d files" % (d, len(corpus)))


if __name__ == "__main__":
    main()
