// libpq client for the integration tests: exercises the extended protocol the
// way C and C++ applications do and prints every result in a canonical,
// deterministic text form, so its output directly from PostgreSQL and through
// pgshelf can be compared line by line (test_libpq.py).
//
// Usage: libpq_client CONNINFO
// Exit status: 0 when every step behaved as libpq documents, 1 otherwise
// (the reason goes to stderr).
//
// Covered: PQsendQueryParams with text and binary parameters and results
// (int4, int8, text, bytea), PQsendPrepare / PQsendQueryPrepared /
// PQsendDescribePrepared / PQsendDescribePortal, single-row mode, pipeline
// mode (many queries, an error in the middle -> PGRES_PIPELINE_ABORTED until
// the sync, then recovery; PQsendFlushRequest answered before any sync),
// COPY FROM STDIN / TO STDOUT, PQfn (the FunctionCall message), notices,
// error fields, transaction status and reported parameters.
// Protocol reference: https://www.postgresql.org/docs/15/protocol-flow.html

#include <arpa/inet.h>
#include <libpq-fe.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

using ConnPtr = std::unique_ptr<PGconn, decltype(&PQfinish)>;
using ResultPtr = std::unique_ptr<PGresult, decltype(&PQclear)>;

constexpr Oid kInt4 = 23;
constexpr Oid kInt8 = 20;
constexpr Oid kText = 25;
constexpr Oid kBytea = 17;
constexpr Oid kInt4plOid = 177;  // int4pl(int4, int4), fixed in pg_proc.dat

[[noreturn]] void fail(const std::string& what, PGconn* conn = nullptr) {
    std::fprintf(stderr, "libpq_client: %s%s%s\n", what.c_str(), conn ? ": " : "", conn ? PQerrorMessage(conn) : "");
    std::exit(1);
}

void expect(bool condition, const std::string& what, PGconn* conn = nullptr) {
    if (!condition) {
        fail(what, conn);
    }
}

ResultPtr next_result(PGconn* conn) { return ResultPtr(PQgetResult(conn), &PQclear); }

std::string hex(const char* data, int len) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (int i = 0; i < len; ++i) {
        const auto byte = static_cast<unsigned char>(data[i]);
        out += digits[byte >> 4];
        out += digits[byte & 0xF];
    }
    return out;
}

std::uint32_t read_be32(const char* p) {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return ntohl(v);
}

std::int64_t read_be64(const char* p) {
    const std::uint64_t hi = read_be32(p);
    const std::uint64_t lo = read_be32(p + 4);
    return static_cast<std::int64_t>((hi << 32) | lo);
}

std::string be32(std::int32_t v) {
    const std::uint32_t n = htonl(static_cast<std::uint32_t>(v));
    return std::string(reinterpret_cast<const char*>(&n), 4);
}

std::string be64(std::int64_t v) {
    const auto u = static_cast<std::uint64_t>(v);
    return be32(static_cast<std::int32_t>(u >> 32)) + be32(static_cast<std::int32_t>(u & 0xFFFFFFFFu));
}

// One value in canonical form: NULL, or decoded by type for binary results.
std::string value_text(const PGresult* res, int row, int col) {
    if (PQgetisnull(res, row, col)) {
        return "NULL";
    }
    const char* v = PQgetvalue(res, row, col);
    const int len = PQgetlength(res, row, col);
    if (PQfformat(res, col) == 0) {
        return std::string(v, len);
    }
    switch (PQftype(res, col)) {
    case kInt4:
        return std::to_string(static_cast<std::int32_t>(read_be32(v)));
    case kInt8:
        return std::to_string(read_be64(v));
    case kText:
        return std::string(v, len);
    default:
        return "\\x" + hex(v, len);
    }
}

std::string status_name(const PGresult* res) {
    return res ? PQresStatus(PQresultStatus(res)) : "(null)";
}

// Prints a result: status, columns (name:type:format), rows, command tag or SQLSTATE.
void print_result(const std::string& label, const PGresult* res) {
    std::printf("%s: %s", label.c_str(), status_name(res).c_str());
    if (res == nullptr) {
        std::printf("\n");
        return;
    }
    const ExecStatusType status = PQresultStatus(res);
    if (status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR) {
        const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        const char* message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        std::printf(" sqlstate=%s message=%s\n", state ? state : "?", message ? message : "?");
        return;
    }
    if (PQnfields(res) > 0) {
        std::printf(" columns=");
        for (int c = 0; c < PQnfields(res); ++c) {
            std::printf("%s%s:%u:%d", c ? "," : "", PQfname(res, c), PQftype(res, c), PQfformat(res, c));
        }
    }
    const char* tag = PQcmdStatus(const_cast<PGresult*>(res));
    std::printf(" tag=%s rows=%d\n", tag && *tag ? tag : "-", PQntuples(res));
    for (int r = 0; r < PQntuples(res); ++r) {
        std::printf("  row");
        for (int c = 0; c < PQnfields(res); ++c) {
            std::printf(" %s", value_text(res, r, c).c_str());
        }
        std::printf("\n");
    }
}

