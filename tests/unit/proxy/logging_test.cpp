// JSON log lines and the warning rate limiter (proxy/logging.hpp).
#include "proxy/logging.hpp"

#include <gtest/gtest.h>

#include <random>
#include <sstream>

#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

namespace pgshelf::proxy {
namespace {

using namespace std::chrono_literals;

// Decodes the inside of a JSON string as RFC 8259 defines it; nullopt for
// anything a JSON parser would reject (raw control characters, a bare
// quote, unknown escapes, lone surrogates).
std::optional<std::string> decode_json_string_body(std::string_view body) {
    std::string out;
    auto put_utf8 = [&](std::uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xc0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xe0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else {
            out += static_cast<char>(0xf0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        }
    };
    for (std::size_t i = 0; i < body.size(); ++i) {
        const auto c = static_cast<unsigned char>(body[i]);
        if (c < 0x20 || c == '"') {
            return std::nullopt;
        }
        if (c != '\\') {
            out += static_cast<char>(c);
            continue;
        }
        if (++i >= body.size()) {
            return std::nullopt;
        }
        switch (body[i]) {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                if (i + 4 >= body.size()) {
                    return std::nullopt;
                }
                const std::uint32_t cp = std::stoul(std::string(body.substr(i + 1, 4)), nullptr, 16);
                if (cp >= 0xd800 && cp <= 0xdfff) {
                    return std::nullopt;  // the formatter never needs surrogate pairs
                }
                put_utf8(cp);
                i += 4;
                break;
            }
            default: return std::nullopt;
        }
    }
    return out;
}

bool valid_utf8(std::string_view text) {
    for (std::size_t i = 0; i < text.size();) {
        const auto c = static_cast<unsigned char>(text[i]);
        std::size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        if (n == 0 || i + n > text.size()) {
            return false;
        }
        for (std::size_t k = 1; k < n; ++k) {
            if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) {
                return false;
            }
        }
        const auto c1 = static_cast<unsigned char>(text[i + (n > 1 ? 1 : 0)]);
        if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 > 0x8f)) {
            return false;
        }
        i += n;
    }
    return true;
}

TEST(JsonString, EscapesQuotesBackslashesAndControlCharacters) {
    EXPECT_EQ(json_string_body("plain text"), "plain text");
    EXPECT_EQ(json_string_body(R"(say "hi")"), R"(say \"hi\")");
    EXPECT_EQ(json_string_body(R"(C:\path)"), R"(C:\\path)");
    EXPECT_EQ(json_string_body("a\nb\rc\td\be\ff"), R"(a\nb\rc\td\be\ff)");
    EXPECT_EQ(json_string_body(std::string("nul\0x", 5)), R"(nul\u0000x)");
    EXPECT_EQ(json_string_body("\x01\x1f\x7f"), "\\u0001\\u001f\x7f");
    EXPECT_EQ(json_string_body("/"), "/");
}

TEST(JsonString, KeepsValidUtf8AndReplacesInvalidBytes) {
    EXPECT_EQ(json_string_body("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"), "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80");
    EXPECT_EQ(json_string_body("a\xff"
                               "b"),
              "a\\ufffdb");                                   // never a lead byte
    EXPECT_EQ(json_string_body("\x80"), "\\ufffd");          // stray continuation
    EXPECT_EQ(json_string_body("\xc3"), "\\ufffd");          // truncated at the end
    EXPECT_EQ(json_string_body("\xc0\xaf"), "\\ufffd\\ufffd");  // overlong '/'
    EXPECT_EQ(json_string_body("\xed\xa0\x80"), "\\ufffd\\ufffd\\ufffd");  // a surrogate
    EXPECT_EQ(json_string_body("\xf4\x90\x80\x80"), "\\ufffd\\ufffd\\ufffd\\ufffd");  // above U+10FFFF
    // A truncated 3-byte sequence is one maximal subpart: one replacement.
    EXPECT_EQ(json_string_body("\xe2\x82x"), "\\ufffdx");
}

TEST(JsonString, RoundTripsThroughAJsonDecoder) {
    std::mt19937 random(7);
    for (int round = 0; round < 2000; ++round) {
        std::string text;
        const int length = static_cast<int>(random() % 24);
        for (int i = 0; i < length; ++i) {
            text += static_cast<char>(random() % 256);
        }
        const std::string body = json_string_body(text);
        auto decoded = decode_json_string_body(body);
        ASSERT_TRUE(decoded.has_value()) << body;
        EXPECT_TRUE(valid_utf8(*decoded)) << body;
        if (valid_utf8(text)) {
            EXPECT_EQ(*decoded, text);  // nothing lost when there was nothing to replace
        }
        EXPECT_EQ(body.find('\n'), std::string::npos);
    }
}

TEST(Rfc3339, UtcWithMicroseconds) {
    using namespace std::chrono;
    EXPECT_EQ(rfc3339_utc(system_clock::time_point{}), "1970-01-01T00:00:00.000000Z");
    const auto t = system_clock::time_point{seconds(1714566896) + microseconds(123456)};
    EXPECT_EQ(rfc3339_utc(t), "2024-05-01T12:34:56.123456Z");
    const auto early = system_clock::time_point{seconds(1714566896) + microseconds(42)};
    EXPECT_EQ(rfc3339_utc(early), "2024-05-01T12:34:56.000042Z");
}

