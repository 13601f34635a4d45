// Decoding side of the PostgreSQL v3 codec: framing, the startup packet and
// every typed message in both directions.
//
// Typed frame:    Byte1 type | Int32 length (self + body) | body
// Startup packet: Int32 length (self + rest) | Int32 code | rest
// Reference: https://www.postgresql.org/docs/15/protocol-message-formats.html
//
// Bytes are untrusted: every field is bounds-checked, every count is checked
// against the bytes that remain before a vector is sized from it, and `out`
// is only assigned once a message decoded completely.
#include "pgwire/codec.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

#include "pgwire/body_reader.hpp"

namespace pgshelf::pgwire {

namespace {

using detail::BodyReader;

// Int32 length + Int32 code. SSLRequest/GSSENCRequest are exactly this,
// CancelRequest adds two Int32s; longer packets fail as trailing_bytes.
constexpr std::uint32_t min_startup_length = 8;

// Minimum wire size of one RowDescription field: empty name (NUL) + 18 bytes.
constexpr std::size_t min_field_description_size = 1 + 4 + 2 + 4 + 2 + 4 + 2;

DecodeResult decoded(std::size_t consumed) { return {DecodeStatus::ok, consumed, {}}; }
DecodeResult need_more() { return {DecodeStatus::need_more, 0, {}}; }
DecodeResult failed(std::error_code ec) { return {DecodeStatus::error, 0, ec}; }

template <typename Variant, typename Message>
std::error_code commit(const BodyReader& r, Message&& msg, Variant& out) {
    if (auto ec = r.finish()) {
        return ec;
    }
    out = std::forward<Message>(msg);
    return {};
}

template <typename Variant, typename Message>
std::error_code decode_empty(std::string_view body, Variant& out) {
    const BodyReader r(body);
    return commit(r, Message{}, out);
}

std::vector<std::int16_t> read_int16_array(BodyReader& r) {
    const std::size_t n = r.count16(2);
    std::vector<std::int16_t> v;
    v.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        v.push_back(r.int16());
    }
    return v;
}

std::vector<std::uint32_t> read_oid_array(BodyReader& r) {
    const std::size_t n = r.count16(4);
    std::vector<std::uint32_t> v;
    v.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        v.push_back(r.uint32());
    }
    return v;
}

std::vector<Value> read_value_array(BodyReader& r) {
    const std::size_t n = r.count16(4);
    std::vector<Value> v;
    v.reserve(n);
    for (std::size_t i = 0; i < n && !r.failed(); ++i) {
        v.push_back(r.value());
    }
    return v;
}

// Field list of ErrorResponse/NoticeResponse: (Byte1 code, String value)*
// then a zero byte. No count on the wire; the body size bounds the growth.
std::vector<NoticeField> read_notice_fields(BodyReader& r) {
    std::vector<NoticeField> fields;
    while (!r.failed()) {
        if (r.remaining() == 0) {
            r.fail(CodecErrc::missing_terminator);
            break;
        }
        const char code = r.byte();
        if (code == '\0') {
            break;
        }
        const std::string_view value = r.cstring();
        fields.push_back(NoticeField{code, value});
    }
    return fields;
}

// ---------------------------------------------------------------- frontend bodies

std::error_code decode_query(std::string_view body, FrontendMessage& out) {
    BodyReader r(body);
    Query msg{r.cstring()};
    return commit(r, std::move(msg), out);
}

std::error_code decode_parse(std::string_view body, FrontendMessage& out) {
    BodyReader r(body);
    Parse msg;
    msg.name = r.cstring();
    msg.sql = r.cstring();
    msg.param_types = read_oid_array(r);
    return commit(r, std::move(msg), out);
}

std::error_code decode_bind(std::string_view body, FrontendMessage& out) {
    BodyReader r(body);
    Bind msg;
    msg.portal = r.cstring();
    msg.statement = r.cstring();
    msg.param_formats = read_int16_array(r);
    msg.params = read_value_array(r);
    msg.result_formats = read_int16_array(r);
    return commit(r, std::move(msg), out);
}

