// Parsing of human-friendly durations ("500ms", "30s", "2m", "1h", "1d")
// and sizes ("512", "64kB", "16MB", "1GB"), shared by rules and config.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace pgshelf::cache_rules {

// A bare number means seconds. Returns nullopt for anything malformed,
// negative or overflowing.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

// A bare number means bytes; units are powers of 1024 (kB, MB, GB, as in
// postgresql.conf). Returns nullopt for anything malformed or overflowing.
std::optional<std::uint64_t> parse_size(std::string_view text);

}  // namespace pgshelf::cache_rules
