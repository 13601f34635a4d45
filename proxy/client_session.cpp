// One client connection relayed to one server connection; see client_session.hpp.
#include "proxy/client_session.hpp"

#include <spdlog/spdlog.h>

#include "pgwire/value_text.hpp"
#include "proxy/admin_console.hpp"
#include "proxy/cache_engine.hpp"
#include "proxy/logging.hpp"
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
// How long a miss waits for a concurrent miss on the same entry (in this
// process) before going to PostgreSQL itself.
constexpr std::chrono::milliseconds coalesce_wait{500};

// An unreachable server or a connection storm would otherwise log once per
// client connection attempt.
SharedLogRateLimiter server_connect_warnings;
SharedLogRateLimiter refusal_warnings;
SharedLogRateLimiter unanalysed_notes;
SharedLogRateLimiter damaged_entry_warnings;  // many damaged entries must not flood the log

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

// Forwards a frame of which `available` bytes are at `pos`: those go with
// this write, the rest streams with the next reads.
void pass_on(std::size_t frame, std::size_t available, std::size_t& pos, std::size_t& streaming) {
    const std::size_t take = std::min(frame, available);
    pos += take;
    streaming = frame - take;
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

// Bound parameters as text, the form keys are rendered from; nullopt when
// a binary parameter has a type pgshelf cannot render.
std::optional<std::vector<std::optional<std::string>>> bound_parameters_text(const pgwire::Bind& bind,
                                                                             const std::vector<std::uint32_t>& types) {
    std::vector<std::optional<std::string>> out;
    out.reserve(bind.params.size());
    for (std::size_t i = 0; i < bind.params.size(); ++i) {
        const auto& value = bind.params[i];
        if (!value) {
            out.emplace_back();
            continue;
        }
        const std::int16_t format = bind.param_formats.empty()        ? 0
                                    : bind.param_formats.size() == 1 ? bind.param_formats[0]
                                    : i < bind.param_formats.size()  ? bind.param_formats[i]
                                                                     : 0;
        if (format == 0) {
            out.emplace_back(std::string(*value));
            continue;
        }
        auto text = pgwire::binary_value_text(i < types.size() ? types[i] : 0, *value);
        if (!text) {
            return std::nullopt;
        }
        out.emplace_back(std::move(*text));
    }
    return out;
}

}  // namespace

