// Text form of binary-format values of common types, so that a parameter
// bound in binary renders the same cache key as the same value sent as
// text or written as a literal.
// Formats: https://www.postgresql.org/docs/15/protocol-overview.html#PROTOCOL-FORMAT-CODES
// and the *send/*recv functions of the PostgreSQL source.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgshelf::pgwire {

namespace oid {
inline constexpr std::uint32_t boolean = 16;
inline constexpr std::uint32_t name = 19;
inline constexpr std::uint32_t int8 = 20;
inline constexpr std::uint32_t int2 = 21;
inline constexpr std::uint32_t int4 = 23;
inline constexpr std::uint32_t text = 25;
inline constexpr std::uint32_t oid = 26;
inline constexpr std::uint32_t bpchar = 1042;
inline constexpr std::uint32_t varchar = 1043;
inline constexpr std::uint32_t numeric = 1700;
inline constexpr std::uint32_t uuid = 2950;
}  // namespace oid

// nullopt when the type is not supported or the bytes are malformed.
std::optional<std::string> binary_value_text(std::uint32_t type_oid, std::string_view bytes);

}  // namespace pgshelf::pgwire
