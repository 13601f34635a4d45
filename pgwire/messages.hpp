// PostgreSQL v3 wire-protocol messages, one struct per message.
//
// Wire format: every message after the startup packet is
//   Byte1 type | Int32 length (includes itself, not the type) | body
// The startup packet has no type byte: Int32 length | Int32 code | body.
// Reference: https://www.postgresql.org/docs/15/protocol-message-formats.html
//
// Decoded messages are views: string_view members point into the buffer the
// message was decoded from and stay valid only while that buffer does. The
// proxy forwards original bytes and only decodes what it must inspect, so
// views avoid copying on the hot path.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace pgshelf::pgwire {

// Protocol codes carried in the first Int32 of the startup packet.
inline constexpr std::int32_t protocol_v3 = 196608;  // 3.0
inline constexpr std::int32_t ssl_request_code = 80877103;
inline constexpr std::int32_t gssenc_request_code = 80877104;
inline constexpr std::int32_t cancel_request_code = 80877102;

// A NULL value on the wire is length -1; std::nullopt represents it.
using Value = std::optional<std::string_view>;

// ---------------------------------------------------------------- startup
struct StartupMessage {
    std::int32_t protocol_version = protocol_v3;
    std::vector<std::pair<std::string_view, std::string_view>> parameters;
    friend bool operator==(const StartupMessage&, const StartupMessage&) = default;
};
struct SSLRequest {
    friend bool operator==(const SSLRequest&, const SSLRequest&) = default;
};
struct GSSENCRequest {
    friend bool operator==(const GSSENCRequest&, const GSSENCRequest&) = default;
};
struct CancelRequest {
    std::int32_t process_id = 0;
    std::int32_t secret_key = 0;
    friend bool operator==(const CancelRequest&, const CancelRequest&) = default;
};
using StartupPacket = std::variant<StartupMessage, SSLRequest, GSSENCRequest, CancelRequest>;

// ---------------------------------------------------------------- shared by both directions
struct CopyData {  // 'd'
    std::string_view data;
    friend bool operator==(const CopyData&, const CopyData&) = default;
};
struct CopyDone {  // 'c'
    friend bool operator==(const CopyDone&, const CopyDone&) = default;
};
// A message type this codec does not know; passed through untouched.
struct Unknown {
    char type = 0;
    std::string_view body;
    friend bool operator==(const Unknown&, const Unknown&) = default;
};

// ---------------------------------------------------------------- frontend (client → server)
struct Query {  // 'Q'
    std::string_view sql;
    friend bool operator==(const Query&, const Query&) = default;
};
struct Parse {  // 'P'
    std::string_view name;  // empty = unnamed statement
    std::string_view sql;
    std::vector<std::uint32_t> param_types;
    friend bool operator==(const Parse&, const Parse&) = default;
};
struct Bind {  // 'B'
    std::string_view portal;     // empty = unnamed portal
    std::string_view statement;  // empty = unnamed statement
    std::vector<std::int16_t> param_formats;  // 0, 1 (applies to all) or n codes
    std::vector<Value> params;
    std::vector<std::int16_t> result_formats;  // 0, 1 (applies to all) or n codes
    friend bool operator==(const Bind&, const Bind&) = default;
};
struct Describe {  // 'D'
    char kind = 'S';  // 'S' statement, 'P' portal
    std::string_view name;
    friend bool operator==(const Describe&, const Describe&) = default;
};
struct Execute {  // 'E'
    std::string_view portal;
    std::int32_t max_rows = 0;  // 0 = no limit
    friend bool operator==(const Execute&, const Execute&) = default;
};
struct Close {  // 'C'
    char kind = 'S';  // 'S' statement, 'P' portal
    std::string_view name;
    friend bool operator==(const Close&, const Close&) = default;
};
struct Sync {  // 'S'
    friend bool operator==(const Sync&, const Sync&) = default;
};
struct Flush {  // 'H'
    friend bool operator==(const Flush&, const Flush&) = default;
};
struct Terminate {  // 'X'
    friend bool operator==(const Terminate&, const Terminate&) = default;
};
struct CopyFail {  // 'f'
    std::string_view message;
    friend bool operator==(const CopyFail&, const CopyFail&) = default;
};
struct FunctionCall {  // 'F'
    std::uint32_t function_oid = 0;
    std::vector<std::int16_t> arg_formats;
    std::vector<Value> args;
    std::int16_t result_format = 0;
    friend bool operator==(const FunctionCall&, const FunctionCall&) = default;
};
// 'p' carries PasswordMessage, SASLInitialResponse, SASLResponse and
// GSSResponse; which one depends on the authentication request that
// preceded it, so it decodes to raw bytes and the caller interprets it with
// decode_sasl_initial_response() when it knows the context.
struct PasswordMessage {  // 'p'
    std::string_view data;
    friend bool operator==(const PasswordMessage&, const PasswordMessage&) = default;
};
struct SASLInitialResponse {  // 'p' after AuthenticationSASL
    std::string_view mechanism;
    Value data;  // nullopt = no initial response (-1 length)
    friend bool operator==(const SASLInitialResponse&, const SASLInitialResponse&) = default;
};