ClientSession::ClientSession(Runtime& runtime, CacheEngine* cache, tcp::socket socket, std::uint64_t id)
    : runtime_(runtime),
      cache_(cache),
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
    if (info_) {
        runtime_.clients().remove(id_);
    }
    if (server_counted_) {
        runtime_.counters().server_connections--;
    }
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
        if (const auto suppressed = refusal_warnings.allow()) {
            spdlog::warn("conn {} from {} refused: proxy.max_connections reached{}", id_, peer_text,
                         suppressed_note(*suppressed));
        }
        co_await send_client_error("FATAL", "53300", "sorry, too many clients already");
        close_all();
        co_return;
    }
    spdlog::info("conn {} open from {} user={} database={}{}", id_, peer_text, user_, database_,
                 client_->is_tls() ? " tls" : "");
    info_ = std::make_shared<ClientInfo>();
    info_->id = id_;
    info_->peer = peer_text;
    info_->user = user_;
    info_->database = database_;
    info_->tls = client_->is_tls();
    info_->connected_at = std::chrono::system_clock::now();
    info_->touch();
    runtime_.clients().add(info_);

    if (database_ == runtime_.config().admin.console_database) {
        console_ = true;
        AdminConsole console(runtime_, cache_, *client_, client_in_, user_, id_);
        if (co_await console.authenticate()) {
            phase_ = Phase::ready;
            startup_deadline_.cancel();
            note_end(co_await console.serve());
        } else {
            note_end("admin console authentication failed");
        }
    } else if (co_await open_server()) {
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
    // Here rather than in the destructor: at shutdown, sessions outlive
    // their worker's cache engine.
    if (client_key_pid_ != 0 && cache_ != nullptr) {
        cache_->retract_cancel_key(client_key_pid_);
    }
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
                } else if (name != "application_name" && name != "fallback_application_name" &&
                           !name.starts_with("_pq_.")) {
                    state_.on_startup_parameter(name, value);
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
    const ClientKey key{request.process_id, request.secret_key};
    auto target = runtime_.cancels().find(key);
    if (!target && cache_ != nullptr) {
        target = co_await cache_->find_cancel_key(key);  // a session of another instance
    }
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
        if (const auto suppressed = server_connect_warnings.allow()) {
            spdlog::warn("conn {} {}{}", id_, connection.error, suppressed_note(*suppressed));
        }
        const std::string message = "pgshelf: " + connection.error;
        co_await send_client_error("FATAL", "08006", message);
        co_return false;
    }
    server_ = std::move(connection.stream);
    runtime_.counters().server_connections++;
    server_counted_ = true;
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
    pgwire::Limits limits;
    limits.max_message_size = runtime_.config().proxy.max_message_size;
    std::size_t streaming = 0;  // bytes of the current frame to pass on uninspected
    bool read_needed = true;
    std::vector<asio::const_buffer> out;
    std::deque<std::string> extra;  // bytes pgshelf adds (released batches, injected Parse)
    char last_type = 0;                // of the last frame looked at
    for (;;) {
        if (read_needed) {
            char* space = client_in_.prepare(min_read);
            const bool awaits_answer = streaming == 0 && client_in_.size() == 0 && (last_type == 'S' || last_type == 'Q');
            auto [read_ec, n] = co_await client_->read_some(
                asio::buffer(space, client_in_.free_space()),
                awaits_answer ? Stream::PeerTurn::waits_for_us : Stream::PeerTurn::may_send);
            if (read_ec) {
                note_end(read_ec == asio::error::eof ? "client closed" : "client: " + read_ec.message());
                if (writes_in_flight()) {
                    co_await drain_after_client_left();
                }
                co_return;
            }
            client_in_.commit(n);
        }
        read_needed = true;

        const std::string_view data = client_in_.data();
        std::size_t pos = 0;
        std::size_t segment_from = 0;
        std::size_t whole_frame_needed = 0;
        Action held = Action::forward;
        std::size_t held_frame_size = 0;
        bool failed = false;
        out.clear();
        if (!extra.empty()) {
            extra.clear();
        }
        auto cut = [&](std::size_t at) {
            if (at > segment_from) {
                out.push_back(asio::buffer(data.data() + segment_from, at - segment_from));
            }
            segment_from = at;
        };
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
            last_type = header.type;
            if (peeked.status == DecodeStatus::error) {
                failed = true;
                pending_error_sqlstate_ = peeked.ec == pgwire::CodecErrc::message_too_large ? "54000" : "08P01";
                pending_error_message_ = "invalid message from client: " + peeked.ec.message();
                break;
            }
            const std::size_t frame = header.frame_size();
            const std::size_t available = data.size() - pos;
            if (phase_ != Phase::ready || !frontend_needs_inspection(header.type)) {
                if (batch_) {
                    // Anything outside the batch pattern (Flush, CopyData...) releases it.
                    cut(pos);
                    extra.push_back(release_batch());
                    out.push_back(asio::buffer(extra.back()));
                }
                pass_on(frame, available, pos, streaming);
                continue;
            }
            const bool whole = frame <= inspect_limit;
            const std::size_t needed = whole ? frame : prefix_limit;
            if (available < needed) {
                whole_frame_needed = needed;
                break;
            }
            const auto frame_bytes = data.substr(pos, std::min(available, frame));
            // A held batch continues only with whole frames of its pattern.
            Action action = !batch_ ? inspect_frontend(header.type, frame_bytes, whole)
                            : whole ? inspect_frontend_batch(header.type, frame_bytes)
                                    : Action::release_batch;
            if (action == Action::release_batch) {
                cut(pos);
                extra.push_back(release_batch());
                out.push_back(asio::buffer(extra.back()));
                action = inspect_frontend(header.type, frame_bytes, whole);
            }
            if (!replacement_.empty()) {
                // An injected Parse goes right before the frame that needs it.
                cut(pos);
                extra.push_back(std::move(replacement_));
                replacement_.clear();
                out.push_back(asio::buffer(extra.back()));
            }
            if (action == Action::fail) {
                failed = true;
                break;
            }
            if (action == Action::absorb || action == Action::hold_batch) {
                cut(pos);
                batch_->bytes.append(frame_bytes);
                pos += frame;
                segment_from = pos;
                if (action == Action::hold_batch) {
                    held = action;
                    break;
                }
                continue;
            }
            if (action == Action::hold_query) {
                cut(pos);
                held = action;
                held_frame_size = frame;
                break;
            }
            pass_on(frame, available, pos, streaming);
        }
        if (held != Action::hold_query) {
            cut(pos);
        }
        if (!out.empty()) {
            error_code write_ec;
            const std::size_t sent = server_->write_now(out, write_ec);
            if (!write_ec && sent < asio::buffer_size(out)) {
                write_ec = std::get<0>(co_await server_->write_rest(out, sent));
            }
            if (write_ec) {
                note_end("server: " + write_ec.message());
                co_return;
            }
            note_server_busy();
        }
        client_in_.consume(pos);
        if (failed) {
            runtime_.counters().protocol_errors++;
            note_end(pending_error_message_);
            co_return;
        }
        if (held == Action::hold_query) {
            const std::string frame(client_in_.data().substr(0, held_frame_size));
            client_in_.consume(held_frame_size);
            if (!co_await serve_query(frame)) {
                forwarding_held_ = true;
                inspect_frontend('Q', frame, true);  // now it goes to the server
                forwarding_held_ = false;
                auto [write_ec, written] = co_await server_->write(asio::buffer(frame));
                if (write_ec) {
                    note_end("server: " + write_ec.message());
                    co_return;
                }
                note_server_busy();
            }
            read_needed = false;  // more frames may wait in the buffer
            continue;
        }
        if (held == Action::hold_batch) {
            if (!co_await serve_batch()) {
                const std::string bytes = release_batch();
                auto [write_ec, written] = co_await server_->write(asio::buffer(bytes));
                if (write_ec) {
                    note_end("server: " + write_ec.message());
                    co_return;
                }
                note_server_busy();
            }
            batch_.reset();
            read_needed = false;
            continue;
        }
        if (whole_frame_needed > 0) {
            client_in_.reserve_frame(whole_frame_needed);
        }
    }
}

