// One client connection and its server connection (1:1), as a coroutine.
//
// Flow: startup packet (SSLRequest → TLS, GSSENCRequest → 'N',
// CancelRequest → forwarded to the right server backend) → connect to
// PostgreSQL → then two relay loops run until either side ends:
//   client → server: frames read, inspected (SessionState, cache plans),
//                    original bytes forwarded or answered from the cache
//   server → client: same, with BackendKeyData and SASL mechanisms
//                    rewritten, results captured for the cache
// Each loop writes what it read before reading more, so a slow reader
// slows its peer down (back-pressure) instead of growing memory.
//
// Cache hits are answered only when nothing is outstanding at the server,
// so a local answer never has to be ordered among server answers; a write
// gate keeps the two loops from interleaving bytes to the client.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "pgwire/codec.hpp"
#include "proxy/asio.hpp"
#include "proxy/cache_planner.hpp"
#include "proxy/cache_store.hpp"
#include "proxy/frame_buffer.hpp"
#include "proxy/inflight.hpp"
#include "proxy/session_state.hpp"
#include "proxy/stats.hpp"
#include "proxy/stream.hpp"

namespace pgshelf::proxy {

class Runtime;
class CacheEngine;

class ClientSession : public std::enable_shared_from_this<ClientSession> {
public:
    ClientSession(Runtime& runtime, CacheEngine* cache, tcp::socket socket, std::uint64_t id);
    ~ClientSession();

    awaitable<void> run();
    // Called on the session's executor when pgshelf starts draining. A
    // client session goes on serving until its client leaves: a sidecar's
    // application is usually shutting down at the same time and still
    // needs its connections to finish its own requests. Console sessions
    // close now.
    void begin_drain();
    // The shutdown timeout expired: an idle session is told why it ends
    // (57P01, as PostgreSQL does), a busy one is cut off.
    void end_for_shutdown();

    const SessionState& state() const { return state_; }

private:
    enum class Action {
        forward,         // pass the frame on
        replace,         // send replacement_ instead (backend rewrites)
        drop,            // neither forward nor answer (answers to injected requests)
        fail,            // protocol violation: end the session with pending_error_*
        hold_query,      // a cacheable simple Query: look it up before deciding
        absorb,          // the frame joins the held extended batch
        hold_batch,      // the Sync completing a held batch: look it up
        release_batch,   // the held batch cannot be a hit: forward it, then this frame
        hold_for_invalidation,  // ReadyForQuery after writes: invalidate first
    };
    enum class Phase { startup, authenticating, ready, closing };

    // A Parse/Bind/Describe/Execute/Sync batch held back from the server
    // until its Sync shows whether the cache can answer it.
    struct HeldBatch {
        std::string bytes;  // the client's original frames
        bool has_parse = false;
        std::string parse_sql;
        std::vector<std::uint32_t> parse_types;
        bool has_bind = false;
        std::string bind_statement;
        std::optional<std::vector<std::optional<std::string>>> parameters;
        std::vector<std::int16_t> result_formats;
        bool has_describe = false;
        bool has_execute = false;
    };
    // A miss whose result is being captured on its way to the client.
    struct Capture {
        ReadPlan plan;
        LookupResult stamps;
        std::string payload;
        bool valid = true;
        std::size_t streaming_left = 0;  // bytes of a captured frame still to come
        Inflight::Lead lead;             // other sessions waiting for this result
        std::chrono::steady_clock::time_point started;  // the request's arrival
    };

    awaitable<bool> negotiate_startup();
    awaitable<void> handle_cancel(const pgwire::CancelRequest& request);
    awaitable<bool> open_server();
    awaitable<void> client_to_server();
    awaitable<void> server_to_client();
    // The client left (EOF, reset, failed write) while PostgreSQL still owes
    // answers to requests that may write: their commit is PostgreSQL's
    // decision, so the server relay runs on (output dropped) until it has
    // seen them answered and applied their invalidations, within a bound.
    bool writes_in_flight() const;
    awaitable<void> drain_after_client_left();
    awaitable<void> startup_watchdog();

