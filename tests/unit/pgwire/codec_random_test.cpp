// Fixed-seed random inputs: the decoders must never crash, never report more
// than they were given, keep their status/consumed invariants, and re-encode
// whatever they accept to the exact bytes they consumed.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>

#include "pgwire/codec.hpp"
#include "wire_fixtures.hpp"

namespace pgshelf::pgwire {
namespace {

constexpr int iterations = 200'000;
constexpr std::uint64_t seed = 0x70677368656c66;  // "pgshelf"

// Mostly-plausible bytes reach deeper into the decoders than uniform noise:
// small integers, NULs and the protocol's own type and kind letters.
class InputGenerator {
public:
    explicit InputGenerator(std::uint64_t s) : rng_(s) {}

    std::string next() {
        switch (pick(4)) {
        case 0:
            return noise(pick(48));
        case 1:
            return typed_frame();
        case 2:
            return startup_packet();
        default:
            return typed_frame() + typed_frame();
        }
    }

private:
    std::size_t pick(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }

    char plausible_byte() {
        static constexpr std::string_view letters = "QPBDECSHXdcfFpRKZTINtns123GWAVvSP";
        switch (pick(6)) {
        case 0:
        case 1:
            return '\0';
        case 2:
            return letters[pick(letters.size())];
        case 3:
            return static_cast<char>(pick(5));
        case 4:
            return static_cast<char>(0xff);
        default:
            return static_cast<char>(pick(256));
        }
    }

    std::string noise(std::size_t n) {
        std::string s;
        for (std::size_t i = 0; i < n; ++i) {
            s.push_back(pick(2) == 0 ? plausible_byte() : static_cast<char>(pick(256)));
        }
        return s;
    }

    std::string body() {
        std::string s;
        const std::size_t fields = pick(6);
        for (std::size_t i = 0; i < fields; ++i) {
            switch (pick(5)) {
            case 0:
                s += test::be16(static_cast<std::int32_t>(pick(4)));
                break;
            case 1:
                s += test::be32(static_cast<std::int64_t>(pick(6)) - 2);
                break;
            case 2:
                s += test::cstr(noise(pick(4)));
                break;
            case 3:
                s.push_back(plausible_byte());
                break;
            default:
                s += noise(pick(6));
                break;
            }
        }
        return s;
    }

    std::string typed_frame() {
        static constexpr std::string_view types = "QPBDECSHXdcfFpRKZTINtns123GWAVv?";
        const char type = types[pick(types.size())];
        const std::string b = body();
        std::int64_t length = static_cast<std::int64_t>(b.size()) + 4;
        if (pick(8) == 0) {
            length += static_cast<std::int64_t>(pick(9)) - 4;
        }
        std::string s = test::frame_with_length(type, length, b);
        if (pick(6) == 0) {
            s.resize(pick(s.size() + 1));
        }
        return s;
    }

    std::string startup_packet() {
        static constexpr std::array<std::int32_t, 6> codes = {
            protocol_v3, 196609, ssl_request_code, gssenc_request_code, cancel_request_code, 0x00020000};
        std::string rest = test::be32(codes[pick(codes.size())]) + body();
        if (pick(2) == 0) {
            rest += std::string(1, '\0');
        }
        std::string s = test::startup(rest);
        if (pick(6) == 0) {
            s.resize(pick(s.size() + 1));
        }
        return s;
    }

    std::mt19937_64 rng_;
};

struct Tally {
    int ok = 0;
    int need_more = 0;
    int error = 0;
};

template <typename Message, typename Decode>
void check(std::string_view in, Decode decode, Tally& tally) {
    Message out;
    const DecodeResult r = decode(in, out);
    ASSERT_LE(r.consumed, in.size());
    switch (r.status) {
    case DecodeStatus::ok: {
        ++tally.ok;
        ASSERT_GT(r.consumed, 0u);
        ASSERT_FALSE(r.ec);
        std::string again;
        encode(out, again);
        ASSERT_EQ(again, in.substr(0, r.consumed));
        break;
    }
    case DecodeStatus::need_more:
        ++tally.need_more;
        ASSERT_EQ(r.consumed, 0u);
        ASSERT_FALSE(r.ec);
        break;
    case DecodeStatus::error:
        ++tally.error;
        ASSERT_EQ(r.consumed, 0u);
        ASSERT_TRUE(r.ec);
        ASSERT_EQ(&r.ec.category(), &codec_category());
        break;
    }
}

TEST(RandomInput, NeverCrashesAndKeepsInvariants) {
    InputGenerator gen(seed);
    Tally fe, be, st;
    for (int i = 0; i < iterations; ++i) {
        // A private copy per input, so any over-read is caught by ASan builds.
        const std::string in = gen.next();
        ASSERT_NO_FATAL_FAILURE(check<FrontendMessage>(
            in, [](std::string_view b, FrontendMessage& m) { return decode_frontend(b, m); }, fe));
        ASSERT_NO_FATAL_FAILURE(check<BackendMessage>(
            in, [](std::string_view b, BackendMessage& m) { return decode_backend(b, m); }, be));
        ASSERT_NO_FATAL_FAILURE(check<StartupPacket>(
            in, [](std::string_view b, StartupPacket& m) { return decode_startup(b, m); }, st));

        SASLInitialResponse sasl;
        if (!decode_sasl_initial_response(in, sasl)) {
            std::string again;
            encode(sasl, again);
            ASSERT_EQ(std::string_view(again).substr(frame_header_size), in);
        }
        FrameHeader header;
        const DecodeResult peek = peek_header(in, header);
        ASSERT_LE(peek.consumed, in.size());
    }
    // The generator must actually reach the decoders, not only their framing.
    EXPECT_GT(fe.ok, 5'000);
    EXPECT_GT(be.ok, 5'000);
    EXPECT_GT(st.ok, 2'000);
    EXPECT_GT(fe.error, 1'000);
    EXPECT_GT(be.error, 1'000);
    EXPECT_GT(st.error, 1'000);
    std::printf("frontend ok/need_more/error: %d/%d/%d\n", fe.ok, fe.need_more, fe.error);
    std::printf("backend  ok/need_more/error: %d/%d/%d\n", be.ok, be.need_more, be.error);
    std::printf("startup  ok/need_more/error: %d/%d/%d\n", st.ok, st.need_more, st.error);
}

}  // namespace
}  // namespace pgshelf::pgwire