awaitable<void> ClientSession::server_to_client() {
    std::size_t streaming = 0;
    bool read_needed = true;
    std::deque<std::string> replacements;
    std::vector<asio::const_buffer> out;
    char last_type = 0;  // of the last frame looked at; 0 after frames skipped unread
    for (;;) {
        if (read_needed) {
            char* space = server_in_.prepare(min_read);
            const bool server_idle = streaming == 0 && server_in_.size() == 0 && last_type == 'Z';
            auto [read_ec, n] = co_await server_->read_some(
                asio::buffer(space, server_in_.free_space()),
                server_idle ? Stream::PeerTurn::waits_for_us : Stream::PeerTurn::may_send);
            if (read_ec) {
                note_end(read_ec == asio::error::eof ? "server closed" : "server: " + read_ec.message());
                co_return;
            }
            server_in_.commit(n);
        }
        read_needed = true;

        const std::string_view data = server_in_.data();
        std::size_t pos = 0;
        std::size_t forwarded_from = 0;
        std::size_t whole_frame_needed = 0;
        std::size_t invalidate_before = std::string_view::npos;  // a held ReadyForQuery's offset
        bool failed = false;
        out.clear();
        if (!replacements.empty()) {
            replacements.clear();
        }
        auto cut = [&](std::size_t at) {
            if (at > forwarded_from) {
                out.push_back(asio::buffer(data.data() + forwarded_from, at - forwarded_from));
            }
            forwarded_from = at;
        };
        while (pos < data.size()) {
            if (streaming > 0) {
                const std::size_t take = std::min(streaming, data.size() - pos);
                if (capture_ && capture_->streaming_left > 0) {
                    capture_frame(0, data.substr(pos, take), 0);
                }
                pos += take;
                streaming -= take;
                continue;
            }
            if (!capture_) {
                // Rows and the other frames nothing needs to look at, in one sweep.
                const std::size_t swept_from = pos;
                pos = pgwire::skip_whole_frames(data, pos, [](char type) { return !backend_needs_inspection(type); });
                if (pos != swept_from) {
                    last_type = 0;
                }
                if (pos == data.size()) {
                    break;
                }
            }
            pgwire::FrameHeader header;
            auto peeked = pgwire::peek_header(data.substr(pos), header);
            if (peeked.status == DecodeStatus::need_more) {
                break;
            }
            last_type = header.type;
            if (peeked.status == DecodeStatus::error) {
                failed = true;
                pending_error_sqlstate_ = "08P01";
                pending_error_message_ = "pgshelf: invalid message from server: " + peeked.ec.message();
                break;
            }
            const std::size_t frame = header.frame_size();
            const std::size_t available = data.size() - pos;
            Action action = Action::forward;
            if (backend_needs_inspection(header.type)) {
                const bool whole = frame <= inspect_limit;
                const std::size_t needed = whole ? frame : prefix_limit;
                if (available < needed) {
                    whole_frame_needed = needed;
                    break;
                }
                const std::size_t body_size = std::min(available, frame) - pgwire::frame_header_size;
                action = inspect_backend(header.type, data.substr(pos + pgwire::frame_header_size, body_size), whole);
            }
            if (capture_) {
                capture_frame(header.type, data.substr(pos, std::min(available, frame)), frame);
            }
            if (action == Action::fail) {
                failed = true;
                break;
            }
            if (action == Action::replace || action == Action::drop) {
                cut(pos);
                if (action == Action::replace) {
                    replacements.push_back(std::move(replacement_));
                    replacement_.clear();
                    out.push_back(asio::buffer(replacements.back()));
                }
                pos += frame;
                forwarded_from = pos;
                continue;
            }
            if (action == Action::hold_for_invalidation) {
                cut(pos);
                invalidate_before = pos;
                pos += frame;  // ReadyForQuery is small and whole
                break;
            }
            pass_on(frame, available, pos, streaming);  // (what has arrived was captured above)
        }
        if (invalidate_before == std::string_view::npos) {
            cut(pos);
        }
        if (!out.empty()) {
            std::optional<std::size_t> sent;
            std::optional<bool> written = write_client_at_once(out, sent);
            if (!written) {
                written = co_await write_client(out, sent);
            }
            if (!*written && invalidate_before == std::string_view::npos && !writes_in_flight()) {
                co_return;
            }
        }
        if (invalidate_before != std::string_view::npos) {
            // The client learns its writes committed only after their cache
            // entries are invalid: no read that starts after the commit
            // acknowledgement can see the old value. This runs whether or
            // not the client is still there: the commit happened.
            WritePlan plan = std::move(transaction_writes_);
            transaction_writes_ = {};
            if (rules_) {
                invalidating_ = true;
                co_await cache_->invalidate(plan);
                invalidating_ = false;
            }
            const std::vector<asio::const_buffer> ready{
                asio::buffer(data.data() + invalidate_before, pos - invalidate_before)};
            if (!co_await write_client(ready) && !writes_in_flight()) {
                co_return;
            }
            read_needed = pos >= data.size();
        }
        server_in_.consume(pos);
        if (failed) {
            note_end(pending_error_message_);
            co_return;
        }
        if (client_gone_ && !writes_in_flight()) {
            co_return;  // nothing left that could still commit
        }
        if (whole_frame_needed > 0) {
            server_in_.reserve_frame(whole_frame_needed);
        }
    }
}

bool ClientSession::writes_in_flight() const {
    return invalidating_ || (rules_ && !transaction_writes_.empty() && !state_.pending().empty());
}

awaitable<void> ClientSession::drain_after_client_left() {
    client_gone_ = true;
    // Stop whatever runs long; a COMMIT (or autocommit write) PostgreSQL has
    // already received still commits, and its ReadyForQuery comes back.
    if (state_.backend_key()) {
        co_await send_cancel(runtime_.config().upstream, state_.backend_key()->pid, state_.backend_key()->secret);
    }
    constexpr auto drain_limit = std::chrono::seconds(10);
    const auto deadline = std::chrono::steady_clock::now() + drain_limit;
    asio::steady_timer pause(co_await asio::this_coro::executor);
    while (writes_in_flight() && std::chrono::steady_clock::now() < deadline) {
        pause.expires_after(std::chrono::milliseconds(5));
        co_await pause.async_wait(use_nothrow);
    }
    if (writes_in_flight()) {
        // PostgreSQL did not answer in time: whether the writes committed is
        // unknown. Fail closed, as for an invalidation Redis did not confirm.
        runtime_.invalidation_failed();
        spdlog::warn("conn {} client left with writes in flight and the server did not answer within {} s: "
                     "hits suspended until the global generation is bumped", id_, drain_limit.count());
    }
}

