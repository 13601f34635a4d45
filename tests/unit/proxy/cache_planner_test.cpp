// Cache decisions per request: read, write and bypass plans, and the key
// namespace, from rules + statement + session facts alone.
#include "proxy/cache_planner.hpp"

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
name  = "profile"
query = "SELECT u.balance, count(t.id) FROM users u LEFT JOIN transactions t ON t.user_id = u.id WHERE u.id = $1 GROUP BY u.balance"
key   = "user:{$1}:profile"
ttl   = "30s"

[[cache]]
name  = "public_config"
query = "SELECT value FROM config WHERE name = $1"
key   = "config:{name}"
ttl   = "1h"
share_across_roles = true

[[invalidate]]
name  = "vars_changed"
query = "UPDATE user_variables SET value = $1 WHERE user_id = $2 AND project_id = $3 AND key = $4"
keys  = ["user:{user_id}:{project_id}:variables"]

[[invalidate]]
name  = "transaction_added"
query = "INSERT INTO transactions (user_id, amount) VALUES ($1, $2)"
keys  = ["user:{user_id}:profile"]
)toml";

class Planner : public ::testing::Test {
protected:
    void SetUp() override {
        auto loaded = cache_rules::load_rules_text(rules_text, "rules.toml");
        ASSERT_TRUE(loaded.ok()) << loaded.errors.front().to_string();
        rules_ = loaded.rules;
    }
    RequestPlan plan(std::string_view sql, std::vector<std::optional<std::string>> params = {},
                     std::vector<std::int16_t> formats = {}) {
        cache_rules::ShapeCache shapes(16);
        return plan_request(*rules_, *shapes.get(sql), params, formats, facts_);
    }
    std::shared_ptr<const cache_rules::RuleSet> rules_;
    SessionFacts facts_{'I', false, false, "bot", "app", 1234, nullptr};
};

TEST_F(Planner, ReadPlanForMatchingSelect) {
    auto p = plan("SELECT key, value FROM user_variables WHERE user_id = 42 AND project_id = 7");
    ASSERT_TRUE(p.read);
    EXPECT_EQ(p.read->rule->name, "vars");
    EXPECT_EQ(p.read->rendered, "user:42:7:variables");
    EXPECT_TRUE(p.read->may_populate);
    EXPECT_FALSE(p.writes);
}

TEST_F(Planner, NoPopulateInsideTransactionButHitsAllowed) {
    facts_.transaction_status = 'T';
    auto p = plan("SELECT key, value FROM user_variables WHERE user_id = 1 AND project_id = 2");
    ASSERT_TRUE(p.read);
    EXPECT_FALSE(p.read->may_populate);
}

struct BypassCase {
    const char* name;
    char status;
    bool wrote;
    bool uncertain;
    const char* sql;
    BypassReason reason;
};

class Bypasses : public Planner, public ::testing::WithParamInterface<BypassCase> {};

TEST_P(Bypasses, Reason) {
    const auto& c = GetParam();
    facts_.transaction_status = c.status;
    facts_.transaction_wrote = c.wrote;
    facts_.settings_uncertain = c.uncertain;
    auto p = plan(c.sql);
    EXPECT_FALSE(p.read.has_value());
    EXPECT_EQ(cache_rules::to_string(p.bypass), cache_rules::to_string(c.reason));
}

constexpr const char* vars_sql = "SELECT key, value FROM user_variables WHERE user_id = 1 AND project_id = 2";

