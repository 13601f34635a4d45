// Rules: loading, validation errors with lines, matching and key rendering.
#include "cache_rules/rules.hpp"

#include <gtest/gtest.h>

namespace pgshelf::cache_rules {
namespace {

constexpr std::string_view example_rules = R"toml([[cache]]
name  = "user_variables"
query = "SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2"
key   = "user:{user_id}:{project_id}:variables"
ttl   = "120s"

[[cache]]
name  = "waiting_execution"
query = "SELECT id, state FROM workflow_executions WHERE project_id = $1 AND chat_id = $2 AND status = 'waiting' AND wait_type = $3"
key   = "workflow:execution:waiting:{$1}:{$2}:{wait_type}"
ttl   = "5m"

[[invalidate]]
name  = "variables_changed"
query = "UPDATE user_variables SET value = $1 WHERE user_id = $2 AND project_id = $3 AND key = $4"
keys  = ["user:{user_id}:{project_id}:variables"]
)toml";

std::shared_ptr<const RuleSet> load_ok(std::string_view text) {
    auto result = load_rules_text(text, "rules.toml");
    for (const auto& e : result.errors) {
        ADD_FAILURE() << e.to_string();
    }
    return result.rules;
}

std::vector<RuleError> load_errors(std::string_view text) {
    auto result = load_rules_text(text, "rules.toml");
    EXPECT_FALSE(result.ok());
    EXPECT_EQ(result.rules, nullptr);
    return result.errors;
}

struct Incoming {
    StatementShape shape;
    SlotValues values;
};

Incoming incoming(std::string_view sql, std::vector<std::optional<std::string>> params = {}) {
    auto shape = analyze_statement(sql);
    EXPECT_TRUE(shape.has_value()) << sql;
    auto values = slot_values(*shape, params);
    EXPECT_TRUE(values.has_value()) << sql;
    return {*shape, *values};
}

const KeyContext ctx{"bot", "app"};

TEST(Rules, LoadsTheExample) {
    auto rules = load_ok(example_rules);
    ASSERT_NE(rules, nullptr);
    ASSERT_EQ(rules->cache_rules().size(), 2u);
    EXPECT_EQ(rules->cache_rules()[0].ttl, std::chrono::seconds(120));
    EXPECT_EQ(rules->cache_rules()[1].ttl, std::chrono::minutes(5));
    ASSERT_EQ(rules->invalidate_rules().size(), 1u);
    EXPECT_EQ(rules->invalidate_rules()[0].covers, std::vector<std::size_t>{0});
}

TEST(Rules, LiteralsAndParametersRenderTheSameKey) {
    auto rules = load_ok(example_rules);
    auto simple = incoming("select key, value from user_variables where user_id = 42 and project_id = 7");
    auto extended = incoming("SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2", {"42", "7"});
    auto a = rules->match_cache(simple.shape, simple.values, ctx);
    auto b = rules->match_cache(extended.shape, extended.values, ctx);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->rule->name, "user_variables");
    EXPECT_EQ(a->rendered, "user:42:7:variables");
    EXPECT_EQ(b->rendered, a->rendered);
}

TEST(Rules, RuleLiteralsMustMatch) {
    auto rules = load_ok(example_rules);
    auto waiting = incoming(
        "SELECT id, state FROM workflow_executions WHERE project_id = 3 AND chat_id = $1 AND status = 'waiting' AND "
        "wait_type = $2",
        {"99", "message"});
    auto match = rules->match_cache(waiting.shape, waiting.values, ctx);
    ASSERT_TRUE(match);
    EXPECT_EQ(match->rendered, "workflow:execution:waiting:3:99:message");
    // Same shape, different literal: a different query, no match.
    auto done = incoming(
        "SELECT id, state FROM workflow_executions WHERE project_id = 3 AND chat_id = 5 AND status = 'done' AND "
        "wait_type = 'message'");
    EXPECT_FALSE(rules->match_cache(done.shape, done.values, ctx));
    // The literal may also arrive as a bound parameter.
    auto bound = incoming(
        "SELECT id, state FROM workflow_executions WHERE project_id = $1 AND chat_id = $2 AND status = $3 AND "
        "wait_type = $4",
        {"3", "5", "waiting", "message"});
    EXPECT_TRUE(rules->match_cache(bound.shape, bound.values, ctx));
}