std::optional<bool> ClientSession::write_client_at_once(const std::vector<asio::const_buffer>& buffers,
                                                        std::optional<std::size_t>& sent) {
    sent.reset();
    if (client_gone_) {
        return false;
    }
    if (client_busy_) {
        return std::nullopt;  // behind another writer: write_client queues it
    }
    error_code ec;
    sent = client_->write_now(buffers, ec);
    if (ec) {
        note_end("client: " + ec.message());
        client_gone_ = true;
        return false;
    }
    if (*sent == asio::buffer_size(buffers)) {
        return true;
    }
    return std::nullopt;
}

awaitable<bool> ClientSession::write_client(const std::vector<asio::const_buffer>& buffers,
                                            std::optional<std::size_t> sent) {
    if (client_gone_) {
        co_return false;
    }
    // With `sent` the caller tried the socket while nobody else was writing
    // and has not suspended since, so the gate is still free.
    while (client_busy_) {
        asio::steady_timer wait(client_->socket().get_executor(), asio::steady_timer::time_point::max());
        client_waiters_.push_back(&wait);
        co_await wait.async_wait(use_nothrow);
    }
    client_busy_ = true;
    // Not tried yet: write() tries the socket at once before waiting.
    auto [ec, written] = sent ? co_await client_->write_rest(buffers, *sent) : co_await client_->write(buffers);
    client_busy_ = false;
    if (!client_waiters_.empty()) {
        client_waiters_.front()->cancel();
        client_waiters_.pop_front();
    }
    if (ec) {
        note_end("client: " + ec.message());
        client_gone_ = true;
        co_return false;
    }
    co_return true;
}

// ------------------------------------------------------------ inspection

bool ClientSession::exceeds_name_limit(char type, std::string_view name) {
    // pgshelf keeps every named statement's text and every portal's
    // parameters; this bounds what one client can make it hold.
    const std::size_t limit = runtime_.config().proxy.max_prepared_statements;
    if (limit == 0 || name.empty()) {
        return false;
    }
    const bool statement = type == 'P';
    const bool known = statement ? state_.statement(name) != nullptr : state_.portal(name) != nullptr;
    if (known || (statement ? state_.statement_count() : state_.portal_count()) < limit) {
        return false;
    }
    pending_error_sqlstate_ = "53400";
    pending_error_message_ = fmt::format(
        "pgshelf: more than {} named {} in one session (proxy.max_prepared_statements); close unused ones "
        "or raise the limit",
        limit, statement ? "prepared statements" : "portals");
    return true;
}

