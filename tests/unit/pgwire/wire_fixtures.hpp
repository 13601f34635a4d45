// Byte-fixture helpers for pgwire tests: build frames by hand, independently
// of the encoder under test.
// Reference: https://www.postgresql.org/docs/15/protocol-message-formats.html
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pgshelf::pgwire::test {

inline std::string be16(std::int32_t v) {
    const auto u = static_cast<std::uint16_t>(v);
    return {static_cast<char>(u >> 8), static_cast<char>(u & 0xff)};
}

inline std::string be32(std::int64_t v) {
    const auto u = static_cast<std::uint32_t>(v);
    return {static_cast<char>(u >> 24), static_cast<char>((u >> 16) & 0xff), static_cast<char>((u >> 8) & 0xff),
            static_cast<char>(u & 0xff)};
}

// A String field: the text and its NUL.
inline std::string cstr(std::string_view s) {
    std::string out(s);
    out.push_back('\0');
    return out;
}

// A typed frame: type byte, Int32 length (body + 4), body.
inline std::string frame(char type, std::string_view body) {
    return std::string(1, type) + be32(static_cast<std::int64_t>(body.size()) + 4) + std::string(body);
}

// A typed frame whose length word says `length`, whatever the body.
inline std::string frame_with_length(char type, std::int64_t length, std::string_view body) {
    return std::string(1, type) + be32(length) + std::string(body);
}

// A startup packet: Int32 length (everything + 4), then `rest` (code first).
inline std::string startup(std::string_view rest) {
    return be32(static_cast<std::int64_t>(rest.size()) + 4) + std::string(rest);
}

}  // namespace pgshelf::pgwire::test
