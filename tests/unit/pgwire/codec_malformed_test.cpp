// Malformed input: each case is hand-built bytes and the CodecErrc it must
// produce. Also limits, error-path invariants (consumed 0, `out` untouched)
// and the no-allocation-before-check rule.
#include <gtest/gtest.h>

#include <cstddef>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "alloc_probe.hpp"
#include "pgwire/codec.hpp"
#include "wire_fixtures.hpp"

namespace pgshelf::pgwire {
namespace {

using namespace std::string_view_literals;
using test::be16;
using test::be32;
using test::cstr;
using test::frame;
using test::frame_with_length;
using test::startup;

enum class Decoder { frontend, backend, startup_packet, sasl_initial };

struct BadCase {
    std::string name;
    Decoder decoder;
    std::string bytes;
    CodecErrc expected;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

const std::string ten_bytes = "0123456789";
const std::string nul(1, '\0');

std::vector<BadCase> bad_cases() {
    using enum Decoder;
    using enum CodecErrc;
    return {
        // ---- framing
        {"fe_length_3", frontend, frame_with_length('Q', 3, ""), length_too_small},
        {"fe_length_0", frontend, frame_with_length('Q', 0, "abc"), length_too_small},
        {"fe_length_negative", frontend, frame_with_length('Q', -1, ""), message_too_large},
        {"fe_length_int32_max_plus_1", frontend, frame_with_length('Q', 0x80000000LL, ""), message_too_large},
        {"fe_length_above_1gb", frontend, frame_with_length('d', (1LL << 30) + 1, "x"), message_too_large},
        {"be_length_3", backend, frame_with_length('Z', 3, "I"), length_too_small},
        {"be_length_negative", backend, frame_with_length('D', -100, ""), message_too_large},
        // ---- frontend bodies
        {"query_missing_nul", frontend, frame('Q', "SELECT 1"), missing_terminator},
        {"query_empty_body", frontend, frame('Q', ""), missing_terminator},
        {"query_trailing", frontend, frame('Q', cstr("SELECT 1") + "x"), trailing_bytes},
        {"parse_name_missing_nul", frontend, frame('P', "stmt"), missing_terminator},
        {"parse_sql_missing_nul", frontend, frame('P', cstr("s") + "SELECT"), missing_terminator},
        {"parse_count_missing", frontend, frame('P', cstr("s") + cstr("q")), truncated},
        {"parse_count_30000_ten_left", frontend, frame('P', cstr("") + cstr("q") + be16(30000) + ten_bytes), bad_count},
        {"parse_count_negative", frontend, frame('P', cstr("") + cstr("q") + be16(-1) + be32(23) + be32(25)),
         bad_count},
        {"parse_count_exceeds_by_one", frontend, frame('P', cstr("") + cstr("q") + be16(2) + be32(23) + "\0\0\0"),
         bad_count},
        {"parse_trailing", frontend, frame('P', cstr("") + cstr("q") + be16(0) + "z"), trailing_bytes},
        {"bind_portal_missing_nul", frontend, frame('B', "p"), missing_terminator},
        {"bind_params_30000_ten_left", frontend, frame('B', cstr("") + cstr("") + be16(0) + be16(30000) + ten_bytes),
         bad_count},
        {"bind_formats_negative", frontend, frame('B', cstr("") + cstr("") + be16(-2) + be16(0) + be16(0)), bad_count},
        {"bind_formats_32768", frontend, frame('B', cstr("") + cstr("") + be16(-32768) + ten_bytes), bad_count},
        {"bind_value_length_minus_2", frontend,
         frame('B', cstr("") + cstr("") + be16(0) + be16(1) + be32(-2) + be16(0)), bad_value_length},
        {"bind_value_length_int32_min", frontend,
         frame('B', cstr("") + cstr("") + be16(0) + be16(1) + be32(-2147483648LL) + be16(0)), bad_value_length},
        {"bind_value_longer_than_body", frontend,
         frame('B', cstr("") + cstr("") + be16(0) + be16(1) + be32(100) + "abc" + be16(0)), truncated},
        {"bind_value_length_huge", frontend,
         frame('B', cstr("") + cstr("") + be16(0) + be16(1) + be32(0x7fffffff) + be16(0)), truncated},
        {"bind_result_formats_missing", frontend, frame('B', cstr("") + cstr("") + be16(0) + be16(0)), truncated},
        {"bind_result_formats_short", frontend,
         frame('B', cstr("") + cstr("") + be16(0) + be16(0) + be16(2) + be16(0) + "\x01"), bad_count},
        {"bind_trailing", frontend, frame('B', cstr("") + cstr("") + be16(0) + be16(0) + be16(0) + "!"),
         trailing_bytes},
        {"describe_empty", frontend, frame('D', ""), truncated},
        {"describe_bad_kind", frontend, frame('D', "X" + cstr("s1")), bad_kind},
        {"describe_lowercase_kind", frontend, frame('D', "s" + cstr("s1")), bad_kind},
        {"describe_name_missing_nul", frontend, frame('D', "S" + std::string("s1")), missing_terminator},
        {"describe_trailing", frontend, frame('D', "S" + cstr("s1") + "x"), trailing_bytes},
        {"close_bad_kind", frontend, frame('C', "Q" + cstr("")), bad_kind},
        {"close_name_missing_nul", frontend, frame('C', "P"), missing_terminator},
        {"execute_portal_missing_nul", frontend, frame('E', "portal"), missing_terminator},
        {"execute_rows_truncated", frontend, frame('E', cstr("") + "\0\0\0"), truncated},
        {"execute_trailing", frontend, frame('E', cstr("") + be32(0) + "x"), trailing_bytes},
        {"sync_with_body", frontend, frame('S', "x"), trailing_bytes},
        {"flush_with_body", frontend, frame('H', nul), trailing_bytes},
        {"terminate_with_body", frontend, frame('X', "bye"), trailing_bytes},
        {"fe_copy_done_with_body", frontend, frame('c', "x"), trailing_bytes},
        {"copy_fail_missing_nul", frontend, frame('f', "oops"), missing_terminator},
        {"copy_fail_trailing", frontend, frame('f', cstr("oops") + "!"), trailing_bytes},
        {"function_call_oid_truncated", frontend, frame('F', "\0\0"), truncated},
        {"function_call_args_30000", frontend, frame('F', be32(1) + be16(0) + be16(30000) + ten_bytes), bad_count},
        {"function_call_value_minus_2", frontend, frame('F', be32(1) + be16(0) + be16(1) + be32(-2) + be16(0)),
         bad_value_length},
        {"function_call_result_format_missing", frontend, frame('F', be32(1) + be16(0) + be16(0)), truncated},
        {"function_call_trailing", frontend, frame('F', be32(1) + be16(0) + be16(0) + be16(0) + "x"), trailing_bytes},
        // ---- backend bodies
        {"auth_empty", backend, frame('R', ""), truncated},
        {"auth_code_truncated", backend, frame('R', "\0\0"), truncated},
        {"auth_ok_trailing", backend, frame('R', be32(0) + "x"), trailing_bytes},
        {"auth_cleartext_trailing", backend, frame('R', be32(3) + nul), trailing_bytes},
        {"auth_md5_short_salt", backend, frame('R', be32(5) + "abc"), truncated},
        {"auth_md5_long_salt", backend, frame('R', be32(5) + "abcde"), trailing_bytes},
        {"auth_sasl_no_list_terminator", backend, frame('R', be32(10) + cstr("SCRAM-SHA-256")), missing_terminator},
        {"auth_sasl_mechanism_missing_nul", backend, frame('R', be32(10) + "SCRAM"), missing_terminator},
        {"auth_sasl_empty_list", backend, frame('R', be32(10)), missing_terminator},
        {"auth_sasl_trailing", backend, frame('R', be32(10) + cstr("A") + cstr("") + "x"), trailing_bytes},
        {"parameter_status_missing_value", backend, frame('S', cstr("name")), missing_terminator},
        {"parameter_status_value_missing_nul", backend, frame('S', cstr("name") + "value"), missing_terminator},
        {"parameter_status_trailing", backend, frame('S', cstr("a") + cstr("b") + "c"), trailing_bytes},
        {"backend_key_data_short", backend, frame('K', be32(1) + "\0\0"), truncated},
        {"backend_key_data_long", backend, frame('K', be32(1) + be32(2) + be32(3)), trailing_bytes},
        {"ready_for_query_empty", backend, frame('Z', ""), truncated},
        {"ready_for_query_long", backend, frame('Z', "II"), trailing_bytes},
        {"row_description_count_missing", backend, frame('T', nul), truncated},
        {"row_description_30000_ten_left", backend, frame('T', be16(30000) + ten_bytes), bad_count},
        {"row_description_count_negative", backend, frame('T', be16(-1) + std::string(40, 'a')), bad_count},
        {"row_description_field_truncated", backend,
         frame('T', be16(1) + cstr("abcdefghij") + be32(1) + be32(2) + be32(3)), truncated},
        {"row_description_name_missing_nul", backend, frame('T', be16(1) + std::string(30, 'n')), missing_terminator},
        {"row_description_trailing", backend, frame('T', be16(0) + "x"), trailing_bytes},
        {"data_row_30000_ten_left", backend, frame('D', be16(30000) + ten_bytes), bad_count},
        {"data_row_count_negative", backend, frame('D', be16(-1) + be32(-1) + be32(-1)), bad_count},
        {"data_row_value_minus_2", backend, frame('D', be16(1) + be32(-2)), bad_value_length},
        {"data_row_value_too_long", backend, frame('D', be16(1) + be32(5) + "abcd"), truncated},
        {"data_row_second_value_truncated", backend, frame('D', be16(2) + be32(1) + "a" + be32(3) + "bc"), truncated},
        {"data_row_trailing", backend, frame('D', be16(1) + be32(1) + "ab"), trailing_bytes},
        {"command_complete_missing_nul", backend, frame('C', "SELECT 1"), missing_terminator},
        {"command_complete_trailing", backend, frame('C', cstr("SELECT 1") + "x"), trailing_bytes},
        {"empty_query_with_body", backend, frame('I', "x"), trailing_bytes},
        {"error_response_empty", backend, frame('E', ""), missing_terminator},
        {"error_response_no_list_terminator", backend, frame('E', "S" + cstr("ERROR")), missing_terminator},
        {"error_response_value_missing_nul", backend, frame('E', "SERROR"), missing_terminator},
        {"error_response_trailing", backend, frame('E', "S" + cstr("ERROR") + nul + "x"), trailing_bytes},
        {"notice_response_code_only", backend, frame('N', "M"), missing_terminator},
        {"parameter_description_30000", backend, frame('t', be16(30000) + ten_bytes), bad_count},
        {"parameter_description_truncated", backend, frame('t', "\x01"), truncated},
        {"parameter_description_trailing", backend, frame('t', be16(1) + be32(23) + "x"), trailing_bytes},
        {"no_data_with_body", backend, frame('n', "x"), trailing_bytes},
        {"portal_suspended_with_body", backend, frame('s', "x"), trailing_bytes},
        {"parse_complete_with_body", backend, frame('1', "x"), trailing_bytes},
        {"bind_complete_with_body", backend, frame('2', "x"), trailing_bytes},
        {"close_complete_with_body", backend, frame('3', "x"), trailing_bytes},
        {"copy_in_response_empty", backend, frame('G', ""), truncated},
        {"copy_in_response_count_missing", backend, frame('G', nul), truncated},
        {"copy_out_response_30000", backend, frame('H', nul + be16(30000) + ten_bytes), bad_count},
        {"copy_both_response_trailing", backend, frame('W', nul + be16(0) + "x"), trailing_bytes},
        {"be_copy_done_with_body", backend, frame('c', "x"), trailing_bytes},
        {"notification_truncated", backend, frame('A', "\0\0\0"), truncated},
        {"notification_channel_missing_nul", backend, frame('A', be32(1) + "chan"), missing_terminator},
        {"notification_payload_missing", backend, frame('A', be32(1) + cstr("chan")), missing_terminator},
        {"function_call_response_empty", backend, frame('V', ""), truncated},
        {"function_call_response_minus_2", backend, frame('V', be32(-2)), bad_value_length},
        {"function_call_response_too_long", backend, frame('V', be32(10) + "abc"), truncated},
        {"function_call_response_trailing", backend, frame('V', be32(-1) + "x"), trailing_bytes},
        {"negotiate_count_negative", backend, frame('v', be32(0) + be32(-1)), bad_count},
        {"negotiate_count_huge", backend, frame('v', be32(0) + be32(0x7fffffff) + cstr("a")), bad_count},
        {"negotiate_count_missing", backend, frame('v', be32(0)), truncated},
        {"negotiate_option_missing_nul", backend, frame('v', be32(0) + be32(1) + "opt"), missing_terminator},
        {"negotiate_trailing", backend, frame('v', be32(0) + be32(0) + "x"), trailing_bytes},
        // ---- startup
        {"startup_length_0", startup_packet, be32(0), length_too_small},
        {"startup_length_4", startup_packet, be32(4) + be32(protocol_v3), length_too_small},
        {"startup_length_7", startup_packet, be32(7) + "abc", length_too_small},
        {"startup_length_10001", startup_packet, be32(10'001), startup_too_large},
        {"startup_length_negative", startup_packet, be32(-1), startup_too_large},
        {"startup_length_huge", startup_packet, be32(0x7fffffff) + be32(protocol_v3), startup_too_large},
        {"startup_full_packet_over_10000", startup_packet,
         startup(be32(protocol_v3) + cstr("user") + cstr(std::string(10'000, 'u')) + cstr("")), startup_too_large},
        {"startup_protocol_2", startup_packet, startup(be32(0x00020000) + cstr("user") + cstr("a") + cstr("")),
         unsupported_protocol},
        {"startup_protocol_4", startup_packet, startup(be32(0x00040000) + cstr("")), unsupported_protocol},
        {"startup_protocol_0", startup_packet, startup(be32(0) + cstr("")), unsupported_protocol},
        {"startup_protocol_negative", startup_packet, startup(be32(-1) + cstr("")), unsupported_protocol},
        {"startup_unknown_1234_code", startup_packet, startup(be32(80877105)), unsupported_protocol},
        {"startup_missing_terminator", startup_packet, startup(be32(protocol_v3) + cstr("user") + cstr("alice")),
         missing_terminator},
        {"startup_name_without_value", startup_packet, startup(be32(protocol_v3) + cstr("user")), missing_terminator},
        {"startup_value_missing_nul", startup_packet, startup(be32(protocol_v3) + cstr("user") + "alice"),
         missing_terminator},
        {"startup_no_parameter_list", startup_packet, startup(be32(protocol_v3)), missing_terminator},
        {"startup_trailing", startup_packet, startup(be32(protocol_v3) + cstr("") + "x"), trailing_bytes},
        {"ssl_request_length_12", startup_packet, startup(be32(ssl_request_code) + be32(0)), trailing_bytes},
        {"gssenc_request_length_9", startup_packet, startup(be32(gssenc_request_code) + "x"), trailing_bytes},
        {"cancel_request_length_12", startup_packet, startup(be32(cancel_request_code) + be32(1)), truncated},
        {"cancel_request_length_8", startup_packet, startup(be32(cancel_request_code)), truncated},
        {"cancel_request_length_20", startup_packet, startup(be32(cancel_request_code) + be32(1) + be32(2) + be32(3)),
         trailing_bytes},
        // ---- SASLInitialResponse bodies
        {"sasl_empty", sasl_initial, "", missing_terminator},
        {"sasl_mechanism_missing_nul", sasl_initial, "SCRAM-SHA-256", missing_terminator},
        {"sasl_length_missing", sasl_initial, cstr("SCRAM-SHA-256"), truncated},
        {"sasl_length_truncated", sasl_initial, cstr("SCRAM-SHA-256") + "\0\0", truncated},
        {"sasl_length_minus_2", sasl_initial, cstr("SCRAM-SHA-256") + be32(-2), bad_value_length},
        {"sasl_length_too_long", sasl_initial, cstr("SCRAM-SHA-256") + be32(10) + "n,,", truncated},
        {"sasl_trailing", sasl_initial, cstr("SCRAM-SHA-256") + be32(-1) + "x", trailing_bytes},
    };
}

DecodeResult run(Decoder decoder, std::string_view in, const Limits& limits = {}) {
    switch (decoder) {
    case Decoder::frontend: {
        FrontendMessage out;
        return decode_frontend(in, out, limits);
    }
    case Decoder::backend: {
        BackendMessage out;
        return decode_backend(in, out, limits);
    }
    case Decoder::startup_packet: {
        StartupPacket out;
        return decode_startup(in, out, limits);
    }
    case Decoder::sasl_initial: {
        SASLInitialResponse out;
        const std::error_code ec = decode_sasl_initial_response(in, out);
        return ec ? DecodeResult{DecodeStatus::error, 0, ec} : DecodeResult{DecodeStatus::ok, in.size(), {}};
    }
    }
    return {};
}

class MalformedTest : public testing::TestWithParam<BadCase> {};

TEST_P(MalformedTest, FailsWithExpectedCode) {
    const BadCase& c = GetParam();
    const DecodeResult r = run(c.decoder, c.bytes);
    EXPECT_EQ(r.status, DecodeStatus::error);
    EXPECT_EQ(r.consumed, 0u);
    EXPECT_EQ(r.ec, make_error_code(c.expected)) << "got: " << r.ec.message();
    EXPECT_EQ(&r.ec.category(), &codec_category());
}

// A prefix of a bad frame may wait for more or fail early; it never succeeds.
class FramedMalformedTest : public testing::TestWithParam<BadCase> {};

TEST_P(FramedMalformedTest, PrefixesNeverSucceed) {
    const BadCase& c = GetParam();
    for (std::size_t k = 0; k < c.bytes.size(); ++k) {
        const std::string prefix = c.bytes.substr(0, k);
        const DecodeResult r = run(c.decoder, prefix);
        EXPECT_NE(r.status, DecodeStatus::ok) << k;
        EXPECT_EQ(r.consumed, 0u) << k;
    }
}

std::vector<BadCase> framed_bad_cases() {
    std::vector<BadCase> framed;
    for (BadCase& c : bad_cases()) {
        if (c.decoder != Decoder::sasl_initial) {  // a body decoder, not incremental
            framed.push_back(std::move(c));
        }
    }
    return framed;
}

std::string case_name(const testing::TestParamInfo<BadCase>& p) { return p.param.name; }

INSTANTIATE_TEST_SUITE_P(Cases, MalformedTest, testing::ValuesIn(bad_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Cases, FramedMalformedTest, testing::ValuesIn(framed_bad_cases()), case_name);

// ---------------------------------------------------------------- errors are judged early

TEST(Limits, OversizedLengthFailsOnHeaderAlone) {
    // Only the 5 header bytes arrived; the verdict must not wait for 1 GB.
    FrontendMessage out;
    const DecodeResult r = decode_frontend(frame_with_length('d', 0x7fffffff, ""), out);
    EXPECT_EQ(r.status, DecodeStatus::error);
    EXPECT_EQ(r.ec, CodecErrc::message_too_large);
}

TEST(Limits, StartupTooLargeFailsOnLengthAlone) {
    StartupPacket out;
    const DecodeResult r = decode_startup(be32(10'001), out);
    EXPECT_EQ(r.status, DecodeStatus::error);
    EXPECT_EQ(r.ec, CodecErrc::startup_too_large);
}

TEST(Limits, StartupExactlyAtCapIsAccepted) {
    const std::string name = "user";
    // 4 length + 4 version + "user\0" + value + NUL + final NUL = 10,000
    const std::string value(10'000 - 4 - 4 - 5 - 1 - 1, 'v');
    const std::string bytes = startup(be32(protocol_v3) + cstr(name) + cstr(value) + cstr(""));
    ASSERT_EQ(bytes.size(), 10'000u);
    StartupPacket out;
    const DecodeResult r = decode_startup(bytes, out);
    ASSERT_EQ(r.status, DecodeStatus::ok) << r.ec.message();
    EXPECT_EQ(r.consumed, 10'000u);
}

TEST(Limits, CustomStartupCap) {
    const std::string bytes = startup(be32(protocol_v3) + cstr("user") + cstr("alice") + cstr(""));
    StartupPacket out;
    EXPECT_EQ(decode_startup(bytes, out, Limits{bytes.size(), 1u << 30}).status, DecodeStatus::ok);
    const DecodeResult r = decode_startup(bytes, out, Limits{bytes.size() - 1, 1u << 30});
    EXPECT_EQ(r.status, DecodeStatus::error);
    EXPECT_EQ(r.ec, CodecErrc::startup_too_large);
}

TEST(Limits, CustomMessageCapCountsLengthWordNotType) {
    Limits limits;
    limits.max_message_size = 13;  // Query "SELECT 1": length word 13
    const std::string query = frame('Q', cstr("SELECT 1"));
    FrontendMessage fe;
    EXPECT_EQ(decode_frontend(query, fe, limits).status, DecodeStatus::ok);
    limits.max_message_size = 12;
    DecodeResult r = decode_frontend(query, fe, limits);
    EXPECT_EQ(r.status, DecodeStatus::error);
    EXPECT_EQ(r.ec, CodecErrc::message_too_large);
    BackendMessage be;
    r = decode_backend(frame('C', cstr("SELECT 1")), be, limits);
    EXPECT_EQ(r.ec, CodecErrc::message_too_large);
}

TEST(PeekHeader, NeedsFiveBytes) {
    FrameHeader h;
    for (std::size_t k = 0; k < 5; ++k) {
        const DecodeResult r = peek_header(std::string("Q\0\0\0\x0d", k), h);
        EXPECT_EQ(r.status, DecodeStatus::need_more);
        EXPECT_EQ(r.consumed, 0u);
    }
}

TEST(PeekHeader, OkBeforeBodyArrives) {
    FrameHeader h;
    const DecodeResult r = peek_header("D\0\0\x01\x00"sv, h);
    ASSERT_EQ(r.status, DecodeStatus::ok);
    EXPECT_EQ(r.consumed, frame_header_size);
    EXPECT_EQ(h.type, 'D');
    EXPECT_EQ(h.length, 256u);
    EXPECT_EQ(h.body_size(), 252u);
    EXPECT_EQ(h.frame_size(), 257u);
}

TEST(PeekHeader, RejectsBadLengths) {
    FrameHeader h;
    EXPECT_EQ(peek_header(frame_with_length('Q', 3, ""), h).ec, CodecErrc::length_too_small);
    EXPECT_EQ(peek_header(frame_with_length('Q', -1, ""), h).ec, CodecErrc::message_too_large);
    Limits limits;
    limits.max_message_size = 100;
    EXPECT_EQ(peek_header(frame_with_length('Q', 100, ""), h, limits).status, DecodeStatus::ok);
    EXPECT_EQ(peek_header(frame_with_length('Q', 101, ""), h, limits).ec, CodecErrc::message_too_large);
}

// ---------------------------------------------------------------- skip_whole_frames

namespace {
bool not_ready(char type) { return type != 'Z'; }
}  // namespace

TEST(SkipWholeFrames, SkipsAcceptedWholeFramesOnly) {
    const std::string rows = frame('D', be16(1) + be32(1) + "a") + frame('D', be16(0));
    const std::string ready = frame('Z', "I");
    EXPECT_EQ(skip_whole_frames(rows + ready, 0, not_ready), rows.size());
    EXPECT_EQ(skip_whole_frames(rows, 0, not_ready), rows.size());
    EXPECT_EQ(skip_whole_frames(rows + ready, rows.size(), not_ready), rows.size());
    EXPECT_EQ(skip_whole_frames(ready + rows, 0, not_ready), 0u);
    // An incomplete frame (at every cut) stops the sweep where it starts.
    for (std::size_t cut = 1; cut < ready.size() + rows.size(); ++cut) {
        const std::string in = (rows + rows).substr(0, rows.size() + cut % rows.size());
        const std::size_t at = skip_whole_frames(in, 0, not_ready);
        EXPECT_LE(at, in.size());
        FrameHeader h;
        if (at < in.size()) {
            const DecodeResult r = peek_header(in.substr(at), h);
            EXPECT_TRUE(r.status == DecodeStatus::need_more || in.size() - at < h.frame_size()) << cut;
        }
    }
}

TEST(SkipWholeFrames, StopsAtLengthsPeekHeaderRefuses) {
    for (const std::int32_t bad : {3, 0, -1}) {
        const std::string in = frame('D', be16(0)) + frame_with_length('D', bad, std::string(8, 'x'));
        const std::size_t at = skip_whole_frames(in, 0, not_ready);
        EXPECT_EQ(at, frame('D', be16(0)).size()) << bad;
        FrameHeader h;
        EXPECT_EQ(peek_header(in.substr(at), h).status, DecodeStatus::error) << bad;
    }
    Limits limits;
    limits.max_message_size = 6;
    const std::string big = frame('D', be16(1) + be32(0));  // length 10
    EXPECT_EQ(skip_whole_frames(big, 0, not_ready, limits), 0u);
    EXPECT_EQ(skip_whole_frames(big, 0, not_ready), big.size());
}

// ---------------------------------------------------------------- `out` on failure

TEST(ErrorPath, OutIsUntouchedOnErrorAndNeedMore) {
    const FrontendMessage before = Query{"keep me"};
    FrontendMessage out = before;
    EXPECT_EQ(decode_frontend(frame('B', cstr("") + cstr("") + be16(0) + be16(1) + be32(-2)), out).status,
              DecodeStatus::error);
    EXPECT_TRUE(out == before);
    EXPECT_EQ(decode_frontend(frame('Q', cstr("SELECT 2")).substr(0, 7), out).status, DecodeStatus::need_more);
    EXPECT_TRUE(out == before);

    const BackendMessage before_be = ReadyForQuery{'T'};
    BackendMessage out_be = before_be;
    EXPECT_EQ(decode_backend(frame('D', be16(2) + be32(1) + "a"), out_be).status, DecodeStatus::error);
    EXPECT_TRUE(out_be == before_be);

    const StartupPacket before_st = CancelRequest{1, 2};
    StartupPacket out_st = before_st;
    EXPECT_EQ(decode_startup(startup(be32(protocol_v3) + cstr("user")), out_st).status, DecodeStatus::error);
    EXPECT_TRUE(out_st == before_st);

    SASLInitialResponse sasl{"keep", Value{"x"}};
    EXPECT_TRUE(decode_sasl_initial_response(cstr("M") + be32(-2), sasl));
    EXPECT_EQ(sasl.mechanism, "keep");
}

TEST(ErrorPath, BodyDecodersReportErrors) {
    FrontendMessage fe;
    EXPECT_EQ(decode_frontend_body('D', "Z", fe), CodecErrc::bad_kind);
    EXPECT_EQ(decode_frontend_body('S', "x", fe), CodecErrc::trailing_bytes);
    BackendMessage be;
    EXPECT_EQ(decode_backend_body('T', be16(30000), be), CodecErrc::bad_count);
    EXPECT_EQ(decode_backend_body('Z', "", be), CodecErrc::truncated);
}

// ---------------------------------------------------------------- no allocation before the check

// A declared count must be checked against the remaining bytes before any
// vector is sized from it, so a tiny frame can't make us allocate a lot.
TEST(Allocation, HugeCountsAllocateNothingLarge) {
    struct Probe {
        Decoder decoder;
        std::string bytes;
    };
    const std::vector<Probe> probes = {
        {Decoder::frontend, frame('P', cstr("") + cstr("q") + be16(0xffff) + ten_bytes)},
        {Decoder::frontend, frame('B', cstr("") + cstr("") + be16(0xffff) + ten_bytes)},
        {Decoder::frontend, frame('B', cstr("") + cstr("") + be16(0) + be16(0xffff) + ten_bytes)},
        {Decoder::frontend, frame('F', be32(1) + be16(0xffff) + ten_bytes)},
        {Decoder::backend, frame('T', be16(0xffff) + std::string(200, 'x'))},
        {Decoder::backend, frame('D', be16(0xffff) + ten_bytes)},
        {Decoder::backend, frame('t', be16(0xffff) + ten_bytes)},
        {Decoder::backend, frame('G', nul + be16(0xffff) + ten_bytes)},
        {Decoder::backend, frame('v', be32(0) + be32(0x7fffffff) + ten_bytes)},
    };
    for (const Probe& p : probes) {
        test::AllocProbe probe;
        const DecodeResult r = run(p.decoder, p.bytes);
        const std::size_t largest = probe.largest();
        EXPECT_EQ(r.status, DecodeStatus::error);
        EXPECT_EQ(r.ec, CodecErrc::bad_count);
        EXPECT_LT(largest, 1024u) << "frame " << p.bytes.size() << " bytes";
    }
}

TEST(Allocation, ValidLargeCountIsAccepted) {
    // 40,000 NULL values: above Int16 max, still a legal unsigned count.
    std::string body = be16(40'000);
    for (int i = 0; i < 40'000; ++i) {
        body += be32(-1);
    }
    BackendMessage out;
    const DecodeResult r = decode_backend(frame('D', body), out);
    ASSERT_EQ(r.status, DecodeStatus::ok);
    ASSERT_TRUE(std::holds_alternative<DataRow>(out));
    EXPECT_EQ(std::get<DataRow>(out).values.size(), 40'000u);
    std::string again;
    encode(out, again);
    EXPECT_EQ(again, frame('D', body));
}

}  // namespace
}  // namespace pgshelf::pgwire