ClientSession::Action ClientSession::inspect_frontend(char type, std::string_view frame, bool complete) {
    const std::string_view body = frame.substr(pgwire::frame_header_size);
    // Without a cache only Bind's names matter: skip decoding its values.
    if (!complete || (type == 'B' && !cache_active())) {
        // A large message seen through its first bytes: only names matter.
        std::size_t offset = 0;
        if (type == 'Q') {
            if (cache_active() && !forwarding_held_) {
                note_unanalysed_write();
            }
            state_.on_query(body, false);
        } else if (type == 'P') {
            auto name = leading_cstring(body, offset);
            if (exceeds_name_limit(type, name.value_or(""))) {
                return Action::fail;
            }
            const std::string_view sql_prefix = offset <= body.size() ? body.substr(offset) : std::string_view{};
            state_.on_parse(name.value_or(""), sql_prefix, {}, false);
        } else if (type == 'B') {
            auto portal = leading_cstring(body, offset);
            auto statement = leading_cstring(body, offset);
            if (exceeds_name_limit(type, portal.value_or(""))) {
                return Action::fail;
            }
            replacement_ = injection_for_unnamed(statement.value_or(""));
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
    Action action = Action::forward;
    std::visit(
        [this, &action](const auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, pgwire::Query>) {
                uncached_tag_ = 0;
                if (cache_active() && !forwarding_held_) {
                    if (auto plan = plan_sql(m.sql, {}, {})) {
                        if (plan->read && state_.pending().empty() && !state_.skipping_to_sync()) {
                            held_plan_ = std::move(plan);
                            action = Action::hold_query;
                            return;
                        }
                        if (plan->writes) {
                            note_write(plan->write);
                        }
                    }
                }
                held_plan_.reset();
                state_.on_query(m.sql);
                if (uncached_tag_ != 0) {
                    state_.tag_last(uncached_tag_, std::chrono::steady_clock::now());
                }
            } else if constexpr (std::is_same_v<T, pgwire::Parse>) {
                if (m.name.empty() && cache_active() && !forwarding_held_ && state_.pending().empty() &&
                    !state_.skipping_to_sync()) {
                    batch_.emplace();
                    batch_->has_parse = true;
                    batch_->parse_sql.assign(m.sql);
                    batch_->parse_types = m.param_types;
                    action = Action::absorb;
                    return;
                }
                if (m.name.empty()) {
                    server_unnamed_stale_ = false;  // the server gets the new one now
                } else if (exceeds_name_limit('P', m.name)) {
                    action = Action::fail;
                    return;
                }
                state_.on_parse(m.name, m.sql, m.param_types);
            } else if constexpr (std::is_same_v<T, pgwire::Bind>) {
                const PreparedStatement* statement = state_.statement(m.statement);
                auto parameters = cache_active() && statement != nullptr
                                      ? bound_parameters_text(m, statement->param_types)
                                      : std::nullopt;
                if (cache_active() && !forwarding_held_ && m.portal.empty() && state_.pending().empty() &&
                    !state_.skipping_to_sync() && statement != nullptr) {
                    batch_.emplace();
                    batch_->has_bind = true;
                    batch_->bind_statement.assign(m.statement);
                    batch_->parameters = std::move(parameters);
                    batch_->result_formats = m.result_formats;
                    action = Action::absorb;
                    return;
                }
                if (exceeds_name_limit('B', m.portal)) {
                    action = Action::fail;
                    return;
                }
                replacement_ = injection_for_unnamed(m.statement);
                state_.on_bind(m.portal, m.statement, std::move(parameters), m.result_formats);
            } else if constexpr (std::is_same_v<T, pgwire::Describe>) {
                if (m.kind == 'S') {
                    replacement_ = injection_for_unnamed(m.name);
                }
                state_.on_describe(m.kind, m.name);
            } else if constexpr (std::is_same_v<T, pgwire::Execute>) {
                uncached_tag_ = 0;
                if (cache_active()) {
                    const Portal* portal = state_.portal(m.portal);
                    const PreparedStatement* statement = portal ? state_.statement(portal->statement) : nullptr;
                    if (statement != nullptr && statement->unanalysed) {
                        note_unanalysed_write();
                    } else if (statement != nullptr && !statement->sql.empty()) {
                        static const std::vector<std::optional<std::string>> none;
                        if (auto plan = plan_sql(statement->sql, portal->parameters.value_or(none), portal->result_formats);
                            plan && plan->writes) {
                            note_write(plan->write);
                        }
                    }
                }
                state_.on_execute(m.portal, m.max_rows);
                if (uncached_tag_ != 0) {
                    state_.tag_last(uncached_tag_, std::chrono::steady_clock::now());
                }
            } else if constexpr (std::is_same_v<T, pgwire::Close>) {
                state_.on_close(m.kind, m.name);
            } else if constexpr (std::is_same_v<T, pgwire::Sync>) {
                state_.on_sync();
            } else if constexpr (std::is_same_v<T, pgwire::FunctionCall>) {
                state_.on_function_call();
            }
        },
        message);
    return action;
}

// A frame arriving while an extended batch is held: it either continues
// the one shape the cache answers (Parse? Bind Describe(P)? Execute Sync)
// or releases the batch to the server.
ClientSession::Action ClientSession::inspect_frontend_batch(char type, std::string_view frame) {
    pgwire::FrontendMessage message;
    if (pgwire::decode_frontend_body(type, frame.substr(pgwire::frame_header_size), message)) {
        return Action::release_batch;  // inspect_frontend reports the error
    }
    HeldBatch& b = *batch_;
    if (auto* bind = std::get_if<pgwire::Bind>(&message);
        bind && !b.has_bind && bind->statement.empty() && bind->portal.empty()) {
        b.has_bind = true;
        b.bind_statement.clear();
        b.parameters = bound_parameters_text(*bind, b.parse_types);
        b.result_formats = bind->result_formats;
        return Action::absorb;
    }
    if (auto* describe = std::get_if<pgwire::Describe>(&message);
        describe && describe->kind == 'P' && describe->name.empty() && b.has_bind && !b.has_describe && !b.has_execute) {
        b.has_describe = true;
        return Action::absorb;
    }
    if (auto* execute = std::get_if<pgwire::Execute>(&message);
        execute && execute->portal.empty() && execute->max_rows == 0 && b.has_bind && !b.has_execute) {
        b.has_execute = true;
        return Action::absorb;
    }
    if (std::holds_alternative<pgwire::Sync>(message) && b.has_execute) {
        return Action::hold_batch;
    }
    return Action::release_batch;
}

ClientSession::Action ClientSession::inspect_backend(char type, std::string_view body, bool complete) {
    if (type == 'T') {
        // Only its arrival matters to the bookkeeping (a Describe's answer).
        state_.on_row_description();
        return Action::forward;
    }
    if (!complete) {
        return Action::forward;  // a huge notice or error: nothing to learn from it
    }
    // The replies every statement gets are handled without the general
    // decoder; a malformed one falls through to it and fails there.
    if (body.empty()) {
        switch (type) {
            case '1': {
                const Action action = state_.front_is_injected() ? Action::drop : Action::forward;
                state_.on_parse_complete();
                return action;
            }
            case '2': state_.on_bind_complete(); return Action::forward;
            case '3': state_.on_close_complete(); return Action::forward;
            case 'n': state_.on_no_data(); return Action::forward;
            case 's': state_.on_portal_suspended(); return Action::forward;
            case 'I':
                record_server_time();
                state_.on_empty_query();
                return Action::forward;
            default: break;
        }
    } else if (type == 'C' && body.find('\0') == body.size() - 1) {
        const std::string_view tag = body.substr(0, body.size() - 1);
        if (tag == "ROLLBACK") {
            transaction_rolled_back_ = true;
        }
        record_server_time();
        state_.on_command_complete(tag);
        return Action::forward;
    }
    pgwire::BackendMessage message;
    if (auto ec = pgwire::decode_backend_body(type, body, message); ec) {
        pending_error_sqlstate_ = "08P01";
        pending_error_message_ =
            std::string("pgshelf: invalid message from server, type '") + type + "': " + ec.message();
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
                const ServerKey server{runtime_.config().upstream.endpoint, m.process_id, m.secret_key};
                const ClientKey key = runtime_.cancels().add(server);
                client_key_pid_ = key.pid;
                if (cache_ != nullptr) {
                    cache_->publish_cancel_key(key, server);
                }
                replacement_.clear();
                pgwire::encode(pgwire::BackendMessage{pgwire::BackendKeyData{key.pid, key.secret}}, replacement_);
                action = Action::replace;
            } else if constexpr (std::is_same_v<T, pgwire::ReadyForQuery>) {
                if (phase_ == Phase::authenticating) {
                    phase_ = Phase::ready;
                    startup_deadline_.cancel();
                }
                state_.on_ready_for_query(m.status);
                if (info_) {
                    info_->transaction_status.store(m.status, std::memory_order_relaxed);
                    info_->active.store(!state_.pending().empty(), std::memory_order_relaxed);
                    info_->server_requests.fetch_add(1, std::memory_order_relaxed);
                    info_->touch();
                }
                if (cache_ != nullptr && state_.pending().empty()) {
                    rules_ = cache_->rules();  // a reload takes effect between requests
                }
                if (capture_) {
                    finish_capture();
                }
                if (m.status == 'I') {
                    const bool apply = !transaction_writes_.empty() && !transaction_rolled_back_ && rules_;
                    transaction_wrote_ = false;
                    transaction_rolled_back_ = false;
                    writes_since_ready_ = {};
                    if (apply) {
                        action = Action::hold_for_invalidation;
                    } else {
                        transaction_writes_ = {};
                    }
                } else if (!writes_since_ready_.empty() && rules_) {
                    // Inside a transaction: invalidate as the writes complete,
                    // and again at COMMIT (transaction_writes_ keeps them).
                    asio::co_spawn(client_->socket().get_executor(),
                                   [self = shared_from_this(), plan = std::move(writes_since_ready_)]() -> awaitable<void> {
                                       co_await self->cache_->invalidate(plan);
                                   },
                                   asio::detached);
                    writes_since_ready_ = {};
                }
            } else if constexpr (std::is_same_v<T, pgwire::ErrorResponse>) {
                if (phase_ == Phase::ready) {
                    state_.on_error();
                }
            } else if constexpr (std::is_same_v<T, pgwire::ParameterStatus>) {
                state_.on_parameter_status(m.name, m.value);
            } else if constexpr (std::is_same_v<T, pgwire::ParameterDescription>) {
                state_.on_parameter_description(m.types);
            }
        },
        message);
    return action;
}

