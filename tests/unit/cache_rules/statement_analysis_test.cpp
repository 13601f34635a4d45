// Settings analysis from the parse tree.
#include "cache_rules/statement_analysis.hpp"

#include <gtest/gtest.h>

namespace pgshelf::cache_rules {
namespace {

using Kind = SettingChange::Kind;

TEST(StatementAnalysis, SetForms) {
    auto e = analyze_settings("SET search_path TO app, \"Other\", public");
    ASSERT_EQ(e.changes.size(), 1u);
    EXPECT_EQ(e.changes[0], (SettingChange{Kind::set, "search_path", "app, Other, public", false}));

    e = analyze_settings("set local statement_timeout = 5000");
    ASSERT_EQ(e.changes.size(), 1u);
    EXPECT_EQ(e.changes[0], (SettingChange{Kind::set, "statement_timeout", "5000", true}));

    e = analyze_settings("SET TIME ZONE 'UTC'");
    ASSERT_EQ(e.changes.size(), 1u);
    EXPECT_EQ(e.changes[0].name, "timezone");
    EXPECT_EQ(e.changes[0].value, "UTC");

    e = analyze_settings("RESET ROLE; SET ROLE NONE; RESET ALL");
    ASSERT_EQ(e.changes.size(), 3u);
    EXPECT_EQ(e.changes[0].kind, Kind::reset);
    EXPECT_EQ(e.changes[1].kind, Kind::reset);
    EXPECT_EQ(e.changes[1].name, "role");
    EXPECT_EQ(e.changes[2].kind, Kind::reset_all);
    EXPECT_FALSE(e.opaque);
}

TEST(StatementAnalysis, SessionAuthorization) {
    auto e = analyze_settings("SET SESSION AUTHORIZATION bob");
    ASSERT_EQ(e.changes.size(), 1u);
    EXPECT_EQ(e.changes[0].name, "session_authorization");
    EXPECT_EQ(e.changes[0].value, "bob");
}

TEST(StatementAnalysis, OpaqueStatements) {
    EXPECT_TRUE(analyze_settings("SELECT set_config('search_path', 'x', false)").opaque);
    EXPECT_TRUE(analyze_settings("SELECT * FROM t WHERE x = pg_catalog.set_config('a','b',true)").opaque);
    EXPECT_TRUE(analyze_settings("DO $$ BEGIN PERFORM 1; END $$").opaque);
    EXPECT_TRUE(analyze_settings("CALL proc()").opaque);
    EXPECT_TRUE(analyze_settings("ROLLBACK TO SAVEPOINT s").opaque);
    EXPECT_FALSE(analyze_settings("SELECT 1").opaque);
    EXPECT_FALSE(analyze_settings("ROLLBACK").opaque);
}

TEST(StatementAnalysis, NonSettingStatementsAndSyntaxErrors) {
    EXPECT_EQ(analyze_settings("UPDATE t SET x = 1"), SettingsEffect{});
    EXPECT_EQ(analyze_settings("SET search_path TO"), SettingsEffect{});
    EXPECT_EQ(analyze_settings("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"), SettingsEffect{});
}

TEST(StatementAnalysis, PrecheckSkipsPlainReads) {
    EXPECT_FALSE(may_change_settings("SELECT a, b FROM users WHERE id = $1 ORDER BY a"));
    EXPECT_FALSE(may_change_settings("INSERT INTO undo_log VALUES (1)"));
    EXPECT_TRUE(may_change_settings("set role x"));
    EXPECT_TRUE(may_change_settings("DO $$ begin end $$"));
    EXPECT_TRUE(may_change_settings("DISCARD ALL"));
    EXPECT_TRUE(may_change_settings("select Set_Config('a.b', '1', false)"));
    EXPECT_TRUE(may_change_settings("RollBack TO SAVEPOINT s"));
    EXPECT_TRUE(may_change_settings("CALL p()"));
    EXPECT_TRUE(may_change_settings("do'begin end'"));
    EXPECT_TRUE(may_change_settings("x;SET"));  // keyword at the very end
    EXPECT_FALSE(may_change_settings("SELECT 1 AS todo"));
    EXPECT_FALSE(may_change_settings("SELECT 1 AS d"));  // "do" needs a third character
    EXPECT_FALSE(may_change_settings(""));
}

}  // namespace
}  // namespace pgshelf::cache_rules
