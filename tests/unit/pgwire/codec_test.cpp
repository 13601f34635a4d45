// Round trips and byte fixtures for every pgwire message, in both directions
// and for every startup packet. Each fixture is hand-built bytes plus the
// message they must decode to; every fixture is also fed split at every byte
// boundary and back to back with another message.
#include "pgwire/codec.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <ostream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "wire_fixtures.hpp"

namespace pgshelf::pgwire {
namespace {

using namespace std::string_view_literals;
using test::be16;
using test::be32;
using test::cstr;
using test::frame;
using test::startup;

template <typename Message>
struct Fixture {
    std::string name;
    std::string bytes;
    Message msg;
};

template <typename Message>
void PrintTo(const Fixture<Message>& f, std::ostream* os) {
    *os << f.name;
}

using FrontendFixture = Fixture<FrontendMessage>;
using BackendFixture = Fixture<BackendMessage>;
using StartupFixture = Fixture<StartupPacket>;

std::vector<FrontendFixture> frontend_fixtures() {
    return {
        {"query", frame('Q', cstr("SELECT 1")), Query{"SELECT 1"}},
        {"query_empty", frame('Q', cstr("")), Query{""}},
        {"query_multi_statement", frame('Q', cstr("BEGIN; SELECT 1; COMMIT")), Query{"BEGIN; SELECT 1; COMMIT"}},
        {"parse_named", frame('P', cstr("s1") + cstr("SELECT $1::int") + be16(1) + be32(23)),
         Parse{"s1", "SELECT $1::int", {23}}},
        {"parse_unnamed_untyped", frame('P', cstr("") + cstr("SELECT $1, $2") + be16(2) + be32(0) + be32(0)),
         Parse{"", "SELECT $1, $2", {0, 0}}},
        {"parse_no_params", frame('P', cstr("") + cstr("SELECT 1") + be16(0)), Parse{"", "SELECT 1", {}}},
        {"parse_high_oid", frame('P', cstr("x") + cstr("q") + be16(1) + be32(0xfffffffe)),
         Parse{"x", "q", {0xfffffffeu}}},
        {"bind_full",
         frame('B', cstr("p1") + cstr("s1") + be16(1) + be16(1) + be16(3) + be32(2) + "42" + be32(-1) + be32(0) +
                        be16(1) + be16(0)),
         Bind{"p1", "s1", {1}, {Value{"42"}, std::nullopt, Value{""}}, {0}}},
        {"bind_unnamed_empty", frame('B', cstr("") + cstr("") + be16(0) + be16(0) + be16(0)), Bind{"", "", {}, {}, {}}},
        {"bind_binary_param",
         frame('B', cstr("") + cstr("st") + be16(2) + be16(0) + be16(1) + be16(2) + be32(1) + "7" + be32(4) +
                        std::string("\0\0\0\x2a", 4) + be16(2) + be16(1) + be16(0)),
         Bind{"", "st", {0, 1}, {Value{"7"}, Value{"\0\0\0\x2a"sv}}, {1, 0}}},
        {"describe_statement", frame('D', "S" + cstr("s1")), Describe{'S', "s1"}},
        {"describe_portal_unnamed", frame('D', "P" + cstr("")), Describe{'P', ""}},
        {"execute_all", frame('E', cstr("") + be32(0)), Execute{"", 0}},
        {"execute_limited", frame('E', cstr("p1") + be32(100)), Execute{"p1", 100}},
        {"close_statement", frame('C', "S" + cstr("s1")), Close{'S', "s1"}},
        {"close_portal", frame('C', "P" + cstr("p1")), Close{'P', "p1"}},
        {"sync", frame('S', ""), Sync{}},
        {"flush", frame('H', ""), Flush{}},
        {"terminate", frame('X', ""), Terminate{}},
        {"copy_data", frame('d', "1\tfoo\n"), CopyData{"1\tfoo\n"}},
        {"copy_data_binary", frame('d', std::string("\0\xff\0", 3)), CopyData{"\0\xff\0"sv}},
        {"copy_data_empty", frame('d', ""), CopyData{""}},
        {"copy_done", frame('c', ""), CopyDone{}},
        {"copy_fail", frame('f', cstr("client gave up")), CopyFail{"client gave up"}},
        {"function_call", frame('F', be32(1598) + be16(1) + be16(0) + be16(2) + be32(3) + "abc" + be32(-1) + be16(1)),
         FunctionCall{1598, {0}, {Value{"abc"}, std::nullopt}, 1}},
        {"function_call_no_args", frame('F', be32(2) + be16(0) + be16(0) + be16(0)), FunctionCall{2, {}, {}, 0}},
        {"password_cleartext", frame('p', cstr("secret")), PasswordMessage{"secret\0"sv}},
        {"password_md5", frame('p', cstr("md5a3556571e93b0d20722ba62be61e8c2d")),
         PasswordMessage{"md5a3556571e93b0d20722ba62be61e8c2d\0"sv}},
        {"password_sasl_initial", frame('p', cstr("SCRAM-SHA-256") + be32(8) + "n,,n=,r="),
         PasswordMessage{"SCRAM-SHA-256\0\0\0\0\x08n,,n=,r="sv}},
        {"unknown_type", frame('z', "opaque\0bytes"sv), Unknown{'z', "opaque\0bytes"sv}},
        {"unknown_nul_type", frame('\0', ""), Unknown{'\0', ""}},
    };
}

std::vector<BackendFixture> backend_fixtures() {
    return {
        {"auth_ok", frame('R', be32(0)), AuthenticationOk{}},
        {"auth_cleartext", frame('R', be32(3)), AuthenticationCleartextPassword{}},
        {"auth_md5", frame('R', be32(5) + "\x01\x02\xfe\xff"),
         AuthenticationMD5Password{{'\x01', '\x02', '\xfe', '\xff'}}},
        {"auth_sasl", frame('R', be32(10) + cstr("SCRAM-SHA-256") + cstr("SCRAM-SHA-256-PLUS") + cstr("")),
         AuthenticationSASL{{"SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"}}},
        {"auth_sasl_no_mechanisms", frame('R', be32(10) + cstr("")), AuthenticationSASL{}},
        {"auth_sasl_continue", frame('R', be32(11) + "r=abc,s=c2FsdA==,i=4096"),
         AuthenticationSASLContinue{"r=abc,s=c2FsdA==,i=4096"}},
        {"auth_sasl_final", frame('R', be32(12) + "v=c2lnbmF0dXJl"), AuthenticationSASLFinal{"v=c2lnbmF0dXJl"}},
        {"auth_gss", frame('R', be32(7)), AuthenticationOther{7, ""}},
        {"auth_gss_continue", frame('R', be32(8) + "token"), AuthenticationOther{8, "token"}},
        {"auth_unknown_code", frame('R', be32(-5) + "x"), AuthenticationOther{-5, "x"}},
        {"parameter_status", frame('S', cstr("server_version") + cstr("15.4")),
         ParameterStatus{"server_version", "15.4"}},
        {"parameter_status_empty_value", frame('S', cstr("application_name") + cstr("")),
         ParameterStatus{"application_name", ""}},
        {"backend_key_data", frame('K', be32(4242) + be32(-123456789)), BackendKeyData{4242, -123456789}},
        {"ready_idle", frame('Z', "I"), ReadyForQuery{'I'}},
        {"ready_in_transaction", frame('Z', "T"), ReadyForQuery{'T'}},
        {"ready_failed", frame('Z', "E"), ReadyForQuery{'E'}},
        {"row_description",
         frame('T', be16(2) + cstr("id") + be32(16384) + be16(1) + be32(23) + be16(4) + be32(-1) + be16(0) +
                        cstr("name") + be32(16384) + be16(2) + be32(25) + be16(-1) + be32(-1) + be16(1)),
         RowDescription{
             {FieldDescription{"id", 16384, 1, 23, 4, -1, 0}, FieldDescription{"name", 16384, 2, 25, -1, -1, 1}}}},
        {"row_description_empty", frame('T', be16(0)), RowDescription{}},
        {"row_description_anonymous_column",
         frame('T', be16(1) + cstr("") + be32(0) + be16(0) + be32(0xffffffff) + be16(0) + be32(0) + be16(0)),
         RowDescription{{FieldDescription{"", 0, 0, 0xffffffffu, 0, 0, 0}}}},
        {"data_row", frame('D', be16(3) + be32(1) + "1" + be32(-1) + be32(0)),
         DataRow{{Value{"1"}, std::nullopt, Value{""}}}},
        {"data_row_empty", frame('D', be16(0)), DataRow{}},
        {"data_row_binary", frame('D', be16(1) + be32(4) + std::string("\0\0\0\x01", 4)),
         DataRow{{Value{"\0\0\0\x01"sv}}}},
        {"command_complete", frame('C', cstr("SELECT 1")), CommandComplete{"SELECT 1"}},
        {"command_complete_insert", frame('C', cstr("INSERT 0 5")), CommandComplete{"INSERT 0 5"}},
        {"empty_query", frame('I', ""), EmptyQueryResponse{}},
        {"error_response",
         frame('E', "S" + cstr("ERROR") + "V" + cstr("ERROR") + "C" + cstr("42P01") + "M" +
                        cstr("relation \"nope\" does not exist") + "P" + cstr("15") + std::string(1, '\0')),
         ErrorResponse{
             {{'S', "ERROR"}, {'V', "ERROR"}, {'C', "42P01"}, {'M', "relation \"nope\" does not exist"}, {'P', "15"}}}},
        {"error_response_no_fields", frame('E', std::string(1, '\0')), ErrorResponse{}},
        {"notice_response", frame('N', "S" + cstr("NOTICE") + "M" + cstr("hello") + std::string(1, '\0')),
         NoticeResponse{{{'S', "NOTICE"}, {'M', "hello"}}}},
        {"parameter_description", frame('t', be16(2) + be32(23) + be32(25)), ParameterDescription{{23, 25}}},
        {"parameter_description_empty", frame('t', be16(0)), ParameterDescription{}},
        {"no_data", frame('n', ""), NoData{}},
        {"portal_suspended", frame('s', ""), PortalSuspended{}},
        {"parse_complete", frame('1', ""), ParseComplete{}},
        {"bind_complete", frame('2', ""), BindComplete{}},
        {"close_complete", frame('3', ""), CloseComplete{}},
        {"copy_in_response", frame('G', std::string(1, '\0') + be16(2) + be16(0) + be16(0)), CopyInResponse{0, {0, 0}}},
        {"copy_out_response", frame('H', "\x01" + be16(1) + be16(1)), CopyOutResponse{1, {1}}},
        {"copy_both_response", frame('W', std::string(1, '\0') + be16(0)), CopyBothResponse{0, {}}},
        {"copy_data", frame('d', "2\tbar\n"), CopyData{"2\tbar\n"}},
        {"copy_done", frame('c', ""), CopyDone{}},
        {"notification", frame('A', be32(77) + cstr("jobs") + cstr("{\"id\":1}")),
         NotificationResponse{77, "jobs", "{\"id\":1}"}},
        {"notification_empty_payload", frame('A', be32(1) + cstr("ch") + cstr("")), NotificationResponse{1, "ch", ""}},
        {"function_call_response", frame('V', be32(2) + "ok"), FunctionCallResponse{Value{"ok"}}},
        {"function_call_response_null", frame('V', be32(-1)), FunctionCallResponse{std::nullopt}},
        {"negotiate_protocol_version", frame('v', be32(0) + be32(2) + cstr("_pq_.a") + cstr("_pq_.b")),
         NegotiateProtocolVersion{0, {"_pq_.a", "_pq_.b"}}},
        {"negotiate_protocol_version_no_options", frame('v', be32(2) + be32(0)), NegotiateProtocolVersion{2, {}}},
        {"unknown_type", frame('Y', "whatever"), Unknown{'Y', "whatever"}},
    };
}

std::vector<StartupFixture> startup_fixtures() {
    return {
        {"startup_v3",
         startup(be32(protocol_v3) + cstr("user") + cstr("alice") + cstr("database") + cstr("shop") +
                 cstr("application_name") + cstr("psql") + cstr("")),
         StartupMessage{protocol_v3, {{"user", "alice"}, {"database", "shop"}, {"application_name", "psql"}}}},
        {"startup_no_parameters", startup(be32(protocol_v3) + cstr("")), StartupMessage{protocol_v3, {}}},
        {"startup_empty_value", startup(be32(protocol_v3) + cstr("user") + cstr("") + cstr("")),
         StartupMessage{protocol_v3, {{"user", ""}}}},
        // Newer minors are the server's to negotiate, not the codec's to refuse.
        {"startup_v3_2", startup(be32(196610) + cstr("user") + cstr("bob") + cstr("_pq_.x") + cstr("1") + cstr("")),
         StartupMessage{196610, {{"user", "bob"}, {"_pq_.x", "1"}}}},
        {"ssl_request", startup(be32(ssl_request_code)), SSLRequest{}},
        {"gssenc_request", startup(be32(gssenc_request_code)), GSSENCRequest{}},
        {"cancel_request", startup(be32(cancel_request_code) + be32(1234) + be32(-99)), CancelRequest{1234, -99}},
    };
}

// ---------------------------------------------------------------- shared checks

DecodeResult decode_any(std::string_view in, FrontendMessage& out) { return decode_frontend(in, out); }
DecodeResult decode_any(std::string_view in, BackendMessage& out) { return decode_backend(in, out); }
DecodeResult decode_any(std::string_view in, StartupPacket& out) { return decode_startup(in, out); }

template <typename Message>
std::string encoded(const Message& msg) {
    std::string out;
    encode(msg, out);
    return out;
}

template <typename Message>
void expect_decodes_to_fixture(const Fixture<Message>& f) {
    Message out;
    const DecodeResult r = decode_any(f.bytes, out);
    ASSERT_EQ(r.status, DecodeStatus::ok) << r.ec.message();
    EXPECT_EQ(r.consumed, f.bytes.size());
    EXPECT_FALSE(r.ec);
    EXPECT_EQ(out.index(), f.msg.index());
    EXPECT_TRUE(out == f.msg);
}

template <typename Message>
void expect_encodes_to_fixture(const Fixture<Message>& f) {
    EXPECT_EQ(encoded(f.msg), f.bytes);
}

template <typename Message>
void expect_reencode_is_identity(const Fixture<Message>& f) {
    Message out;
    ASSERT_EQ(decode_any(f.bytes, out).status, DecodeStatus::ok);
    EXPECT_EQ(encoded(out), f.bytes);
    Message again;
    const std::string bytes = encoded(out);
    ASSERT_EQ(decode_any(bytes, again).status, DecodeStatus::ok);
    EXPECT_TRUE(again == out);
}

template <typename Message>
void expect_every_prefix_needs_more(const Fixture<Message>& f) {
    for (std::size_t k = 0; k < f.bytes.size(); ++k) {
        // A fresh copy, so a read past the prefix is caught by ASan.
        const std::string prefix = f.bytes.substr(0, k);
        Message out;
        const DecodeResult r = decode_any(prefix, out);
        EXPECT_EQ(r.status, DecodeStatus::need_more) << "prefix of " << k << " bytes";
        EXPECT_EQ(r.consumed, 0u) << "prefix of " << k << " bytes";
        EXPECT_FALSE(r.ec);
    }
}

template <typename Message>
void expect_fed_in_chunks_decodes(const Fixture<Message>& f) {
    // Simulates a socket delivering the frame in two reads, split at every boundary.
    for (std::size_t split = 0; split <= f.bytes.size(); ++split) {
        std::string buffer = f.bytes.substr(0, split);
        Message out;
        DecodeResult r = decode_any(buffer, out);
        if (split < f.bytes.size()) {
            ASSERT_EQ(r.status, DecodeStatus::need_more);
            buffer += f.bytes.substr(split);
            r = decode_any(buffer, out);
        }
        ASSERT_EQ(r.status, DecodeStatus::ok) << "split at " << split;
        EXPECT_EQ(r.consumed, f.bytes.size());
        EXPECT_TRUE(out == f.msg);
    }
}

template <typename Message>
void expect_two_in_one_buffer(const Fixture<Message>& first, const Fixture<Message>& second) {
    const std::string buffer = first.bytes + second.bytes;
    Message out;
    DecodeResult r = decode_any(buffer, out);
    ASSERT_EQ(r.status, DecodeStatus::ok);
    ASSERT_EQ(r.consumed, first.bytes.size());
    EXPECT_TRUE(out == first.msg);
    r = decode_any(std::string_view(buffer).substr(r.consumed), out);
    ASSERT_EQ(r.status, DecodeStatus::ok);
    EXPECT_EQ(r.consumed, second.bytes.size());
    EXPECT_TRUE(out == second.msg);
}

template <typename Message>
void expect_stops_before_partial_next(const Fixture<Message>& first, const Fixture<Message>& second) {
    for (std::size_t k = 0; k < second.bytes.size(); ++k) {
        const std::string buffer = first.bytes + second.bytes.substr(0, k);
        Message out;
        DecodeResult r = decode_any(buffer, out);
        ASSERT_EQ(r.status, DecodeStatus::ok);
        ASSERT_EQ(r.consumed, first.bytes.size());
        r = decode_any(std::string_view(buffer).substr(r.consumed), out);
        EXPECT_EQ(r.status, DecodeStatus::need_more);
        EXPECT_EQ(r.consumed, 0u);
    }
}

template <typename Message>
std::string fixture_name(const testing::TestParamInfo<Fixture<Message>>& info) {
    return info.param.name;
}

template <typename Message>
void expect_covers_every_alternative(const std::vector<Fixture<Message>>& fixtures) {
    std::set<std::size_t> seen;
    for (const auto& f : fixtures) {
        seen.insert(f.msg.index());
    }
    for (std::size_t i = 0; i < std::variant_size_v<Message>; ++i) {
        EXPECT_TRUE(seen.count(i)) << "no fixture for variant alternative " << i;
    }
}

// ---------------------------------------------------------------- frontend

class FrontendFixtureTest : public testing::TestWithParam<FrontendFixture> {};

TEST_P(FrontendFixtureTest, DecodesToExpectedMessage) { expect_decodes_to_fixture(GetParam()); }
TEST_P(FrontendFixtureTest, EncodesToFixtureBytes) { expect_encodes_to_fixture(GetParam()); }
TEST_P(FrontendFixtureTest, ReEncodeOfDecodedIsIdentity) { expect_reencode_is_identity(GetParam()); }
TEST_P(FrontendFixtureTest, EveryPrefixNeedsMore) { expect_every_prefix_needs_more(GetParam()); }
TEST_P(FrontendFixtureTest, FedInChunksDecodes) { expect_fed_in_chunks_decodes(GetParam()); }
TEST_P(FrontendFixtureTest, TwoInOneBuffer) {
    expect_two_in_one_buffer(GetParam(), GetParam());
    expect_two_in_one_buffer(GetParam(), frontend_fixtures().front());
}
TEST_P(FrontendFixtureTest, StopsBeforePartialNext) {
    expect_stops_before_partial_next(GetParam(), frontend_fixtures()[3]);
}
TEST_P(FrontendFixtureTest, BodyOnlyDecodeMatches) {
    const auto& f = GetParam();
    FrontendMessage out;
    ASSERT_FALSE(decode_frontend_body(f.bytes[0], std::string_view(f.bytes).substr(5), out));
    EXPECT_TRUE(out == f.msg);
}

INSTANTIATE_TEST_SUITE_P(Messages, FrontendFixtureTest, testing::ValuesIn(frontend_fixtures()),
                         fixture_name<FrontendMessage>);

TEST(FrontendFixtures, CoverEveryMessageType) { expect_covers_every_alternative(frontend_fixtures()); }

// ---------------------------------------------------------------- backend

class BackendFixtureTest : public testing::TestWithParam<BackendFixture> {};

TEST_P(BackendFixtureTest, DecodesToExpectedMessage) { expect_decodes_to_fixture(GetParam()); }
TEST_P(BackendFixtureTest, EncodesToFixtureBytes) { expect_encodes_to_fixture(GetParam()); }
TEST_P(BackendFixtureTest, ReEncodeOfDecodedIsIdentity) { expect_reencode_is_identity(GetParam()); }
TEST_P(BackendFixtureTest, EveryPrefixNeedsMore) { expect_every_prefix_needs_more(GetParam()); }
TEST_P(BackendFixtureTest, FedInChunksDecodes) { expect_fed_in_chunks_decodes(GetParam()); }
TEST_P(BackendFixtureTest, TwoInOneBuffer) {
    expect_two_in_one_buffer(GetParam(), GetParam());
    expect_two_in_one_buffer(GetParam(), backend_fixtures().back());
}
TEST_P(BackendFixtureTest, StopsBeforePartialNext) {
    expect_stops_before_partial_next(GetParam(), backend_fixtures()[16]);
}
TEST_P(BackendFixtureTest, BodyOnlyDecodeMatches) {
    const auto& f = GetParam();
    BackendMessage out;
    ASSERT_FALSE(decode_backend_body(f.bytes[0], std::string_view(f.bytes).substr(5), out));
    EXPECT_TRUE(out == f.msg);
}

INSTANTIATE_TEST_SUITE_P(Messages, BackendFixtureTest, testing::ValuesIn(backend_fixtures()),
                         fixture_name<BackendMessage>);

TEST(BackendFixtures, CoverEveryMessageType) { expect_covers_every_alternative(backend_fixtures()); }

// ---------------------------------------------------------------- startup

class StartupFixtureTest : public testing::TestWithParam<StartupFixture> {};

TEST_P(StartupFixtureTest, DecodesToExpectedMessage) { expect_decodes_to_fixture(GetParam()); }
TEST_P(StartupFixtureTest, EncodesToFixtureBytes) { expect_encodes_to_fixture(GetParam()); }
TEST_P(StartupFixtureTest, ReEncodeOfDecodedIsIdentity) { expect_reencode_is_identity(GetParam()); }
TEST_P(StartupFixtureTest, EveryPrefixNeedsMore) { expect_every_prefix_needs_more(GetParam()); }
TEST_P(StartupFixtureTest, FedInChunksDecodes) { expect_fed_in_chunks_decodes(GetParam()); }

// The first packet is followed by typed frames (or, after SSLRequest, TLS).
TEST_P(StartupFixtureTest, FollowedByTypedFrame) {
    const auto& f = GetParam();
    const std::string query = frame('Q', cstr("SELECT 1"));
    const std::string buffer = f.bytes + query;
    StartupPacket packet;
    const DecodeResult r = decode_startup(buffer, packet);
    ASSERT_EQ(r.status, DecodeStatus::ok);
    ASSERT_EQ(r.consumed, f.bytes.size());
    EXPECT_TRUE(packet == f.msg);
    FrontendMessage msg;
    const DecodeResult q = decode_frontend(std::string_view(buffer).substr(r.consumed), msg);
    ASSERT_EQ(q.status, DecodeStatus::ok);
    EXPECT_EQ(q.consumed, query.size());
    EXPECT_TRUE(msg == FrontendMessage{Query{"SELECT 1"}});
}

INSTANTIATE_TEST_SUITE_P(Packets, StartupFixtureTest, testing::ValuesIn(startup_fixtures()),
                         fixture_name<StartupPacket>);

TEST(StartupFixtures, CoverEveryPacketType) { expect_covers_every_alternative(startup_fixtures()); }

// ---------------------------------------------------------------- literal wire bytes

// These bytes are written out by hand, not through the fixture helpers.
TEST(WireBytes, QuerySelectOne) {
    constexpr auto bytes = "Q\0\0\0\x0dSELECT 1\0"sv;
    FrontendMessage out;
    const DecodeResult r = decode_frontend(bytes, out);
    ASSERT_EQ(r.status, DecodeStatus::ok);
    EXPECT_EQ(r.consumed, 14u);
    ASSERT_TRUE(std::holds_alternative<Query>(out));
    EXPECT_EQ(std::get<Query>(out).sql, "SELECT 1");
    EXPECT_EQ(encoded(FrontendMessage{Query{"SELECT 1"}}), bytes);
}

TEST(WireBytes, ReadyForQueryIdle) {
    constexpr auto bytes = "Z\0\0\0\x05I"sv;
    BackendMessage out;
    const DecodeResult r = decode_backend(bytes, out);
    ASSERT_EQ(r.status, DecodeStatus::ok);
    EXPECT_EQ(r.consumed, 6u);
    ASSERT_TRUE(std::holds_alternative<ReadyForQuery>(out));
    EXPECT_EQ(std::get<ReadyForQuery>(out).status, 'I');
    EXPECT_EQ(encoded(BackendMessage{ReadyForQuery{'I'}}), bytes);
}

TEST(WireBytes, EncodeErrorResponse) {
    // 4 + "SERROR\0" 7 + "VERROR\0" 7 + "C42P01\0" 7 + "Mno such table\0" 15 + "\0" 1 = 41 = 0x29
    constexpr auto bytes = "E\0\0\0\x29SERROR\0VERROR\0C42P01\0Mno such table\0\0"sv;
    std::string out;
    encode_error(out, "ERROR", "42P01", "no such table");
    EXPECT_EQ(out, bytes);
    BackendMessage msg;
    const DecodeResult r = decode_backend(out, msg);
    ASSERT_EQ(r.status, DecodeStatus::ok);
    EXPECT_EQ(r.consumed, bytes.size());
    const BackendMessage expected =
        ErrorResponse{{{'S', "ERROR"}, {'V', "ERROR"}, {'C', "42P01"}, {'M', "no such table"}}};
    EXPECT_TRUE(msg == expected);
}

TEST(WireBytes, EncodeNoticeAppends) {
    std::string out = "prefix";
    encode_error(out, "NOTICE", "00000", "hi", true);
    EXPECT_EQ(out, "prefixN\0\0\0\x20SNOTICE\0VNOTICE\0C00000\0Mhi\0\0"sv);
}

TEST(WireBytes, SslRequest) {
    constexpr auto bytes = "\0\0\0\x08\x04\xd2\x16\x2f"sv;
    StartupPacket out;
    const DecodeResult r = decode_startup(bytes, out);
    ASSERT_EQ(r.status, DecodeStatus::ok);
    EXPECT_EQ(r.consumed, 8u);
    EXPECT_TRUE(std::holds_alternative<SSLRequest>(out));
    EXPECT_EQ(encoded(StartupPacket{SSLRequest{}}), bytes);
}

TEST(WireBytes, CancelRequest) {
    constexpr auto bytes = "\0\0\0\x10\x04\xd2\x16\x2e\0\0\x01\x00\xde\xad\xbe\xef"sv;
    StartupPacket out;
    ASSERT_EQ(decode_startup(bytes, out).status, DecodeStatus::ok);
    ASSERT_TRUE(std::holds_alternative<CancelRequest>(out));
    EXPECT_EQ(std::get<CancelRequest>(out).process_id, 256);
    EXPECT_EQ(static_cast<std::uint32_t>(std::get<CancelRequest>(out).secret_key), 0xdeadbeefu);
}

TEST(WireBytes, AuthenticationMd5) {
    constexpr auto bytes = "R\0\0\0\x0c\0\0\0\x05\xaa\xbb\xcc\xdd"sv;
    BackendMessage out;
    ASSERT_EQ(decode_backend(bytes, out).status, DecodeStatus::ok);
    ASSERT_TRUE(std::holds_alternative<AuthenticationMD5Password>(out));
    const auto& salt = std::get<AuthenticationMD5Password>(out).salt;
    EXPECT_EQ(std::string_view(salt.data(), salt.size()), "\xaa\xbb\xcc\xdd"sv);
}

// ---------------------------------------------------------------- direction-dependent types

TEST(Direction, SameTypeByteDecodesPerDirection) {
    struct Case {
        char type;
        std::string body;
        FrontendMessage expected;
    };
    const std::vector<Case> cases = {
        {'C', "S" + cstr("x"), Close{'S', "x"}},   {'S', "", Sync{}},
        {'D', "P" + cstr(""), Describe{'P', ""}},  {'H', "", Flush{}},
        {'E', cstr("") + be32(0), Execute{"", 0}},
    };
    for (const Case& c : cases) {
        const std::string bytes = frame(c.type, c.body);  // outlives the views decoded from it
        FrontendMessage f;
        ASSERT_EQ(decode_frontend(bytes, f).status, DecodeStatus::ok) << c.type;
        EXPECT_TRUE(f == c.expected) << c.type;
    }
    const auto backend_decodes_to = [](const std::string& bytes, const BackendMessage& expected) {
        BackendMessage b;
        ASSERT_EQ(decode_backend(bytes, b).status, DecodeStatus::ok) << bytes[0];
        EXPECT_TRUE(b == expected) << bytes[0];
    };
    backend_decodes_to(frame('C', cstr("SELECT 3")), CommandComplete{"SELECT 3"});
    backend_decodes_to(frame('S', cstr("a") + cstr("b")), ParameterStatus{"a", "b"});
    backend_decodes_to(frame('D', be16(0)), DataRow{});
    backend_decodes_to(frame('H', std::string(1, '\0') + be16(0)), CopyOutResponse{});
    backend_decodes_to(frame('E', std::string(1, '\0')), ErrorResponse{});
    // Types known only to the other direction pass through as Unknown.
    backend_decodes_to(frame('Q', cstr("x")), Unknown{'Q', "x\0"sv});
    const std::string ready = frame('Z', "I");
    FrontendMessage f;
    ASSERT_EQ(decode_frontend(ready, f).status, DecodeStatus::ok);
    EXPECT_TRUE((f == FrontendMessage{Unknown{'Z', "I"}}));
}

// ---------------------------------------------------------------- SASL initial response

TEST(SaslInitialResponse, DecodesPasswordBody) {
    const std::string bytes = frame('p', cstr("SCRAM-SHA-256") + be32(18) + "n,,n=,r=rOprNGfwEb");
    FrontendMessage msg;
    ASSERT_EQ(decode_frontend(bytes, msg).status, DecodeStatus::ok);
    ASSERT_TRUE(std::holds_alternative<PasswordMessage>(msg));
    SASLInitialResponse sasl;
    ASSERT_FALSE(decode_sasl_initial_response(std::get<PasswordMessage>(msg).data, sasl));
    EXPECT_EQ(sasl.mechanism, "SCRAM-SHA-256");
    ASSERT_TRUE(sasl.data.has_value());
    EXPECT_EQ(*sasl.data, "n,,n=,r=rOprNGfwEb");
    std::string out;
    encode(sasl, out);
    EXPECT_EQ(out, bytes);
}

TEST(SaslInitialResponse, NoInitialData) {
    const std::string body = cstr("SCRAM-SHA-256") + be32(-1);
    SASLInitialResponse sasl;
    ASSERT_FALSE(decode_sasl_initial_response(body, sasl));
    EXPECT_EQ(sasl.mechanism, "SCRAM-SHA-256");
    EXPECT_FALSE(sasl.data.has_value());
    std::string out;
    encode(sasl, out);
    EXPECT_EQ(out, frame('p', body));
}

TEST(SaslInitialResponse, EmptyInitialData) {
    const std::string body = cstr("X") + be32(0);
    SASLInitialResponse sasl;
    ASSERT_FALSE(decode_sasl_initial_response(body, sasl));
    ASSERT_TRUE(sasl.data.has_value());
    EXPECT_TRUE(sasl.data->empty());
}

// ---------------------------------------------------------------- protocol sequences

TEST(Sequences, ExtendedQueryPipeline) {
    const std::string buffer = frame('P', cstr("") + cstr("SELECT $1") + be16(0)) +
                               frame('B', cstr("") + cstr("") + be16(0) + be16(1) + be32(1) + "5" + be16(0)) +
                               frame('D', "P" + cstr("")) + frame('E', cstr("") + be32(0)) +
                               frame('E', cstr("") + be32(10)) + frame('S', "");
    std::vector<std::size_t> kinds;
    std::string_view rest = buffer;
    while (!rest.empty()) {
        FrontendMessage msg;
        const DecodeResult r = decode_frontend(rest, msg);
        ASSERT_EQ(r.status, DecodeStatus::ok);
        kinds.push_back(msg.index());
        rest.remove_prefix(r.consumed);
    }
    const std::vector<std::size_t> expected = {FrontendMessage{Parse{}}.index(),    FrontendMessage{Bind{}}.index(),
                                               FrontendMessage{Describe{}}.index(), FrontendMessage{Execute{}}.index(),
                                               FrontendMessage{Execute{}}.index(),  FrontendMessage{Sync{}}.index()};
    EXPECT_EQ(kinds, expected);
}

// ---------------------------------------------------------------- FrameWriter

TEST(FrameWriter, WritesBigEndianAndPatchesLength) {
    std::string out = "x";
    FrameWriter(out, 'T')
        .int8(-1)
        .int16(0x0102)
        .int32(0x03040506)
        .cstring("ab")
        .bytes("cd")
        .value(Value{"e"})
        .value(std::nullopt)
        .finish();
    EXPECT_EQ(out,
              "xT\0\0\0\x19\xff\x01\x02\x03\x04\x05\x06"
              "ab\0cd\0\0\0\x01"
              "e\xff\xff\xff\xff"sv);
}

TEST(FrameWriter, UntypedHasNoTypeByte) {
    std::string out;
    FrameWriter::untyped(out).int32(protocol_v3).cstring("").finish();
    EXPECT_EQ(out, "\0\0\0\x09\0\x03\0\0\0"sv);
}

TEST(FrameWriter, EncodersAppend) {
    std::string out;
    encode(FrontendMessage{Sync{}}, out);
    encode(FrontendMessage{Flush{}}, out);
    encode(BackendMessage{ReadyForQuery{'T'}}, out);
    EXPECT_EQ(out, "S\0\0\0\x04H\0\0\0\x04Z\0\0\0\x05T"sv);
}

}  // namespace
}  // namespace pgshelf::pgwire
