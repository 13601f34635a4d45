// The SQL admin console: a virtual database (admin.console_database,
// "pgshelf" by default) reached through the normal port, as PgBouncer's
// "pgbouncer" database is. Only roles listed in admin.console_users get in,
// and they prove who they are to PostgreSQL itself: pgshelf relays their
// authentication to the server (database admin.auth_database), so the
// console keeps no passwords of its own.
//
// Commands answer with ordinary result sets over the simple or the
// extended protocol, so psql and any driver can read them:
//   SHOW RULES | STATS | CLIENTS | CONFIG | QUERIES | HELP
//   INVALIDATE RULE name      INVALIDATE KEY 'rendered key'      RELOAD
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pgwire/codec.hpp"
#include "proxy/asio.hpp"
#include "proxy/frame_buffer.hpp"
#include "proxy/stream.hpp"

namespace pgshelf::proxy {

class Runtime;
class CacheEngine;

// ---------------------------------------------------------------- pure part

struct ConsoleCommand {
    enum class Kind {
        empty,  // only whitespace, comments or ';'
        show_rules,
        show_stats,
        show_clients,
        show_config,
        show_queries,
        show_help,
        invalidate_rule,
        invalidate_key,
        reload,
        set,    // accepted and ignored: drivers and GUIs send SET on connect
        error,  // `argument` says what is wrong
    };
    Kind kind = Kind::empty;
    std::string argument;  // the rule name, the key, or the error message
};

// One statement (no ';' inside), case-insensitive keywords.
ConsoleCommand parse_console_command(std::string_view statement);

// A simple Query's text cut at the semicolons outside quotes and comments.
std::vector<std::string_view> split_console_statements(std::string_view sql);

struct ResultColumn {
    std::string name;
    std::uint32_t type_oid = 25;  // text
};
using ResultRow = std::vector<std::optional<std::string>>;
struct ResultSet {
    std::vector<ResultColumn> columns;  // none: a command without rows (NoData)
    std::vector<ResultRow> rows;
    std::string tag;  // CommandComplete
};

namespace console_types {
inline constexpr std::uint32_t boolean = 16;
inline constexpr std::uint32_t int8 = 20;
inline constexpr std::uint32_t text = 25;
inline constexpr std::uint32_t float8 = 701;
}  // namespace console_types

// The columns a command answers with, known before running it (Describe).
std::vector<ResultColumn> console_columns(ConsoleCommand::Kind kind);

// Result format codes as Bind gives them: none (all text), one (applies to
// every column) or one per column.
using ResultFormats = std::vector<std::int16_t>;
bool column_is_binary(const ResultFormats& formats, std::size_t column);

// RowDescription, or NoData when the result has no columns.
void encode_row_description(const std::vector<ResultColumn>& columns, const ResultFormats& formats, std::string& out);
// The DataRows (binary where `formats` asks: drivers such as asyncpg read
// int8, float8 and bool in binary) and the CommandComplete.
void encode_rows(const ResultSet& result, const ResultFormats& formats, std::string& out);

// ---------------------------------------------------------------- the session

class AdminConsole {
public:
    AdminConsole(Runtime& runtime, CacheEngine* cache, Stream& client, FrameBuffer& client_in, std::string user,
                 std::uint64_t connection_id);

    // Admits the role and relays its authentication to PostgreSQL. On
    // false the client has been told why (FATAL) and the session ends.
    awaitable<bool> authenticate();
    // Answers commands until the client leaves; returns why it ended.
    awaitable<std::string> serve();

private:
    struct Outcome {
        ResultSet result;
        std::string notice;
        std::string error_sqlstate;  // set: the command failed
        std::string error_message;
    };
    struct Frame {
        char type = 0;
        std::string bytes;  // the whole frame, type byte included
        std::string_view body() const { return std::string_view(bytes).substr(pgwire::frame_header_size); }
    };
    enum class ReadStatus { ok, closed, malformed };

    awaitable<ReadStatus> read_frame(Stream& stream, FrameBuffer& in, Frame& frame);
    awaitable<Outcome> run(const ConsoleCommand& command);
    // Appends the outcome: rows (and RowDescription when `describe`), or
    // the error. Returns false when the command failed.
    bool append_outcome(const Outcome& outcome, bool describe, const ResultFormats& formats, std::string& out);

    ResultSet show_rules() const;
    ResultSet show_stats() const;
    ResultSet show_clients() const;
    ResultSet show_config() const;
    ResultSet show_queries() const;
    awaitable<Outcome> invalidate(const ConsoleCommand& command);
    Outcome reload();

    Runtime& runtime_;
    CacheEngine* cache_;
    Stream& client_;
    FrameBuffer& client_in_;
    std::string user_;
    std::uint64_t id_;
    pgwire::Limits limits_;
    // Extended protocol: statement and portal names → their command.
    struct Portal {
        ConsoleCommand command;
        ResultFormats formats;
    };
    std::map<std::string, ConsoleCommand, std::less<>> statements_;
    std::map<std::string, Portal, std::less<>> portals_;
};

}  // namespace pgshelf::proxy
