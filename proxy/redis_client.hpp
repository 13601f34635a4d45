// A pipelined Redis connection on one worker's event loop. hiredis is used
// only as the RESP codec (redisFormatCommandArgv, redisReader); the I/O is
// Asio's. Every call has a deadline; failures feed a circuit breaker, and
// while it is open calls fail at once, so a dead or stalled Redis costs
// clients nothing but a short timeout, once.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <hiredis/hiredis.h>

#include "proxy/asio.hpp"
#include "proxy/circuit_breaker.hpp"

namespace pgshelf::proxy {

struct RedisEndpoint {
    std::string host = "127.0.0.1";
    std::uint16_t port = 6379;
    std::string user;
    std::string password;
    int database = 0;
};

// redis://[[user]:password@]host[:port][/db]; returns an error message or empty.
std::string parse_redis_url(std::string_view url, RedisEndpoint& out);

struct RedisReplyDeleter {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RedisReply = std::unique_ptr<redisReply, RedisReplyDeleter>;
using RedisCommand = std::vector<std::string>;

// Commands already in Redis's wire format, sent in one write. The hit path
// builds its lookup this way, from views of keys it already holds, with no
// argument vector per command.
struct RedisRequest {
    std::string resp;
    std::size_t commands = 0;

    void add(std::initializer_list<std::string_view> arguments);
    static RedisRequest of(const std::vector<RedisCommand>& commands);
};

struct RedisTimeouts {
    std::chrono::milliseconds connect{200};
    std::chrono::milliseconds command{50};
};

class RedisClient : public std::enable_shared_from_this<RedisClient> {
public:
    RedisClient(asio::any_io_executor executor, RedisEndpoint endpoint, RedisTimeouts timeouts,
                std::vector<std::string> scripts_to_load);
    ~RedisClient();

    // Starts the connection loop (connect, AUTH/SELECT, SCRIPT LOAD, read).
    void start();
    void stop();

    // Sends `commands` in one write and returns their replies in order; or
    // nullopt on timeout, connection loss, or while the breaker is open. An
    // error reply from Redis is a reply, not a failure.
    awaitable<std::optional<std::vector<RedisReply>>> execute(RedisRequest request);
    awaitable<std::optional<std::vector<RedisReply>>> execute(const std::vector<RedisCommand>& commands) {
        return execute(RedisRequest::of(commands));
    }
    // As execute(), for commands a client's commit acknowledgement waits for
    // (invalidations): they must reach Redis whenever Redis can be reached,
    // or another instance may serve what they make stale. Ignores the
    // breaker; when the link is down, starts a connection attempt at once
    // instead of after the backoff, and waits for it up to the command timeout.
    awaitable<std::optional<std::vector<RedisReply>>> execute_urgent(RedisRequest request);
    awaitable<std::optional<std::vector<RedisReply>>> execute_urgent(const std::vector<RedisCommand>& commands) {
        return execute_urgent(RedisRequest::of(commands));
    }

    bool connected() const { return state_ == State::ready; }
    CircuitBreaker::State breaker_state() const { return breaker_.state(); }
    // Called (on this client's executor) when a connection attempt changed
    // the breaker, so that its state is reported without waiting for the
    // next command: an idle instance must not look broken after recovery.
    void set_breaker_observer(std::function<void()> observer) { breaker_observer_ = std::move(observer); }
    // SHA1 of each script passed to the constructor, once loaded.
    const std::vector<std::string>& script_shas() const { return script_shas_; }

private:
    enum class State { disconnected, connecting, ready, stopped };
    struct Request {
        std::size_t expected = 0;
        std::vector<RedisReply> replies;
        bool failed = false;
        bool abandoned = false;  // the caller timed out; replies are drained and dropped
        std::unique_ptr<asio::steady_timer> done;
    };

    awaitable<void> connection_loop();
    void notify_breaker() {
        if (breaker_observer_) {
            breaker_observer_();
        }
    }
    awaitable<bool> handshake();
    awaitable<void> read_loop();
    // Sends out_ now as far as the socket takes it; true when nothing is
    // left for flush() to do.
    bool send_now();
    // Whether Redis answered anything since `replies_before` was read from
    // replies_read_, or has bytes waiting to be read.
    bool redis_answering(std::uint64_t replies_before) const;
    // A request Redis keeps answering ahead of waits at most this many
    // command timeouts in all.
    static constexpr int max_backlog_periods = 10;
    awaitable<void> flush();
    awaitable<std::optional<std::vector<RedisReply>>> send(RedisRequest pipeline);
    // Until the link is ready, the connection attempt under way (or the
    // next one) ends, or `limit` passes.
    awaitable<void> wait_for_attempt(std::chrono::milliseconds limit);
    void fail_all();
    void record_failure();

    asio::any_io_executor executor_;
    RedisEndpoint endpoint_;
    RedisTimeouts timeouts_;
    std::vector<std::string> scripts_;
    std::vector<std::string> script_shas_;
    CircuitBreaker breaker_;
    std::function<void()> breaker_observer_;
    State state_ = State::disconnected;
    std::unique_ptr<tcp::socket> socket_;
    std::unique_ptr<redisReader, void (*)(redisReader*)> reader_;
    std::deque<std::shared_ptr<Request>> waiting_;
    std::string out_;
    bool writing_ = false;
    asio::steady_timer reconnect_wakeup_;
    bool urgent_attempt_ = false;  // the next connection attempt skips the breaker's backoff
    std::uint64_t attempts_ended_ = 0;  // connection attempts finished (either way)
    std::uint64_t replies_read_ = 0;    // replies parsed off the connection, for every request
};

// Appends one RESP-encoded command to `out`.
void format_command(const RedisCommand& command, std::string& out);

}  // namespace pgshelf::proxy