// Reads and prints every result of the current command until PQgetResult returns NULL.
void drain(PGconn* conn, const std::string& label) {
    int n = 0;
    while (ResultPtr res = next_result(conn)) {
        print_result(label + "#" + std::to_string(n++), res.get());
    }
}

void exec_ok(PGconn* conn, const char* sql) {
    ResultPtr res(PQexec(conn, sql), &PQclear);
    const ExecStatusType status = PQresultStatus(res.get());
    expect(status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK, std::string("exec ") + sql, conn);
}

void text_and_binary_params(PGconn* conn) {
    const char* text_values[] = {"41", "h\xC3\xA9llo", nullptr};
    expect(PQsendQueryParams(conn, "SELECT $1::int4 + 1 AS a, $2::text || '!' AS b, $3::text IS NULL AS c", 3,
                             nullptr, text_values, nullptr, nullptr, 0),
           "send text params", conn);
    drain(conn, "text_params");

    const std::string i4 = be32(-123456), i8 = be64(-9000000000000000001LL), txt = "bin\xE2\x82\xAC";
    const std::string bytes("\x00\x01\xFE\xFF", 4);
    const Oid types[] = {kInt4, kInt8, kText, kBytea, kInt4};
    const char* values[] = {i4.data(), i8.data(), txt.data(), bytes.data(), nullptr};
    const int lengths[] = {4, 8, static_cast<int>(txt.size()), 4, 0};
    const int formats[] = {1, 1, 1, 1, 1};
    expect(PQsendQueryParams(conn, "SELECT $1 AS i4, $2 AS i8, $3 AS t, $4 AS b, $5 AS n, $1 * 2 AS doubled, "
                                   "length($4) AS blen",
                             5, types, values, lengths, formats, 1),
           "send binary params", conn);
    drain(conn, "binary_params");

    // Mixed: text parameters, binary results of several types.
    expect(PQsendQueryParams(conn, "SELECT g::int4, (g * 10000000000)::int8, 'row ' || g, "
                                   "decode(repeat('ab', g), 'hex') FROM generate_series(1, 3) g",
                             0, nullptr, nullptr, nullptr, nullptr, 1),
           "send binary results", conn);
    drain(conn, "binary_results");

    const char* bad[] = {"not-an-int"};
    expect(PQsendQueryParams(conn, "SELECT $1::int4", 1, nullptr, bad, nullptr, nullptr, 0), "send bad", conn);
    drain(conn, "bad_param");
}

void prepared_statements(PGconn* conn) {
    const Oid types[] = {kInt4, kText};
    expect(PQsendPrepare(conn, "named_stmt", "SELECT $1 * 3 AS tripled, upper($2) AS shout", 2, types),
           "send prepare", conn);
    drain(conn, "prepare");
    for (int i = 0; i < 3; ++i) {
        const std::string n = std::to_string(i);
        const char* values[] = {n.c_str(), "abc"};
        expect(PQsendQueryPrepared(conn, "named_stmt", 2, values, nullptr, nullptr, i % 2), "send prepared", conn);
        drain(conn, "execute_prepared_" + n);
    }
    expect(PQsendDescribePrepared(conn, "named_stmt"), "send describe", conn);
    ResultPtr desc = next_result(conn);
    std::printf("describe_prepared: %s nparams=%d", status_name(desc.get()).c_str(), PQnparams(desc.get()));
    for (int i = 0; i < PQnparams(desc.get()); ++i) {
        std::printf(" param%d=%u", i, PQparamtype(desc.get(), i));
    }
    for (int c = 0; c < PQnfields(desc.get()); ++c) {
        std::printf(" field=%s:%u", PQfname(desc.get(), c), PQftype(desc.get(), c));
    }
    std::printf("\n");
    expect(next_result(conn) == nullptr, "describe has one result");

    expect(PQsendPrepare(conn, "named_stmt", "SELECT 1", 0, nullptr), "send duplicate prepare", conn);
    drain(conn, "duplicate_prepare");
    expect(PQsendDescribePrepared(conn, "no_such_stmt"), "send describe missing", conn);
    drain(conn, "describe_missing");

    exec_ok(conn, "BEGIN");
    exec_ok(conn, "DECLARE portal_c CURSOR FOR SELECT 1::int8 AS one, 'two'::text AS two");
    expect(PQsendDescribePortal(conn, "portal_c"), "send describe portal", conn);
    drain(conn, "describe_portal");
    exec_ok(conn, "COMMIT");
}

