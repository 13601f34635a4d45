// Shared invariants for the pgwire fuzz targets. Any violation aborts, which
// libFuzzer reports as a crash and saves the input.
//
// For every input the decoders must: report consumed <= input size, consumed
// 0 unless ok, an error code exactly when status is error. For every frame
// that decodes: encode(decode(b)) == b, decode(encode(m)) == m, any strict
// prefix is need_more, and a tighter Limits either agrees or fails with the
// matching *_too_large code.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "pgwire/codec.hpp"

namespace pgshelf::pgwire::fuzz {

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "pgwire fuzz invariant violated: %s\n", what);
    std::abort();
}

inline void check_result(const DecodeResult& r, std::size_t input_size) {
    if (r.consumed > input_size) {
        fail("consumed more than the input");
    }
    switch (r.status) {
    case DecodeStatus::ok:
        if (r.consumed == 0 || r.ec) {
            fail("ok with consumed 0 or an error code");
        }
        break;
    case DecodeStatus::need_more:
        if (r.consumed != 0 || r.ec) {
            fail("need_more with consumed or an error code");
        }
        break;
    case DecodeStatus::error:
        if (r.consumed != 0 || !r.ec || &r.ec.category() != &codec_category()) {
            fail("error with consumed, no code or a foreign category");
        }
        break;
    }
}

// `frame` is exactly the bytes that decoded to `msg`; `decode` is
// decode_startup / decode_frontend / decode_backend.
template <typename Message, typename Decode>
void check_frame(std::string_view frame, const Message& msg, Decode decode, std::size_t limit_size,
                 CodecErrc limit_error, Limits tight) {
    std::string again;
    encode(msg, again);
    if (again != frame) {
        fail("encode(decode(b)) != b");
    }
    Message reparsed;
    const DecodeResult r = decode(std::string_view(again), reparsed, Limits{});
    check_result(r, again.size());
    if (r.status != DecodeStatus::ok || r.consumed != again.size() || !(reparsed == msg)) {
        fail("decode(encode(m)) != m");
    }

    // A private, exactly sized copy, so a read past the prefix trips ASan.
    const std::string prefix(frame.substr(0, frame.size() - 1));
    Message partial;
    const DecodeResult p = decode(std::string_view(prefix), partial, Limits{});
    check_result(p, prefix.size());
    if (p.status != DecodeStatus::need_more) {
        fail("a strict prefix of a valid frame is not need_more");
    }

    Message limited;
    const DecodeResult l = decode(frame, limited, tight);
    check_result(l, frame.size());
    if (limit_size <= (limit_error == CodecErrc::startup_too_large ? tight.max_startup_size : tight.max_message_size)) {
        if (l.status != DecodeStatus::ok || !(limited == msg)) {
            fail("a frame within the tight limit decoded differently");
        }
    } else if (l.status != DecodeStatus::error || l.ec != limit_error) {
        fail("a frame above the tight limit was not refused as too large");
    }
}

// A 'p' body is only interpretable in context; try it as SASLInitialResponse.
inline void check_sasl_initial_response(std::string_view body) {
    SASLInitialResponse sasl;
    if (decode_sasl_initial_response(body, sasl)) {
        return;
    }
    std::string again;
    encode(sasl, again);
    if (again.size() < frame_header_size || std::string_view(again).substr(frame_header_size) != body) {
        fail("SASLInitialResponse re-encoding differs");
    }
    SASLInitialResponse reparsed;
    if (decode_sasl_initial_response(std::string_view(again).substr(frame_header_size), reparsed) ||
        !(reparsed == sasl)) {
        fail("SASLInitialResponse does not round-trip");
    }
}

// Typed-frame loop shared by both directions. After a frame that fails to
// decode, skip it by its header and go on, to reach later frames too.
template <typename Message, typename Decode, typename OnMessage>
void decode_typed_stream(std::string_view in, Decode decode, OnMessage on_message) {
    const Limits tight{64, 64};
    while (!in.empty()) {
        Message msg;
        const DecodeResult r = decode(in, msg, Limits{});
        check_result(r, in.size());
        if (r.status == DecodeStatus::ok) {
            const std::string_view frame = in.substr(0, r.consumed);
            // Length word + body, the quantity max_message_size bounds.
            check_frame(frame, msg, decode, frame.size() - 1, CodecErrc::message_too_large, tight);
            on_message(msg);
            in.remove_prefix(r.consumed);
            continue;
        }
        FrameHeader header;
        if (r.status == DecodeStatus::need_more || peek_header(in, header).status != DecodeStatus::ok ||
            header.frame_size() > in.size()) {
            return;
        }
        in.remove_prefix(header.frame_size());
    }
}

}  // namespace pgshelf::pgwire::fuzz