TEST(Rules, NoMatchForOtherStatements) {
    auto rules = load_ok(example_rules);
    auto other = incoming("SELECT key FROM user_variables WHERE user_id = 1 AND project_id = 2");
    EXPECT_FALSE(rules->match_cache(other.shape, other.values, ctx));
}

TEST(Rules, ValuesAreEscapedSoKeysCannotCollide) {
    auto rules = load_ok(example_rules);
    auto a = incoming("SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2", {"1:2", "3"});
    auto b = incoming("SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2", {"1", "2:3"});
    auto n = incoming("SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2", {std::nullopt, "3"});
    auto ka = rules->match_cache(a.shape, a.values, ctx)->rendered;
    auto kb = rules->match_cache(b.shape, b.values, ctx)->rendered;
    auto kn = rules->match_cache(n.shape, n.values, ctx)->rendered;
    EXPECT_EQ(ka, "user:1%3A2:3:variables");
    EXPECT_NE(ka, kb);
    EXPECT_EQ(kn, "user:\\N:3:variables");
}

TEST(Rules, InvalidationRendersKeysFromTheWrite) {
    auto rules = load_ok(example_rules);
    auto write = incoming("UPDATE user_variables SET value = 'x' WHERE user_id = 42 AND project_id = 7 AND key = 'city'");
    auto match = rules->match_invalidate(write.shape, write.values, ctx);
    ASSERT_TRUE(match);
    EXPECT_EQ(match->rendered, std::vector<std::string>{"user:42:7:variables"});
}

TEST(Rules, TablesReadResolveWithOrWithoutSchema) {
    auto rules = load_ok(example_rules);
    EXPECT_EQ(rules->rules_reading({"", "user_variables"}), std::vector<std::size_t>{0});
    EXPECT_EQ(rules->rules_reading({"public", "user_variables"}), std::vector<std::size_t>{0});
    EXPECT_EQ(rules->rules_reading({"", "workflow_executions"}), std::vector<std::size_t>{1});
    EXPECT_TRUE(rules->rules_reading({"", "users"}).empty());
}

TEST(Rules, SpecialPlaceholders) {
    auto rules = load_ok(R"toml([[cache]]
name = "per_role"
query = "SELECT * FROM t WHERE id = $1"
key = "{db}:{role}:t:{$1}"
ttl = 10
)toml");
    auto q = incoming("SELECT * FROM t WHERE id = 5");
    EXPECT_EQ(rules->match_cache(q.shape, q.values, ctx)->rendered, "bot:app:t:5");
}

struct ErrorCase {
    const char* name;
    const char* toml;
    int line;
    const char* message_part;
};

class RuleErrors : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(RuleErrors, NameLineAndProblem) {
    auto errors = load_errors(GetParam().toml);
    ASSERT_FALSE(errors.empty());
    EXPECT_EQ(errors[0].line, GetParam().line) << errors[0].to_string();
    EXPECT_NE(errors[0].to_string().find(GetParam().message_part), std::string::npos) << errors[0].to_string();
    EXPECT_EQ(errors[0].to_string().rfind("rules.toml:", 0), 0u) << errors[0].to_string();
}

