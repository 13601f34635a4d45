// One client connection relayed to one server connection; see client_session.hpp.
#include "proxy/client_session.hpp"

#include <spdlog/spdlog.h>

#include "proxy/runtime.hpp"
#include "proxy/server_link.hpp"

namespace pgshelf::proxy {

using namespace asio::experimental::awaitable_operators;
using pgwire::DecodeStatus;

namespace {

// Per-direction buffer; messages that need inspecting and are larger are
// read into a grown buffer (up to inspect_limit) and shrunk back after.
constexpr std::size_t buffer_capacity = 16 * 1024;
constexpr std::size_t min_read = 4 * 1024;
// Inspected messages up to this size are buffered whole; larger ones are
// streamed and inspected from their first prefix_limit bytes only.
constexpr std::size_t inspect_limit = 1024 * 1024;
constexpr std::size_t prefix_limit = 8 * 1024;

bool frontend_needs_inspection(char type) {
    switch (type) {
        case 'Q': case 'P': case 'B': case 'D': case 'E': case 'C': case 'S': case 'F': return true;
        default: return false;
    }
}

bool backend_needs_inspection(char type) {
    switch (type) {
        case 'R': case 'K': case 'Z': case 'E': case 'S': case '1': case '2': case '3':
        case 't': case 'T': case 'n': case 's': case 'I': case 'C': return true;
        default: return false;
    }
}

// Leading C string of a message prefix (names of Parse and Bind), or
// nullopt when the prefix ends first.
std::optional<std::string_view> leading_cstring(std::string_view body, std::size_t& offset) {
    auto nul = body.find('\0', offset);
    if (nul == std::string_view::npos) {
        return std::nullopt;
    }
    auto s = body.substr(offset, nul - offset);
    offset = nul + 1;
    return s;
}

}  // namespace

ClientSession::ClientSession(Runtime& runtime, tcp::socket socket, std::uint64_t id)
    : runtime_(runtime),
      id_(id),
      client_(std::make_unique<Stream>(std::move(socket))),
      client_in_(buffer_capacity),
      server_in_(buffer_capacity),
      startup_deadline_(client_->socket().get_executor(), runtime.config().proxy.startup_timeout),
      started_(std::chrono::steady_clock::now()) {
    runtime_.counters().connections_total++;
    runtime_.counters().connections_current++;
}

ClientSession::~ClientSession() {
    if (client_key_pid_ != 0) {
        runtime_.cancels().remove(client_key_pid_);
    }
    runtime_.counters().connections_current--;
    runtime_.counters().bookkeeping_desyncs += state_.desyncs();
}

awaitable<void> ClientSession::run() {
    error_code ignored;
    client_->socket().set_option(tcp::no_delay(true), ignored);
    auto peer = client_->socket().remote_endpoint(ignored);
    const std::string peer_text = peer.address().to_string() + ":" + std::to_string(peer.port());

    asio::co_spawn(co_await asio::this_coro::executor, startup_watchdog(), asio::detached);

    if (!co_await negotiate_startup()) {
        close_all();
        co_return;
    }
    if (runtime_.counters().connections_current.load() > static_cast<std::int64_t>(runtime_.config().proxy.max_connections)) {
        runtime_.counters().connections_refused++;
        spdlog::warn("conn {} from {} refused: proxy.max_connections reached", id_, peer_text);
        co_await send_client_error("FATAL", "53300", "sorry, too many clients already");
        close_all();
        co_return;
    }
    spdlog::info("conn {} open from {} user={} database={}{}", id_, peer_text, user_, database_,
                 client_->is_tls() ? " tls" : "");
    if (co_await open_server()) {
        phase_ = Phase::authenticating;
        co_await (client_to_server() || server_to_client());
    }
    if (!pending_error_sqlstate_.empty() && client_) {
        co_await send_client_error("FATAL", pending_error_sqlstate_, pending_error_message_);
    }
    // A client that vanished mid-query leaves the server working for nobody:
    // cancel what is running before closing.
    if (server_ && !state_.pending().empty() && state_.backend_key()) {
        co_await send_cancel(runtime_.config().upstream, state_.backend_key()->pid, state_.backend_key()->secret);
    } else if (server_ && phase_ == Phase::ready && state_.pending().empty()) {
        std::string terminate;
        pgwire::encode(pgwire::FrontendMessage{pgwire::Terminate{}}, terminate);
        co_await server_->write(asio::buffer(terminate));
    }
    close_all();
    const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    spdlog::info("conn {} closed after {:.3f}s: {}", id_, elapsed,
                 end_reason_.empty() ? "closed" : end_reason_);
}

awaitable<void> ClientSession::startup_watchdog() {
    auto self = shared_from_this();
    if (phase_ == Phase::closing || phase_ == Phase::ready) {
        co_return;
    }
    auto [ec] = co_await startup_deadline_.async_wait(use_nothrow);
    if (ec) {
        co_return;  // cancelled: the session ended first
    }
    if (phase_ == Phase::startup) {
        note_end("startup timeout");
        client_->close();
    } else if (phase_ == Phase::authenticating) {
        note_end("authentication timeout");
        pending_error_sqlstate_ = "08006";
        pending_error_message_ = "pgshelf: timeout during startup and authentication";
        if (server_) {
            server_->close();
        }
    }
}

awaitable<bool> ClientSession::negotiate_startup() {
    pgwire::Limits limits;
    for (;;) {
        pgwire::StartupPacket packet;
        pgwire::DecodeResult decoded;
        while ((decoded = pgwire::decode_startup(client_in_.data(), packet, limits)).status == DecodeStatus::need_more) {
            char* space = client_in_.prepare(min_read);
            auto [ec, n] = co_await client_->read_some(asio::buffer(space, client_in_.free_space()));
            if (ec) {
                co_return false;  // port scanners and health checks: nothing to say
            }
            client_in_.commit(n);
        }
        if (decoded.status == DecodeStatus::error) {
            runtime_.counters().protocol_errors++;
            const bool version = decoded.ec == pgwire::CodecErrc::unsupported_protocol;
            co_await send_client_error("FATAL", version ? "0A000" : "08P01",
                                       version ? "unsupported frontend protocol" : "invalid startup packet");
            co_return false;
        }
        const std::string_view raw = client_in_.data().substr(0, decoded.consumed);

        if (std::holds_alternative<pgwire::StartupMessage>(packet)) {
            const auto& startup = std::get<pgwire::StartupMessage>(packet);
            for (const auto& [name, value] : startup.parameters) {
                if (name == "user") {
                    user_ = value;
                } else if (name == "database") {
                    database_ = value;
                }
            }
            if (database_.empty()) {
                database_ = user_;
            }
            startup_packet_.assign(raw);
            client_in_.consume(decoded.consumed);
            co_return true;
        }
        client_in_.consume(decoded.consumed);

        if (std::holds_alternative<pgwire::CancelRequest>(packet)) {
            co_await handle_cancel(std::get<pgwire::CancelRequest>(packet));
            note_end("cancel request");
            co_return false;
        }
        // SSLRequest or GSSENCRequest. Bytes sent after it, before our
        // answer, would bypass encryption (CVE-2021-23214): refuse them.
        if (client_in_.size() != 0 || client_->is_tls()) {
            runtime_.counters().protocol_errors++;
            co_await send_client_error("FATAL", "08P01", "unexpected data after encryption request");
            co_return false;
        }
        const bool ssl = std::holds_alternative<pgwire::SSLRequest>(packet);
        ssl::context* tls = runtime_.client_tls();
        const char answer = ssl && tls != nullptr ? 'S' : 'N';
        auto [write_ec, written] = co_await client_->write(asio::buffer(&answer, 1));
        if (write_ec) {
            co_return false;
        }
        if (answer == 'S') {
            if (auto ec = co_await client_->handshake_as_server(*tls); ec) {
                spdlog::info("conn {} TLS handshake failed: {}", id_, ec.message());
                co_return false;
            }
        }
    }
}

awaitable<void> ClientSession::handle_cancel(const pgwire::CancelRequest& request) {
    auto target = runtime_.cancels().find({request.process_id, request.secret_key});
    if (!target) {
        spdlog::debug("conn {} cancel request for unknown key {}", id_, request.process_id);
        co_return;
    }
    runtime_.counters().cancels_forwarded++;
    UpstreamConfig upstream = runtime_.config().upstream;
    upstream.endpoint = target->server;
    co_await send_cancel(upstream, target->pid, target->secret);
}

awaitable<bool> ClientSession::open_server() {
    auto connection = co_await connect_to_server(runtime_.config().upstream, runtime_.upstream_tls());
    if (!connection.stream) {
        runtime_.counters().server_connect_errors++;
        note_end(connection.error);
        spdlog::warn("conn {} {}", id_, connection.error);
        co_await send_client_error("FATAL", "08006", "pgshelf: " + connection.error);
        co_return false;
    }
    server_ = std::move(connection.stream);
    auto [ec, n] = co_await server_->write(asio::buffer(startup_packet_));
    if (ec) {
        co_await send_client_error("FATAL", "08006", "pgshelf: lost connection to server during startup");
        co_return false;
    }
    startup_packet_.clear();
    startup_packet_.shrink_to_fit();
    co_return true;
}

// ------------------------------------------------------------ relays

awaitable<void> ClientSession::client_to_server() {
    const std::uint64_t max_message = runtime_.config().proxy.max_message_size;
    pgwire::Limits limits;
    limits.max_message_size = max_message;
    std::size_t streaming = 0;  // bytes of the current frame to pass on uninspected
    std::size_t whole_frame_needed = 0;
    for (;;) {
        char* space = client_in_.prepare(min_read);
        auto [read_ec, n] = co_await client_->read_some(asio::buffer(space, client_in_.free_space()));
        if (read_ec) {
            note_end(read_ec == asio::error::eof ? "client closed" : "client: " + read_ec.message());
            co_return;
        }
        client_in_.commit(n);

        const std::string_view data = client_in_.data();
        std::size_t pos = 0;
        whole_frame_needed = 0;
        bool failed = false;
        while (pos < data.size()) {
            if (streaming > 0) {
                const std::size_t take = std::min(streaming, data.size() - pos);
                pos += take;
                streaming -= take;
                continue;
            }
            pgwire::FrameHeader header;
            auto peeked = pgwire::peek_header(data.substr(pos), header, limits);
            if (peeked.status == DecodeStatus::need_more) {
                break;
            }
            if (peeked.status == DecodeStatus::error) {
                failed = true;
                pending_error_sqlstate_ = peeked.ec == pgwire::CodecErrc::message_too_large ? "54000" : "08P01";
                pending_error_message_ = "invalid message from client: " + peeked.ec.message();
                break;
            }
            const std::size_t frame = header.frame_size();
            const std::size_t available = data.size() - pos;
            if (phase_ == Phase::ready && frontend_needs_inspection(header.type)) {
                const bool whole = frame <= inspect_limit;
                const std::size_t needed = whole ? frame : prefix_limit;
                if (available < needed) {
                    whole_frame_needed = needed;
                    break;
                }
                const std::size_t body_size = std::min(available, frame) - pgwire::frame_header_size;
                const auto body = data.substr(pos + pgwire::frame_header_size, body_size);
                if (inspect_frontend(header.type, body, whole) == Action::fail) {
                    failed = true;
                    break;
                }
            }
            // Forward the frame, streaming whatever has not arrived yet.
            streaming = frame;
        }
        if (pos > 0) {
            auto [write_ec, written] = co_await server_->write(asio::buffer(data.data(), pos));
            if (write_ec) {
                note_end("server: " + write_ec.message());
                co_return;
            }
            client_in_.consume(pos);
        }
        if (failed) {
            runtime_.counters().protocol_errors++;
            note_end(pending_error_message_);
            co_return;
        }
        if (whole_frame_needed > 0) {
            client_in_.reserve_frame(whole_frame_needed);
        }
    }
}

awaitable<void> ClientSession::server_to_client() {
    std::size_t streaming = 0;
    std::deque<std::string> replacements;
    std::vector<asio::const_buffer> out;
    for (;;) {
        char* space = server_in_.prepare(min_read);
        auto [read_ec, n] = co_await server_->read_some(asio::buffer(space, server_in_.free_space()));
        if (read_ec) {
            note_end(read_ec == asio::error::eof ? "server closed" : "server: " + read_ec.message());
            co_return;
        }
        server_in_.commit(n);

        const std::string_view data = server_in_.data();
        std::size_t pos = 0;
        std::size_t forwarded_from = 0;
        std::size_t whole_frame_needed = 0;
        bool failed = false;
        out.clear();
        replacements.clear();
        while (pos < data.size()) {
            if (streaming > 0) {
                const std::size_t take = std::min(streaming, data.size() - pos);
                pos += take;
                streaming -= take;
                continue;
            }
            pgwire::FrameHeader header;
            auto peeked = pgwire::peek_header(data.substr(pos), header);
            if (peeked.status == DecodeStatus::need_more) {
                break;
            }
            if (peeked.status == DecodeStatus::error) {
                failed = true;
                pending_error_sqlstate_ = "08P01";
                pending_error_message_ = "pgshelf: invalid message from server: " + peeked.ec.message();
                break;
            }
            const std::size_t frame = header.frame_size();
            const std::size_t available = data.size() - pos;
            if (backend_needs_inspection(header.type)) {
                const bool whole = frame <= inspect_limit;
                const std::size_t needed = whole ? frame : prefix_limit;
                if (available < needed) {
                    whole_frame_needed = needed;
                    break;
                }
                const std::size_t body_size = std::min(available, frame) - pgwire::frame_header_size;
                const auto body = data.substr(pos + pgwire::frame_header_size, body_size);
                const Action action = inspect_backend(header.type, body, whole);
                if (action == Action::fail) {
                    failed = true;
                    break;
                }
                if (action == Action::replace) {
                    out.push_back(asio::buffer(data.data() + forwarded_from, pos - forwarded_from));
                    replacements.push_back(std::move(replacement_));
                    out.push_back(asio::buffer(replacements.back()));
                    pos += frame;
                    forwarded_from = pos;
                    continue;
                }
            }
            streaming = frame;
        }
        out.push_back(asio::buffer(data.data() + forwarded_from, pos - forwarded_from));
        if (pos > 0) {
            writing_to_client_ = true;
            auto [write_ec, written] = co_await client_->write(out);
            writing_to_client_ = false;
            if (write_ec) {
                note_end("client: " + write_ec.message());
                co_return;
            }
            server_in_.consume(pos);
        }
        if (failed) {
            note_end(pending_error_message_);
            co_return;
        }
        if (draining_ && idle()) {
            note_end("shutdown");
            pending_error_sqlstate_ = "57P01";
            pending_error_message_ = "terminating connection due to administrator command";
            co_return;
        }
        if (whole_frame_needed > 0) {
            server_in_.reserve_frame(whole_frame_needed);
        }
    }
}

// ------------------------------------------------------------ inspection

ClientSession::Action ClientSession::inspect_frontend(char type, std::string_view body, bool complete) {
    if (!complete) {
        // A large message seen through its first bytes: only names matter.
        std::size_t offset = 0;
        if (type == 'Q') {
            state_.on_query(body);
        } else if (type == 'P') {
            auto name = leading_cstring(body, offset);
            state_.on_parse(name.value_or(""), {}, {}, false);
        } else if (type == 'B') {
            auto portal = leading_cstring(body, offset);
            auto statement = leading_cstring(body, offset);
            state_.on_bind(portal.value_or(""), statement.value_or(""));
        } else if (type == 'F') {
            state_.on_function_call();
        }
        return Action::forward;
    }
    pgwire::FrontendMessage message;
    if (auto ec = pgwire::decode_frontend_body(type, body, message); ec) {
        pending_error_sqlstate_ = "08P01";
        pending_error_message_ = std::string("invalid frontend message type '") + type + "': " + ec.message();
        return Action::fail;
    }
    std::visit(
        [this](const auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, pgwire::Query>) {
                state_.on_query(m.sql);
            } else if constexpr (std::is_same_v<T, pgwire::Parse>) {
                state_.on_parse(m.name, m.sql, m.param_types);
            } else if constexpr (std::is_same_v<T, pgwire::Bind>) {
                state_.on_bind(m.portal, m.statement);
            } else if constexpr (std::is_same_v<T, pgwire::Describe>) {
                state_.on_describe(m.kind, m.name);
            } else if constexpr (std::is_same_v<T, pgwire::Execute>) {
                state_.on_execute(m.portal, m.max_rows);
            } else if constexpr (std::is_same_v<T, pgwire::Close>) {
                state_.on_close(m.kind, m.name);
            } else if constexpr (std::is_same_v<T, pgwire::Sync>) {
                state_.on_sync();
            } else if constexpr (std::is_same_v<T, pgwire::FunctionCall>) {
                state_.on_function_call();
            }
        },
        message);
    return Action::forward;
}

