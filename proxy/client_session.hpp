// One client connection and its server connection (1:1), as a coroutine.
//
// Flow: startup packet (SSLRequest → TLS, GSSENCRequest → 'N',
// CancelRequest → forwarded to the right server backend) → connect to
// PostgreSQL → then two relay loops run until either side ends:
//   client → server: frames read, inspected (SessionState), original bytes forwarded
//   server → client: same, with BackendKeyData and SASL mechanisms rewritten
// Each loop writes what it read before reading more, so a slow reader
// slows its peer down (back-pressure) instead of growing memory.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <string>

#include "pgwire/codec.hpp"
#include "proxy/asio.hpp"
#include "proxy/frame_buffer.hpp"
#include "proxy/session_state.hpp"
#include "proxy/stream.hpp"

namespace pgshelf::proxy {

class Runtime;  // process-wide services (config, TLS, cancel registry, counters)

class ClientSession : public std::enable_shared_from_this<ClientSession> {
public:
    ClientSession(Runtime& runtime, tcp::socket socket, std::uint64_t id);
    ~ClientSession();

    awaitable<void> run();
    // Called on the session's executor when pgshelf starts draining: an
    // idle session closes now, a busy one when it next becomes idle.
    void begin_drain();

    const SessionState& state() const { return state_; }

private:
    enum class Action { forward, replace, fail };
    enum class Phase { startup, authenticating, ready, closing };

    awaitable<bool> negotiate_startup();
    awaitable<void> handle_cancel(const pgwire::CancelRequest& request);
    awaitable<bool> open_server();
    awaitable<void> client_to_server();
    awaitable<void> server_to_client();
    awaitable<void> startup_watchdog();

    Action inspect_frontend(char type, std::string_view body, bool complete);
    Action inspect_backend(char type, std::string_view body, bool complete);

    // Sends an ErrorResponse to the client (plain or FATAL severity).
    awaitable<void> send_client_error(std::string_view severity, std::string_view sqlstate, std::string_view message);
    bool idle() const;
    void note_end(std::string reason);
    void close_all();

    Runtime& runtime_;
    std::uint64_t id_;
    std::unique_ptr<Stream> client_;
    std::unique_ptr<Stream> server_;
    FrameBuffer client_in_;
    FrameBuffer server_in_;
    SessionState state_;
    Phase phase_ = Phase::startup;

    std::string startup_packet_;  // the client's original bytes, forwarded verbatim
    std::string user_;
    std::string database_;
    std::int32_t client_key_pid_ = 0;

    // Replacement bytes for rewritten frames, alive until written.
    std::string replacement_;
    // Error to send the client after the relays stop (protocol violation).
    std::string pending_error_sqlstate_;
    std::string pending_error_message_;

    asio::steady_timer startup_deadline_;
    bool writing_to_client_ = false;
    bool draining_ = false;
    std::string end_reason_;
    std::chrono::steady_clock::time_point started_;
};

}  // namespace pgshelf::proxy
