// JSON log lines and the warning rate limiter; see logging.hpp.
#include "proxy/logging.hpp"

#include <ctime>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace pgshelf::proxy {
namespace {

void append(spdlog::memory_buf_t& dest, std::string_view text) { dest.append(text.data(), text.data() + text.size()); }

// Length of the valid UTF-8 sequence at the start of `text`, or 0 when it
// is not one; `consumed` is then the length of the maximal invalid
// subpart to replace by one U+FFFD (Unicode 15, section 3.9, table 3-7).
std::size_t utf8_sequence(std::string_view text, std::size_t& consumed) {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char lead = byte(0);
    std::size_t continuation = 0;
    unsigned char low = 0x80;
    unsigned char high = 0xbf;
    if (lead >= 0xc2 && lead <= 0xdf) {
        continuation = 1;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        continuation = 2;
        low = lead == 0xe0 ? 0xa0 : 0x80;  // no overlong forms
        high = lead == 0xed ? 0x9f : 0xbf;  // no surrogates
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        continuation = 3;
        low = lead == 0xf0 ? 0x90 : 0x80;   // no overlong forms
        high = lead == 0xf4 ? 0x8f : 0xbf;  // nothing above U+10FFFF
    } else {
        consumed = 1;  // a stray continuation byte, C0, C1 or F5..FF
        return 0;
    }
    for (std::size_t i = 1; i <= continuation; ++i) {
        if (i >= text.size() || byte(i) < low || byte(i) > high) {
            consumed = i;
            return 0;
        }
        low = 0x80;
        high = 0xbf;
    }
    consumed = continuation + 1;
    return consumed;
}

}  // namespace

void append_json_string_body(std::string_view text, spdlog::memory_buf_t& dest) {
    static constexpr char hex[] = "0123456789abcdef";
    std::size_t i = 0;
    while (i < text.size()) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x80) {
            std::size_t consumed = 0;
            if (utf8_sequence(text.substr(i), consumed) > 0) {
                append(dest, text.substr(i, consumed));
            } else {
                append(dest, "\\ufffd");
            }
            i += consumed;
            continue;
        }
        switch (c) {
            case '"': append(dest, "\\\""); break;
            case '\\': append(dest, "\\\\"); break;
            case '\b': append(dest, "\\b"); break;
            case '\f': append(dest, "\\f"); break;
            case '\n': append(dest, "\\n"); break;
            case '\r': append(dest, "\\r"); break;
            case '\t': append(dest, "\\t"); break;
            default:
                if (c < 0x20) {
                    const char escaped[] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
                    dest.append(escaped, escaped + sizeof escaped);
                } else {
                    dest.push_back(static_cast<char>(c));
                }
        }
        ++i;
    }
}

std::string json_string_body(std::string_view text) {
    spdlog::memory_buf_t buffer;
    append_json_string_body(text, buffer);
    return fmt::to_string(buffer);
}

std::string rfc3339_utc(std::chrono::system_clock::time_point time) {
    using namespace std::chrono;
    const auto since_epoch = duration_cast<microseconds>(time.time_since_epoch());
    auto seconds_part = duration_cast<seconds>(since_epoch);
    auto micros = (since_epoch - seconds_part).count();
    if (micros < 0) {  // before 1970: keep the fraction positive
        micros += 1'000'000;
        seconds_part -= seconds(1);
    }
    const std::time_t t = static_cast<std::time_t>(seconds_part.count());
    std::tm utc{};
    gmtime_r(&t, &utc);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday,
                       utc.tm_hour, utc.tm_min, utc.tm_sec, micros);
}

void JsonLogFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
    append(dest, R"({"ts":")");
    append(dest, rfc3339_utc(msg.time));
    append(dest, R"(","level":")");
    const auto level = spdlog::level::to_string_view(msg.level);
    append(dest, std::string_view(level.data(), level.size()));
    append(dest, R"(","msg":")");
    append_json_string_body(std::string_view(msg.payload.data(), msg.payload.size()), dest);
    append(dest, R"(","thread":)");
    fmt::format_to(std::back_inserter(dest), "{}", msg.thread_id);
    if (msg.logger_name.size() > 0) {
        append(dest, R"(,"logger":")");
        append_json_string_body(std::string_view(msg.logger_name.data(), msg.logger_name.size()), dest);
        dest.push_back('"');
    }
    append(dest, "}\n");
}

std::unique_ptr<spdlog::formatter> JsonLogFormatter::clone() const { return std::make_unique<JsonLogFormatter>(); }

void configure_logging(const std::string& level, const std::string& format) {
    spdlog::set_level(spdlog::level::from_str(level));
    if (format == "json") {
        spdlog::set_formatter(std::make_unique<JsonLogFormatter>());
    }
}

bool LogRateLimiter::allow(clock::time_point now) {
    if (last_ && now - *last_ < interval_) {
        ++pending_;
        return false;
    }
    last_ = now;
    reported_ = pending_;
    pending_ = 0;
    return true;
}

std::optional<std::uint64_t> SharedLogRateLimiter::allow(LogRateLimiter::clock::time_point now) {
    std::lock_guard lock(mutex_);
    if (!limiter_.allow(now)) {
        return std::nullopt;
    }
    return limiter_.suppressed();
}

std::string suppressed_note(std::uint64_t suppressed) {
    if (suppressed == 0) {
        return {};
    }
    return fmt::format(" ({} similar message{} suppressed)", suppressed, suppressed == 1 ? "" : "s");
}

}  // namespace pgshelf::proxy
