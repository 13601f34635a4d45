// Protocol bookkeeping for one client session. See session_state.hpp.
#include "proxy/session_state.hpp"

#include <algorithm>
#include <cctype>
#include <utility>

#include "cache_rules/hasher.hpp"

namespace pgshelf::proxy {

using cache_rules::SettingChange;

namespace {

// Settings effect of a statement text; the parse only runs when a cheap
// scan says the text could touch settings at all.
void attach_settings(std::vector<SettingChange>& settings, bool& opaque, std::string_view sql, bool sql_complete) {
    if (!sql_complete) {
        // Only a prefix was seen; a huge statement is not a SET, but it
        // could call set_config().
        opaque = cache_rules::may_change_settings(sql);
        return;
    }
    if (!cache_rules::may_change_settings(sql)) {
        return;
    }
    auto effect = cache_rules::analyze_settings(sql);
    settings = std::move(effect.changes);
    opaque = effect.opaque;
}

// A new request's name; most are unnamed, and assigning an empty view
// still costs a library call.
void assign_name(std::string& to, std::string_view name) {
    if (!name.empty()) {
        to.assign(name);
    }
}

}  // namespace

// ------------------------------------------------------------ frontend

void SessionState::statement_settings(std::string_view sql, bool sql_complete,
                                      std::vector<SettingChange>& settings, bool& opaque) {
    if (!sql_complete || sql.size() > settings_memo_max_text) {
        attach_settings(settings, opaque, sql, sql_complete);
        return;
    }
    for (const SettingsMemo& memo : settings_memo_) {
        if (memo.sql == sql) {
            settings = memo.settings;
            opaque = memo.opaque;
            return;
        }
    }
    attach_settings(settings, opaque, sql, true);
    SettingsMemo& memo = settings_memo_[settings_memo_next_];
    settings_memo_next_ = (settings_memo_next_ + 1) % settings_memo_.size();
    memo.sql.assign(sql);
    memo.settings = settings;
    memo.opaque = opaque;
}

SessionState::Pending& SessionState::add(RequestKind kind) {
    if (kind == RequestKind::sync) {
        ++pending_syncs_;
    }
    return pending_.emplace_back(kind);  // built in place: Pending is not small
}

void SessionState::on_query(std::string_view sql, bool sql_complete) {
    if (skipping_to_sync_) {
        return;  // the server ignores everything up to Sync
    }
    Pending& p = add(RequestKind::query);
    attach_settings(p.settings, p.settings_opaque, sql, sql_complete);
    // A simple Query destroys the unnamed statement and the unnamed portal.
    if (auto it = statements_.find(""); it != statements_.end()) {
        p.previous_statement = std::make_unique<PreparedStatement>(std::move(it->second));
        statements_.erase(it);
    }
    if (auto it = portals_.find(""); it != portals_.end()) {
        p.previous_portal = std::make_unique<Portal>(std::move(it->second));
        portals_.erase(it);
    }
}

void SessionState::on_parse(std::string_view name, std::string_view sql,
                            const std::vector<std::uint32_t>& param_types, bool sql_complete) {
    if (skipping_to_sync_) {
        return;
    }
    Pending& p = add(RequestKind::parse);
    assign_name(p.name, name);
    if (auto it = statements_.find(p.name); it != statements_.end()) {
        if (sql_complete && it->second.sql == sql && it->second.param_types == param_types) {
            // The same text again (drivers re-Parse the unnamed statement for
            // every query): nothing to record, analyse or undo.
            p.unchanged = true;
            return;
        }
        // Re-parsing a named statement fails on the server (42P05) and the
        // error undoes this; the unnamed one is simply replaced.
        p.previous_statement = std::make_unique<PreparedStatement>(std::move(it->second));
    }
    // Settings changes of a prepared statement apply when it is executed;
    // analyse them once here rather than at every Execute.
    PreparedStatement& statement = statements_[p.name];
    statement = PreparedStatement{sql_complete ? std::string(sql) : std::string{}, param_types, {}, false,
                                  !sql_complete};
    statement_settings(sql, sql_complete, statement.settings, statement.settings_opaque);
}

void SessionState::on_bind(std::string_view portal, std::string_view statement,
                           std::optional<std::vector<std::optional<std::string>>> parameters,
                           std::vector<std::int16_t> result_formats) {
    if (skipping_to_sync_) {
        return;
    }
    Pending& p = add(RequestKind::bind);
    assign_name(p.name, portal);
    if (auto it = portals_.find(p.name); it != portals_.end()) {
        Portal& current = it->second;
        if (current.statement == statement && current.parameters == parameters &&
            current.result_formats == result_formats) {
            p.unchanged = true;
        } else {
            p.previous_portal = std::make_unique<Portal>(std::move(current));
            current = Portal{std::string(statement), std::move(parameters), std::move(result_formats)};
        }
    } else {
        portals_.emplace(p.name, Portal{std::string(statement), std::move(parameters), std::move(result_formats)});
    }
}

void SessionState::on_injected_parse(std::string_view sql, const std::vector<std::uint32_t>& param_types) {
    Pending& p = add(RequestKind::parse);
    p.injected = true;
    if (auto it = statements_.find(""); it != statements_.end()) {
        p.previous_statement = std::make_unique<PreparedStatement>(it->second);
    }
    PreparedStatement& statement = statements_[""];
    statement = PreparedStatement{std::string(sql), param_types, {}, false, false};
    statement_settings(sql, true, statement.settings, statement.settings_opaque);
}

void SessionState::on_describe(char kind, std::string_view name) {
    if (skipping_to_sync_) {
        return;
    }
    Pending& p = add(kind == 'S' ? RequestKind::describe_statement : RequestKind::describe_portal);
    assign_name(p.name, name);
}

void SessionState::on_execute(std::string_view portal, std::int32_t max_rows) {
    if (skipping_to_sync_) {
        return;
    }
    Pending& p = add(RequestKind::execute);
    assign_name(p.name, portal);
    if (const Portal* bound = this->portal(portal)) {
        if (const PreparedStatement* stmt = statement(bound->statement)) {
            p.settings = stmt->settings;
            p.settings_opaque = stmt->settings_opaque;
        }
    }
}

void SessionState::on_close(char kind, std::string_view name) {
    if (skipping_to_sync_) {
        return;
    }
    Pending& p = add(RequestKind::close);
    assign_name(p.name, name);
    p.statement_kind = kind == 'S';
    if (p.statement_kind) {
        if (auto it = statements_.find(p.name); it != statements_.end()) {
            p.previous_statement = std::make_unique<PreparedStatement>(std::move(it->second));
            statements_.erase(it);
        }
    } else if (auto it = portals_.find(p.name); it != portals_.end()) {
        p.previous_portal = std::make_unique<Portal>(std::move(it->second));
        portals_.erase(it);
    }
}

void SessionState::on_sync() {
    skipping_to_sync_ = false;
    add(RequestKind::sync);
}

void SessionState::on_function_call() {
    if (skipping_to_sync_) {
        return;
    }
    Pending& p = add(RequestKind::function_call);
    p.settings_opaque = true;  // any function may call set_config()
}

void SessionState::complete_locally() {
    while (!pending_.empty()) {
        const bool sync = pending_.front().kind == RequestKind::sync;
        pending_.pop_front();
        if (sync) {
            --pending_syncs_;
            break;
        }
    }
    if (transaction_status_ == 'I') {
        portals_.clear();
    }
}

// ------------------------------------------------------------ backend

bool SessionState::complete_front(std::initializer_list<RequestKind> kinds) {
    if (pending_.empty() || std::find(kinds.begin(), kinds.end(), pending_.front().kind) == kinds.end()) {
        ++desyncs_;
        return false;
    }
    if (pending_.front().kind == RequestKind::sync) {
        --pending_syncs_;
    }
    pending_.pop_front();
    return true;
}

void SessionState::on_parse_complete() { complete_front({RequestKind::parse}); }
void SessionState::on_bind_complete() { complete_front({RequestKind::bind}); }
void SessionState::on_close_complete() { complete_front({RequestKind::close}); }

void SessionState::on_parameter_description(const std::vector<std::uint32_t>& types) {
    // First half of a statement Describe; RowDescription or NoData completes it.
    if (pending_.empty() || pending_.front().kind != RequestKind::describe_statement) {
        ++desyncs_;
        return;
    }
    if (auto it = statements_.find(pending_.front().name); it != statements_.end() && !types.empty()) {
        it->second.param_types = types;  // the server's inference fills the client's zeros
    }
}

void SessionState::on_row_description() {
    // Also sent inside a simple Query's or an Execute's result; only a
    // Describe waits for it as its completion.
    if (!pending_.empty() && (pending_.front().kind == RequestKind::describe_statement ||
                              pending_.front().kind == RequestKind::describe_portal)) {
        pending_.pop_front();
    }
}

void SessionState::on_no_data() { complete_front({RequestKind::describe_statement, RequestKind::describe_portal}); }

void SessionState::on_command_complete(std::string_view tag) {
    if (tag == "ROLLBACK") {
        saw_rollback_ = true;
    }
    if (pending_.empty()) {
        ++desyncs_;
        return;
    }
    Pending& front = pending_.front();
    if (front.kind == RequestKind::query) {
        // One of possibly several statements of the Query completed. The
        // settings analysis covers the whole text; apply it once, at the
        // end, unless an error cancels the rest (see on_error).
        return;
    }
    if (front.kind == RequestKind::execute) {
        apply_settings(front);
        pending_.pop_front();
        return;
    }
    ++desyncs_;
}

void SessionState::on_empty_query() {
    if (!pending_.empty() && pending_.front().kind == RequestKind::query) {
        return;
    }
    complete_front({RequestKind::execute});
}

void SessionState::on_portal_suspended() { complete_front({RequestKind::execute}); }

void SessionState::on_error() {
    transaction_failed_ = true;
    if (pending_.empty()) {
        return;  // e.g. FATAL at shutdown; the connection is ending
    }
    Pending& front = pending_.front();
    if (front.kind == RequestKind::query || front.kind == RequestKind::function_call) {
        // The rest of the Query string is abandoned; settings from the part
        // that ran may or may not stand, so the tracker cannot know them.
        if (!front.settings.empty() || front.settings_opaque) {
            front.settings.clear();
            front.settings_opaque = false;
            settings_uncertain_ = true;
        }
        return;  // ReadyForQuery follows
    }
    if (front.kind == RequestKind::sync) {
        return;  // an error reported while committing at Sync; ReadyForQuery follows
    }
    // Extended protocol: the server discards everything up to the next Sync.
    std::vector<Pending> discarded;
    while (!pending_.empty() && pending_.front().kind != RequestKind::sync) {
        discarded.push_back(std::move(pending_.front()));
        pending_.pop_front();
    }
    // Undo newest first so earlier optimistic states come back last.
    for (auto it = discarded.rbegin(); it != discarded.rend(); ++it) {
        undo(*it);
    }
    if (pending_.empty()) {
        // The client has not sent the Sync yet: what it sends until then is skipped.
        skipping_to_sync_ = true;
    }
}

void SessionState::undo(const Pending& p) {
    if (p.unchanged) {
        return;
    }
    switch (p.kind) {
        case RequestKind::parse:
            if (p.previous_statement) {
                statements_[p.name] = *p.previous_statement;
            } else {
                statements_.erase(p.name);
            }
            break;
        case RequestKind::bind:
            if (p.previous_portal) {
                portals_[p.name] = *p.previous_portal;
            } else {
                portals_.erase(p.name);
            }
            break;
        case RequestKind::close:
            if (p.statement_kind && p.previous_statement) {
                statements_[p.name] = *p.previous_statement;
            } else if (!p.statement_kind && p.previous_portal) {
                portals_[p.name] = *p.previous_portal;
            }
            break;
        default:
            break;
    }
}

void SessionState::on_ready_for_query(char status) {
    // Completes a simple Query, a FunctionCall or a Sync. Anything older
    // still pending was answered in a way the tracker missed: drop it.
    while (!pending_.empty()) {
        Pending front = std::move(pending_.front());
        pending_.pop_front();
        if (front.kind == RequestKind::sync) {
            --pending_syncs_;
            break;
        }
        if (front.kind == RequestKind::query || front.kind == RequestKind::function_call) {
            apply_settings(front);
            break;
        }
        ++desyncs_;
    }
    const char previous = transaction_status_;
    transaction_status_ = status;
    if (status == 'I') {
        end_transaction(!transaction_failed_ && !saw_rollback_);
        // Portals live until the end of the transaction.
        portals_.clear();
        transaction_failed_ = false;
        saw_rollback_ = false;
    } else if (previous == 'I') {
        // A transaction block began; an error before BEGIN (in the same
        // Query) is not part of it.
        transaction_failed_ = status == 'E';
        saw_rollback_ = false;
    }
    if (pending_.empty()) {
        skipping_to_sync_ = false;
    }
}

namespace {

// Splits `options` like PostgreSQL's pg_split_opts: on whitespace, with a
// backslash escaping the next character.
std::vector<std::string> split_options(std::string_view options) {
    std::vector<std::string> args;
    std::string current;
    bool in_arg = false;
    for (std::size_t i = 0; i < options.size(); ++i) {
        const char ch = options[i];
        if (std::isspace(static_cast<unsigned char>(ch))) {
            if (in_arg) {
                args.push_back(std::move(current));
                current.clear();
                in_arg = false;
            }
            continue;
        }
        in_arg = true;
        if (ch == '\\' && i + 1 < options.size()) {
            current += options[++i];
        } else {
            current += ch;
        }
    }
    if (in_arg) {
        args.push_back(std::move(current));
    }
    return args;
}

std::string setting_name(std::string_view name) {
    std::string out(name);
    for (char& ch : out) {
        ch = ch == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
    return out;
}

}  // namespace

void SessionState::on_startup_parameter(std::string_view name, std::string_view value) {
    startup_parameters_[std::string(name)] = std::string(value);
    fingerprint_.reset();
    if (name != "options") {
        startup_settings_[setting_name(name)] = std::string(value);
        return;
    }
    // "-c name=value", "-cname=value" and "--name=value", as the server reads them.
    const auto args = split_options(value);
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string_view assignment;
        if (args[i] == "-c" && i + 1 < args.size()) {
            assignment = args[++i];
        } else if (args[i].starts_with("-c")) {
            assignment = std::string_view(args[i]).substr(2);
        } else if (args[i].starts_with("--")) {
            assignment = std::string_view(args[i]).substr(2);
        } else {
            continue;
        }
        const auto eq = assignment.find('=');
        if (eq != std::string_view::npos) {
            startup_settings_[setting_name(assignment.substr(0, eq))] = std::string(assignment.substr(eq + 1));
        }
    }
}

std::optional<std::string_view> SessionState::startup_setting(std::string_view name) const {
    auto it = startup_settings_.find(name);
    if (it == startup_settings_.end()) {
        return std::nullopt;
    }
    return std::string_view(it->second);
}

std::uint64_t SessionState::settings_fingerprint() const {
    if (fingerprint_) {
        return *fingerprint_;
    }
    cache_rules::Hasher hash;
    auto add = [&hash](std::string_view s) { hash.add(s); };
    for (const auto& [name, value] : startup_parameters_) {
        add(name);
        add(value);
    }
    add("\x01");
    for (const auto& [name, value] : parameters_) {
        // Reported but irrelevant to results.
        if (name == "application_name" || name == "in_hot_standby") {
            continue;
        }
        add(name);
        add(value);
    }
    add("\x02");
    std::map<std::string_view, std::string_view> effective;
    for (const SettingMap* map : {&session_settings_, &transaction_settings_, &local_settings_}) {
        for (const auto& [name, value] : *map) {
            if (value) {
                effective[name] = *value;
            } else {
                effective.erase(name);
            }
        }
    }
    for (const auto& [name, value] : effective) {
        add(name);
        add(value);
    }
    fingerprint_ = hash.digest();
    return *fingerprint_;
}

void SessionState::on_parameter_status(std::string_view name, std::string_view value) {
    fingerprint_.reset();
    auto it = parameters_.find(name);
    if (it == parameters_.end()) {
        parameters_.emplace(std::string(name), std::string(value));
    } else {
        it->second.assign(value);
    }
}

// ------------------------------------------------------------ settings

void SessionState::apply_settings(const Pending& p) {
    fingerprint_.reset();
    if (p.settings_opaque) {
        settings_uncertain_ = true;
    }
    for (const SettingChange& change : p.settings) {
        switch (change.kind) {
            case SettingChange::Kind::reset_all:
                // RESET ALL / DISCARD ALL: every SET of the session is gone
                // (at commit). Mark each known one as reset.
                for (auto* map : {&session_settings_, &transaction_settings_, &local_settings_}) {
                    for (auto& [name, value] : *map) {
                        transaction_settings_[name] = std::nullopt;
                    }
                }
                local_settings_.clear();
                break;
            case SettingChange::Kind::reset:
                (change.local ? local_settings_ : transaction_settings_)[change.name] = std::nullopt;
                if (!change.local) {
                    local_settings_.erase(change.name);
                }
                break;
            case SettingChange::Kind::set:
                (change.local ? local_settings_ : transaction_settings_)[change.name] = change.value;
                if (!change.local) {
                    local_settings_.erase(change.name);
                }
                break;
        }
    }
}

void SessionState::end_transaction(bool committed) {
    fingerprint_.reset();
    if (committed) {
        for (auto& [name, value] : transaction_settings_) {
            if (value) {
                session_settings_[name] = std::move(value);
            } else {
                session_settings_.erase(name);
            }
        }
    }
    transaction_settings_.clear();
    local_settings_.clear();
}

std::optional<std::string_view> SessionState::setting(std::string_view name) const {
    for (const SettingMap* map : {&local_settings_, &transaction_settings_, &session_settings_}) {
        if (auto it = map->find(name); it != map->end()) {
            if (!it->second) {
                return std::nullopt;
            }
            return std::string_view(*it->second);
        }
    }
    return std::nullopt;
}

std::string_view SessionState::current_role() const {
    // SET ROLE; else the role the session started with (RESET ROLE returns
    // to it); else the session user.
    if (auto role = setting("role")) {
        return *role;
    }
    if (auto role = startup_setting("role"); role && *role != "none") {
        return *role;
    }
    if (auto authorization = setting("session_authorization")) {
        return *authorization;
    }
    if (auto reported = parameter("session_authorization")) {
        return *reported;
    }
    return {};
}

// ------------------------------------------------------------ lookups

const PreparedStatement* SessionState::statement(std::string_view name) const {
    auto it = statements_.find(std::string(name));
    return it == statements_.end() ? nullptr : &it->second;
}

const Portal* SessionState::portal(std::string_view name) const {
    auto it = portals_.find(std::string(name));
    return it == portals_.end() ? nullptr : &it->second;
}

std::optional<std::string_view> SessionState::parameter(std::string_view name) const {
    auto it = parameters_.find(name);
    if (it == parameters_.end()) {
        return std::nullopt;
    }
    return std::string_view(it->second);
}

void SessionState::tag_last(std::uint64_t tag, std::chrono::steady_clock::time_point at) {
    if (!pending_.empty()) {
        pending_.back().tag = tag;
        pending_.back().tagged_at = at;
    }
}

std::pair<std::uint64_t, std::chrono::steady_clock::time_point> SessionState::take_front_tag() {
    if (pending_.empty() || pending_.front().tag == 0) {
        return {0, {}};
    }
    return {std::exchange(pending_.front().tag, 0), pending_.front().tagged_at};
}

}  // namespace pgshelf::proxy
