// Statement-level cacheability verdicts, with the reason for every "no".
#include "cache_rules/cacheability.hpp"

#include <gtest/gtest.h>

namespace pgshelf::cache_rules {
namespace {

struct VerdictCase {
    const char* sql;
    BypassReason reason;
};

class Verdicts : public ::testing::TestWithParam<VerdictCase> {};

TEST_P(Verdicts, Reason) {
    auto shape = analyze_statement(GetParam().sql);
    ASSERT_TRUE(shape.has_value()) << GetParam().sql;
    EXPECT_EQ(to_string(statement_verdict(*shape).reason), to_string(GetParam().reason)) << GetParam().sql;
}

INSTANTIATE_TEST_SUITE_P(
    Statements, Verdicts,
    ::testing::Values(
        VerdictCase{"SELECT * FROM t WHERE id = $1", BypassReason::none},
        VerdictCase{"SELECT lower(name), count(*), sum(x), coalesce(a, b) FROM t GROUP BY 1", BypassReason::none},
        VerdictCase{"SELECT to_char(created_at, 'YYYY'), json_build_object('a', 1) FROM t", BypassReason::none},
        VerdictCase{"SELECT pg_catalog.upper(name) FROM t", BypassReason::none},
        VerdictCase{"UPDATE t SET a = 1", BypassReason::not_select},
        VerdictCase{"INSERT INTO t VALUES (1)", BypassReason::not_select},
        VerdictCase{"SELECT * FROM t FOR UPDATE", BypassReason::locking_clause},
        VerdictCase{"SELECT * FROM t FOR KEY SHARE", BypassReason::locking_clause},
        VerdictCase{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", BypassReason::data_modifying_cte},
        VerdictCase{"SELECT * INTO copy FROM t", BypassReason::select_into},
        VerdictCase{"SELECT * FROM pg_temp.t", BypassReason::temp_table},
        VerdictCase{"SELECT now()", BypassReason::volatile_function},
        VerdictCase{"SELECT random()", BypassReason::volatile_function},
        VerdictCase{"SELECT nextval('s')", BypassReason::volatile_function},
        VerdictCase{"SELECT age(created_at) FROM t", BypassReason::volatile_function},
        VerdictCase{"SELECT current_setting('x')", BypassReason::volatile_function},
        VerdictCase{"SELECT my_function(1)", BypassReason::volatile_function},
        VerdictCase{"SELECT public.lower(x) FROM t", BypassReason::volatile_function},
        VerdictCase{"SELECT * FROM t WHERE d > CURRENT_DATE", BypassReason::volatile_function},
        VerdictCase{"SELECT * FROM t WHERE id IN (SELECT uid FROM u WHERE random() < 0.5)",
                    BypassReason::volatile_function}));

TEST(Cacheability, OptInAllowsVolatile) {
    auto shape = analyze_statement("SELECT now()");
    EXPECT_TRUE(statement_verdict(*shape, {.allow_volatile = true}).cacheable());
}

TEST(Cacheability, DetailNamesTheFunction) {
    auto shape = analyze_statement("SELECT a FROM t WHERE b = gen_random_uuid()");
    auto verdict = statement_verdict(*shape);
    EXPECT_EQ(verdict.reason, BypassReason::volatile_function);
    EXPECT_EQ(verdict.detail, "gen_random_uuid");
}

}  // namespace
}  // namespace pgshelf::cache_rules

namespace pgshelf::cache_rules {
namespace {

TEST(LeavesSettingsAlone, BuiltinsYesUserFunctionsNo) {
    EXPECT_TRUE(leaves_settings_alone("lower"));
    EXPECT_TRUE(leaves_settings_alone("pg_catalog.now"));
    EXPECT_TRUE(leaves_settings_alone("nextval"));
    EXPECT_TRUE(leaves_settings_alone("gen_random_uuid"));
    EXPECT_TRUE(leaves_settings_alone("random"));
    EXPECT_FALSE(leaves_settings_alone("set_tenant"));
    EXPECT_FALSE(leaves_settings_alone("app.set_tenant"));
    EXPECT_FALSE(leaves_settings_alone("public.lower"));
}

}  // namespace
}  // namespace pgshelf::cache_rules