TEST(JsonLogFormatter, ExactLine) {
    using namespace std::chrono;
    spdlog::details::log_msg msg(system_clock::time_point{seconds(1714566896) + microseconds(5)}, spdlog::source_loc{},
                                 "", spdlog::level::warn, "redis \"a\"\nlost");
    msg.thread_id = 4242;
    JsonLogFormatter formatter;
    spdlog::memory_buf_t out;
    formatter.format(msg, out);
    EXPECT_EQ(fmt::to_string(out),
              "{\"ts\":\"2024-05-01T12:34:56.000005Z\",\"level\":\"warning\",\"msg\":\"redis \\\"a\\\"\\nlost\","
              "\"thread\":4242}\n");

    spdlog::details::log_msg named(system_clock::time_point{}, spdlog::source_loc{}, "admin", spdlog::level::info, "x");
    named.thread_id = 1;
    out.clear();
    formatter.clone()->format(named, out);
    EXPECT_EQ(fmt::to_string(out),
              "{\"ts\":\"1970-01-01T00:00:00.000000Z\",\"level\":\"info\",\"msg\":\"x\",\"thread\":1,\"logger\":\"admin\"}\n");
}

TEST(JsonLogFormatter, OneLinePerMessageThroughALogger) {
    std::ostringstream sink_text;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(sink_text);
    spdlog::logger logger("", sink);
    logger.set_formatter(std::make_unique<JsonLogFormatter>());
    logger.warn("first line\nsecond line");
    logger.error("tab\there, {} and {}", "quote\"", std::string("bad\xff byte"));
    logger.info("third");
    std::istringstream lines(sink_text.str());
    std::vector<std::string> seen;
    for (std::string line; std::getline(lines, line);) {
        seen.push_back(line);
    }
    ASSERT_EQ(seen.size(), 3u) << sink_text.str();
    const std::string expected_msgs[] = {R"(first line\nsecond line)", R"(tab\there, quote\" and bad\ufffd byte)", "third"};
    const std::string expected_levels[] = {"warning", "error", "info"};
    for (std::size_t i = 0; i < seen.size(); ++i) {
        const std::string& line = seen[i];
        EXPECT_TRUE(line.starts_with("{\"ts\":\"")) << line;
        EXPECT_TRUE(line.ends_with("}")) << line;
        EXPECT_NE(line.find("\"level\":\"" + expected_levels[i] + "\""), std::string::npos) << line;
        EXPECT_NE(line.find("\"msg\":\"" + expected_msgs[i] + "\",\"thread\":"), std::string::npos) << line;
    }
}

TEST(LogRateLimiter, OnePerIntervalAndCountsTheRest) {
    LogRateLimiter limiter(10s);
    const LogRateLimiter::clock::time_point t0{};
    ASSERT_TRUE(limiter.allow(t0 + 100s));
    EXPECT_EQ(limiter.suppressed(), 0u);
    EXPECT_FALSE(limiter.allow(t0 + 101s));
    EXPECT_FALSE(limiter.allow(t0 + 105s));
    EXPECT_FALSE(limiter.allow(t0 + 109s + 999ms));
    ASSERT_TRUE(limiter.allow(t0 + 110s));
    EXPECT_EQ(limiter.suppressed(), 3u);
    // The count was reported with that message; it starts again from zero.
    ASSERT_TRUE(limiter.allow(t0 + 200s));
    EXPECT_EQ(limiter.suppressed(), 0u);
    EXPECT_FALSE(limiter.allow(t0 + 201s));
    ASSERT_TRUE(limiter.allow(t0 + 211s));
    EXPECT_EQ(limiter.suppressed(), 1u);
}

TEST(LogRateLimiter, IntervalCountsFromTheAllowedMessage) {
    LogRateLimiter limiter(10s);
    const LogRateLimiter::clock::time_point t0{};
    ASSERT_TRUE(limiter.allow(t0));
    // Suppressed messages do not push the window forward.
    for (int s = 1; s < 10; ++s) {
        EXPECT_FALSE(limiter.allow(t0 + std::chrono::seconds(s)));
    }
    EXPECT_TRUE(limiter.allow(t0 + 10s));
    EXPECT_EQ(limiter.suppressed(), 9u);
}

TEST(SharedLogRateLimiter, ReturnsTheSuppressedCount) {
    SharedLogRateLimiter limiter(10s);
    const LogRateLimiter::clock::time_point t0{};
    EXPECT_EQ(limiter.allow(t0), std::optional<std::uint64_t>(0));
    EXPECT_EQ(limiter.allow(t0 + 1s), std::nullopt);
    EXPECT_EQ(limiter.allow(t0 + 2s), std::nullopt);
    EXPECT_EQ(limiter.allow(t0 + 12s), std::optional<std::uint64_t>(2));
}

TEST(SuppressedNote, Wording) {
    EXPECT_EQ(suppressed_note(0), "");
    EXPECT_EQ(suppressed_note(1), " (1 similar message suppressed)");
    EXPECT_EQ(suppressed_note(12), " (12 similar messages suppressed)");
}

}  // namespace
}  // namespace pgshelf::proxy