void single_row_mode(PGconn* conn) {
    expect(PQsendQuery(conn, "SELECT g, repeat('x', g) FROM generate_series(1, 5) g"), "send single-row", conn);
    expect(PQsetSingleRowMode(conn) == 1, "single-row mode", conn);
    drain(conn, "single_row");
    // An error after some rows were delivered.
    expect(PQsendQuery(conn, "SELECT 10 / (3 - g) FROM generate_series(1, 5) g"), "send single-row error", conn);
    expect(PQsetSingleRowMode(conn) == 1, "single-row mode", conn);
    drain(conn, "single_row_error");
}

void pipeline_mode(PGconn* conn) {
    expect(PQenterPipelineMode(conn) == 1, "enter pipeline mode", conn);
    constexpr int kQueries = 30;
    constexpr int kFailing = 12;
    for (int i = 0; i < kQueries; ++i) {
        const std::string n = std::to_string(i);
        const char* values[] = {n.c_str()};
        const char* sql = i == kFailing ? "SELECT 1 / ($1::int4 - $1::int4)" : "SELECT $1::int4 * 2";
        expect(PQsendQueryParams(conn, sql, 1, nullptr, values, nullptr, nullptr, i % 2), "pipeline send", conn);
    }
    expect(PQpipelineSync(conn) == 1, "pipeline sync", conn);
    const char* after_values[] = {"7"};
    expect(PQsendQueryParams(conn, "SELECT $1::int4 + 100", 1, nullptr, after_values, nullptr, nullptr, 0),
           "pipeline send after sync", conn);
    expect(PQpipelineSync(conn) == 1, "pipeline sync 2", conn);

    for (int i = 0; i < kQueries; ++i) {
        ResultPtr res = next_result(conn);
        print_result("pipeline_" + std::to_string(i), res.get());
        expect(next_result(conn) == nullptr, "one result per pipelined query");
    }
    ResultPtr sync = next_result(conn);
    print_result("pipeline_sync", sync.get());
    ResultPtr after = next_result(conn);
    print_result("pipeline_after", after.get());
    expect(next_result(conn) == nullptr, "end of pipelined query");
    ResultPtr sync2 = next_result(conn);
    print_result("pipeline_sync2", sync2.get());
    std::printf("pipeline_status: %d\n", PQpipelineStatus(conn));

    // A flush request makes the server answer before any sync.
    const char* v[] = {"5"};
    expect(PQsendQueryParams(conn, "SELECT $1::int4 - 1", 1, nullptr, v, nullptr, nullptr, 0), "flush send", conn);
    expect(PQsendFlushRequest(conn) == 1, "send flush request", conn);
    expect(PQflush(conn) == 0, "flush", conn);
    ResultPtr flushed = next_result(conn);
    print_result("flush_request", flushed.get());
    expect(next_result(conn) == nullptr, "end of flushed query");
    expect(PQpipelineSync(conn) == 1, "pipeline sync 3", conn);
    ResultPtr sync3 = next_result(conn);
    print_result("pipeline_sync3", sync3.get());
    expect(PQexitPipelineMode(conn) == 1, "exit pipeline mode", conn);
}

void copy_in_out(PGconn* conn) {
    exec_ok(conn, "CREATE TEMP TABLE copy_t (id int4, name text)");
    ResultPtr res(PQexec(conn, "COPY copy_t FROM STDIN"), &PQclear);
    expect(PQresultStatus(res.get()) == PGRES_COPY_IN, "copy in", conn);
    for (int i = 0; i < 1000; ++i) {
        const std::string line = std::to_string(i) + "\tname " + std::to_string(i) + "\n";
        expect(PQputCopyData(conn, line.data(), static_cast<int>(line.size())) == 1, "put copy data", conn);
    }
    expect(PQputCopyEnd(conn, nullptr) == 1, "copy end", conn);
    drain(conn, "copy_in");

    res.reset(PQexec(conn, "COPY (SELECT * FROM copy_t WHERE id % 250 = 0 ORDER BY id) TO STDOUT"));
    expect(PQresultStatus(res.get()) == PGRES_COPY_OUT, "copy out", conn);
    char* buffer = nullptr;
    int len;
    while ((len = PQgetCopyData(conn, &buffer, 0)) > 0) {
        std::printf("copy_out: %.*s", len, buffer);
        PQfreemem(buffer);
    }
    expect(len == -1, "copy out ended", conn);
    drain(conn, "copy_out_end");

    res.reset(PQexec(conn, "COPY copy_t FROM STDIN"));
    expect(PQresultStatus(res.get()) == PGRES_COPY_IN, "copy in 2", conn);
    expect(PQputCopyEnd(conn, "client aborted the copy") == 1, "copy fail", conn);
    drain(conn, "copy_fail");
}