    Action inspect_frontend(char type, std::string_view frame, bool complete);
    Action inspect_frontend_batch(char type, std::string_view frame);
    Action inspect_backend(char type, std::string_view body, bool complete);
    // A Parse ('P') or Bind ('B') that would make the session hold more
    // named statements or portals than proxy.max_prepared_statements.
    bool exceeds_name_limit(char type, std::string_view name);

    // Cache paths.
    bool cache_active() const;
    SessionFacts session_facts() const;
    std::optional<RequestPlan> plan_sql(std::string_view sql, const std::vector<std::optional<std::string>>& parameters,
                                        std::span<const std::int16_t> result_formats);
    void note_write(const WritePlan& plan);
    // A statement too large to parse was sent: invalidate every rule.
    void note_unanalysed_write();
    awaitable<bool> serve_query(const std::string& frame);
    awaitable<bool> serve_batch();
    // After a miss: coalesce with a miss already fetching the same entry
    // (returns its payload), or become the one that fetches and captures.
    awaitable<std::optional<std::string>> coalesce_miss(ReadPlan& plan, std::optional<LookupResult>& lookup);
    awaitable<void> answer_batch_locally(std::string_view row_description, std::string_view rows);
    std::string release_batch();
    std::string injection_for_unnamed(std::string_view statement);
    void capture_frame(char type, std::string_view available, std::size_t frame_size);
    void finish_capture();
    void count_hit(const ReadPlan& plan, std::size_t payload_size);
    // Before relaying the answer that completes the oldest request: its
    // server time, when it is a read no rule caches (for SHOW QUERIES).
    void record_server_time();

    // Client writes from either loop go through this gate; false once the
    // client is gone. `sent`: what write_client_at_once already sent, when
    // it tried the socket (then it is not tried again before waiting).
    awaitable<bool> write_client(const std::vector<asio::const_buffer>& buffers,
                                 std::optional<std::size_t> sent = std::nullopt);
    // The usual case of write_client without a coroutine frame: the result
    // when the socket took everything at once (or the client is gone),
    // nullopt when write_client(buffers, sent) must finish the job.
    std::optional<bool> write_client_at_once(const std::vector<asio::const_buffer>& buffers,
                                             std::optional<std::size_t>& sent);

    awaitable<void> send_client_error(std::string_view severity, std::string_view sqlstate, std::string_view message);
    bool idle() const;
    // For SHOW CLIENTS: requests went to the server and are not answered yet.
    void note_server_busy();
    void note_end(std::string reason);
    void close_all();

    Runtime& runtime_;
    CacheEngine* cache_;
    std::shared_ptr<const cache_rules::RuleSet> rules_;
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

    // Cache state of this session.
    std::optional<RequestPlan> held_plan_;
    std::optional<HeldBatch> batch_;
    std::optional<Capture> capture_;
    bool server_unnamed_stale_ = false;
    bool forwarding_held_ = false;  // re-inspecting held frames on their way to the server  // a hit answered a Parse("") the server never saw
    bool transaction_wrote_ = false;
    bool batch_counted_ = false;       // the released batch's plan is already counted
    std::uint64_t uncached_tag_ = 0;   // the last plan's uncached-read shape (tag), or 0
    std::chrono::steady_clock::time_point request_started_;
    bool transaction_rolled_back_ = false;
    WritePlan transaction_writes_;  // applied again when the transaction ends
    WritePlan writes_since_ready_;  // applied at the next ReadyForQuery
    std::vector<std::string> temp_tables_;  // created by this session (see SessionFacts)

    std::string replacement_;
    std::string pending_error_sqlstate_;
    std::string pending_error_message_;

    asio::steady_timer startup_deadline_;
    bool client_busy_ = false;
    bool client_gone_ = false;   // output to the client is dropped from now on
    bool invalidating_ = false;  // server_to_client is applying a transaction's invalidations
    std::deque<asio::steady_timer*> client_waiters_;
    bool server_counted_ = false;  // counted in the server-connection gauge
    bool console_ = false;         // an admin console session (no server connection)
    std::shared_ptr<ClientInfo> info_;  // as SHOW CLIENTS lists it
    std::string end_reason_;
    std::chrono::steady_clock::time_point started_;
};

}  // namespace pgshelf::proxy
