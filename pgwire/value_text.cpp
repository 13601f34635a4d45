// Binary-to-text conversion of common types; see value_text.hpp.
#include "pgwire/value_text.hpp"

#include <vector>

namespace pgshelf::pgwire {
namespace {

std::int64_t read_be(std::string_view bytes) {
    std::uint64_t v = 0;
    for (char c : bytes) {
        v = (v << 8) | static_cast<unsigned char>(c);
    }
    // Sign-extend from the value's width.
    const unsigned bits = static_cast<unsigned>(bytes.size() * 8);
    if (bits < 64 && (v >> (bits - 1)) != 0) {
        v |= ~0ull << bits;
    }
    return static_cast<std::int64_t>(v);
}

// numeric_send: int16 ndigits, weight, sign, dscale, then ndigits base-10000 digits.
std::optional<std::string> numeric_text(std::string_view b) {
    if (b.size() < 8) {
        return std::nullopt;
    }
    const auto ndigits = static_cast<int>(read_be(b.substr(0, 2)));
    const auto weight = static_cast<int>(read_be(b.substr(2, 2)));
    const auto sign = static_cast<std::uint16_t>(read_be(b.substr(4, 2)));
    const auto dscale = static_cast<int>(read_be(b.substr(6, 2)));
    if (ndigits < 0 || dscale < 0 || b.size() != 8 + 2 * static_cast<std::size_t>(ndigits)) {
        return std::nullopt;
    }
    if (sign == 0xC000) {
        return "NaN";
    }
    if (sign == 0xD000) {
        return "Infinity";
    }
    if (sign == 0xF000) {
        return "-Infinity";
    }
    if (sign != 0 && sign != 0x4000) {
        return std::nullopt;
    }
    std::vector<int> digits(static_cast<std::size_t>(ndigits));
    for (int i = 0; i < ndigits; ++i) {
        digits[static_cast<std::size_t>(i)] = static_cast<int>(read_be(b.substr(8 + 2 * static_cast<std::size_t>(i), 2)));
        if (digits[static_cast<std::size_t>(i)] < 0 || digits[static_cast<std::size_t>(i)] > 9999) {
            return std::nullopt;
        }
    }
    auto digit_at = [&](int i) { return i >= 0 && i < ndigits ? digits[static_cast<std::size_t>(i)] : 0; };
    std::string out;
    if (sign == 0x4000) {
        out += '-';
    }
    // Integer part: base-10000 groups 0..weight.
    if (weight < 0) {
        out += '0';
    } else {
        for (int i = 0; i <= weight; ++i) {
            std::string group = std::to_string(digit_at(i));
            if (i > 0) {
                group.insert(0, 4 - group.size(), '0');
            }
            out += group;
        }
    }
    if (dscale > 0) {
        out += '.';
        std::string fraction;
        for (int i = weight + 1; static_cast<int>(fraction.size()) < dscale; ++i) {
            std::string group = std::to_string(digit_at(i));
            group.insert(0, 4 - group.size(), '0');
            fraction += group;
        }
        out += fraction.substr(0, static_cast<std::size_t>(dscale));
    }
    return out;
}

}  // namespace

std::optional<std::string> binary_value_text(std::uint32_t type_oid, std::string_view bytes) {
    switch (type_oid) {
        case oid::boolean:
            if (bytes.size() != 1) {
                return std::nullopt;
            }
            return bytes[0] != 0 ? "true" : "false";
        case oid::int2:
            if (bytes.size() != 2) {
                return std::nullopt;
            }
            return std::to_string(read_be(bytes));
        case oid::int4:
            if (bytes.size() != 4) {
                return std::nullopt;
            }
            return std::to_string(read_be(bytes));
        case oid::int8:
            if (bytes.size() != 8) {
                return std::nullopt;
            }
            return std::to_string(read_be(bytes));
        case oid::oid:
            if (bytes.size() != 4) {
                return std::nullopt;
            }
            return std::to_string(static_cast<std::uint32_t>(read_be(bytes)));
        case oid::text:
        case oid::varchar:
        case oid::bpchar:
        case oid::name:
            return std::string(bytes);
        case oid::uuid: {
            if (bytes.size() != 16) {
                return std::nullopt;
            }
            static constexpr char hex[] = "0123456789abcdef";
            std::string out;
            for (std::size_t i = 0; i < 16; ++i) {
                if (i == 4 || i == 6 || i == 8 || i == 10) {
                    out += '-';
                }
                const auto byte = static_cast<unsigned char>(bytes[i]);
                out += hex[byte >> 4];
                out += hex[byte & 0xf];
            }
            return out;
        }
        case oid::numeric:
            return numeric_text(bytes);
        default:
            return std::nullopt;
    }
}

}  // namespace pgshelf::pgwire
