// Key template parsing and value escaping.
#include "cache_rules/key_template.hpp"

#include <gtest/gtest.h>

namespace pgshelf::cache_rules {
namespace {

using Kind = KeyTemplate::Part::Kind;

TEST(KeyTemplate, Parts) {
    auto t = parse_key_template("user:{user_id}:{$2}:{db}:{role}:x");
    ASSERT_TRUE(t.has_value());
    ASSERT_EQ(t->parts.size(), 9u);
    EXPECT_EQ(t->parts[0], (KeyTemplate::Part{Kind::text, "user:", 0}));
    EXPECT_EQ(t->parts[1], (KeyTemplate::Part{Kind::column, "user_id", 0}));
    EXPECT_EQ(t->parts[3], (KeyTemplate::Part{Kind::parameter, "", 2}));
    EXPECT_EQ(t->parts[5].kind, Kind::database);
    EXPECT_EQ(t->parts[7].kind, Kind::role);
    EXPECT_EQ(t->pattern(), "user:{}:{}:{}:{}:x");
}

TEST(KeyTemplate, EscapedBraces) {
    auto t = parse_key_template("a{{b}}c");
    ASSERT_TRUE(t.has_value());
    ASSERT_EQ(t->parts.size(), 1u);
    EXPECT_EQ(t->parts[0].text, "a{b}c");
}

TEST(KeyTemplate, Errors) {
    TemplateError e;
    EXPECT_FALSE(parse_key_template("a{b", &e));
    EXPECT_EQ(e.offset, 1u);
    EXPECT_FALSE(parse_key_template("a}b", &e));
    EXPECT_FALSE(parse_key_template("{$0}", &e));
    EXPECT_FALSE(parse_key_template("{$x}", &e));
    EXPECT_FALSE(parse_key_template("{a-b}", &e));
    EXPECT_FALSE(parse_key_template("", &e));
}

TEST(KeyTemplate, PlaceholdersNeedAColonBetweenThem) {
    TemplateError e;
    // ("1-2", "3") and ("1", "2-3") would render alike.
    EXPECT_FALSE(parse_key_template("u-{$1}-{$2}", &e));
    EXPECT_EQ(e.offset, 7u);
    EXPECT_NE(e.message.find("':'"), std::string::npos);
    EXPECT_FALSE(parse_key_template("{a}{b}", &e));
    EXPECT_FALSE(parse_key_template("{db}.{role}", &e));
    EXPECT_TRUE(parse_key_template("u-{$1}:{$2}-x"));
    EXPECT_TRUE(parse_key_template("{a}:-{b}:{db}"));
    EXPECT_TRUE(parse_key_template("prefix-{a}-suffix"));  // one value between fixed texts
}

TEST(KeyTemplate, ValueEscaping) {
    std::string out;
    append_key_value(out, std::string_view("a:b{c}%d\\e f"));
    EXPECT_EQ(out, "a%3Ab%7Bc%7D%25d%5Ce%20f");
    out.clear();
    append_key_value(out, std::nullopt);
    EXPECT_EQ(out, "\\N");
    out.clear();
    append_key_value(out, std::string_view("üñí"));
    EXPECT_EQ(out, "üñí");
}

}  // namespace
}  // namespace pgshelf::cache_rules