ClientSession::Action ClientSession::inspect_backend(char type, std::string_view body, bool complete) {
    if (!complete) {
        // Only RowDescription and notices can plausibly be this large.
        if (type == 'T') {
            state_.on_row_description();
        }
        return Action::forward;
    }
    pgwire::BackendMessage message;
    if (auto ec = pgwire::decode_backend_body(type, body, message); ec) {
        pending_error_sqlstate_ = "08P01";
        pending_error_message_ = std::string("pgshelf: invalid message from server, type '") + type + "': " + ec.message();
        return Action::fail;
    }
    Action action = Action::forward;
    std::visit(
        [this, &action](const auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, pgwire::AuthenticationSASL>) {
                // Channel binding ties SCRAM to the TLS connection the server
                // sees, which is pgshelf's, not the client's: never offer -PLUS.
                pgwire::AuthenticationSASL offered;
                for (auto mechanism : m.mechanisms) {
                    if (!mechanism.ends_with("-PLUS")) {
                        offered.mechanisms.push_back(mechanism);
                    }
                }
                if (offered.mechanisms.size() != m.mechanisms.size()) {
                    replacement_.clear();
                    pgwire::encode(pgwire::BackendMessage{offered}, replacement_);
                    action = Action::replace;
                }
            } else if constexpr (std::is_same_v<T, pgwire::BackendKeyData>) {
                state_.on_backend_key(m.process_id, m.secret_key);
                const ClientKey key = runtime_.cancels().add({runtime_.config().upstream.endpoint, m.process_id, m.secret_key});
                client_key_pid_ = key.pid;
                replacement_.clear();
                pgwire::encode(pgwire::BackendMessage{pgwire::BackendKeyData{key.pid, key.secret}}, replacement_);
                action = Action::replace;
            } else if constexpr (std::is_same_v<T, pgwire::ReadyForQuery>) {
                if (phase_ == Phase::authenticating) {
                    phase_ = Phase::ready;
                    startup_deadline_.cancel();
                }
                state_.on_ready_for_query(m.status);
            } else if constexpr (std::is_same_v<T, pgwire::ErrorResponse>) {
                if (phase_ == Phase::ready) {
                    state_.on_error();
                }
            } else if constexpr (std::is_same_v<T, pgwire::ParameterStatus>) {
                state_.on_parameter_status(m.name, m.value);
            } else if constexpr (std::is_same_v<T, pgwire::ParseComplete>) {
                state_.on_parse_complete();
            } else if constexpr (std::is_same_v<T, pgwire::BindComplete>) {
                state_.on_bind_complete();
            } else if constexpr (std::is_same_v<T, pgwire::CloseComplete>) {
                state_.on_close_complete();
            } else if constexpr (std::is_same_v<T, pgwire::ParameterDescription>) {
                state_.on_parameter_description();
            } else if constexpr (std::is_same_v<T, pgwire::RowDescription>) {
                state_.on_row_description();
            } else if constexpr (std::is_same_v<T, pgwire::NoData>) {
                state_.on_no_data();
            } else if constexpr (std::is_same_v<T, pgwire::PortalSuspended>) {
                state_.on_portal_suspended();
            } else if constexpr (std::is_same_v<T, pgwire::EmptyQueryResponse>) {
                state_.on_empty_query();
            } else if constexpr (std::is_same_v<T, pgwire::CommandComplete>) {
                state_.on_command_complete(m.tag);
            }
        },
        message);
    return action;
}

// ------------------------------------------------------------ lifecycle

void ClientSession::note_end(std::string reason) {
    // The first cause wins; the other relay then only sees the cancellation.
    if (end_reason_.empty()) {
        end_reason_ = std::move(reason);
    }
}

bool ClientSession::idle() const {
    return phase_ == Phase::ready && state_.pending().empty() && state_.transaction_status() == 'I';
}

void ClientSession::begin_drain() {
    draining_ = true;
    if (idle() && !writing_to_client_ && server_) {
        // Both relays are waiting for input; closing the server side ends
        // them and run() then says goodbye to the client.
        note_end("shutdown");
        pending_error_sqlstate_ = "57P01";
        pending_error_message_ = "terminating connection due to administrator command";
        server_->close();
    }
}

awaitable<void> ClientSession::send_client_error(std::string_view severity, std::string_view sqlstate,
                                                 std::string_view message) {
    std::string frame;
    pgwire::encode_error(frame, severity, sqlstate, message);
    co_await client_->write(asio::buffer(frame));
}

void ClientSession::close_all() {
    phase_ = Phase::closing;
    startup_deadline_.cancel();
    client_->close();
    if (server_) {
        server_->close();
    }
}

}  // namespace pgshelf::proxy