// Describe and Close share a layout: Byte1 kind ('S' or 'P') | String name.
template <typename Message>
std::error_code decode_kind_and_name(std::string_view body, FrontendMessage& out) {
    BodyReader r(body);
    Message msg;
    msg.kind = r.byte();
    if (!r.failed() && msg.kind != 'S' && msg.kind != 'P') {
        return CodecErrc::bad_kind;
    }
    msg.name = r.cstring();
    return commit(r, std::move(msg), out);
}

std::error_code decode_execute(std::string_view body, FrontendMessage& out) {
    BodyReader r(body);
    Execute msg;
    msg.portal = r.cstring();
    msg.max_rows = r.int32();
    return commit(r, std::move(msg), out);
}

std::error_code decode_copy_fail(std::string_view body, FrontendMessage& out) {
    BodyReader r(body);
    CopyFail msg{r.cstring()};
    return commit(r, std::move(msg), out);
}

std::error_code decode_function_call(std::string_view body, FrontendMessage& out) {
    BodyReader r(body);
    FunctionCall msg;
    msg.function_oid = r.uint32();
    msg.arg_formats = read_int16_array(r);
    msg.args = read_value_array(r);
    msg.result_format = r.int16();
    return commit(r, std::move(msg), out);
}

// ---------------------------------------------------------------- backend bodies

std::error_code decode_authentication(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    const std::int32_t code = r.int32();
    if (r.failed()) {
        return r.finish();
    }
    switch (code) {
    case 0:
        return commit(r, AuthenticationOk{}, out);
    case 3:
        return commit(r, AuthenticationCleartextPassword{}, out);
    case 5: {
        AuthenticationMD5Password msg;
        const std::string_view salt = r.bytes(msg.salt.size());
        std::copy(salt.begin(), salt.end(), msg.salt.begin());
        return commit(r, std::move(msg), out);
    }
    case 10: {
        AuthenticationSASL msg;
        while (!r.failed()) {
            const std::string_view mechanism = r.cstring();
            if (mechanism.empty()) {
                break;
            }
            msg.mechanisms.push_back(mechanism);
        }
        return commit(r, std::move(msg), out);
    }
    case 11: {
        AuthenticationSASLContinue msg{r.rest()};
        return commit(r, std::move(msg), out);
    }
    case 12: {
        AuthenticationSASLFinal msg{r.rest()};
        return commit(r, std::move(msg), out);
    }
    default: {
        AuthenticationOther msg{code, r.rest()};
        return commit(r, std::move(msg), out);
    }
    }
}

std::error_code decode_parameter_status(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    ParameterStatus msg;
    msg.name = r.cstring();
    msg.value = r.cstring();
    return commit(r, std::move(msg), out);
}

std::error_code decode_backend_key_data(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    BackendKeyData msg;
    msg.process_id = r.int32();
    msg.secret_key = r.int32();
    return commit(r, std::move(msg), out);
}

std::error_code decode_ready_for_query(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    ReadyForQuery msg{r.byte()};
    return commit(r, std::move(msg), out);
}

std::error_code decode_row_description(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    RowDescription msg;
    const std::size_t n = r.count16(min_field_description_size);
    msg.fields.reserve(n);
    for (std::size_t i = 0; i < n && !r.failed(); ++i) {
        FieldDescription f;
        f.name = r.cstring();
        f.table_oid = r.uint32();
        f.column_attr = r.int16();
        f.type_oid = r.uint32();
        f.type_size = r.int16();
        f.type_modifier = r.int32();
        f.format = r.int16();
        msg.fields.push_back(f);
    }
    return commit(r, std::move(msg), out);
}

std::error_code decode_data_row(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    DataRow msg{read_value_array(r)};
    return commit(r, std::move(msg), out);
}