// ------------------------------------------------------------ cache

bool ClientSession::cache_active() const { return cache_ != nullptr && rules_ != nullptr && phase_ == Phase::ready; }

SessionFacts ClientSession::session_facts() const {
    SessionFacts facts;
    facts.transaction_status = state_.transaction_status();
    facts.transaction_wrote = transaction_wrote_;
    facts.settings_uncertain = state_.settings_uncertain();
    facts.database = database_;
    facts.role = state_.current_role();
    facts.settings_fingerprint = state_.settings_fingerprint();
    facts.temp_tables = &temp_tables_;
    return facts;
}

std::optional<RequestPlan> ClientSession::plan_sql(std::string_view sql,
                                                   const std::vector<std::optional<std::string>>& parameters,
                                                   std::span<const std::int16_t> result_formats) {
    if (!cache_active()) {
        return std::nullopt;
    }
    auto analysis = cache_->shapes().get(sql);
    if (!analysis->settings_changing_call.empty() && !state_.settings_uncertain()) {
        // Entries stored under the old namespace would reach sessions with
        // other settings (e.g. another tenant under row-level security).
        spdlog::debug("conn {} calls {}(), which may change settings: no more hits in this session", id_,
                      analysis->settings_changing_call);
        state_.mark_settings_uncertain();
    }
    auto plan = plan_request(*rules_, *analysis, parameters, result_formats, session_facts());
    for (auto& table : plan.temp_tables_created) {
        temp_tables_.push_back(std::move(table));
    }
    // A held batch that was planned before its release is planned again as
    // its frames go to the server: count it once.
    const bool count = !std::exchange(batch_counted_, false);
    uncached_tag_ = 0;
    if (!plan.read && count) {
        runtime_.counters().bypasses[static_cast<std::size_t>(plan.bypass)]++;
    }
    if (plan.uncached_select != nullptr) {
        // 0 means "not timed": a shape hash of 0 is not worth a special case.
        uncached_tag_ = plan.uncached_select->shape_hash | 1;
        if (count) {
            runtime_.uncached_reads().seen(uncached_tag_, sql);
        }
        plan.uncached_select = nullptr;  // points into `analysis`
    }
    return plan;
}

void ClientSession::note_unanalysed_write() {
    // A statement above inspect_limit is streamed to the server unparsed:
    // whatever it writes, no cached read may outlive it. Every rule is
    // invalidated, as the table fallback would for each table it reads.
    WritePlan plan;
    for (const auto& rule : rules_->cache_rules()) {
        plan.fallback_rules.push_back(rule.name);
        plan.fallback_tables.emplace_back();  // no table to name or count
    }
    if (plan.empty()) {
        return;
    }
    note_write(plan);
    if (const auto suppressed = unanalysed_notes.allow()) {
        spdlog::info("conn {} a statement too large to analyse (over {} bytes) invalidates every cache rule{}", id_,
                     inspect_limit, suppressed_note(*suppressed));
    }
}

void ClientSession::note_write(const WritePlan& plan) {
    transaction_wrote_ = true;
    // A read captured before this write, in the same batch, must not be stored.
    if (capture_) {
        capture_->valid = false;
    }
    auto add_unique = [](std::vector<std::string>& to, const std::vector<std::string>& from) {
        for (const auto& item : from) {
            if (std::find(to.begin(), to.end(), item) == to.end()) {
                to.push_back(item);
            }
        }
    };
    for (auto* target : {&transaction_writes_, &writes_since_ready_}) {
        add_unique(target->keys, plan.keys);
        add_unique(target->key_rules, plan.key_rules);
        for (std::size_t i = 0; i < plan.fallback_rules.size(); ++i) {
            if (std::find(target->fallback_rules.begin(), target->fallback_rules.end(), plan.fallback_rules[i]) ==
                target->fallback_rules.end()) {
                target->fallback_rules.push_back(plan.fallback_rules[i]);
                target->fallback_tables.push_back(plan.fallback_tables[i]);
            }
        }
    }
    for (std::size_t i = 0; i < plan.fallback_rules.size(); ++i) {
        spdlog::debug("conn {} write to {} invalidates rule '{}' (no [[invalidate]] rule covers it)", id_,
                      plan.fallback_tables[i], plan.fallback_rules[i]);
    }
}

