// Protocol bookkeeping for one client session, as a pure state machine.
//
// The session feeds it every frontend message it forwards and every backend
// message it relays; it answers what the server's state is: transaction
// status, prepared statements, portals, the requests still waiting for an
// answer, whether the server is skipping to Sync after an error, reported
// parameters and the settings that change query results (role, search_path).
//
// Frontend messages update an optimistic view (what the server will hold
// once it has processed them); each pending request remembers how to undo
// its effect, because an error makes the server skip everything up to the
// next Sync. See https://www.postgresql.org/docs/15/protocol-flow.html
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cache_rules/statement_analysis.hpp"
#include "pgwire/messages.hpp"

namespace pgshelf::proxy {

struct PreparedStatement {
    std::string sql;
    std::vector<std::uint32_t> param_types;
    // What executing it does to settings, analysed once at Parse.
    std::vector<cache_rules::SettingChange> settings;
    bool settings_opaque = false;
    // Too large to analyse (only its prefix was seen): `sql` is empty and
    // what it writes is unknown.
    bool unanalysed = false;
    bool operator==(const PreparedStatement&) const = default;
};

struct Portal {
    std::string statement;
    // Bound parameters as text ($1 first), when the cache needs them and
    // they could be rendered; and the result format codes.
    std::optional<std::vector<std::optional<std::string>>> parameters;
    std::vector<std::int16_t> result_formats;
    bool operator==(const Portal&) const = default;
};

enum class RequestKind : std::uint8_t {
    query,               // simple Query: answered up to ReadyForQuery
    function_call,       // FunctionCall: answered up to ReadyForQuery
    parse,               // ParseComplete
    bind,                // BindComplete
    describe_statement,  // ParameterDescription then RowDescription | NoData
    describe_portal,     // RowDescription | NoData
    execute,             // CommandComplete | EmptyQueryResponse | PortalSuspended
    close,               // CloseComplete
    sync,                // ReadyForQuery
};

class SessionState {
public:
    // A request sent to the server and not answered yet.
    struct Pending {
        explicit Pending(RequestKind k) : kind(k) {}
        RequestKind kind;
        // Undo information for optimistic changes (see header comment); on
        // the heap because it is rare and Pending is moved for every request.
        std::string name;
        std::unique_ptr<PreparedStatement> previous_statement;
        std::unique_ptr<Portal> previous_portal;
        bool statement_kind = true;  // Close: statement (true) or portal
        // Settings a simple Query or an Execute applies when it succeeds.
        std::vector<cache_rules::SettingChange> settings;
        bool settings_opaque = false;
        bool injected = false;
        // Parse/Bind that redefined a statement/portal exactly as it was.
        bool unchanged = false;
        // Set by the owner on requests it times (see tag_last); 0 = none.
        std::uint64_t tag = 0;
        std::chrono::steady_clock::time_point tagged_at{};
    };

    // ---- frontend (client → server), in the order sent
    // `sql_complete` false: only a prefix of a very large statement was seen.
    void on_query(std::string_view sql, bool sql_complete = true);
    // `sql_complete` is false when the proxy only saw a prefix of a large message.
    void on_parse(std::string_view name, std::string_view sql, const std::vector<std::uint32_t>& param_types,
                  bool sql_complete = true);
    void on_bind(std::string_view portal, std::string_view statement,
                 std::optional<std::vector<std::optional<std::string>>> parameters = std::nullopt,
                 std::vector<std::int16_t> result_formats = {});
    // A Parse pgshelf sends on its own (to bring the server's unnamed
    // statement up to date): its ParseComplete is not for the client.
    void on_injected_parse(std::string_view sql, const std::vector<std::uint32_t>& param_types);
    void on_describe(char kind, std::string_view name);
    void on_execute(std::string_view portal, std::int32_t max_rows);
    void on_close(char kind, std::string_view name);
    void on_sync();
    void on_function_call();
    // The requests up to and including the next Sync were answered by
    // pgshelf itself (a cache hit): retire them as the server would have.
    void complete_locally();
    // Marks the newest request so the owner can time its answer; the tag
    // comes back from take_front_tag when that request is answered.
    void tag_last(std::uint64_t tag, std::chrono::steady_clock::time_point at);
    // The oldest request's tag, taken (0 when none): call before passing
    // on the answer that completes it.
    std::pair<std::uint64_t, std::chrono::steady_clock::time_point> take_front_tag();
    // Any other frontend message (Flush, CopyData, CopyDone, CopyFail,
    // Terminate, PasswordMessage) carries no reply of its own.

