// Advice: normalized statements and suggested [[cache]] rules. A suggestion
// is only useful if it loads and then catches the statement it was made
// for, so every suggestion test checks both through the real loader and
// matcher (not through the suggester's own self-check).
#include "cache_rules/advice.hpp"

#include <gtest/gtest.h>

#include "cache_rules/rules.hpp"

namespace pgshelf::cache_rules {
namespace {

using Params = std::vector<std::optional<std::string>>;

std::string normalized(std::string_view sql) {
    auto out = normalize_statement(sql);
    EXPECT_TRUE(out.has_value()) << sql;
    return out.value_or("");
}

TEST(Normalize, LiteralsBecomeParametersInTextOrder) {
    EXPECT_EQ(normalized("SELECT a FROM t WHERE x = 5 AND y = 'it''s' AND z = -2.5"),
              "SELECT a FROM t WHERE x = $1 AND y = $2 AND z = $3");
    // pg_query_normalize itself numbers these LIMIT $2 OFFSET $1.
    EXPECT_EQ(normalized("SELECT a FROM t LIMIT 10 OFFSET 20"), "SELECT a FROM t LIMIT $1 OFFSET $2");
}

TEST(Normalize, ExistingParametersKeepTheirNumbers) {
    EXPECT_EQ(normalized("SELECT a FROM t WHERE x = $1 AND y = 5"), "SELECT a FROM t WHERE x = $1 AND y = $2");
    // New parameters go after the highest existing one, never reuse it.
    EXPECT_EQ(normalized("SELECT a FROM t WHERE x = 3 AND y = $2"), "SELECT a FROM t WHERE x = $3 AND y = $2");
}

TEST(Normalize, TypedLiteralsAndNegativeNumbers) {
    // libpg_query parses `interval $1` (a typed literal's parameter form) to
    // the same tree, and "- 3" is one constant, so one parameter.
    EXPECT_EQ(normalized("SELECT id FROM jobs WHERE age > interval '1 day' AND kind = - 3"),
              "SELECT id FROM jobs WHERE age > interval $1 AND kind = $2");
}

TEST(Normalize, KeepsCommentsAndHandlesSeveralStatements) {
    EXPECT_EQ(normalized("select 1 /* one */; select 'two'"), "select $1 /* one */; select $2");
}

TEST(Normalize, SyntaxErrorHasAPosition) {
    NormalizeError error;
    EXPECT_FALSE(normalize_statement("SELECT a FORM t WHERE", &error));
    EXPECT_NE(error.message.find("syntax error"), std::string::npos) << error.message;
    EXPECT_GT(error.cursor_position, 0);
}

struct Checked {
    std::string rendered;
    std::string name;
};

// Loads the suggestion with the real loader and matches `sql` with `params`.
Checked load_and_match(const RuleSuggestion& s, std::string_view sql, const Params& params = {}) {
    if (!s.toml) {
        ADD_FAILURE() << "no suggestion for " << sql << ": " << s.reason << " " << s.detail;
        return {};
    }
    auto loaded = load_rules_text(*s.toml, "suggested.toml");
    for (const auto& e : loaded.errors) {
        ADD_FAILURE() << e.to_string() << "\n" << *s.toml;
    }
    if (!loaded.ok()) {
        return {};
    }
    auto shape = analyze_statement(sql);
    auto values = shape ? slot_values(*shape, params) : std::nullopt;
    if (!values) {
        ADD_FAILURE() << "cannot analyse " << sql;
        return {};
    }
    auto match = loaded.rules->match_cache(*shape, *values, {"bot", "app"});
    if (!match) {
        ADD_FAILURE() << "suggestion does not match " << sql << "\n" << *s.toml;
        return {};
    }
    return {match->rendered, match->rule->name};
}

TEST(Suggest, LiteralsGiveColumnNamedKey) {
    const std::string sql = "SELECT id, name FROM users WHERE id = 42 AND project_id = 7";
    auto s = suggest_cache_rule(sql);
    EXPECT_EQ(s.toml,
              "[[cache]]\n"
              "name = \"users_by_id_project_id\"\n"
              "query = \"SELECT id, name FROM users WHERE id = $1 AND project_id = $2\"\n"
              "key = \"users_by_id_project_id:{id}:{project_id}\"\n"
              "ttl = \"60s\"\n");
    EXPECT_EQ(load_and_match(s, sql).rendered, "users_by_id_project_id:42:7");
    // The same rule serves the statement with other literals, keyed apart.
    EXPECT_EQ(load_and_match(s, "select id, name from users where id = 43 and project_id = 7").rendered,
              "users_by_id_project_id:43:7");
}

TEST(Suggest, ParametersMatchWithBoundValues) {
    const std::string sql = "SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2";
    auto s = suggest_cache_rule(sql);
    EXPECT_EQ(s.query, sql);
    EXPECT_EQ(s.key, "user_variables_by_user_id_project_id:{user_id}:{project_id}");
    EXPECT_EQ(load_and_match(s, sql, {"42", "7"}).rendered, "user_variables_by_user_id_project_id:42:7");
}

TEST(Suggest, ParametersMixedWithLiterals) {
    // $2 exists, so the literal becomes $3; $1 is not in the statement.
    const std::string sql = "SELECT * FROM t WHERE a = $2 AND b = 'x'";
    auto s = suggest_cache_rule(sql);
    EXPECT_EQ(s.query, "SELECT * FROM t WHERE a = $2 AND b = $3");
    EXPECT_EQ(load_and_match(s, sql, {"unused", "p"}).rendered, "t_by_a_b:p:x");
}

TEST(Suggest, JoinNamesEveryTable) {
    const std::string sql =
        "SELECT u.name, count(t.id) FROM users u JOIN transactions t ON t.user_id = u.id WHERE u.id = 5 GROUP BY u.name";
    auto s = suggest_cache_rule(sql);
    EXPECT_EQ(s.name, "users_transactions_by_id");
    EXPECT_EQ(load_and_match(s, sql).rendered, "users_transactions_by_id:5");
}

TEST(Suggest, InListUsesPositionalPlaceholders) {
    // {id} would be ambiguous (three values are compared with id).
    const std::string sql = "SELECT * FROM users WHERE id IN (1, 2, 3)";
    auto s = suggest_cache_rule(sql);
    EXPECT_EQ(s.key, "users_by_id:{$1}:{$2}:{$3}");
    EXPECT_EQ(load_and_match(s, sql).rendered, "users_by_id:1:2:3");
    EXPECT_EQ(load_and_match(s, "SELECT * FROM users WHERE id IN (1, 2, 4)").rendered, "users_by_id:1:2:4");
}

TEST(Suggest, OrderByLimitOffsetAreKeyed) {
    const std::string sql = "SELECT id FROM posts WHERE author_id = 9 ORDER BY created_at DESC LIMIT 10 OFFSET 20";
    auto s = suggest_cache_rule(sql);
    EXPECT_EQ(s.query, "SELECT id FROM posts WHERE author_id = $1 ORDER BY created_at DESC LIMIT $2 OFFSET $3");
    EXPECT_EQ(s.key, "posts_by_author_id:{author_id}:{$2}:{$3}");
    EXPECT_EQ(load_and_match(s, sql).rendered, "posts_by_author_id:9:10:20");
}

TEST(Suggest, StringLiteralsWithQuotes) {
    const std::string sql = R"(SELECT id FROM users WHERE name = 'O''Brien' AND note = E'a\'b')";
    auto s = suggest_cache_rule(sql);
    EXPECT_EQ(s.query, "SELECT id FROM users WHERE name = $1 AND note = $2");
    EXPECT_EQ(load_and_match(s, sql).rendered, "users_by_name_note:O'Brien:a'b");
}

TEST(Suggest, QuotedIdentifiersAreEscapedInToml) {
    const std::string sql = R"(SELECT "Name" FROM "Users" WHERE "Id" = 1)";
    auto s = suggest_cache_rule(sql);
    ASSERT_TRUE(s.toml);
    EXPECT_NE(s.toml->find(R"(query = "SELECT \"Name\" FROM \"Users\" WHERE \"Id\" = $1")"), std::string::npos)
        << *s.toml;
    EXPECT_EQ(load_and_match(s, sql).rendered, "users_by_id:1");
}

TEST(Suggest, MultiLineStatementUsesMultiLineString) {
    const std::string sql = "SELECT id\nFROM workflow_executions\nWHERE project_id = 3 AND status = 'waiting'\n";
    auto s = suggest_cache_rule(sql);
    ASSERT_TRUE(s.toml);
    EXPECT_NE(s.toml->find("query = \"\"\"\nSELECT id\nFROM workflow_executions\n"), std::string::npos) << *s.toml;
    EXPECT_EQ(load_and_match(s, sql).rendered, "workflow_executions_by_project_id_status:3:waiting");
}

TEST(Suggest, ColumnsNamedLikeSpecialPlaceholdersUseDollarN) {
    // {role} would render the session's role, not the compared value.
    const std::string sql = "SELECT id FROM members WHERE role = 'admin' AND db = 'x'";
    auto s = suggest_cache_rule(sql);
    EXPECT_EQ(s.key, "members_by_role_db:{$1}:{$2}");
    EXPECT_EQ(load_and_match(s, sql).rendered, "members_by_role_db:admin:x");
}

TEST(Suggest, RangeOnOneColumn) {
    const std::string sql = "SELECT count(*) FROM events WHERE ts >= 5 AND ts < 10";
    auto s = suggest_cache_rule(sql);
    EXPECT_EQ(s.key, "events_by_ts:{$1}:{$2}");
    EXPECT_EQ(load_and_match(s, sql).rendered, "events_by_ts:5:10");
}

TEST(Suggest, TypedLiteralIsKeyed) {
    const std::string sql = "SELECT id FROM jobs WHERE age > interval '1 day' AND kind = 3";
    auto s = suggest_cache_rule(sql);
    EXPECT_EQ(load_and_match(s, sql).rendered, "jobs_by_age_kind:1%20day:3");
}

TEST(Suggest, NameHintOverrides) {
    const std::string sql = "SELECT id FROM users WHERE id = 1";
    auto s = suggest_cache_rule(sql, "user by id!");
    EXPECT_EQ(s.name, "user_by_id_");
    EXPECT_EQ(load_and_match(s, sql).name, "user_by_id_");
}

TEST(Suggest, LongNamesAreCut) {
    const std::string sql =
        "SELECT 1 FROM a_very_long_table_name_number_one, a_very_long_table_name_number_two WHERE some_column = 1";
    auto s = suggest_cache_rule(sql);
    EXPECT_LE(s.name.size(), 60u);
    EXPECT_EQ(s.name.back() != '_', true);
    load_and_match(s, sql);
}

TEST(Suggest, VolatileFunctionGivesReason) {
    auto s = suggest_cache_rule("SELECT * FROM sessions WHERE expires_at > now()");
    EXPECT_FALSE(s.toml);
    EXPECT_EQ(s.reason, "volatile_function");
    EXPECT_EQ(s.detail, "now");
}

TEST(Suggest, UpdateGivesReason) {
    auto s = suggest_cache_rule("UPDATE users SET name = 'x' WHERE id = 1");
    EXPECT_FALSE(s.toml);
    EXPECT_EQ(s.reason, "not_select");
}

TEST(Suggest, MultiStatementGivesReason) {
    auto s = suggest_cache_rule("SELECT 1; SELECT 2");
    EXPECT_FALSE(s.toml);
    EXPECT_EQ(s.reason, "multi_statement");
}

TEST(Suggest, SyntaxErrorGivesReason) {
    auto s = suggest_cache_rule("SELEC 1");
    EXPECT_FALSE(s.toml);
    EXPECT_EQ(s.reason, "parse_error");
    EXPECT_NE(s.detail.find("at character 1"), std::string::npos) << s.detail;
}

}  // namespace
}  // namespace pgshelf::cache_rules