INSTANTIATE_TEST_SUITE_P(
    Validation, RuleErrors,
    ::testing::Values(
        ErrorCase{"syntax", "[[cache]]\nname = \"a\"\nquery = \"SELEC * FROM t\"\nkey = \"k\"\nttl = \"1s\"\n", 3,
                  "does not parse: syntax error"},
        ErrorCase{"not_a_read", "[[cache]]\nname = \"a\"\nquery = \"DELETE FROM t\"\nkey = \"k\"\nttl = \"1s\"\n", 3,
                  "not_select"},
        ErrorCase{"for_update",
                  "[[cache]]\nname = \"a\"\nquery = \"SELECT * FROM t WHERE id = $1 FOR UPDATE\"\nkey = \"{$1}\"\nttl = \"1s\"\n",
                  3, "locking_clause"},
        ErrorCase{"volatile", "[[cache]]\nname = \"a\"\nquery = \"SELECT now()\"\nkey = \"k\"\nttl = \"1s\"\n", 3,
                  "volatile_function (now)"},
        ErrorCase{"unknown_parameter",
                  "[[cache]]\nname = \"a\"\nquery = \"SELECT * FROM t WHERE id = $1\"\nkey = \"t:{$2}\"\nttl = \"1s\"\n", 4,
                  "{$2}, which the query does not have"},
        ErrorCase{"unknown_column",
                  "[[cache]]\nname = \"a\"\nquery = \"SELECT * FROM t WHERE id = $1\"\nkey = \"t:{user_id}\"\nttl = \"1s\"\n",
                  4, "{user_id}"},
        ErrorCase{"parameter_missing_from_key",
                  "[[cache]]\nname = \"a\"\nquery = \"SELECT * FROM t WHERE id = $1 AND p = $2\"\nkey = \"t:{id}\"\nttl = \"1s\"\n",
                  4, "does not include $2 (p)"},
        ErrorCase{"bad_ttl", "[[cache]]\nname = \"a\"\nquery = \"SELECT 1\"\nkey = \"k\"\nttl = \"soon\"\n", 5, "'ttl'"},
        ErrorCase{"missing_ttl", "[[cache]]\nname = \"a\"\nquery = \"SELECT 1\"\nkey = \"k\"\n", 1, "missing 'ttl'"},
        ErrorCase{"unknown_setting", "[[cache]]\nname = \"a\"\nquery = \"SELECT 1\"\nkey = \"k\"\nttl = 1\ntll = 2\n", 6,
                  "unknown setting 'tll'"},
        ErrorCase{"duplicate",
                  "[[cache]]\nname = \"a\"\nquery = \"SELECT 1\"\nkey = \"k\"\nttl = 1\n"
                  "[[cache]]\nname = \"a\"\nquery = \"SELECT 2\"\nkey = \"j\"\nttl = 1\n",
                  6, "duplicate rule name"},
        ErrorCase{"invalidate_read",
                  "[[invalidate]]\nname = \"i\"\nquery = \"SELECT 1\"\nkeys = [\"k\"]\n", 3, "must be a write"},
        ErrorCase{"invalidate_orphan_key",
                  "[[cache]]\nname = \"a\"\nquery = \"SELECT 1\"\nkey = \"k\"\nttl = 1\n"
                  "[[invalidate]]\nname = \"i\"\nquery = \"DELETE FROM t WHERE id = $1\"\nkeys = [\"other:{id}\"]\n",
                  6, "no [[cache]] rule's key"},
        ErrorCase{"bad_template", "[[cache]]\nname = \"a\"\nquery = \"SELECT 1\"\nkey = \"k{\"\nttl = 1\n", 4,
                  "unterminated placeholder"},
        ErrorCase{"toml_syntax", "[[cache]]\nname = \"a\nquery = 1\n", 2, "rules.toml:2"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Rules, VolatileOptIn) {
    auto rules = load_ok(R"toml([[cache]]
name = "clock"
query = "SELECT now()"
key = "clock"
ttl = "1s"
allow_volatile = true
)toml");
    ASSERT_NE(rules, nullptr);
}

TEST(Rules, MatchingCostDoesNotDependOnRuleCount) {
    // 2,000 rules of distinct shapes: a lookup still finds exactly one
    // candidate by shape hash (no scan over rules).
    std::string text;
    for (int i = 0; i < 2000; ++i) {
        text += "[[cache]]\nname = \"r" + std::to_string(i) + "\"\nquery = \"SELECT c" + std::to_string(i) +
                " FROM t WHERE id = $1\"\nkey = \"r" + std::to_string(i) + ":{$1}\"\nttl = \"1m\"\n";
    }
    auto rules = load_ok(text);
    ASSERT_NE(rules, nullptr);
    auto q = incoming("SELECT c1234 FROM t WHERE id = 9");
    auto match = rules->match_cache(q.shape, q.values, ctx);
    ASSERT_TRUE(match);
    EXPECT_EQ(match->rule->name, "r1234");
    EXPECT_EQ(match->rendered, "r1234:9");
}

}  // namespace
}  // namespace pgshelf::cache_rules