std::error_code decode_command_complete(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    CommandComplete msg{r.cstring()};
    return commit(r, std::move(msg), out);
}

template <typename Message>
std::error_code decode_notice(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    Message msg{read_notice_fields(r)};
    return commit(r, std::move(msg), out);
}

std::error_code decode_parameter_description(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    ParameterDescription msg{read_oid_array(r)};
    return commit(r, std::move(msg), out);
}

// CopyIn/CopyOut/CopyBothResponse: Int8 format | Int16 n | Int16 format * n.
template <typename Message>
std::error_code decode_copy_response(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    Message msg;
    msg.format = r.int8();
    msg.column_formats = read_int16_array(r);
    return commit(r, std::move(msg), out);
}

std::error_code decode_notification(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    NotificationResponse msg;
    msg.process_id = r.int32();
    msg.channel = r.cstring();
    msg.payload = r.cstring();
    return commit(r, std::move(msg), out);
}

std::error_code decode_function_call_response(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    FunctionCallResponse msg{r.value()};
    return commit(r, std::move(msg), out);
}

std::error_code decode_negotiate_protocol_version(std::string_view body, BackendMessage& out) {
    BodyReader r(body);
    NegotiateProtocolVersion msg;
    msg.newest_minor = r.int32();
    const std::size_t n = r.count32(1);
    msg.unrecognized_options.reserve(n);
    for (std::size_t i = 0; i < n && !r.failed(); ++i) {
        msg.unrecognized_options.push_back(r.cstring());
    }
    return commit(r, std::move(msg), out);
}

// ---------------------------------------------------------------- framing

template <typename Message, typename BodyDecoder>
DecodeResult decode_typed(std::string_view in, Message& out, const Limits& limits, BodyDecoder decode_body) {
    FrameHeader header;
    const DecodeResult head = peek_header(in, header, limits);
    if (head.status != DecodeStatus::ok) {
        return head;
    }
    if (in.size() < header.frame_size()) {
        return need_more();
    }
    if (auto ec = decode_body(header.type, in.substr(frame_header_size, header.body_size()), out)) {
        return failed(ec);
    }
    return decoded(header.frame_size());
}

std::error_code decode_startup_body(std::int32_t code, BodyReader& r, StartupPacket& out) {
    switch (code) {
    case ssl_request_code:
        return commit(r, SSLRequest{}, out);
    case gssenc_request_code:
        return commit(r, GSSENCRequest{}, out);
    case cancel_request_code: {
        CancelRequest msg;
        msg.process_id = r.int32();
        msg.secret_key = r.int32();
        return commit(r, std::move(msg), out);
    }
    default:
        break;
    }
    // Any 3.x: the server answers unknown minors with NegotiateProtocolVersion,
    // so the proxy must not refuse them itself.
    if ((static_cast<std::uint32_t>(code) >> 16) != 3) {
        return CodecErrc::unsupported_protocol;
    }
    StartupMessage msg;
    msg.protocol_version = code;
    while (!r.failed()) {
        const std::string_view name = r.cstring();
        if (name.empty()) {
            break;  // the list ends with an empty name; a missing NUL failed above
        }
        const std::string_view value = r.cstring();
        msg.parameters.emplace_back(name, value);
    }
    return commit(r, std::move(msg), out);
}

}  // namespace

DecodeResult decode_startup(std::string_view in, StartupPacket& out, const Limits& limits) {
    if (in.size() < 4) {
        return need_more();
    }
    const std::uint32_t length = detail::load_u32(in);
    if (length < min_startup_length) {
        return failed(CodecErrc::length_too_small);
    }
    // The cap applies to the whole packet, length word included, and is
    // checked before waiting for the rest: an unauthenticated peer must not
    // make us buffer more than this.
    if (length > limits.max_startup_size) {
        return failed(CodecErrc::startup_too_large);
    }
    if (in.size() < length) {
        return need_more();
    }
    BodyReader r(in.substr(4, length - 4));
    const std::int32_t code = r.int32();
    if (auto ec = decode_startup_body(code, r, out)) {
        return failed(ec);
    }
    return decoded(length);
}