namespace {

// Whether `payload` is a sequence of whole, well-formed frames: nothing
// else is ever stored or replayed to a client.
bool whole_frames(std::string_view payload) {
    return pgwire::skip_whole_frames(payload, 0, [](char) { return true; }) == payload.size();
}

// Splits a cached payload into its RowDescription (if stored) and the rest
// (DataRows and CommandComplete); nullopt when it is not whole frames (an
// entry damaged in Redis, or written by a faulty version: a miss, then).
std::optional<std::pair<std::string_view, std::string_view>> split_payload(std::string_view payload) {
    if (!whole_frames(payload)) {
        if (const auto suppressed = damaged_entry_warnings.allow()) {
            spdlog::warn("a cached entry is not a sequence of whole protocol messages: served by PostgreSQL instead{}",
                         suppressed_note(*suppressed));
        }
        return std::nullopt;
    }
    if (!payload.empty() && payload.front() == 'T') {
        const std::size_t row_description = pgwire::detail::frame_length_at(payload, 0) + std::size_t{1};
        return std::pair{payload.substr(0, row_description), payload.substr(row_description)};
    }
    return std::pair{std::string_view{}, payload};
}

std::string ready_for_query(char status) {
    std::string out;
    pgwire::encode(pgwire::BackendMessage{pgwire::ReadyForQuery{status}}, out);
    return out;
}

}  // namespace

void ClientSession::count_hit(const ReadPlan& plan, std::size_t payload_size) {
    runtime_.counters().hits++;
    runtime_.counters().served_bytes += payload_size;
    runtime_.rule_stats(plan.rule->name).hits++;
    runtime_.latencies().hit.observe(std::chrono::steady_clock::now() - request_started_);
    if (info_) {
        info_->cache_hits.fetch_add(1, std::memory_order_relaxed);
        info_->touch();
    }
}

void ClientSession::record_server_time() {
    if (auto [tag, sent] = state_.take_front_tag(); tag != 0) {
        runtime_.uncached_reads().timed(tag, std::chrono::steady_clock::now() - sent);
    }
}

awaitable<bool> ClientSession::serve_query(const std::string& frame) {
    request_started_ = std::chrono::steady_clock::now();
    auto plan = std::move(held_plan_);
    held_plan_.reset();
    if (!plan || !plan->read || !rules_) {
        co_return false;
    }
    auto rules = rules_;  // the set this request started with, even across a reload
    auto lookup = co_await cache_->lookup(*rules, *plan->read);
    if (lookup && lookup->hit) {
        if (auto parts = split_payload(lookup->payload); parts && !parts->first.empty()) {
            const std::string ready = ready_for_query(state_.transaction_status());
            const std::vector<asio::const_buffer> reply{asio::buffer(lookup->payload), asio::buffer(ready)};
            co_await write_client(reply);
            count_hit(*plan->read, lookup->payload.size());
            co_return true;
        }
    }
    if (auto shared = co_await coalesce_miss(*plan->read, lookup)) {
        if (auto parts = split_payload(*shared); parts && !parts->first.empty()) {
            const std::string ready = ready_for_query(state_.transaction_status());
            const std::vector<asio::const_buffer> reply{asio::buffer(*shared), asio::buffer(ready)};
            co_await write_client(reply);
            co_return true;
        }
    }
    co_return false;
}

awaitable<std::optional<std::string>> ClientSession::coalesce_miss(ReadPlan& plan, std::optional<LookupResult>& lookup) {
    runtime_.counters().misses++;
    runtime_.rule_stats(plan.rule->name).misses++;
    if (!lookup || !plan.may_populate) {
        co_return std::nullopt;
    }
    // Within this instance, one session fetches and the others wait for it,
    // woken when it is done; only that one turns to Redis's cross-instance
    // lock, so the others never poll. Only misses that saw the same stamps
    // share a fetch: a miss that looked up after an invalidation (a write
    // acknowledged since, through any instance) must not be handed a result
    // the fetch under way may have read before that write.
    std::string key = cache_->entry_key(plan);
    for (const auto* stamp : {&lookup->version, &lookup->rule_generation, &lookup->global_generation}) {
        key += '\n';
        key += stamp->value_or("");
    }
    if (!runtime_.inflight().begin(key)) {
        auto payload = co_await runtime_.inflight().wait(key, coalesce_wait);
        if (payload) {
            runtime_.counters().coalesced++;
        }
        co_return payload;
    }
    Inflight::Lead lead(&runtime_.inflight(), key);
    if (auto filled = co_await cache_->wait_for_other_instance(plan)) {
        std::string payload(filled->payload);
        lead.release(payload);
        co_return payload;
    }
    capture_.emplace(Capture{std::move(plan), std::move(*lookup), {}, true, 0, {}, request_started_});
    capture_->lead = std::move(lead);
    co_return std::nullopt;
}

awaitable<bool> ClientSession::serve_batch() {
    request_started_ = std::chrono::steady_clock::now();
    HeldBatch& b = *batch_;
    std::string_view sql;  // only planned from, before anything can change the statement
    if (b.has_parse) {
        sql = b.parse_sql;
    } else if (const PreparedStatement* statement = state_.statement(b.bind_statement)) {
        sql = statement->sql;
    }
    if (sql.empty() || !b.parameters) {
        co_return false;
    }
    auto plan = plan_sql(sql, *b.parameters, b.result_formats);
    if (!plan || !plan->read) {
        batch_counted_ = true;  // released to the server, where its Execute is planned again
        co_return false;
    }
    auto rules = rules_;
    auto lookup = co_await cache_->lookup(*rules, *plan->read);
    if (lookup && lookup->hit) {
        if (auto parts = split_payload(lookup->payload); parts && (!b.has_describe || !parts->first.empty())) {
            co_await answer_batch_locally(parts->first, parts->second);
            count_hit(*plan->read, lookup->payload.size());
            co_return true;
        }
    }
    if (auto shared = co_await coalesce_miss(*plan->read, lookup)) {
        if (auto parts = split_payload(*shared); parts && (!b.has_describe || !parts->first.empty())) {
            co_await answer_batch_locally(parts->first, parts->second);
            co_return true;
        }
    }
    batch_counted_ = true;
    co_return false;
}

