// Bounds-checked big-endian reader over one message body. Internal to pgwire.
//
// Field types follow the protocol docs: Int8/Int16/Int32 big-endian, String =
// NUL-terminated, Byte(n) = raw bytes, and a value = Int32 length (-1 NULL)
// followed by that many bytes.
// Reference: https://www.postgresql.org/docs/15/protocol-message-types.html
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <system_error>

#include "pgwire/codec_error.hpp"
#include "pgwire/messages.hpp"

namespace pgshelf::pgwire::detail {

inline std::uint32_t load_u32(std::string_view in) {
    const auto b = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])); };
    return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

// The first failure is sticky: later reads return zero values and consume
// nothing, so a decoder can read a whole layout and check once at the end.
// Counts are the exception: count16()/count32() return 0 after a failure, so
// nothing is ever sized from a field that was not read and checked.
class BodyReader {
public:
    explicit BodyReader(std::string_view body) : rest_(body) {}

    bool failed() const { return static_cast<bool>(ec_); }
    std::size_t remaining() const { return rest_.size(); }

    void fail(CodecErrc e) {
        if (!ec_) {
            ec_ = e;
        }
    }

    std::string_view bytes(std::size_t n) {
        if (failed()) {
            return {};
        }
        if (n > rest_.size()) {
            fail(CodecErrc::truncated);
            return {};
        }
        const std::string_view out = rest_.substr(0, n);
        rest_.remove_prefix(n);
        return out;
    }

    std::string_view rest() { return bytes(rest_.size()); }

    std::uint8_t uint8() {
        const std::string_view b = bytes(1);
        return b.empty() ? 0 : static_cast<std::uint8_t>(b[0]);
    }
    std::int8_t int8() { return static_cast<std::int8_t>(uint8()); }
    char byte() { return static_cast<char>(uint8()); }

    std::uint16_t uint16() {
        const std::string_view b = bytes(2);
        if (b.empty()) {
            return 0;
        }
        return static_cast<std::uint16_t>((static_cast<unsigned char>(b[0]) << 8) | static_cast<unsigned char>(b[1]));
    }
    std::int16_t int16() { return static_cast<std::int16_t>(uint16()); }

    std::uint32_t uint32() {
        const std::string_view b = bytes(4);
        return b.empty() ? 0 : load_u32(b);
    }
    std::int32_t int32() { return static_cast<std::int32_t>(uint32()); }

    std::string_view cstring() {
        if (failed()) {
            return {};
        }
        const std::size_t nul = rest_.find('\0');
        if (nul == std::string_view::npos) {
            fail(CodecErrc::missing_terminator);
            return {};
        }
        const std::string_view out = rest_.substr(0, nul);
        rest_.remove_prefix(nul + 1);
        return out;
    }

    Value value() {
        const std::int32_t length = int32();
        if (failed() || length == -1) {
            return std::nullopt;
        }
        if (length < -1) {
            fail(CodecErrc::bad_value_length);
            return std::nullopt;
        }
        return bytes(static_cast<std::size_t>(length));
    }

    // Int16 element counts are read unsigned, as PostgreSQL and libpq do
    // (pq_getmsgint / pqGetInt), so 32768..65535 elements stay legal. The
    // count must fit in what remains, given each element's minimum size,
    // before any container is sized from it.
    std::size_t count16(std::size_t min_element_size) { return checked_count(uint16(), min_element_size); }

    std::size_t count32(std::size_t min_element_size) {
        const std::int32_t n = int32();
        if (failed()) {
            return 0;
        }
        if (n < 0) {
            fail(CodecErrc::bad_count);
            return 0;
        }
        return checked_count(static_cast<std::uint32_t>(n), min_element_size);
    }

    // The body's verdict: the first failure, or trailing_bytes if anything is left.
    std::error_code finish() const {
        if (ec_) {
            return ec_;
        }
        if (!rest_.empty()) {
            return CodecErrc::trailing_bytes;
        }
        return {};
    }

private:
    std::size_t checked_count(std::uint32_t n, std::size_t min_element_size) {
        if (failed()) {
            return 0;
        }
        // 64-bit product: n < 2^32 and element sizes are small constants.
        if (std::uint64_t{n} * min_element_size > rest_.size()) {
            fail(CodecErrc::bad_count);
            return 0;
        }
        return n;
    }

    std::string_view rest_;
    std::error_code ec_;
};

}  // namespace pgshelf::pgwire::detail
