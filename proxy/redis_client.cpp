// Pipelined Redis connection; see redis_client.hpp.
#include "proxy/redis_client.hpp"

#include <charconv>

#include <boost/container/small_vector.hpp>

#include "proxy/config.hpp"
#include "proxy/logging.hpp"
#include "proxy/stream.hpp"

#include <spdlog/spdlog.h>

namespace pgshelf::proxy {

using namespace asio::experimental::awaitable_operators;

namespace {

constexpr int breaker_threshold = 3;
constexpr std::chrono::milliseconds breaker_backoff{250};
constexpr std::chrono::milliseconds breaker_max_backoff{5000};

// One limiter per kind of trouble for the whole process: every worker has
// its own connection, so without them an outage is logged once per worker
// and per retry, and slow replies once per statement.
SharedLogRateLimiter unavailable_warnings;
SharedLogRateLimiter lost_warnings;
SharedLogRateLimiter breaker_warnings;
SharedLogRateLimiter timeout_warnings;
SharedLogRateLimiter setup_errors;

}  // namespace

std::string parse_redis_url(std::string_view url, RedisEndpoint& out) {
    if (url.starts_with("redis://")) {
        url.remove_prefix(8);
    } else if (url.starts_with("rediss://")) {
        return "rediss:// (TLS to Redis) is not supported yet; use redis://";
    } else {
        return "expected a URL starting with redis://";
    }
    if (auto at = url.rfind('@'); at != std::string_view::npos) {
        const std::string_view credentials = url.substr(0, at);
        url.remove_prefix(at + 1);
        if (auto colon = credentials.find(':'); colon != std::string_view::npos) {
            out.user = percent_decode(credentials.substr(0, colon));
            out.password = percent_decode(credentials.substr(colon + 1));
        } else {
            out.password = percent_decode(credentials);  // redis://secret@host, as redis-cli reads it
        }
    }
    std::string_view db;
    if (auto slash = url.find('/'); slash != std::string_view::npos) {
        db = url.substr(slash + 1);
        url = url.substr(0, slash);
    }
    if (auto colon = url.rfind(':'); colon != std::string_view::npos) {
        unsigned port = 0;
        auto text = url.substr(colon + 1);
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
        if (ec != std::errc{} || end != text.data() + text.size() || port == 0 || port > 65535) {
            return "bad port in Redis URL";
        }
        out.port = static_cast<std::uint16_t>(port);
        url = url.substr(0, colon);
    }
    if (!url.empty()) {
        out.host = std::string(url);
    }
    if (!db.empty()) {
        auto [end, ec] = std::from_chars(db.data(), db.data() + db.size(), out.database);
        if (ec != std::errc{} || end != db.data() + db.size() || out.database < 0) {
            return "bad database index in Redis URL";
        }
    }
    return {};
}

namespace {

template <typename Arguments>
void format_arguments(const Arguments& arguments, std::string& out) {
    // Commands on the hit path have a handful of arguments: no allocation
    // for the argument table then.
    boost::container::small_vector<const char*, 8> argv;
    boost::container::small_vector<size_t, 8> lengths;
    for (std::string_view arg : arguments) {
        argv.push_back(arg.data());
        lengths.push_back(arg.size());
    }
    char* formatted = nullptr;
    const int n = redisFormatCommandArgv(&formatted, static_cast<int>(argv.size()), argv.data(), lengths.data());
    if (n > 0) {
        out.append(formatted, static_cast<std::size_t>(n));
    }
    redisFreeCommand(formatted);
}

}  // namespace

void format_command(const RedisCommand& command, std::string& out) {
    format_arguments(command, out);
}

void RedisRequest::add(std::initializer_list<std::string_view> arguments) {
    format_arguments(arguments, resp);
    ++commands;
}

RedisRequest RedisRequest::of(const std::vector<RedisCommand>& commands) {
    RedisRequest request;
    for (const auto& command : commands) {
        format_command(command, request.resp);
    }
    request.commands = commands.size();
    return request;
}

RedisClient::RedisClient(asio::any_io_executor executor, RedisEndpoint endpoint, RedisTimeouts timeouts,
                         std::vector<std::string> scripts_to_load)
    : executor_(std::move(executor)),
      endpoint_(std::move(endpoint)),
      timeouts_(timeouts),
      scripts_(std::move(scripts_to_load)),
      breaker_(breaker_threshold, breaker_backoff, breaker_max_backoff),
      reader_(nullptr, redisReaderFree),
      reconnect_wakeup_(executor_) {}

RedisClient::~RedisClient() = default;

void RedisClient::start() {
    asio::co_spawn(executor_, [self = shared_from_this()] { return self->connection_loop(); }, asio::detached);
}

void RedisClient::stop() {
    state_ = State::stopped;
    breaker_observer_ = nullptr;
    reconnect_wakeup_.cancel();
    if (socket_) {
        error_code ignored;
        socket_->close(ignored);
    }
    fail_all();
}

void RedisClient::record_failure() {
    const auto before = breaker_.state();
    breaker_.failure(CircuitBreaker::clock::now());
    if (before != CircuitBreaker::State::open && breaker_.state() == CircuitBreaker::State::open) {
        if (auto suppressed = breaker_warnings.allow()) {
            spdlog::warn("redis {}:{}: circuit breaker open, serving from PostgreSQL only{}", endpoint_.host,
                         endpoint_.port, suppressed_note(*suppressed));
        }
        // Replies may never come (a stalled server): start over.
        if (socket_) {
            error_code ignored;
            socket_->close(ignored);
        }
    }
}

void RedisClient::fail_all() {
    for (auto& request : waiting_) {
        request->failed = true;
        request->done->cancel();
    }
    waiting_.clear();
    out_.clear();
}

awaitable<void> RedisClient::connection_loop() {
    auto self = shared_from_this();
    while (state_ != State::stopped) {
        if (!urgent_attempt_ && !breaker_.allow(CircuitBreaker::clock::now())) {
            reconnect_wakeup_.expires_after(std::chrono::milliseconds(50));
            co_await reconnect_wakeup_.async_wait(use_nothrow);
            continue;
        }
        urgent_attempt_ = false;
        state_ = State::connecting;
        reader_.reset(redisReaderCreate());
        socket_ = std::make_unique<tcp::socket>(executor_);
        bool ok = false;
        {
            tcp::resolver resolver(executor_);
            auto [resolve_ec, endpoints] =
                co_await resolver.async_resolve(endpoint_.host, std::to_string(endpoint_.port), use_nothrow);
            if (!resolve_ec) {
                asio::steady_timer deadline(executor_, timeouts_.connect);
                auto result =
                    co_await (asio::async_connect(*socket_, endpoints, use_nothrow) || deadline.async_wait(use_nothrow));
                ok = result.index() == 0 && !std::get<0>(std::get<0>(result));
            }
        }
        if (ok) {
            error_code ignored;
            socket_->set_option(tcp::no_delay(true), ignored);
            ok = co_await handshake();
        }
        if (state_ == State::stopped) {
            break;
        }
        ++attempts_ended_;
        if (!ok) {
            // Repeats while the outage lasts (every worker retries with
            // backoff); the limiter keeps it to a line per interval.
            if (auto suppressed = unavailable_warnings.allow()) {
                spdlog::warn("redis {}:{} unavailable; retrying with backoff{}", endpoint_.host, endpoint_.port,
                             suppressed_note(*suppressed));
            }
            breaker_.failure(CircuitBreaker::clock::now());
            notify_breaker();
            error_code ignored;
            socket_->close(ignored);
            state_ = State::disconnected;
            continue;
        }
        breaker_.success();
        state_ = State::ready;
        notify_breaker();
        spdlog::info("redis {}:{} connected (db {})", endpoint_.host, endpoint_.port, endpoint_.database);
        co_await read_loop();
        if (state_ != State::stopped) {
            state_ = State::disconnected;
            if (auto suppressed = lost_warnings.allow()) {
                spdlog::warn("redis {}:{} connection lost{}", endpoint_.host, endpoint_.port,
                             suppressed_note(*suppressed));
            }
        }
        fail_all();
    }
}

awaitable<bool> RedisClient::handshake() {
    std::vector<RedisCommand> commands;
    if (!endpoint_.password.empty()) {
        commands.push_back(endpoint_.user.empty() ? RedisCommand{"AUTH", endpoint_.password}
                                                  : RedisCommand{"AUTH", endpoint_.user, endpoint_.password});
    }
    if (endpoint_.database != 0) {
        commands.push_back({"SELECT", std::to_string(endpoint_.database)});
    }
    for (const std::string& script : scripts_) {
        commands.push_back({"SCRIPT", "LOAD", script});
    }
    commands.push_back({"PING"});
    std::string request;
    for (const auto& command : commands) {
        format_command(command, request);
    }
    std::vector<RedisReply> replies;
    auto exchange = [&]() -> awaitable<bool> {
        auto [write_ec, written] = co_await asio::async_write(*socket_, asio::buffer(request), use_nothrow);
        if (write_ec) {
            co_return false;
        }
        char buffer[4096];
        while (replies.size() < commands.size()) {
            void* reply = nullptr;
            if (redisReaderGetReply(reader_.get(), &reply) != REDIS_OK) {
                co_return false;
            }
            if (reply != nullptr) {
                replies.emplace_back(static_cast<redisReply*>(reply));
                continue;
            }
            auto [read_ec, n] = co_await socket_->async_read_some(asio::buffer(buffer), use_nothrow);
            if (read_ec) {
                co_return false;
            }
            redisReaderFeed(reader_.get(), buffer, n);
        }
        co_return true;
    };
    asio::steady_timer deadline(executor_, timeouts_.connect);
    auto result = co_await (exchange() || deadline.async_wait(use_nothrow));
    if (result.index() != 0 || !std::get<0>(result)) {
        co_return false;
    }
    script_shas_.clear();
    std::size_t index = 0;
    for (const auto& command : commands) {
        const redisReply* reply = replies[index++].get();
        if (reply->type == REDIS_REPLY_ERROR) {
            // A wrong password or a read-only replica: said once per interval,
            // not once per reconnection attempt of every worker.
            if (const auto suppressed = setup_errors.allow()) {
                const std::string_view error(reply->str, reply->len);
                const bool credentials = error.starts_with("WRONGPASS") || error.starts_with("NOAUTH");
                spdlog::error("redis {}:{}: {} failed: {}{}{}", endpoint_.host, endpoint_.port, command.front(), error,
                              credentials ? " (check the user and password in redis.url / REDIS_URL)" : "",
                              suppressed_note(*suppressed));
            }
            co_return false;
        }
        if (command.front() == "SCRIPT") {
            script_shas_.emplace_back(reply->str, reply->len);
        }
    }
    co_return true;
}

awaitable<void> RedisClient::read_loop() {
    char buffer[16 * 1024];
    for (;;) {
        auto [ec, n] = co_await socket_->async_read_some(asio::buffer(buffer), use_nothrow);
        if (ec) {
            co_return;
        }
        if (redisReaderFeed(reader_.get(), buffer, n) != REDIS_OK) {
            co_return;
        }
        for (;;) {
            void* raw = nullptr;
            if (redisReaderGetReply(reader_.get(), &raw) != REDIS_OK) {
                co_return;  // protocol error: reconnect
            }
            if (raw == nullptr) {
                break;
            }
            RedisReply reply(static_cast<redisReply*>(raw));
            ++replies_read_;
            if (waiting_.empty()) {
                continue;  // nothing asked for it; cannot happen with a sane server
            }
            auto& request = waiting_.front();
            request->replies.push_back(std::move(reply));
            if (request->replies.size() == request->expected) {
                request->done->cancel();
                waiting_.pop_front();
            }
        }
    }
}

bool RedisClient::redis_answering(std::uint64_t replies_before) const {
    if (replies_read_ != replies_before) {
        return true;
    }
    error_code ec;
    return state_ == State::ready && socket_ && socket_->available(ec) > 0 && !ec;
}

bool RedisClient::send_now() {
    // What the socket takes at once goes without a coroutine of its own:
    // on the hit path, that is every request.
    if (state_ != State::ready) {
        return false;
    }
    error_code ec;
    const std::size_t sent = proxy::send_now(*socket_, asio::buffer(out_), ec);
    if (ec && ec != asio::error::would_block) {
        // As flush() does: the read loop ends and the connection loop fails the waiters.
        error_code ignored;
        socket_->close(ignored);
        return true;
    }
    out_.erase(0, sent);
    return out_.empty();
}

awaitable<void> RedisClient::flush() {
    auto self = shared_from_this();
    writing_ = true;
    std::string sending;
    while (!out_.empty() && state_ == State::ready) {
        sending.swap(out_);
        out_.clear();
        auto [ec, n] = co_await asio::async_write(*socket_, asio::buffer(sending), use_nothrow);
        sending.clear();
        if (ec) {
            error_code ignored;
            socket_->close(ignored);
            break;
        }
    }
    writing_ = false;
}

awaitable<void> RedisClient::wait_for_attempt(std::chrono::milliseconds limit) {
    // Polled: the connection loop has no per-waiter signal, and this only
    // runs while a connection is being made.
    const std::uint64_t ended = attempts_ended_;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    asio::steady_timer pause(executor_);
    while (state_ != State::ready && state_ != State::stopped && attempts_ended_ == ended &&
           std::chrono::steady_clock::now() < deadline) {
        pause.expires_after(std::chrono::milliseconds(1));
        co_await pause.async_wait(use_nothrow);
    }
}

awaitable<std::optional<std::vector<RedisReply>>> RedisClient::execute(RedisRequest request) {
    if (state_ == State::connecting || (state_ == State::disconnected && breaker_.state() == CircuitBreaker::State::closed)) {
        // Just started or reconnecting after a clean loss: give the
        // connection its connect timeout rather than failing at once.
        co_await wait_for_attempt(timeouts_.connect);
    }
    if (state_ != State::ready || request.commands == 0 || !breaker_.allow(CircuitBreaker::clock::now())) {
        co_return std::nullopt;
    }
    co_return co_await send(std::move(request));
}

awaitable<std::optional<std::vector<RedisReply>>> RedisClient::execute_urgent(RedisRequest request) {
    if (state_ == State::disconnected) {
        urgent_attempt_ = true;
        reconnect_wakeup_.cancel();
    }
    if (state_ == State::disconnected || state_ == State::connecting) {
        // A refused connection ends the attempt, and the wait, at once.
        co_await wait_for_attempt(timeouts_.command);
    }
    if (state_ != State::ready || request.commands == 0) {
        co_return std::nullopt;
    }
    co_return co_await send(std::move(request));
}

awaitable<std::optional<std::vector<RedisReply>>> RedisClient::send(RedisRequest pipeline) {
    auto self = shared_from_this();
    auto request = std::make_shared<Request>();
    request->expected = pipeline.commands;
    request->done = std::make_unique<asio::steady_timer>(executor_, timeouts_.command);
    out_ += pipeline.resp;
    waiting_.push_back(request);
    if (!writing_ && !send_now()) {
        asio::co_spawn(executor_, flush(), asio::detached);
    }
    // The timeout is for a Redis that does not answer. Replies arriving for
    // the requests ahead of this one, or bytes waiting unread, mean Redis is
    // answering and the wait is this worker's own backlog (thousands of busy
    // sessions): sending the statement to PostgreSQL then would only add load.
    const auto give_up = std::chrono::steady_clock::now() + timeouts_.command * max_backlog_periods;
    for (;;) {
        const std::uint64_t replies_before = replies_read_;
        co_await request->done->async_wait(use_nothrow);
        if (request->failed || request->replies.size() == request->expected ||
            std::chrono::steady_clock::now() >= give_up || !redis_answering(replies_before)) {
            break;
        }
        request->done->expires_after(timeouts_.command);
    }
    if (request->failed || request->replies.size() != request->expected) {
        if (!request->failed) {
            // Timed out: its replies, if they ever come, are drained and dropped.
            request->abandoned = true;
            if (auto suppressed = timeout_warnings.allow()) {
                spdlog::warn("redis {}:{}: no reply within {} ms (redis.command_timeout){}", endpoint_.host,
                             endpoint_.port, timeouts_.command.count(), suppressed_note(*suppressed));
            }
        }
        record_failure();
        co_return std::nullopt;
    }
    breaker_.success();
    co_return std::move(request->replies);
}

}  // namespace pgshelf::proxy