awaitable<void> ClientSession::answer_batch_locally(std::string_view row_description, std::string_view rows) {
    HeldBatch& b = *batch_;
    // Written as gathered pieces: the rows are sent from the cached entry
    // itself, not copied into a reply first.
    std::string head;
    if (b.has_parse) {
        pgwire::encode(pgwire::BackendMessage{pgwire::ParseComplete{}}, head);
    }
    pgwire::encode(pgwire::BackendMessage{pgwire::BindComplete{}}, head);
    const std::string ready = ready_for_query(state_.transaction_status());
    std::vector<asio::const_buffer> reply{asio::buffer(head)};
    if (b.has_describe) {
        reply.push_back(asio::buffer(row_description));
    }
    reply.push_back(asio::buffer(rows));
    reply.push_back(asio::buffer(ready));
    // The client now holds the statement and portal it asked for; the
    // server does not, so its unnamed statement is stale.
    if (b.has_parse) {
        state_.on_parse("", b.parse_sql, b.parse_types);
        server_unnamed_stale_ = true;
    }
    state_.on_bind("", b.bind_statement, std::move(b.parameters), b.result_formats);
    state_.on_execute("", 0);
    state_.on_sync();
    state_.complete_locally();
    co_await write_client(reply);
}

std::string ClientSession::release_batch() {
    std::string bytes = std::move(batch_->bytes);
    batch_.reset();
    // Feed the frames to the bookkeeping as if they had never been held.
    forwarding_held_ = true;
    std::string forwarded;
    std::string_view rest = bytes;
    while (rest.size() >= pgwire::frame_header_size) {
        pgwire::FrameHeader header;
        if (pgwire::peek_header(rest, header).status != DecodeStatus::ok || header.frame_size() > rest.size()) {
            break;
        }
        const auto frame = rest.substr(0, header.frame_size());
        inspect_frontend(header.type, frame, true);
        if (!replacement_.empty()) {
            forwarded += replacement_;
            replacement_.clear();
        }
        forwarded += frame;
        rest.remove_prefix(header.frame_size());
    }
    forwarding_held_ = false;
    return forwarded;
}

std::string ClientSession::injection_for_unnamed(std::string_view statement) {
    if (!statement.empty() || !server_unnamed_stale_) {
        return {};
    }
    server_unnamed_stale_ = false;
    const PreparedStatement* unnamed = state_.statement("");
    if (unnamed == nullptr) {
        return {};
    }
    std::string parse;
    pgwire::encode(pgwire::FrontendMessage{pgwire::Parse{"", unnamed->sql, unnamed->param_types}}, parse);
    state_.on_injected_parse(unnamed->sql, unnamed->param_types);
    return parse;
}

void ClientSession::capture_frame(char type, std::string_view available, std::size_t frame_size) {
    Capture& c = *capture_;
    if (!c.valid) {
        return;
    }
    if (frame_size == 0) {  // continuation of a streamed frame
        c.payload.append(available);
        c.streaming_left -= std::min(c.streaming_left, available.size());
    } else {
        switch (type) {
            case 'T':
            case 'D':
            case 'C':
                c.payload.append(available);
                c.streaming_left = frame_size - available.size();
                break;
            case '1': case '2': case 't': case 'n': case 'A': case 'Z':
                break;  // protocol chatter, notifications, and the end
            default:
                c.valid = false;  // errors, notices, COPY, parameter changes: not a cacheable result
                break;
        }
    }
    if (c.payload.size() > c.plan.rule->max_entry_size) {
        runtime_.counters().stores_too_large++;
        c.valid = false;
    }
    if (!c.valid) {
        c.payload.clear();
        c.payload.shrink_to_fit();
    }
}

void ClientSession::finish_capture() {
    Capture c = std::move(*capture_);
    capture_.reset();
    if (!c.valid || c.payload.empty() || c.streaming_left != 0 || !whole_frames(c.payload)) {
        cache_->release_fetch_lock(c.plan);
        return;  // c.lead wakes the waiters with nothing
    }
    c.lead.release(c.payload);
    runtime_.latencies().miss.observe(std::chrono::steady_clock::now() - c.started);
    asio::co_spawn(client_->socket().get_executor(),
                   [self = shared_from_this(), c = std::move(c)]() -> awaitable<void> {
                       co_await self->cache_->store(c.plan, c.stamps, c.payload);
                   },
                   asio::detached);
}

// ------------------------------------------------------------ lifecycle

void ClientSession::note_end(std::string reason) {
    // The first cause wins; the other relay then only sees the cancellation.
    if (end_reason_.empty()) {
        end_reason_ = std::move(reason);
    }
}

void ClientSession::note_server_busy() {
    if (info_ && !state_.pending().empty()) {
        info_->active.store(true, std::memory_order_relaxed);
        info_->touch();
    }
}

bool ClientSession::idle() const {
    return phase_ == Phase::ready && state_.pending().empty() && state_.transaction_status() == 'I';
}

void ClientSession::begin_drain() {
    if (console_) {
        note_end("shutdown");
        client_->close();
    }
}

void ClientSession::end_for_shutdown() {
    if (phase_ == Phase::closing) {
        return;
    }
    if (idle() && !client_busy_ && server_) {
        // Both relays are waiting for input; closing the server side ends
        // them and run() then says goodbye to the client.
        note_end("shutdown");
        pending_error_sqlstate_ = "57P01";
        pending_error_message_ = "terminating connection due to administrator command";
        server_->close();
        return;
    }
    note_end("shutdown timeout");
    close_all();
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