    // ---- backend (server → client)
    void on_parse_complete();
    void on_bind_complete();
    void on_close_complete();
    // Records the server's parameter types for the described statement.
    void on_parameter_description(const std::vector<std::uint32_t>& types = {});
    // Whether the oldest pending request is one the client did not send
    // (its answer must not reach the client).
    bool front_is_injected() const { return !pending_.empty() && pending_.front().injected; }
    void on_row_description();
    void on_no_data();
    void on_command_complete(std::string_view tag);
    void on_empty_query();
    void on_portal_suspended();
    void on_error();
    void on_ready_for_query(char status);
    void on_parameter_status(std::string_view name, std::string_view value);
    void on_backend_key(std::int32_t pid, std::int32_t secret) { backend_key_ = {pid, secret}; }
    // A parameter of the client's startup packet other than user and
    // database: a setting (search_path=...), or `options` holding
    // "-c name=value" switches. PostgreSQL does not report most of them
    // back, so they are known only from here.
    void on_startup_parameter(std::string_view name, std::string_view value);
    // The value a setting has at session start (from the startup packet).
    std::optional<std::string_view> startup_setting(std::string_view name) const;

    // ---- queries
    char transaction_status() const { return transaction_status_; }
    bool skipping_to_sync() const { return skipping_to_sync_; }
    const std::deque<Pending>& pending() const { return pending_; }
    std::size_t pending_syncs() const { return pending_syncs_; }
    const PreparedStatement* statement(std::string_view name) const;
    const Portal* portal(std::string_view name) const;
    std::size_t statement_count() const { return statements_.size(); }
    std::size_t portal_count() const { return portals_.size(); }
    // Last value the server reported with ParameterStatus, if any.
    std::optional<std::string_view> parameter(std::string_view name) const;
    const std::map<std::string, std::string, std::less<>>& parameters() const { return parameters_; }
    // Effective value of a setting changed by SET in this session, or
    // nullopt when the session has not set it (server default applies).
    std::optional<std::string_view> setting(std::string_view name) const;
    // The role queries run as: SET ROLE's target, else session_authorization.
    std::string_view current_role() const;
    // True once a statement may have changed settings in a way the tracker
    // cannot follow (set_config(), DO blocks, ROLLBACK TO SAVEPOINT, ...).
    bool settings_uncertain() const { return settings_uncertain_; }
    // Hash of everything known to change how results look: startup
    // parameters, reported parameters, and settings changed by SET.
    std::uint64_t settings_fingerprint() const;
    void clear_settings_uncertain() { settings_uncertain_ = false; }
    // A statement may change settings by a way the tracker cannot see (a
    // user function that calls set_config()).
    void mark_settings_uncertain() { settings_uncertain_ = true; }
    // Requests answered in an order the tracker did not expect; the
    // tracker resynchronises at the next ReadyForQuery.
    std::uint64_t desyncs() const { return desyncs_; }
    struct BackendKey {
        std::int32_t pid = 0;
        std::int32_t secret = 0;
    };
    const std::optional<BackendKey>& backend_key() const { return backend_key_; }

private:
    Pending& add(RequestKind kind);
    // The settings effect of a statement text, analysed once per text for
    // the last few texts (drivers re-Parse the unnamed statement with a
    // handful of texts in turn; the scan costs more than the relay).
    void statement_settings(std::string_view sql, bool sql_complete,
                            std::vector<cache_rules::SettingChange>& settings, bool& opaque);
    // Completes the oldest request if it is one of `kinds`, else counts a desync.
    bool complete_front(std::initializer_list<RequestKind> kinds);
    void undo(const Pending& p);
    void apply_settings(const Pending& p);
    void end_transaction(bool committed);

    std::deque<Pending> pending_;
    std::size_t pending_syncs_ = 0;
    bool skipping_to_sync_ = false;
    char transaction_status_ = 'I';
    // An error happened since the last ReadyForQuery 'I' (the implicit or
    // explicit transaction will roll back).
    bool transaction_failed_ = false;
    bool saw_rollback_ = false;
    bool describe_statement_got_parameters_ = false;

    struct SettingsMemo {
        std::string sql;  // empty: unused (an empty text changes nothing anyway)
        std::vector<cache_rules::SettingChange> settings;
        bool opaque = false;
    };
    static constexpr std::size_t settings_memo_max_text = 2048;
    std::array<SettingsMemo, 4> settings_memo_{};
    std::size_t settings_memo_next_ = 0;

    std::unordered_map<std::string, PreparedStatement> statements_;
    std::unordered_map<std::string, Portal> portals_;
    std::map<std::string, std::string, std::less<>> parameters_;

    // Settings: committed session values, plus this transaction's SET
    // (session scope) and SET LOCAL overlays. An empty optional = RESET.
    using SettingMap = std::map<std::string, std::optional<std::string>, std::less<>>;
    SettingMap session_settings_;
    SettingMap transaction_settings_;
    SettingMap local_settings_;
    bool settings_uncertain_ = false;
    std::map<std::string, std::string, std::less<>> startup_parameters_;
    std::map<std::string, std::string, std::less<>> startup_settings_;
    mutable std::optional<std::uint64_t> fingerprint_;

    std::uint64_t desyncs_ = 0;
    std::optional<BackendKey> backend_key_;
};

}  // namespace pgshelf::proxy
