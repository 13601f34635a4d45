// Duration and size parsing; see units.hpp.
#include "cache_rules/units.hpp"

#include <charconv>
#include <string>

namespace pgshelf::cache_rules {
namespace {

struct NumberAndUnit {
    std::uint64_t number = 0;
    std::string_view unit;
};

std::optional<NumberAndUnit> split(std::string_view text) {
    while (!text.empty() && text.front() == ' ') {
        text.remove_prefix(1);
    }
    while (!text.empty() && text.back() == ' ') {
        text.remove_suffix(1);
    }
    NumberAndUnit out;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out.number);
    if (ec != std::errc{} || end == text.data()) {
        return std::nullopt;
    }
    out.unit = text.substr(static_cast<std::size_t>(end - text.data()));
    while (!out.unit.empty() && out.unit.front() == ' ') {
        out.unit.remove_prefix(1);
    }
    return out;
}

std::optional<std::uint64_t> scale(std::uint64_t number, std::uint64_t factor) {
    if (factor != 0 && number > UINT64_MAX / factor) {
        return std::nullopt;
    }
    return number * factor;
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
    auto parts = split(text);
    if (!parts) {
        return std::nullopt;
    }
    std::uint64_t factor = 0;
    const std::string_view u = parts->unit;
    if (u == "ms") {
        factor = 1;
    } else if (u.empty() || u == "s" || u == "sec") {
        factor = 1000;
    } else if (u == "m" || u == "min") {
        factor = 60'000;
    } else if (u == "h") {
        factor = 3'600'000;
    } else if (u == "d") {
        factor = 86'400'000;
    } else {
        return std::nullopt;
    }
    auto ms = scale(parts->number, factor);
    if (!ms || *ms > static_cast<std::uint64_t>(std::chrono::milliseconds::max().count())) {
        return std::nullopt;
    }
    return std::chrono::milliseconds(static_cast<std::int64_t>(*ms));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
    auto parts = split(text);
    if (!parts) {
        return std::nullopt;
    }
    const std::string_view u = parts->unit;
    if (u.empty() || u == "B") {
        return parts->number;
    }
    if (u == "kB" || u == "KB" || u == "KiB") {
        return scale(parts->number, 1ull << 10);
    }
    if (u == "MB" || u == "MiB") {
        return scale(parts->number, 1ull << 20);
    }
    if (u == "GB" || u == "GiB") {
        return scale(parts->number, 1ull << 30);
    }
    return std::nullopt;
}

}  // namespace pgshelf::cache_rules
