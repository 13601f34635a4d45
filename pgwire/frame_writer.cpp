// FrameWriter: appends one message frame and patches its length word.
//
// Typed frame:    Byte1 type | Int32 length (self + body) | body
// Startup packet: Int32 length (self + rest) | rest
// Integers are big-endian.
// Reference: https://www.postgresql.org/docs/15/protocol-message-types.html
#include "pgwire/codec.hpp"

namespace pgshelf::pgwire {

namespace {

void put_u32(std::string& out, std::size_t at, std::uint32_t v) {
    out[at] = static_cast<char>(v >> 24);
    out[at + 1] = static_cast<char>(v >> 16);
    out[at + 2] = static_cast<char>(v >> 8);
    out[at + 3] = static_cast<char>(v);
}

std::size_t append_type(std::string& out, char type) {
    out.push_back(type);
    return out.size();
}

}  // namespace

FrameWriter::FrameWriter(std::string& out, char type) : FrameWriter(out, append_type(out, type)) {}

FrameWriter::FrameWriter(std::string& out, std::size_t length_at) : out_(out), length_at_(length_at) {
    out_.append(4, '\0');  // placeholder, patched by finish()
}

FrameWriter FrameWriter::untyped(std::string& out) { return FrameWriter(out, out.size()); }

FrameWriter& FrameWriter::int8(std::int8_t v) {
    out_.push_back(static_cast<char>(v));
    return *this;
}

FrameWriter& FrameWriter::int16(std::int16_t v) {
    const auto u = static_cast<std::uint16_t>(v);
    out_.push_back(static_cast<char>(u >> 8));
    out_.push_back(static_cast<char>(u));
    return *this;
}

FrameWriter& FrameWriter::int32(std::int32_t v) {
    const std::size_t at = out_.size();
    out_.append(4, '\0');
    put_u32(out_, at, static_cast<std::uint32_t>(v));
    return *this;
}

FrameWriter& FrameWriter::cstring(std::string_view s) {
    out_.append(s);
    out_.push_back('\0');
    return *this;
}

FrameWriter& FrameWriter::bytes(std::string_view s) {
    out_.append(s);
    return *this;
}

FrameWriter& FrameWriter::value(const Value& v) {
    if (!v) {
        return int32(-1);
    }
    int32(static_cast<std::int32_t>(v->size()));
    return bytes(*v);
}

void FrameWriter::finish() { put_u32(out_, length_at_, static_cast<std::uint32_t>(out_.size() - length_at_)); }

}  // namespace pgshelf::pgwire