INSTANTIATE_TEST_SUITE_P(
    Session, Bypasses,
    ::testing::Values(BypassCase{"failed", 'E', false, false, vars_sql, BypassReason::failed_transaction},
                      BypassCase{"wrote", 'T', true, false, vars_sql, BypassReason::transaction_wrote},
                      BypassCase{"uncertain", 'I', false, true, vars_sql, BypassReason::settings_unknown},
                      BypassCase{"no_rule", 'I', false, false, "SELECT 1", BypassReason::no_rule},
                      BypassCase{"multi", 'I', false, false, "SELECT 1; SELECT 2", BypassReason::multi_statement},
                      BypassCase{"syntax", 'I', false, false, "SELEC 1", BypassReason::no_rule}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(Planner, TempTableShadowsRuleTable) {
    auto create = plan("CREATE TEMP TABLE user_variables (user_id int)");
    ASSERT_EQ(create.temp_tables_created, std::vector<std::string>{"user_variables"});
    std::vector<std::string> temp = create.temp_tables_created;
    facts_.temp_tables = &temp;
    auto p = plan(vars_sql);
    EXPECT_FALSE(p.read);
    EXPECT_EQ(p.bypass, BypassReason::temp_table);
}

TEST_F(Planner, ExplicitInvalidationCoversItsRule) {
    auto p = plan("UPDATE user_variables SET value = $1 WHERE user_id = $2 AND project_id = $3 AND key = $4",
                  {"x", "42", "7", "city"});
    EXPECT_TRUE(p.writes);
    EXPECT_EQ(p.write.keys, std::vector<std::string>{"user:42:7:variables"});
    EXPECT_TRUE(p.write.fallback_rules.empty());
}

TEST_F(Planner, UncoveredWriteFallsBackToTheWholeRule) {
    auto p = plan("DELETE FROM user_variables WHERE user_id = 1");
    EXPECT_TRUE(p.writes);
    EXPECT_TRUE(p.write.keys.empty());
    ASSERT_EQ(p.write.fallback_rules.size(), 1u);
    EXPECT_EQ(p.write.fallback_rules[0], "vars");
    EXPECT_EQ(p.write.fallback_tables, std::vector<std::string>{"user_variables"});
}

TEST_F(Planner, InvalidationRuleCoversOnlyTheRulesItsKeysName) {
    // The insert names the profile key; nothing else reads transactions.
    auto p = plan("INSERT INTO transactions (user_id, amount) VALUES (42, 10)");
    EXPECT_EQ(p.write.keys, std::vector<std::string>{"user:42:profile"});
    EXPECT_TRUE(p.write.fallback_rules.empty());
    // A different write to transactions is not covered: the profile rule falls back.
    auto other = plan("UPDATE transactions SET amount = 0 WHERE id = 3");
    ASSERT_EQ(other.write.fallback_rules.size(), 1u);
    EXPECT_EQ(other.write.fallback_rules[0], "profile");
}

TEST_F(Planner, WritesInsideMultiStatementQueriesAndDdl) {
    auto p = plan("BEGIN; UPDATE users SET balance = 0 WHERE id = 1; COMMIT");
    EXPECT_TRUE(p.writes);
    ASSERT_EQ(p.write.fallback_rules.size(), 1u);
    EXPECT_EQ(p.write.fallback_rules[0], "profile");
    EXPECT_EQ(plan("ALTER TABLE public.config ADD COLUMN x int").write.fallback_rules.size(), 1u);
    EXPECT_EQ(plan("TRUNCATE users, transactions").write.fallback_rules.size(), 1u);
    auto cte = plan("WITH d AS (DELETE FROM config RETURNING *) SELECT * FROM d");
    EXPECT_TRUE(cte.writes);
    EXPECT_EQ(cte.write.fallback_rules.size(), 1u);
}

TEST_F(Planner, WritesToOtherTablesInvalidateNothing) {
    auto p = plan("UPDATE audit_log SET seen = true");
    EXPECT_TRUE(p.writes);
    EXPECT_TRUE(p.write.empty());
    EXPECT_FALSE(plan("SET search_path TO app").writes);
    EXPECT_FALSE(plan("BEGIN").writes);
}

TEST_F(Planner, NamespaceSeparatesRolesSettingsAndFormats) {
    const auto base = plan(vars_sql).read->namespace_hash;
    facts_.role = "other";
    const auto other_role = plan(vars_sql).read->namespace_hash;
    EXPECT_NE(base, other_role);
    facts_.role = "app";
    facts_.settings_fingerprint = 99;
    EXPECT_NE(plan(vars_sql).read->namespace_hash, base);
    facts_.settings_fingerprint = 1234;
    facts_.database = "other_db";
    EXPECT_NE(plan(vars_sql).read->namespace_hash, base);
    facts_.database = "bot";
    EXPECT_EQ(plan(vars_sql, {}, {0}).read->namespace_hash, base);  // "all text" either way
    EXPECT_NE(plan(vars_sql, {}, {1}).read->namespace_hash, base);
}

TEST_F(Planner, SharedRuleIgnoresRole) {
    const char* sql = "SELECT value FROM config WHERE name = 'theme'";
    const auto base = plan(sql).read->namespace_hash;
    facts_.role = "someone_else";
    EXPECT_EQ(plan(sql).read->namespace_hash, base);
}

}  // namespace
}  // namespace pgshelf::proxy