void function_call(PGconn* conn) {
    PQArgBlock args[2];
    args[0].len = 4;
    args[0].isint = 1;
    args[0].u.integer = 40;
    args[1].len = 4;
    args[1].isint = 1;
    args[1].u.integer = 2;
    int result = 0;
    int result_len = 0;
    ResultPtr res(PQfn(conn, kInt4plOid, &result, &result_len, 1, args, 2), &PQclear);
    std::printf("pqfn: %s len=%d value=%d\n", status_name(res.get()).c_str(), result_len, result);
    args[0].u.integer = 2147483647;
    res.reset(PQfn(conn, kInt4plOid, &result, &result_len, 1, args, 2));
    print_result("pqfn_overflow", res.get());
}

void errors_and_status(PGconn* conn) {
    std::printf("status_idle: %d\n", PQtransactionStatus(conn));
    exec_ok(conn, "BEGIN");
    std::printf("status_in_transaction: %d\n", PQtransactionStatus(conn));
    ResultPtr res(PQexec(conn, "SELECT * FROM no_such_table"), &PQclear);
    print_result("error", res.get());
    const char* fields[] = {PQresultErrorField(res.get(), PG_DIAG_SEVERITY_NONLOCALIZED),
                            PQresultErrorField(res.get(), PG_DIAG_STATEMENT_POSITION)};
    std::printf("error_fields: severity=%s position=%s\n", fields[0] ? fields[0] : "?", fields[1] ? fields[1] : "?");
    std::printf("status_failed: %d\n", PQtransactionStatus(conn));
    res.reset(PQexec(conn, "SELECT 1"));
    print_result("in_failed_transaction", res.get());
    exec_ok(conn, "ROLLBACK");
    std::printf("status_after_rollback: %d\n", PQtransactionStatus(conn));
    for (const char* name : {"server_encoding", "client_encoding", "integer_datetimes", "DateStyle",
                             "standard_conforming_strings"}) {
        const char* value = PQparameterStatus(conn, name);
        std::printf("parameter %s=%s\n", name, value ? value : "(none)");
    }
    exec_ok(conn, "SET application_name = 'libpq changed'");
    std::printf("parameter application_name=%s\n", PQparameterStatus(conn, "application_name"));
}

std::vector<std::string> notices;

void collect_notice(void*, const char* message) { notices.emplace_back(message); }

void notices_and_multi_statement(PGconn* conn) {
    PQsetNoticeProcessor(conn, collect_notice, nullptr);
    expect(PQsendQuery(conn, "DO $$ BEGIN RAISE NOTICE 'one'; END $$; SELECT 2 AS two; "
                             "DO $$ BEGIN RAISE WARNING 'three'; END $$; SELECT 1/0; SELECT 5"),
           "send multi", conn);
    drain(conn, "multi_statement");
    for (const auto& notice : notices) {
        std::printf("notice: %s", notice.c_str());
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s CONNINFO\n", argv[0]);
        return 2;
    }
    ConnPtr conn(PQconnectdb(argv[1]), &PQfinish);
    expect(PQstatus(conn.get()) == CONNECTION_OK, "connect", conn.get());
    std::printf("connected: protocol=%d server_version=%d\n", PQprotocolVersion(conn.get()),
                PQserverVersion(conn.get()) / 10000);

    text_and_binary_params(conn.get());
    prepared_statements(conn.get());
    // Pipeline first: libpq 15 keeps single-row mode armed after a failed
    // single-row query and would apply it to the next pipelined query.
    pipeline_mode(conn.get());
    single_row_mode(conn.get());
    copy_in_out(conn.get());
    function_call(conn.get());
    errors_and_status(conn.get());
    notices_and_multi_statement(conn.get());

    ResultPtr last(PQexec(conn.get(), "SELECT 'done'"), &PQclear);
    print_result("done", last.get());
    return 0;
}
