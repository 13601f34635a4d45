// Encoding side of the PostgreSQL v3 codec: one whole frame per message,
// byte-for-byte the inverse of the decoders in codec.cpp.
// Reference: https://www.postgresql.org/docs/15/protocol-message-formats.html
//
// Preconditions (not checkable on bytes the proxy built itself): String
// fields hold no NUL, arrays hold at most 65535 elements, values and frames
// stay below 2 GB. Decoded messages always satisfy them.
#include <variant>

#include "pgwire/codec.hpp"

namespace pgshelf::pgwire {

namespace {

// Int16 counts are unsigned on the wire in practice (see BodyReader::count16).
std::int16_t count16(std::size_t n) { return static_cast<std::int16_t>(static_cast<std::uint16_t>(n)); }

void put_int16_array(FrameWriter& w, const std::vector<std::int16_t>& v) {
    w.int16(count16(v.size()));
    for (const std::int16_t x : v) {
        w.int16(x);
    }
}

void put_oid_array(FrameWriter& w, const std::vector<std::uint32_t>& v) {
    w.int16(count16(v.size()));
    for (const std::uint32_t oid : v) {
        w.int32(static_cast<std::int32_t>(oid));
    }
}

void put_value_array(FrameWriter& w, const std::vector<Value>& v) {
    w.int16(count16(v.size()));
    for (const Value& x : v) {
        w.value(x);
    }
}

void put_notice_fields(FrameWriter& w, const std::vector<NoticeField>& fields) {
    for (const NoticeField& f : fields) {
        w.int8(static_cast<std::int8_t>(f.code)).cstring(f.value);
    }
    w.int8(0);
}

void put_empty(std::string& out, char type) { FrameWriter(out, type).finish(); }

// ---------------------------------------------------------------- startup

void put(const StartupMessage& m, std::string& out) {
    FrameWriter w = FrameWriter::untyped(out);
    w.int32(m.protocol_version);
    for (const auto& [name, value] : m.parameters) {
        w.cstring(name).cstring(value);
    }
    w.int8(0);
    w.finish();
}
void put(const SSLRequest&, std::string& out) { FrameWriter::untyped(out).int32(ssl_request_code).finish(); }
void put(const GSSENCRequest&, std::string& out) { FrameWriter::untyped(out).int32(gssenc_request_code).finish(); }
void put(const CancelRequest& m, std::string& out) {
    FrameWriter::untyped(out).int32(cancel_request_code).int32(m.process_id).int32(m.secret_key).finish();
}

// ---------------------------------------------------------------- both directions

void put(const CopyData& m, std::string& out) { FrameWriter(out, 'd').bytes(m.data).finish(); }
void put(const CopyDone&, std::string& out) { put_empty(out, 'c'); }
void put(const Unknown& m, std::string& out) { FrameWriter(out, m.type).bytes(m.body).finish(); }

// ---------------------------------------------------------------- frontend

void put(const Query& m, std::string& out) { FrameWriter(out, 'Q').cstring(m.sql).finish(); }
void put(const Parse& m, std::string& out) {
    FrameWriter w(out, 'P');
    w.cstring(m.name).cstring(m.sql);
    put_oid_array(w, m.param_types);
    w.finish();
}
void put(const Bind& m, std::string& out) {
    FrameWriter w(out, 'B');
    w.cstring(m.portal).cstring(m.statement);
    put_int16_array(w, m.param_formats);
    put_value_array(w, m.params);
    put_int16_array(w, m.result_formats);
    w.finish();
}
void put(const Describe& m, std::string& out) {
    FrameWriter(out, 'D').int8(static_cast<std::int8_t>(m.kind)).cstring(m.name).finish();
}
void put(const Execute& m, std::string& out) { FrameWriter(out, 'E').cstring(m.portal).int32(m.max_rows).finish(); }
void put(const Close& m, std::string& out) {
    FrameWriter(out, 'C').int8(static_cast<std::int8_t>(m.kind)).cstring(m.name).finish();
}
void put(const Sync&, std::string& out) { put_empty(out, 'S'); }
void put(const Flush&, std::string& out) { put_empty(out, 'H'); }
void put(const Terminate&, std::string& out) { put_empty(out, 'X'); }
void put(const CopyFail& m, std::string& out) { FrameWriter(out, 'f').cstring(m.message).finish(); }
void put(const FunctionCall& m, std::string& out) {
    FrameWriter w(out, 'F');
    w.int32(static_cast<std::int32_t>(m.function_oid));
    put_int16_array(w, m.arg_formats);
    put_value_array(w, m.args);
    w.int16(m.result_format);
    w.finish();
}
void put(const PasswordMessage& m, std::string& out) { FrameWriter(out, 'p').bytes(m.data).finish(); }

// ---------------------------------------------------------------- backend

void put(const AuthenticationOk&, std::string& out) { FrameWriter(out, 'R').int32(0).finish(); }
void put(const AuthenticationCleartextPassword&, std::string& out) { FrameWriter(out, 'R').int32(3).finish(); }
void put(const AuthenticationMD5Password& m, std::string& out) {
    FrameWriter(out, 'R').int32(5).bytes(std::string_view(m.salt.data(), m.salt.size())).finish();
}
void put(const AuthenticationSASL& m, std::string& out) {
    FrameWriter w(out, 'R');
    w.int32(10);
    for (const std::string_view mechanism : m.mechanisms) {
        w.cstring(mechanism);
    }
    w.int8(0);
    w.finish();
}
void put(const AuthenticationSASLContinue& m, std::string& out) {
    FrameWriter(out, 'R').int32(11).bytes(m.data).finish();
}
void put(const AuthenticationSASLFinal& m, std::string& out) { FrameWriter(out, 'R').int32(12).bytes(m.data).finish(); }
void put(const AuthenticationOther& m, std::string& out) { FrameWriter(out, 'R').int32(m.code).bytes(m.data).finish(); }
void put(const ParameterStatus& m, std::string& out) {
    FrameWriter(out, 'S').cstring(m.name).cstring(m.value).finish();
}
void put(const BackendKeyData& m, std::string& out) {
    FrameWriter(out, 'K').int32(m.process_id).int32(m.secret_key).finish();
}
void put(const ReadyForQuery& m, std::string& out) {
    FrameWriter(out, 'Z').int8(static_cast<std::int8_t>(m.status)).finish();
}
void put(const RowDescription& m, std::string& out) {
    FrameWriter w(out, 'T');
    w.int16(count16(m.fields.size()));
    for (const FieldDescription& f : m.fields) {
        w.cstring(f.name)
            .int32(static_cast<std::int32_t>(f.table_oid))
            .int16(f.column_attr)
            .int32(static_cast<std::int32_t>(f.type_oid))
            .int16(f.type_size)
            .int32(f.type_modifier)
            .int16(f.format);
    }
    w.finish();
}
void put(const DataRow& m, std::string& out) {
    FrameWriter w(out, 'D');
    put_value_array(w, m.values);
    w.finish();
}
void put(const CommandComplete& m, std::string& out) { FrameWriter(out, 'C').cstring(m.tag).finish(); }
void put(const EmptyQueryResponse&, std::string& out) { put_empty(out, 'I'); }
void put(const ErrorResponse& m, std::string& out) {
    FrameWriter w(out, 'E');
    put_notice_fields(w, m.fields);
    w.finish();
}
void put(const NoticeResponse& m, std::string& out) {
    FrameWriter w(out, 'N');
    put_notice_fields(w, m.fields);
    w.finish();
}
void put(const ParameterDescription& m, std::string& out) {
    FrameWriter w(out, 't');
    put_oid_array(w, m.types);
    w.finish();
}
void put(const NoData&, std::string& out) { put_empty(out, 'n'); }
void put(const PortalSuspended&, std::string& out) { put_empty(out, 's'); }
void put(const ParseComplete&, std::string& out) { put_empty(out, '1'); }
void put(const BindComplete&, std::string& out) { put_empty(out, '2'); }
void put(const CloseComplete&, std::string& out) { put_empty(out, '3'); }

template <typename CopyResponse>
void put_copy_response(const CopyResponse& m, char type, std::string& out) {
    FrameWriter w(out, type);
    w.int8(m.format);
    put_int16_array(w, m.column_formats);
    w.finish();
}
void put(const CopyInResponse& m, std::string& out) { put_copy_response(m, 'G', out); }
void put(const CopyOutResponse& m, std::string& out) { put_copy_response(m, 'H', out); }
void put(const CopyBothResponse& m, std::string& out) { put_copy_response(m, 'W', out); }
void put(const NotificationResponse& m, std::string& out) {
    FrameWriter(out, 'A').int32(m.process_id).cstring(m.channel).cstring(m.payload).finish();
}
void put(const FunctionCallResponse& m, std::string& out) { FrameWriter(out, 'V').value(m.result).finish(); }
void put(const NegotiateProtocolVersion& m, std::string& out) {
    FrameWriter w(out, 'v');
    w.int32(m.newest_minor).int32(static_cast<std::int32_t>(m.unrecognized_options.size()));
    for (const std::string_view option : m.unrecognized_options) {
        w.cstring(option);
    }
    w.finish();
}

template <typename Variant>
void put_variant(const Variant& msg, std::string& out) {
    std::visit([&out](const auto& m) { put(m, out); }, msg);
}

}  // namespace

void encode(const StartupPacket& msg, std::string& out) { put_variant(msg, out); }
void encode(const FrontendMessage& msg, std::string& out) { put_variant(msg, out); }
void encode(const BackendMessage& msg, std::string& out) { put_variant(msg, out); }

void encode(const SASLInitialResponse& msg, std::string& out) {
    FrameWriter(out, 'p').cstring(msg.mechanism).value(msg.data).finish();
}

void encode_error(std::string& out, std::string_view severity, std::string_view sqlstate, std::string_view message,
                  bool notice) {
    FrameWriter(out, notice ? 'N' : 'E')
        .int8('S')
        .cstring(severity)
        .int8('V')
        .cstring(severity)
        .int8('C')
        .cstring(sqlstate)
        .int8('M')
        .cstring(message)
        .int8(0)
        .finish();
}

}  // namespace pgshelf::pgwire
