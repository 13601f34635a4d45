// explain(): what the proxy would do with one statement, and why. The
// rules mirror examples/telegram-bot so the reasons are realistic.
#include "proxy/explain.hpp"

#include <gtest/gtest.h>

namespace pgshelf::proxy {
namespace {

using cache_rules::BypassReason;

constexpr std::string_view rules_text = R"toml(
[[cache]]
name  = "vars"
query = "SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2"
key   = "user:{user_id}:{project_id}:variables"
ttl   = "2m"

[[cache]]
name  = "waiting"
query = "SELECT id FROM workflow_executions WHERE chat_id = $1 AND status = 'waiting'"
key   = "chat:{chat_id}:waiting"
ttl   = "5m"

[[invalidate]]
name  = "vars_changed"
query = "UPDATE user_variables SET value = $1 WHERE user_id = $2 AND project_id = $3 AND key = $4"
keys  = ["user:{user_id}:{project_id}:variables"]
)toml";

class Explain : public ::testing::Test {
protected:
    void SetUp() override {
        auto loaded = cache_rules::load_rules_text(rules_text, "rules.toml");
        ASSERT_TRUE(loaded.ok()) << loaded.errors.front().to_string();
        rules_ = loaded.rules;
    }
    Explanation run(std::string_view sql, std::vector<std::optional<std::string>> params = {}) {
        return explain(*rules_, {sql, std::move(params), "bot", "app"});
    }
    std::shared_ptr<const cache_rules::RuleSet> rules_;
};

TEST_F(Explain, ReadHitsRuleAndRendersKey) {
    auto e = run("select key, value from user_variables where user_id = 42 and project_id = 7");
    EXPECT_EQ(e.normalized, "select key, value from user_variables where user_id = $1 and project_id = $2");
    ASSERT_NE(e.cache_rule, nullptr);
    EXPECT_EQ(e.cache_rule->name, "vars");
    EXPECT_EQ(e.key, "user:42:7:variables");
    EXPECT_TRUE(e.verdict.cacheable());
    // The same decision as the planner: a read plan with the same key.
    ASSERT_TRUE(e.plan.read);
    EXPECT_EQ(e.plan.read->rendered, e.key);
    ASSERT_EQ(e.invalidated_by.size(), 1u);
    EXPECT_EQ(e.invalidated_by[0]->name, "vars_changed");
    ASSERT_EQ(e.fallback_tables.size(), 1u);
    EXPECT_EQ(e.fallback_tables[0].name, "user_variables");
    const std::string text = format_explanation(*rules_, e);
    EXPECT_NE(text.find("rule:        vars (rules.toml:2, ttl 120s)\n"), std::string::npos) << text;
    EXPECT_NE(text.find("key:         user:42:7:variables\n"), std::string::npos) << text;
}

TEST_F(Explain, ParametersSuppliedAndMissing) {
    const std::string sql = "SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2";
    EXPECT_EQ(run(sql, {"1", "2"}).key, "user:1:2:variables");
    auto missing = run(sql, {"1"});
    EXPECT_EQ(missing.cache_rule, nullptr);
    EXPECT_NE(missing.no_rule_reason.find("parameters are missing"), std::string::npos) << missing.no_rule_reason;
    // A rule exists: pasting another one would not help.
    EXPECT_FALSE(missing.suggestion);
}

TEST_F(Explain, LiteralsDifferNamesTheValues) {
    auto e = run("SELECT id FROM workflow_executions WHERE chat_id = 3 AND status = 'done'");
    EXPECT_EQ(e.cache_rule, nullptr);
    EXPECT_NE(e.no_rule_reason.find("rule 'waiting' has this shape, but literals differ: the rule has 'waiting' for "
                                    "status, the statement 'done'"),
              std::string::npos)
        << e.no_rule_reason;
    EXPECT_EQ(e.plan.bypass, BypassReason::no_rule);
}

TEST_F(Explain, UnknownShapeGetsASuggestion) {
    auto e = run("SELECT name FROM projects WHERE id = 3");
    EXPECT_EQ(e.no_rule_reason, "no rule has this statement's shape");
    ASSERT_TRUE(e.suggestion);
    EXPECT_NE(e.suggestion->find("key = \"projects_by_id:{id}\""), std::string::npos) << *e.suggestion;
}

TEST_F(Explain, VolatileReadHasReasonAndNoSuggestion) {
    auto e = run("SELECT * FROM sessions WHERE expires_at > now()");
    EXPECT_EQ(e.verdict.reason, BypassReason::volatile_function);
    EXPECT_EQ(e.verdict.detail, "now");
    EXPECT_FALSE(e.suggestion);
}

TEST_F(Explain, CoveredWriteRendersKeysWithoutFallback) {
    auto e = run("UPDATE user_variables SET value = 'x' WHERE user_id = 42 AND project_id = 7 AND key = 'lang'");
    EXPECT_EQ(e.verdict.reason, BypassReason::not_select);
    ASSERT_NE(e.invalidate_rule, nullptr);
    EXPECT_EQ(e.invalidate_rule->name, "vars_changed");
    EXPECT_EQ(e.invalidated_keys, std::vector<std::string>{"user:42:7:variables"});
    EXPECT_TRUE(e.fallbacks.empty());
}

TEST_F(Explain, UncoveredWriteFallsBackToWholeRule) {
    auto e = run("DELETE FROM user_variables WHERE user_id = 42");
    EXPECT_EQ(e.invalidate_rule, nullptr);
    EXPECT_EQ(e.no_invalidate_reason, "no rule has this statement's shape");
    ASSERT_EQ(e.fallbacks.size(), 1u);
    EXPECT_EQ(e.fallbacks[0].rule, "vars");
    EXPECT_EQ(e.fallbacks[0].table, "user_variables");
    const std::string text = format_explanation(*rules_, e);
    EXPECT_NE(text.find("fallback:    vars (whole rule: writes user_variables)\n"), std::string::npos) << text;
}

TEST_F(Explain, MultiStatementIsNeverCached) {
    auto e = run("SELECT 1; SELECT 2");
    EXPECT_EQ(e.verdict.reason, BypassReason::multi_statement);
    EXPECT_EQ(e.plan.bypass, BypassReason::multi_statement);
    EXPECT_EQ(e.statements.size(), 2u);
}

TEST_F(Explain, ParseErrorHasPosition) {
    auto e = run("SELECT id FORM t");
    ASSERT_TRUE(e.parse_error);
    EXPECT_NE(e.parse_error->find("at character"), std::string::npos) << *e.parse_error;
}

}  // namespace
}  // namespace pgshelf::proxy
