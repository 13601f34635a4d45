// libFuzzer target: the server side of the codec. The input is a stream of
// typed backend frames.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.hpp"

using namespace pgshelf::pgwire;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    fuzz::decode_typed_stream<BackendMessage>(
        in, [](std::string_view b, BackendMessage& m, const Limits& l) { return decode_backend(b, m, l); },
        [](const BackendMessage&) {});
    return 0;
}
