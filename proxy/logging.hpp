// Log output: `log.format = "text"` keeps spdlog's default pattern;
// "json" writes one JSON object per line (for log shippers that would
// otherwise have to parse free text), through a spdlog formatter so every
// spdlog call site is covered. Plus a rate limiter for warnings that an
// outage can repeat thousands of times a second.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <spdlog/formatter.h>

namespace pgshelf::proxy {

// {"ts":"2024-05-01T12:34:56.123456Z","level":"warning","msg":"...","thread":1234}
// ts is RFC 3339 in UTC with microseconds; level is spdlog's name; a
// non-default logger adds "logger".
class JsonLogFormatter final : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
    std::unique_ptr<spdlog::formatter> clone() const override;
};

// Appends `text` as the inside of a JSON string: quotes, backslashes and
// control characters escaped; each maximal invalid UTF-8 subsequence
// replaced by \ufffd (log text may carry bytes from clients).
void append_json_string_body(std::string_view text, spdlog::memory_buf_t& dest);
std::string json_string_body(std::string_view text);

// RFC 3339, UTC, microseconds: 2024-05-01T12:34:56.123456Z.
std::string rfc3339_utc(std::chrono::system_clock::time_point time);

// Applies log.level and log.format (both validated by the config loader)
// to every spdlog logger.
void configure_logging(const std::string& level, const std::string& format);

// Lets one message through per `interval` and counts the rest, so that the
// next message that gets through can say how many were left out. Pure (the
// caller passes the time) and not thread-safe; SharedLogRateLimiter is.
class LogRateLimiter {
public:
    using clock = std::chrono::steady_clock;

    explicit LogRateLimiter(clock::duration interval = std::chrono::seconds(10)) : interval_(interval) {}

    // True when a message may be logged now; false counts it as suppressed.
    bool allow(clock::time_point now);
    // After allow() returned true: how many messages were suppressed between
    // the previously allowed one and this one.
    std::uint64_t suppressed() const { return reported_; }

private:
    clock::duration interval_;
    std::optional<clock::time_point> last_;
    std::uint64_t pending_ = 0;   // suppressed since the last allowed message
    std::uint64_t reported_ = 0;  // what the last allowed message should report
};

// A LogRateLimiter behind a mutex, for one kind of warning said by every
// worker thread. Returns the suppressed count when the message may be
// logged, nullopt when it must not.
class SharedLogRateLimiter {
public:
    explicit SharedLogRateLimiter(LogRateLimiter::clock::duration interval = std::chrono::seconds(10))
        : limiter_(interval) {}

    std::optional<std::uint64_t> allow(LogRateLimiter::clock::time_point now = LogRateLimiter::clock::now());

private:
    std::mutex mutex_;
    LogRateLimiter limiter_;
};

// "" for 0, else " (N similar messages suppressed)", to append to a message.
std::string suppressed_note(std::uint64_t suppressed);

}  // namespace pgshelf::proxy
