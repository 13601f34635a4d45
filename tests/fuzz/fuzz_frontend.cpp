// libFuzzer target: the client side of the codec. The input is treated as a
// connection's first bytes: a startup packet if one decodes, then typed
// frontend frames until the input ends.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

#include "fuzz_check.hpp"

using namespace pgshelf::pgwire;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);

    StartupPacket startup;
    const DecodeResult r = decode_startup(in, startup);
    fuzz::check_result(r, in.size());
    if (r.status == DecodeStatus::ok) {
        fuzz::check_frame(
            in.substr(0, r.consumed), startup,
            [](std::string_view b, StartupPacket& m, const Limits& l) { return decode_startup(b, m, l); }, r.consumed,
            CodecErrc::startup_too_large, Limits{64, 64});
        in.remove_prefix(r.consumed);
    }

    fuzz::decode_typed_stream<FrontendMessage>(
        in, [](std::string_view b, FrontendMessage& m, const Limits& l) { return decode_frontend(b, m, l); },
        [](const FrontendMessage& m) {
            if (const auto* password = std::get_if<PasswordMessage>(&m)) {
                fuzz::check_sasl_initial_response(password->data);
            }
        });
    return 0;
}
