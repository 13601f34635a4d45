// Duration and size parsing, table-driven.
#include "cache_rules/units.hpp"

#include <gtest/gtest.h>

namespace pgshelf::cache_rules {
namespace {

struct DurationCase {
    const char* text;
    std::optional<std::int64_t> ms;
};

class Durations : public ::testing::TestWithParam<DurationCase> {};

TEST_P(Durations, Parse) {
    auto parsed = parse_duration(GetParam().text);
    if (!GetParam().ms) {
        EXPECT_FALSE(parsed.has_value()) << GetParam().text;
    } else {
        ASSERT_TRUE(parsed.has_value()) << GetParam().text;
        EXPECT_EQ(parsed->count(), *GetParam().ms);
    }
}

INSTANTIATE_TEST_SUITE_P(Units, Durations,
                         ::testing::Values(DurationCase{"30s", 30'000}, DurationCase{"2m", 120'000},
                                           DurationCase{"1h", 3'600'000}, DurationCase{"500ms", 500},
                                           DurationCase{"1d", 86'400'000}, DurationCase{"15", 15'000},
                                           DurationCase{" 5 s ", 5'000}, DurationCase{"", std::nullopt},
                                           DurationCase{"-1s", std::nullopt}, DurationCase{"1w", std::nullopt},
                                           DurationCase{"s", std::nullopt},
                                           DurationCase{"99999999999999999999d", std::nullopt}));

TEST(Sizes, Parse) {
    EXPECT_EQ(parse_size("512"), 512u);
    EXPECT_EQ(parse_size("64kB"), 64u << 10);
    EXPECT_EQ(parse_size("16MB"), 16u << 20);
    EXPECT_EQ(parse_size("1GB"), 1ull << 30);
    EXPECT_FALSE(parse_size("1TB").has_value());
    EXPECT_FALSE(parse_size("lots").has_value());
    EXPECT_FALSE(parse_size("99999999999999999GB").has_value());
}

}  // namespace
}  // namespace pgshelf::cache_rules