using FrontendMessage = std::variant<Query, Parse, Bind, Describe, Execute, Close, Sync, Flush, Terminate,
                                     CopyData, CopyDone, CopyFail, FunctionCall, PasswordMessage, Unknown>;

// ---------------------------------------------------------------- backend (server → client)
// 'R' Authentication* family, distinguished by the first Int32.
struct AuthenticationOk {  // 0
    friend bool operator==(const AuthenticationOk&, const AuthenticationOk&) = default;
};
struct AuthenticationCleartextPassword {  // 3
    friend bool operator==(const AuthenticationCleartextPassword&, const AuthenticationCleartextPassword&) = default;
};
struct AuthenticationMD5Password {  // 5
    std::array<char, 4> salt{};
    friend bool operator==(const AuthenticationMD5Password&, const AuthenticationMD5Password&) = default;
};
struct AuthenticationSASL {  // 10
    std::vector<std::string_view> mechanisms;
    friend bool operator==(const AuthenticationSASL&, const AuthenticationSASL&) = default;
};
struct AuthenticationSASLContinue {  // 11
    std::string_view data;
    friend bool operator==(const AuthenticationSASLContinue&, const AuthenticationSASLContinue&) = default;
};
struct AuthenticationSASLFinal {  // 12
    std::string_view data;
    friend bool operator==(const AuthenticationSASLFinal&, const AuthenticationSASLFinal&) = default;
};
// Kerberos (2), SCM (6), GSS (7), GSSContinue (8), SSPI (9) and unknown codes.
struct AuthenticationOther {
    std::int32_t code = 0;
    std::string_view data;
    friend bool operator==(const AuthenticationOther&, const AuthenticationOther&) = default;
};
struct ParameterStatus {  // 'S'
    std::string_view name;
    std::string_view value;
    friend bool operator==(const ParameterStatus&, const ParameterStatus&) = default;
};
struct BackendKeyData {  // 'K'
    std::int32_t process_id = 0;
    std::int32_t secret_key = 0;
    friend bool operator==(const BackendKeyData&, const BackendKeyData&) = default;
};
struct ReadyForQuery {  // 'Z'
    char status = 'I';  // 'I' idle, 'T' in transaction, 'E' failed transaction
    friend bool operator==(const ReadyForQuery&, const ReadyForQuery&) = default;
};
struct FieldDescription {
    std::string_view name;
    std::uint32_t table_oid = 0;
    std::int16_t column_attr = 0;
    std::uint32_t type_oid = 0;
    std::int16_t type_size = 0;
    std::int32_t type_modifier = 0;
    std::int16_t format = 0;
    friend bool operator==(const FieldDescription&, const FieldDescription&) = default;
};
struct RowDescription {  // 'T'
    std::vector<FieldDescription> fields;
    friend bool operator==(const RowDescription&, const RowDescription&) = default;
};
struct DataRow {  // 'D'
    std::vector<Value> values;
    friend bool operator==(const DataRow&, const DataRow&) = default;
};
struct CommandComplete {  // 'C'
    std::string_view tag;
    friend bool operator==(const CommandComplete&, const CommandComplete&) = default;
};
struct EmptyQueryResponse {  // 'I'
    friend bool operator==(const EmptyQueryResponse&, const EmptyQueryResponse&) = default;
};
// One field of ErrorResponse / NoticeResponse: code byte ('S', 'V', 'C', 'M', ...) and value.
struct NoticeField {
    char code = 0;
    std::string_view value;
    friend bool operator==(const NoticeField&, const NoticeField&) = default;
};
struct ErrorResponse {  // 'E'
    std::vector<NoticeField> fields;
    friend bool operator==(const ErrorResponse&, const ErrorResponse&) = default;
};
struct NoticeResponse {  // 'N'
    std::vector<NoticeField> fields;
    friend bool operator==(const NoticeResponse&, const NoticeResponse&) = default;
};
struct ParameterDescription {  // 't'
    std::vector<std::uint32_t> types;
    friend bool operator==(const ParameterDescription&, const ParameterDescription&) = default;
};
struct NoData {  // 'n'
    friend bool operator==(const NoData&, const NoData&) = default;
};
struct PortalSuspended {  // 's'
    friend bool operator==(const PortalSuspended&, const PortalSuspended&) = default;
};
struct ParseComplete {  // '1'
    friend bool operator==(const ParseComplete&, const ParseComplete&) = default;
};
struct BindComplete {  // '2'
    friend bool operator==(const BindComplete&, const BindComplete&) = default;
};
struct CloseComplete {  // '3'
    friend bool operator==(const CloseComplete&, const CloseComplete&) = default;
};
struct CopyInResponse {  // 'G'
    std::int8_t format = 0;
    std::vector<std::int16_t> column_formats;
    friend bool operator==(const CopyInResponse&, const CopyInResponse&) = default;
};
struct CopyOutResponse {  // 'H'
    std::int8_t format = 0;
    std::vector<std::int16_t> column_formats;
    friend bool operator==(const CopyOutResponse&, const CopyOutResponse&) = default;
};
struct CopyBothResponse {  // 'W'
    std::int8_t format = 0;
    std::vector<std::int16_t> column_formats;
    friend bool operator==(const CopyBothResponse&, const CopyBothResponse&) = default;
};
struct NotificationResponse {  // 'A'
    std::int32_t process_id = 0;
    std::string_view channel;
    std::string_view payload;
    friend bool operator==(const NotificationResponse&, const NotificationResponse&) = default;
};
struct FunctionCallResponse {  // 'V'
    Value result;
    friend bool operator==(const FunctionCallResponse&, const FunctionCallResponse&) = default;
};
struct NegotiateProtocolVersion {  // 'v'
    std::int32_t newest_minor = 0;
    std::vector<std::string_view> unrecognized_options;
    friend bool operator==(const NegotiateProtocolVersion&, const NegotiateProtocolVersion&) = default;
};

using BackendMessage =
    std::variant<AuthenticationOk, AuthenticationCleartextPassword, AuthenticationMD5Password, AuthenticationSASL,
                 AuthenticationSASLContinue, AuthenticationSASLFinal, AuthenticationOther, ParameterStatus,
                 BackendKeyData, ReadyForQuery, RowDescription, DataRow, CommandComplete, EmptyQueryResponse,
                 ErrorResponse, NoticeResponse, ParameterDescription, NoData, PortalSuspended, ParseComplete,
                 BindComplete, CloseComplete, CopyInResponse, CopyOutResponse, CopyBothResponse, CopyData, CopyDone,
                 NotificationResponse, FunctionCallResponse, NegotiateProtocolVersion, Unknown>;

}  // namespace pgshelf::pgwire
