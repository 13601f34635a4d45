#include "proxy/admin_console.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cache_rules/advice.hpp"
#include "cache_rules/statement_shape.hpp"
#include "proxy/cache_engine.hpp"
#include "proxy/runtime.hpp"
#include "proxy/server_link.hpp"

namespace pgshelf::proxy {
namespace {

constexpr std::string_view command_list =
    "SHOW RULES | STATS | CLIENTS | CONFIG | QUERIES | HELP, INVALIDATE RULE name, INVALIDATE KEY 'key', RELOAD";

// How many statements SHOW QUERIES lists.
constexpr std::size_t show_queries_limit = 100;

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// Skips whitespace and -- / /* */ comments.
std::size_t skip_blank(std::string_view text, std::size_t pos) {
    while (pos < text.size()) {
        if (is_space(text[pos])) {
            ++pos;
        } else if (text.substr(pos, 2) == "--") {
            const auto end = text.find('\n', pos);
            pos = end == std::string_view::npos ? text.size() : end + 1;
        } else if (text.substr(pos, 2) == "/*") {
            const auto end = text.find("*/", pos + 2);
            pos = end == std::string_view::npos ? text.size() : end + 2;
        } else {
            break;
        }
    }
    return pos;
}

// A statement as words: quoted ones ('..', "..") unquoted with their
// doubled quotes undone. Nullopt on an open quote.
struct Word {
    std::string text;
    char quote = 0;  // 0, '\'' or '"'
};
std::optional<std::vector<Word>> words_of(std::string_view statement) {
    std::vector<Word> words;
    std::size_t pos = skip_blank(statement, 0);
    while (pos < statement.size()) {
        Word word;
        const char c = statement[pos];
        if (c == '\'' || c == '"') {
            word.quote = c;
            ++pos;
            for (;;) {
                if (pos >= statement.size()) {
                    return std::nullopt;
                }
                if (statement[pos] == c) {
                    if (pos + 1 < statement.size() && statement[pos + 1] == c) {
                        word.text += c;
                        pos += 2;
                        continue;
                    }
                    ++pos;
                    break;
                }
                word.text += statement[pos++];
            }
        } else {
            while (pos < statement.size() && !is_space(statement[pos]) && statement[pos] != '\'' &&
                   statement[pos] != '"') {
                word.text += statement[pos++];
            }
        }
        words.push_back(std::move(word));
        pos = skip_blank(statement, pos);
    }
    return words;
}

std::string text_of(std::uint64_t v) { return std::to_string(v); }

std::optional<std::string> ratio_text(std::uint64_t part, std::uint64_t whole) {
    if (whole == 0) {
        return std::nullopt;
    }
    return fmt::format("{:.4f}", static_cast<double>(part) / static_cast<double>(whole));
}

std::string utc_text(std::chrono::system_clock::time_point at) {
    const std::time_t t = std::chrono::system_clock::to_time_t(at);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buffer[32];
    std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M:%S+00", &tm);
    return buffer;
}

std::string_view client_state(const ClientInfo& client) {
    if (client.active.load(std::memory_order_relaxed)) {
        return "active";
    }
    switch (client.transaction_status.load(std::memory_order_relaxed)) {
        case 'T': return "idle in transaction";
        case 'E': return "idle in transaction (aborted)";
        default: return "idle";
    }
}

std::optional<std::string> mean_micros(const LatencyHistogram& histogram) {
    const auto s = histogram.snapshot();
    if (s.count == 0) {
        return std::nullopt;
    }
    return fmt::format("{:.1f}", s.sum_seconds * 1e6 / static_cast<double>(s.count));
}

}  // namespace

// ---------------------------------------------------------------- pure part

std::vector<std::string_view> split_console_statements(std::string_view sql) {
    std::vector<std::string_view> out;
    std::size_t from = 0;
    std::size_t pos = 0;
    while (pos < sql.size()) {
        const char c = sql[pos];
        if (c == '\'' || c == '"') {
            const auto end = sql.find(c, pos + 1);  // a doubled quote closes and reopens: same result
            pos = end == std::string_view::npos ? sql.size() : end + 1;
        } else if (sql.substr(pos, 2) == "--" || sql.substr(pos, 2) == "/*") {
            pos = skip_blank(sql, pos);
        } else if (c == ';') {
            out.push_back(sql.substr(from, pos - from));
            from = ++pos;
        } else {
            ++pos;
        }
    }
    out.push_back(sql.substr(from));
    // Blank pieces (a trailing ';', comments) are not statements.
    std::erase_if(out, [](std::string_view piece) { return skip_blank(piece, 0) == piece.size(); });
    return out;
}

ConsoleCommand parse_console_command(std::string_view statement) {
    using Kind = ConsoleCommand::Kind;
    auto words = words_of(statement);
    if (!words) {
        return {Kind::error, "unterminated quoted string"};
    }
    if (!words->empty() && words->back().quote == 0 && words->back().text.ends_with(';')) {
        words->back().text.pop_back();
        if (words->back().text.empty()) {
            words->pop_back();
        }
    }
    const auto& w = *words;
    auto keyword_is = [](std::string_view word, std::string_view keyword) {
        return std::equal(word.begin(), word.end(), keyword.begin(), keyword.end(), [](char a, char b) {
            return std::toupper(static_cast<unsigned char>(a)) == b;
        });
    };
    auto bare = [&](std::size_t i, std::string_view keyword) {
        return i < w.size() && w[i].quote == 0 && keyword_is(w[i].text, keyword);
    };
    if (w.empty()) {
        return {Kind::empty, {}};
    }
    if (bare(0, "SHOW") && w.size() == 2 && w[1].quote == 0) {
        static const std::pair<std::string_view, Kind> shows[] = {
            {"RULES", Kind::show_rules},   {"STATS", Kind::show_stats},     {"CLIENTS", Kind::show_clients},
            {"CONFIG", Kind::show_config}, {"QUERIES", Kind::show_queries}, {"HELP", Kind::show_help},
        };
        for (const auto& [word, kind] : shows) {
            if (keyword_is(w[1].text, word)) {
                return {kind, {}};
            }
        }
    }
    if (bare(0, "INVALIDATE") && bare(1, "RULE")) {
        if (w.size() != 3 || w[2].quote == '\'' || w[2].text.empty()) {
            return {Kind::error, "usage: INVALIDATE RULE name"};
        }
        return {Kind::invalidate_rule, w[2].text};  // rule names are case-sensitive: as written
    }
    if (bare(0, "INVALIDATE") && bare(1, "KEY")) {
        if (w.size() != 3 || w[2].quote != '\'' || w[2].text.empty()) {
            return {Kind::error, "usage: INVALIDATE KEY 'rendered key' (a string literal)"};
        }
        return {Kind::invalidate_key, w[2].text};
    }
    if (bare(0, "RELOAD") && w.size() == 1) {
        return {Kind::reload, {}};
    }
    if (bare(0, "SET") || bare(0, "RESET")) {
        return {Kind::set, {}};
    }
    std::string shown(statement.substr(skip_blank(statement, 0)));
    if (shown.size() > 60) {
        shown = shown.substr(0, 57) + "...";
    }
    return {Kind::error, fmt::format("unknown admin console command \"{}\"; commands: {}", shown, command_list)};
}

std::vector<ResultColumn> console_columns(ConsoleCommand::Kind kind) {
    using namespace console_types;
    using Kind = ConsoleCommand::Kind;
    switch (kind) {
        case Kind::show_rules:
            return {{"rule", text},
                    {"source", text},
                    {"ttl_s", float8},
                    {"key", text},
                    {"hits", int8},
                    {"misses", int8},
                    {"hit_ratio", float8},
                    {"stores", int8},
                    {"skipped_too_large", int8},
                    {"skipped_stale", int8},
                    {"invalidations_key", int8},
                    {"invalidations_fallback", int8}};
        case Kind::show_stats: return {{"stat", text}, {"value", float8}};
        case Kind::show_clients:
            return {{"id", int8},      {"user", text},        {"database", text}, {"peer", text},
                    {"tls", boolean},  {"state", text},       {"connected_at", text},
                    {"idle_s", float8}, {"server_requests", int8}, {"cache_hits", int8}};
        case Kind::show_config: return {{"setting", text}, {"value", text}};
        case Kind::show_queries:
            return {{"fingerprint", text},    {"calls", int8},  {"mean_server_ms", float8},
                    {"total_server_ms", float8}, {"query", text}, {"suggested_rule", text},
                    {"note", text}};
        case Kind::show_help: return {{"command", text}, {"description", text}};
        default: return {};
    }
}

bool column_is_binary(const ResultFormats& formats, std::size_t column) {
    if (formats.empty()) {
        return false;
    }
    return (formats.size() == 1 ? formats.front() : column < formats.size() ? formats[column] : 0) == 1;
}

void encode_row_description(const std::vector<ResultColumn>& columns, const ResultFormats& formats, std::string& out) {
    if (columns.empty()) {
        pgwire::encode(pgwire::BackendMessage{pgwire::NoData{}}, out);
        return;
    }
    pgwire::RowDescription description;
    for (std::size_t i = 0; i < columns.size(); ++i) {
        const auto& column = columns[i];
        const bool fixed = column.type_oid != console_types::text;
        const std::int16_t size = column.type_oid == console_types::boolean ? 1 : fixed ? 8 : -1;
        description.fields.push_back(
            {column.name, 0, 0, column.type_oid, size, -1, static_cast<std::int16_t>(column_is_binary(formats, i))});
    }
    pgwire::encode(pgwire::BackendMessage{std::move(description)}, out);
}

namespace {

// PostgreSQL's binary send format of one of the console's column types.
std::string binary_value(std::uint32_t type_oid, const std::string& text) {
    std::uint64_t bits = 0;
    switch (type_oid) {
        case console_types::boolean: return std::string(1, text == "t" ? '\1' : '\0');
        case console_types::int8: bits = static_cast<std::uint64_t>(std::strtoll(text.c_str(), nullptr, 10)); break;
        case console_types::float8: {
            const double value = std::strtod(text.c_str(), nullptr);
            std::memcpy(&bits, &value, sizeof bits);
            break;
        }
        default: return text;
    }
    std::string big_endian(8, '\0');
    for (int i = 7; i >= 0; --i, bits >>= 8) {
        big_endian[static_cast<std::size_t>(i)] = static_cast<char>(bits & 0xff);
    }
    return big_endian;
}

}  // namespace

void encode_rows(const ResultSet& result, const ResultFormats& formats, std::string& out) {
    pgwire::DataRow row;
    std::vector<std::string> binary(result.columns.size());
    for (const auto& values : result.rows) {
        row.values.clear();
        for (std::size_t i = 0; i < values.size(); ++i) {
            const auto& value = values[i];
            if (!value) {
                row.values.push_back(pgwire::Value{});
            } else if (i < result.columns.size() && column_is_binary(formats, i)) {
                binary[i] = binary_value(result.columns[i].type_oid, *value);
                row.values.push_back(pgwire::Value{binary[i]});
            } else {
                row.values.push_back(pgwire::Value{*value});
            }
        }
        pgwire::encode(pgwire::BackendMessage{row}, out);
    }
    pgwire::encode(pgwire::BackendMessage{pgwire::CommandComplete{result.tag}}, out);
}

// ---------------------------------------------------------------- the session

AdminConsole::AdminConsole(Runtime& runtime, CacheEngine* cache, Stream& client, FrameBuffer& client_in,
                           std::string user, std::uint64_t connection_id)
    : runtime_(runtime),
      cache_(cache),
      client_(client),
      client_in_(client_in),
      user_(std::move(user)),
      id_(connection_id) {
    limits_.max_message_size = 1u << 20;  // console commands are short
}

awaitable<AdminConsole::ReadStatus> AdminConsole::read_frame(Stream& stream, FrameBuffer& in, Frame& frame) {
    for (;;) {
        pgwire::FrameHeader header;
        const auto peeked = pgwire::peek_header(in.data(), header, limits_);
        if (peeked.status == pgwire::DecodeStatus::error) {
            co_return ReadStatus::malformed;
        }
        if (peeked.status == pgwire::DecodeStatus::ok && in.size() >= header.frame_size()) {
            frame.type = header.type;
            frame.bytes.assign(in.data().substr(0, header.frame_size()));
            in.consume(header.frame_size());
            co_return ReadStatus::ok;
        }
        const std::size_t want = peeked.status == pgwire::DecodeStatus::ok ? header.frame_size() - in.size() : 512;
        char* space = in.prepare(std::max<std::size_t>(want, 512));
        auto [ec, n] = co_await stream.read_some(asio::buffer(space, in.free_space()));
        if (ec) {
            co_return ReadStatus::closed;
        }
        in.commit(n);
    }
}

awaitable<bool> AdminConsole::authenticate() {
    const auto& config = runtime_.config();
    std::string out;
    const auto& allowed = config.admin.console_users;
    if (std::find(allowed.begin(), allowed.end(), user_) == allowed.end()) {
        spdlog::warn("conn {} admin console refused to role \"{}\" (not in admin.console_users)", id_, user_);
        pgwire::encode_error(out, "FATAL", "28000",
                             fmt::format("pgshelf: role \"{}\" is not allowed to use the admin console", user_));
        co_await client_.write(asio::buffer(out));
        co_return false;
    }

    auto connection = co_await connect_to_server(config.upstream, runtime_.upstream_tls());
    if (!connection.stream) {
        pgwire::encode_error(out, "FATAL", "08006", "pgshelf: " + connection.error);
        co_await client_.write(asio::buffer(out));
        co_return false;
    }
    Stream& server = *connection.stream;
    FrameBuffer server_in(4096);
    auto fail = [&](std::string_view message) {
        out.clear();
        pgwire::encode_error(out, "FATAL", "08006", message);
    };
    {
        pgwire::StartupMessage startup;
        startup.parameters = {{"user", user_},
                              {"database", config.admin.auth_database},
                              {"application_name", "pgshelf admin console"}};
        pgwire::encode(pgwire::StartupPacket{startup}, out);
        auto [ec, n] = co_await server.write(asio::buffer(out));
        if (ec) {
            fail("pgshelf: lost the connection to the server during authentication");
            co_await client_.write(asio::buffer(out));
            co_return false;
        }
    }
    bool authenticated = false;
    for (;;) {
        Frame frame;
        if (co_await read_frame(server, server_in, frame) != ReadStatus::ok) {
            fail("pgshelf: lost the connection to the server during authentication");
            co_await client_.write(asio::buffer(out));
            co_return false;
        }
        out.clear();
        bool client_answers = false;
        switch (frame.type) {
            case 'R': {
                pgwire::BackendMessage message;
                if (pgwire::decode_backend_body('R', frame.body(), message)) {
                    fail("pgshelf: invalid authentication message from the server");
                    break;
                }
                if (std::holds_alternative<pgwire::AuthenticationOk>(message)) {
                    authenticated = true;
                    out = frame.bytes;
                } else if (auto* sasl = std::get_if<pgwire::AuthenticationSASL>(&message)) {
                    // Channel binding would bind to pgshelf's TLS link, not the client's.
                    std::erase_if(sasl->mechanisms, [](std::string_view m) { return m.ends_with("-PLUS"); });
                    pgwire::encode(message, out);
                    client_answers = true;
                } else if (std::holds_alternative<pgwire::AuthenticationSASLFinal>(message)) {
                    out = frame.bytes;
                } else {
                    out = frame.bytes;  // cleartext, md5, SASL continue, GSS/SSPI: the client answers
                    client_answers = true;
                }
                break;
            }
            case 'E':
            case 'N': out = frame.bytes; break;
            case 'S':
                if (authenticated) {
                    out = frame.bytes;  // server_version, client_encoding, ...: what clients expect
                }
                break;
            case 'K': break;  // no server session to cancel: the console answers itself
            case 'Z':
                if (authenticated) {
                    pgwire::encode(pgwire::BackendMessage{pgwire::ReadyForQuery{'I'}}, out);
                }
                break;
            default: fail("pgshelf: unexpected message from the server during authentication"); break;
        }
        if (!out.empty()) {
            auto [ec, n] = co_await client_.write(asio::buffer(out));
            if (ec) {
                co_return false;
            }
        }
        if (frame.type == 'E' || (frame.type != 'R' && frame.type != 'N' && frame.type != 'S' && frame.type != 'K' &&
                                  frame.type != 'Z')) {
            co_return false;
        }
        if (frame.type == 'R' && !out.empty() && out[0] == 'E') {
            co_return false;  // undecodable authentication request
        }
        if (frame.type == 'Z' && authenticated) {
            std::string terminate;
            pgwire::encode(pgwire::FrontendMessage{pgwire::Terminate{}}, terminate);
            co_await server.write(asio::buffer(terminate));
            server.close();
            spdlog::info("conn {} admin console session for role \"{}\"", id_, user_);
            co_return true;
        }
        if (client_answers) {
            Frame answer;
            const auto status = co_await read_frame(client_, client_in_, answer);
            if (status != ReadStatus::ok || answer.type != 'p') {
                server.close();
                co_return false;
            }
            auto [ec, n] = co_await server.write(asio::buffer(answer.bytes));
            if (ec) {
                fail("pgshelf: lost the connection to the server during authentication");
                co_await client_.write(asio::buffer(out));
                co_return false;
            }
        }
    }
}

awaitable<std::string> AdminConsole::serve() {
    std::string out;
    bool skipping = false;  // after an error in an extended-protocol batch, until Sync
    for (;;) {
        Frame frame;
        const auto status = co_await read_frame(client_, client_in_, frame);
        if (status == ReadStatus::malformed) {
            runtime_.counters().protocol_errors++;
            pgwire::encode_error(out, "FATAL", "08P01", "invalid message length");
            co_await client_.write(asio::buffer(out));
            co_return "protocol error";
        }
        if (status == ReadStatus::closed) {
            co_return "client closed";
        }
        pgwire::FrontendMessage message;
        if (frame.type != 'X' && frame.type != 'S' && frame.type != 'H' &&
            pgwire::decode_frontend_body(frame.type, frame.body(), message)) {
            runtime_.counters().protocol_errors++;
            pgwire::encode_error(out, "FATAL", "08P01", std::string("invalid frontend message type '") + frame.type + "'");
            co_await client_.write(asio::buffer(out));
            co_return "protocol error";
        }
        switch (frame.type) {
            case 'X': co_return "client closed";
            case 'Q': {
                const auto statements = split_console_statements(std::get<pgwire::Query>(message).sql);
                if (statements.empty()) {
                    pgwire::encode(pgwire::BackendMessage{pgwire::EmptyQueryResponse{}}, out);
                }
                for (const auto statement : statements) {
                    const auto command = parse_console_command(statement);
                    const Outcome outcome = co_await run(command);
                    if (!append_outcome(outcome, true, {}, out)) {
                        break;  // like PostgreSQL: the rest of a failed Query string is not run
                    }
                }
                pgwire::encode(pgwire::BackendMessage{pgwire::ReadyForQuery{'I'}}, out);
                skipping = false;
                break;
            }
            case 'S':
                skipping = false;
                pgwire::encode(pgwire::BackendMessage{pgwire::ReadyForQuery{'I'}}, out);
                break;
            case 'H': break;
            default: {
                if (skipping) {
                    break;
                }
                std::string error_sqlstate;
                std::string error_message;
                if (auto* parse = std::get_if<pgwire::Parse>(&message)) {
                    const auto statements = split_console_statements(parse->sql);
                    if (statements.size() > 1) {
                        error_sqlstate = "42601";
                        error_message = "cannot insert multiple commands into a prepared statement";
                    } else {
                        statements_[std::string(parse->name)] =
                            statements.empty() ? ConsoleCommand{} : parse_console_command(statements.front());
                        pgwire::encode(pgwire::BackendMessage{pgwire::ParseComplete{}}, out);
                    }
                } else if (auto* bind = std::get_if<pgwire::Bind>(&message)) {
                    auto it = statements_.find(bind->statement);
                    if (it == statements_.end()) {
                        error_sqlstate = "26000";
                        error_message = fmt::format("prepared statement \"{}\" does not exist", bind->statement);
                    } else {
                        portals_[std::string(bind->portal)] = Portal{it->second, bind->result_formats};
                        pgwire::encode(pgwire::BackendMessage{pgwire::BindComplete{}}, out);
                    }
                } else if (auto* describe = std::get_if<pgwire::Describe>(&message)) {
                    const ConsoleCommand* command = nullptr;
                    const ResultFormats* formats = nullptr;
                    static const ResultFormats all_text;
                    if (describe->kind == 'S') {
                        auto it = statements_.find(describe->name);
                        if (it != statements_.end()) {
                            command = &it->second;
                            formats = &all_text;  // a statement's results are text until Bind says otherwise
                        }
                    } else if (auto it = portals_.find(describe->name); it != portals_.end()) {
                        command = &it->second.command;
                        formats = &it->second.formats;
                    }
                    if (command == nullptr) {
                        error_sqlstate = describe->kind == 'S' ? "26000" : "34000";
                        error_message = fmt::format("{} \"{}\" does not exist",
                                                    describe->kind == 'S' ? "prepared statement" : "portal",
                                                    describe->name);
                    } else {
                        if (describe->kind == 'S') {
                            pgwire::encode(pgwire::BackendMessage{pgwire::ParameterDescription{}}, out);
                        }
                        encode_row_description(console_columns(command->kind), *formats, out);
                    }
                } else if (auto* execute = std::get_if<pgwire::Execute>(&message)) {
                    auto it = portals_.find(execute->portal);
                    if (it == portals_.end()) {
                        error_sqlstate = "34000";
                        error_message = fmt::format("portal \"{}\" does not exist", execute->portal);
                    } else {
                        const Portal portal = it->second;
                        const Outcome outcome = co_await run(portal.command);
                        skipping = !append_outcome(outcome, false, portal.formats, out);
                    }
                } else if (auto* close = std::get_if<pgwire::Close>(&message)) {
                    if (close->kind == 'S') {
                        statements_.erase(std::string(close->name));
                    } else {
                        portals_.erase(std::string(close->name));
                    }
                    pgwire::encode(pgwire::BackendMessage{pgwire::CloseComplete{}}, out);
                } else {
                    error_sqlstate = "0A000";
                    error_message = std::string("the admin console does not support message type '") + frame.type + "'";
                }
                if (!error_sqlstate.empty()) {
                    pgwire::encode_error(out, "ERROR", error_sqlstate, error_message);
                    skipping = true;
                }
                break;
            }
        }
        // Answer at once when the client waits; batch the rest of a pipeline.
        if (frame.type == 'Q' || frame.type == 'S' || frame.type == 'H' || out.size() > 64 * 1024 ||
            client_in_.size() == 0) {
            if (!out.empty()) {
                auto [ec, n] = co_await client_.write(asio::buffer(out));
                if (ec) {
                    co_return "client: " + ec.message();
                }
                out.clear();
            }
        }
    }
}

bool AdminConsole::append_outcome(const Outcome& outcome, bool describe, const ResultFormats& formats,
                                  std::string& out) {
    if (!outcome.error_sqlstate.empty()) {
        pgwire::encode_error(out, "ERROR", outcome.error_sqlstate, outcome.error_message);
        return false;
    }
    if (!outcome.notice.empty()) {
        pgwire::encode_error(out, "NOTICE", "00000", outcome.notice, true);
    }
    if (describe && !outcome.result.columns.empty()) {
        encode_row_description(outcome.result.columns, formats, out);
    }
    if (outcome.result.tag.empty()) {
        pgwire::encode(pgwire::BackendMessage{pgwire::EmptyQueryResponse{}}, out);
    } else {
        encode_rows(outcome.result, formats, out);
    }
    return true;
}

awaitable<AdminConsole::Outcome> AdminConsole::run(const ConsoleCommand& command) {
    using Kind = ConsoleCommand::Kind;
    Outcome outcome;
    switch (command.kind) {
        case Kind::empty: break;  // EmptyQueryResponse
        case Kind::show_rules: outcome.result = show_rules(); break;
        case Kind::show_stats: outcome.result = show_stats(); break;
        case Kind::show_clients: outcome.result = show_clients(); break;
        case Kind::show_config: outcome.result = show_config(); break;
        case Kind::show_queries: outcome.result = show_queries(); break;
        case Kind::show_help: {
            outcome.result.columns = console_columns(command.kind);
            const std::pair<const char*, const char*> help[] = {
                {"SHOW RULES", "each cache rule: ttl, key, hits, misses, hit ratio, stores, skipped stores, invalidations"},
                {"SHOW STATS", "process-wide counters and mean latencies"},
                {"SHOW CLIENTS", "client connections: role, database, peer, state, activity"},
                {"SHOW CONFIG", "the settings in force (secrets masked)"},
                {"SHOW QUERIES", "the most frequent reads no rule caches, with a suggested [[cache]] rule"},
                {"INVALIDATE RULE name", "drops every cached entry of one cache rule"},
                {"INVALIDATE KEY 'key'", "drops the entries of one rendered key"},
                {"RELOAD", "reads the rules file again, as SIGHUP does"},
            };
            for (const auto& [name, what] : help) {
                outcome.result.rows.push_back({name, what});
            }
            outcome.result.tag = "SHOW";
            break;
        }
        case Kind::invalidate_rule:
        case Kind::invalidate_key: outcome = co_await invalidate(command); break;
        case Kind::reload: outcome = reload(); break;
        case Kind::set: outcome.result.tag = "SET"; break;
        case Kind::error:
            outcome.error_sqlstate = "42601";
            outcome.error_message = command.argument;
            break;
    }
    co_return outcome;
}

ResultSet AdminConsole::show_rules() const {
    ResultSet result{console_columns(ConsoleCommand::Kind::show_rules), {}, "SHOW"};
    const auto rules = runtime_.rules();
    if (!rules) {
        return result;
    }
    for (const auto& rule : rules->cache_rules()) {
        const RuleStats& s = runtime_.rule_stats(rule.name);
        const auto hits = s.hits.load();
        const auto misses = s.misses.load();
        result.rows.push_back({rule.name, fmt::format("{}:{}", rules->source(), rule.line),
                               fmt::format("{}", static_cast<double>(rule.ttl.count()) / 1000.0), rule.key.key.source,
                               text_of(hits), text_of(misses), ratio_text(hits, hits + misses), text_of(s.stores.load()),
                               text_of(s.stores_too_large.load()), text_of(s.stores_stale.load()),
                               text_of(s.invalidations_key.load()), text_of(s.invalidations_fallback.load())});
    }
    result.tag = fmt::format("SHOW {}", result.rows.size());
    return result;
}

ResultSet AdminConsole::show_stats() const {
    ResultSet result{console_columns(ConsoleCommand::Kind::show_stats), {}, "SHOW"};
    auto& c = runtime_.counters();
    auto add = [&](std::string name, std::optional<std::string> value) {
        result.rows.push_back({std::move(name), std::move(value)});
    };
    auto count = [&](std::string name, std::uint64_t value) { add(std::move(name), text_of(value)); };
    count("client_connections", static_cast<std::uint64_t>(std::max<std::int64_t>(0, c.connections_current.load())));
    count("client_connections_total", c.connections_total.load());
    count("client_connections_refused", c.connections_refused.load());
    count("server_connections", static_cast<std::uint64_t>(std::max<std::int64_t>(0, c.server_connections.load())));
    count("server_connect_errors", c.server_connect_errors.load());
    const auto hits = c.hits.load();
    const auto misses = c.misses.load();
    count("cache_hits", hits);
    count("cache_misses", misses);
    add("cache_hit_ratio", ratio_text(hits, hits + misses));
    count("cache_misses_coalesced", c.coalesced.load());
    count("cache_fetch_waits", c.fetch_waits.load());
    for (std::size_t i = 1; i < cache_rules::bypass_reason_count; ++i) {
        count(fmt::format("bypass_{}", cache_rules::to_string(static_cast<cache_rules::BypassReason>(i))),
              c.bypasses[i].load());
    }
    count("cache_served_bytes", c.served_bytes.load());
    count("cache_stores", c.stores.load());
    count("cache_stores_skipped_stale", c.stores_stale.load());
    count("cache_stores_skipped_too_large", c.stores_too_large.load());
    count("invalidations_key", c.invalidations_explicit.load());
    count("invalidations_fallback", c.invalidations_fallback.load());
    count("invalidations_failed", c.invalidations_failed.load());
    count("invalidation_lost", runtime_.invalidation_lost() ? 1 : 0);
    count("redis_errors", c.redis_errors.load());
    count("redis_circuits_open", static_cast<std::uint64_t>(std::max(0, c.redis_circuits_open.load())));
    add("hit_latency_mean_us", mean_micros(runtime_.latencies().hit));
    add("miss_latency_mean_us", mean_micros(runtime_.latencies().miss));
    add("redis_latency_mean_us", mean_micros(runtime_.latencies().redis));
    count("protocol_errors", c.protocol_errors.load());
    count("cancels_forwarded", c.cancels_forwarded.load());
    count("reloads_ok", c.reloads_ok.load());
    count("reloads_failed", c.reloads_failed.load());
    count("draining", runtime_.draining() ? 1 : 0);
    result.tag = fmt::format("SHOW {}", result.rows.size());
    return result;
}

ResultSet AdminConsole::show_clients() const {
    ResultSet result{console_columns(ConsoleCommand::Kind::show_clients), {}, "SHOW"};
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    for (const auto& client : runtime_.clients().snapshot()) {
        const auto idle_ms = std::max<std::int64_t>(0, now_ms - client->last_active_ms.load());
        result.rows.push_back({text_of(client->id), client->user, client->database, client->peer,
                               client->tls ? "t" : "f", std::string(client_state(*client)),
                               utc_text(client->connected_at), fmt::format("{:.3f}", idle_ms / 1000.0),
                               text_of(client->server_requests.load()), text_of(client->cache_hits.load())});
    }
    result.tag = fmt::format("SHOW {}", result.rows.size());
    return result;
}

ResultSet AdminConsole::show_config() const {
    ResultSet result{console_columns(ConsoleCommand::Kind::show_config), {}, "SHOW"};
    for (auto& [name, value] : effective_settings(runtime_.config())) {
        result.rows.push_back({name, value});
    }
    result.tag = fmt::format("SHOW {}", result.rows.size());
    return result;
}

ResultSet AdminConsole::show_queries() const {
    ResultSet result{console_columns(ConsoleCommand::Kind::show_queries), {}, "SHOW"};
    const auto rules = runtime_.rules();
    for (const auto& [fingerprint, entry] : runtime_.uncached_reads().top(show_queries_limit)) {
        // A rule added since (RELOAD, SIGHUP) caches this shape now.
        if (rules && cache_ != nullptr) {
            const auto analysis = cache_->shapes().get(entry.sql);
            if (analysis->statements.size() == 1 && rules->has_cache_shape(analysis->statements.front().shape_hash)) {
                continue;
            }
        }
        auto suggestion = cache_rules::suggest_cache_rule(entry.sql);
        // The derived name may be taken by a rule for another statement:
        // pick the first free name_N, then build the suggestion once more.
        if (suggestion.toml && rules) {
            const auto& taken = rules->cache_rules();
            auto is_taken = [&](const std::string& name) {
                return std::any_of(taken.begin(), taken.end(), [&](const auto& rule) { return rule.name == name; });
            };
            if (is_taken(suggestion.name)) {
                std::string name;
                for (int n = 2; name.empty() || is_taken(name); ++n) {
                    name = fmt::format("{}_{}", suggestion.name, n);
                }
                suggestion = cache_rules::suggest_cache_rule(entry.sql, name);
            }
        }
        std::optional<std::string> mean_ms;
        std::optional<std::string> total_ms;
        if (entry.timed > 0) {
            const double total = static_cast<double>(entry.server_ns) / 1e6;
            mean_ms = fmt::format("{:.3f}", total / static_cast<double>(entry.timed));
            total_ms = fmt::format("{:.3f}", total);
        }
        std::optional<std::string> note;
        if (!suggestion.toml) {
            note = suggestion.detail.empty() ? suggestion.reason : suggestion.reason + ": " + suggestion.detail;
        }
        result.rows.push_back({fmt::format("{:016x}", fingerprint), text_of(entry.count), mean_ms, total_ms,
                               suggestion.query.empty() ? entry.sql : suggestion.query, suggestion.toml, note});
    }
    result.tag = fmt::format("SHOW {}", result.rows.size());
    return result;
}

awaitable<AdminConsole::Outcome> AdminConsole::invalidate(const ConsoleCommand& command) {
    Outcome outcome;
    const auto rules = runtime_.rules();
    if (cache_ == nullptr || !rules) {
        outcome.error_sqlstate = "55000";
        outcome.error_message = "caching is off (no Redis or no rules): there is nothing to invalidate";
        co_return outcome;
    }
    WritePlan plan;
    if (command.kind == ConsoleCommand::Kind::invalidate_rule) {
        const auto& cache_rules = rules->cache_rules();
        if (std::none_of(cache_rules.begin(), cache_rules.end(),
                         [&](const auto& rule) { return rule.name == command.argument; })) {
            outcome.error_sqlstate = "42704";
            outcome.error_message = fmt::format("cache rule \"{}\" does not exist", command.argument);
            co_return outcome;
        }
        plan.fallback_rules.push_back(command.argument);
        plan.fallback_tables.emplace_back();  // no table: asked for by an operator
    } else {
        plan.keys.push_back(command.argument);
    }
    if (!co_await cache_->invalidate(plan)) {
        outcome.error_sqlstate = "58030";
        outcome.error_message =
            "Redis did not confirm the invalidation; hits are suspended until it is made good";
        co_return outcome;
    }
    spdlog::info("conn {} admin console: {} \"{}\" invalidated by role \"{}\"", id_,
                 command.kind == ConsoleCommand::Kind::invalidate_rule ? "rule" : "key", command.argument, user_);
    outcome.result.tag = "INVALIDATE";
    co_return outcome;
}

AdminConsole::Outcome AdminConsole::reload() {
    Outcome outcome;
    const auto reloaded = runtime_.reload_rules();
    if (!reloaded.ok) {
        outcome.error_sqlstate = "F0000";
        outcome.error_message = "rules not reloaded; the rules in force are unchanged:\n" + reloaded.message;
        return outcome;
    }
    outcome.notice = "reloaded " + reloaded.message;
    outcome.result.tag = "RELOAD";
    return outcome;
}

}  // namespace pgshelf::proxy
