// Binary-format parameter values rendered as PostgreSQL's text output would.
#include "pgwire/value_text.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <string>

namespace pgshelf::pgwire {
namespace {

std::string be16s(std::initializer_list<int> values) {
    std::string out;
    for (int v : values) {
        const auto u = static_cast<std::uint16_t>(v);
        out += static_cast<char>(u >> 8);
        out += static_cast<char>(u & 0xff);
    }
    return out;
}

std::string bytes(std::initializer_list<int> values) {
    std::string out;
    for (int v : values) {
        out += static_cast<char>(v);
    }
    return out;
}

// numeric_send layout: ndigits, weight, sign, dscale, then the base-10000 digits.
std::string numeric(int weight, int sign, int dscale, std::initializer_list<int> digits) {
    std::string out = be16s({static_cast<int>(digits.size()), weight, sign, dscale});
    for (int d : digits) {
        out += be16s({d});
    }
    return out;
}

TEST(ValueText, Integers) {
    EXPECT_EQ(binary_value_text(oid::int2, bytes({0xff, 0xff})), "-1");
    EXPECT_EQ(binary_value_text(oid::int4, bytes({0x00, 0x01, 0xe2, 0x40})), "123456");
    EXPECT_EQ(binary_value_text(oid::int8, bytes({0x80, 0, 0, 0, 0, 0, 0, 0})), "-9223372036854775808");
    EXPECT_EQ(binary_value_text(oid::oid, bytes({0xff, 0xff, 0xff, 0xff})), "4294967295");
}

TEST(ValueText, BoolTextAndUuid) {
    EXPECT_EQ(binary_value_text(oid::boolean, bytes({1})), "true");
    EXPECT_EQ(binary_value_text(oid::boolean, bytes({0})), "false");
    EXPECT_EQ(binary_value_text(oid::text, "héllo"), "héllo");
    EXPECT_EQ(binary_value_text(oid::varchar, ""), "");
    EXPECT_EQ(binary_value_text(oid::uuid, bytes({0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45,
                                                  0x67, 0x89, 0xab, 0xcd, 0xef})),
              "12345678-9abc-def0-0123-456789abcdef");
}

TEST(ValueText, Numeric) {
    EXPECT_EQ(binary_value_text(oid::numeric, numeric(0, 0, 0, {})), "0");
    EXPECT_EQ(binary_value_text(oid::numeric, numeric(1, 0, 3, {1, 2345, 6780})), "12345.678");
    EXPECT_EQ(binary_value_text(oid::numeric, numeric(-1, 0x4000, 2, {500})), "-0.05");
    EXPECT_EQ(binary_value_text(oid::numeric, numeric(1, 0, 0, {100})), "1000000");
    EXPECT_EQ(binary_value_text(oid::numeric, numeric(0, 0, 4, {7})), "7.0000");
    EXPECT_EQ(binary_value_text(oid::numeric, numeric(0, 0xC000, 0, {})), "NaN");
    EXPECT_EQ(binary_value_text(oid::numeric, numeric(0, 0xF000, 0, {})), "-Infinity");
}

TEST(ValueText, MalformedOrUnsupportedIsNullopt) {
    EXPECT_FALSE(binary_value_text(oid::int4, bytes({0, 1})));
    EXPECT_FALSE(binary_value_text(oid::int8, ""));
    EXPECT_FALSE(binary_value_text(oid::boolean, bytes({1, 0})));
    EXPECT_FALSE(binary_value_text(oid::uuid, bytes({1, 2, 3})));
    EXPECT_FALSE(binary_value_text(oid::numeric, be16s({1, 0, 0})));           // header cut short
    EXPECT_FALSE(binary_value_text(oid::numeric, numeric(0, 0, 0, {10000})));  // digit out of range
    EXPECT_FALSE(binary_value_text(oid::numeric, numeric(0, 0x1234, 0, {1})));  // unknown sign
    EXPECT_FALSE(binary_value_text(oid::numeric, numeric(0, 0, 0, {1}) + "x"));  // trailing byte
    EXPECT_FALSE(binary_value_text(1114 /* timestamp */, bytes({0, 0, 0, 0, 0, 0, 0, 0})));
}

}  // namespace
}  // namespace pgshelf::pgwire
