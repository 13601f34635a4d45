// Incremental decoder and encoder for PostgreSQL v3 messages. Pure: no I/O,
// no logging, no exceptions across this API.
//
// Decoding never consumes a partial frame: it reports need_more (consumed 0)
// until a whole frame is in the input, then decodes exactly one message and
// reports how many bytes it used. Every length and element count is checked
// against the bytes that remain before anything is allocated.
// Reference: https://www.postgresql.org/docs/15/protocol-message-formats.html
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "pgwire/codec_error.hpp"
#include "pgwire/messages.hpp"

namespace pgshelf::pgwire {

enum class DecodeStatus { ok, need_more, error };

struct DecodeResult {
    DecodeStatus status = DecodeStatus::need_more;
    std::size_t consumed = 0;  // bytes of input used; 0 unless status == ok
    std::error_code ec;        // set when status == error
};

struct Limits {
    // PostgreSQL itself refuses startup packets above 10,000 bytes.
    std::size_t max_startup_size = 10'000;
    // Whole frame (type byte excluded, length word included), as in the
    // length field. PostgreSQL's own cap for most messages is 1 GB.
    std::size_t max_message_size = 1u << 30;
};

// The 5-byte header of a typed message.
struct FrameHeader {
    char type = 0;
    std::uint32_t length = 0;  // as on the wire: body size + 4
    std::size_t body_size() const { return length - 4; }
    std::size_t frame_size() const { return std::size_t{length} + 1; }
};
inline constexpr std::size_t frame_header_size = 5;

// The length word is an Int32 on the wire; anything above is a negative length.
inline constexpr std::size_t max_wire_length = 0x7fff'ffff;

namespace detail {
// The length word of the frame starting at `pos` (5 bytes must be there).
inline std::uint32_t frame_length_at(std::string_view in, std::size_t pos) {
    const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(in[pos + i])); };
    return (byte(1) << 24) | (byte(2) << 16) | (byte(3) << 8) | byte(4);
}
inline std::size_t max_frame_length(const Limits& limits) {
    return limits.max_message_size < max_wire_length ? limits.max_message_size : max_wire_length;
}
}  // namespace detail

// Reads the header of the next typed frame without needing its body.
// ok (consumed = 5) once 5 bytes are present and the length is sane
// (>= 4 and <= limits.max_message_size); the body may still be incomplete.
// Inline: relays call it for every frame.
inline DecodeResult peek_header(std::string_view in, FrameHeader& out, const Limits& limits = {}) {
    if (in.size() < frame_header_size) {
        return {DecodeStatus::need_more, 0, {}};
    }
    const std::uint32_t length = detail::frame_length_at(in, 0);
    if (length < 4) {
        return {DecodeStatus::error, 0, make_error_code(CodecErrc::length_too_small)};
    }
    // Judged on the header alone, so an oversized frame is refused before
    // any of its body is buffered.
    if (length > detail::max_frame_length(limits)) {
        return {DecodeStatus::error, 0, make_error_code(CodecErrc::message_too_large)};
    }
    out = FrameHeader{in[0], length};
    return {DecodeStatus::ok, frame_header_size, {}};
}

// The offset past the whole frames starting at `pos` whose type `pass`
// accepts; stops at the first frame that is incomplete, not accepted, or
// whose length peek_header would refuse (it then reports why). For relays
// that only forward most frames (DataRow) without decoding them.
template <class Accept>
std::size_t skip_whole_frames(std::string_view in, std::size_t pos, Accept pass, const Limits& limits = {}) {
    const std::size_t max_length = detail::max_frame_length(limits);
    while (in.size() - pos >= frame_header_size) {
        const std::uint32_t length = detail::frame_length_at(in, pos);
        if (length < 4 || length > max_length || in.size() - pos - 1 < length || !pass(in[pos])) {
            break;
        }
        pos += std::size_t{length} + 1;
    }
    return pos;
}

// The first packet a client sends (no type byte). Rejects packets above
// limits.max_startup_size and protocol major versions other than 3.
DecodeResult decode_startup(std::string_view in, StartupPacket& out, const Limits& limits = {});

// One complete typed frame from the client / from the server.
DecodeResult decode_frontend(std::string_view in, FrontendMessage& out, const Limits& limits = {});
DecodeResult decode_backend(std::string_view in, BackendMessage& out, const Limits& limits = {});

// Body-only decoding, for callers that framed the message already.
// `body` excludes the type byte and the length word.
std::error_code decode_frontend_body(char type, std::string_view body, FrontendMessage& out);
std::error_code decode_backend_body(char type, std::string_view body, BackendMessage& out);

// Interprets a 'p' body that answers AuthenticationSASL.
std::error_code decode_sasl_initial_response(std::string_view body, SASLInitialResponse& out);

// Encoders append one whole frame to `out`.
void encode(const StartupPacket& msg, std::string& out);
void encode(const FrontendMessage& msg, std::string& out);
void encode(const BackendMessage& msg, std::string& out);
void encode(const SASLInitialResponse& msg, std::string& out);

// Appends an ErrorResponse (or NoticeResponse when `notice`) with the usual
// fields: S and V = severity, C = sqlstate, M = message.
void encode_error(std::string& out, std::string_view severity, std::string_view sqlstate, std::string_view message,
                  bool notice = false);

// Builds one frame: begin() writes the type and a length placeholder,
// finish() patches the length. Used by the encoders above and by callers
// that synthesise replies without building message structs.
class FrameWriter {
public:
    explicit FrameWriter(std::string& out, char type);
    // For the startup packet, which has no type byte.
    static FrameWriter untyped(std::string& out);
    FrameWriter& int8(std::int8_t v);
    FrameWriter& int16(std::int16_t v);
    FrameWriter& int32(std::int32_t v);
    FrameWriter& cstring(std::string_view s);  // appends s and a NUL
    FrameWriter& bytes(std::string_view s);
    FrameWriter& value(const Value& v);  // Int32 length (-1 for NULL) + bytes
    void finish();

private:
    FrameWriter(std::string& out, std::size_t length_at);
    std::string& out_;
    std::size_t length_at_;
};

}  // namespace pgshelf::pgwire
