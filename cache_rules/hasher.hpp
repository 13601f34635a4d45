// Streaming xxHash3 of length-prefixed fields, so ("ab","c") and ("a","bc")
// hash differently. Used for key namespaces.
#pragma once

#include <cstdint>
#include <string_view>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

namespace pgshelf::cache_rules {

class Hasher {
public:
    Hasher() { XXH3_64bits_reset(&state_); }
    Hasher& add(std::string_view s) {
        const auto n = static_cast<std::uint32_t>(s.size());
        XXH3_64bits_update(&state_, &n, sizeof n);
        XXH3_64bits_update(&state_, s.data(), s.size());
        return *this;
    }
    Hasher& add_bytes(const void* data, std::size_t size) {
        XXH3_64bits_update(&state_, data, size);
        return *this;
    }
    std::uint64_t digest() const { return XXH3_64bits_digest(&state_); }

private:
    XXH3_state_t state_;
};

}  // namespace pgshelf::cache_rules