DecodeResult decode_frontend(std::string_view in, FrontendMessage& out, const Limits& limits) {
    return decode_typed(in, out, limits, decode_frontend_body);
}

DecodeResult decode_backend(std::string_view in, BackendMessage& out, const Limits& limits) {
    return decode_typed(in, out, limits, decode_backend_body);
}

std::error_code decode_frontend_body(char type, std::string_view body, FrontendMessage& out) {
    switch (type) {
    case 'Q':
        return decode_query(body, out);
    case 'P':
        return decode_parse(body, out);
    case 'B':
        return decode_bind(body, out);
    case 'D':
        return decode_kind_and_name<Describe>(body, out);
    case 'E':
        return decode_execute(body, out);
    case 'C':
        return decode_kind_and_name<Close>(body, out);
    case 'S':
        return decode_empty<FrontendMessage, Sync>(body, out);
    case 'H':
        return decode_empty<FrontendMessage, Flush>(body, out);
    case 'X':
        return decode_empty<FrontendMessage, Terminate>(body, out);
    case 'd':
        out = CopyData{body};
        return {};
    case 'c':
        return decode_empty<FrontendMessage, CopyDone>(body, out);
    case 'f':
        return decode_copy_fail(body, out);
    case 'F':
        return decode_function_call(body, out);
    case 'p':
        out = PasswordMessage{body};
        return {};
    default:
        out = Unknown{type, body};
        return {};
    }
}

std::error_code decode_backend_body(char type, std::string_view body, BackendMessage& out) {
    switch (type) {
    case 'R':
        return decode_authentication(body, out);
    case 'S':
        return decode_parameter_status(body, out);
    case 'K':
        return decode_backend_key_data(body, out);
    case 'Z':
        return decode_ready_for_query(body, out);
    case 'T':
        return decode_row_description(body, out);
    case 'D':
        return decode_data_row(body, out);
    case 'C':
        return decode_command_complete(body, out);
    case 'I':
        return decode_empty<BackendMessage, EmptyQueryResponse>(body, out);
    case 'E':
        return decode_notice<ErrorResponse>(body, out);
    case 'N':
        return decode_notice<NoticeResponse>(body, out);
    case 't':
        return decode_parameter_description(body, out);
    case 'n':
        return decode_empty<BackendMessage, NoData>(body, out);
    case 's':
        return decode_empty<BackendMessage, PortalSuspended>(body, out);
    case '1':
        return decode_empty<BackendMessage, ParseComplete>(body, out);
    case '2':
        return decode_empty<BackendMessage, BindComplete>(body, out);
    case '3':
        return decode_empty<BackendMessage, CloseComplete>(body, out);
    case 'G':
        return decode_copy_response<CopyInResponse>(body, out);
    case 'H':
        return decode_copy_response<CopyOutResponse>(body, out);
    case 'W':
        return decode_copy_response<CopyBothResponse>(body, out);
    case 'd':
        out = CopyData{body};
        return {};
    case 'c':
        return decode_empty<BackendMessage, CopyDone>(body, out);
    case 'A':
        return decode_notification(body, out);
    case 'V':
        return decode_function_call_response(body, out);
    case 'v':
        return decode_negotiate_protocol_version(body, out);
    default:
        out = Unknown{type, body};
        return {};
    }
}

std::error_code decode_sasl_initial_response(std::string_view body, SASLInitialResponse& out) {
    BodyReader r(body);
    SASLInitialResponse msg;
    msg.mechanism = r.cstring();
    msg.data = r.value();
    if (auto ec = r.finish()) {
        return ec;
    }
    out = msg;
    return {};
}

}  // namespace pgshelf::pgwire
