// Statement shapes: what must match, what must not, and what the analyser
// finds out about tables, columns and cacheability facts.
#include "cache_rules/statement_shape.hpp"

#include <gtest/gtest.h>

namespace pgshelf::cache_rules {
namespace {

StatementShape shape(std::string_view sql) {
    ShapeError error;
    auto s = analyze_statement(sql, &error);
    EXPECT_TRUE(s.has_value()) << sql << ": " << error.message;
    return s.value_or(StatementShape{});
}

struct SamePair {
    const char* a;
    const char* b;
    bool same;
};

class ShapeEquality : public ::testing::TestWithParam<SamePair> {};

TEST_P(ShapeEquality, CanonicalFormsCompare) {
    const auto& p = GetParam();
    EXPECT_EQ(shape(p.a).canonical == shape(p.b).canonical, p.same) << p.a << "  vs  " << p.b;
    EXPECT_EQ(shape(p.a).shape_hash == shape(p.b).shape_hash, p.same);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ShapeEquality,
    ::testing::Values(
        // Whitespace, case, quoting, comments, literal vs parameter: same shape.
        SamePair{"SELECT key, value FROM user_variables WHERE user_id = $1 AND project_id = $2",
                 "select KEY , \"value\"\n  from user_variables -- c\n where user_id=42 /* x */ and project_id = 7", true},
        SamePair{"SELECT * FROM t WHERE name = $1", "SELECT * FROM t WHERE name = 'bob'", true},
        SamePair{"SELECT * FROM t WHERE a = $1", "SELECT * FROM t WHERE a = $2", true},
        // Different structure: different shape.
        SamePair{"SELECT * FROM t WHERE a = $1", "SELECT * FROM t WHERE a > $1", false},
        SamePair{"SELECT * FROM t WHERE a = $1", "SELECT * FROM u WHERE a = $1", false},
        SamePair{"SELECT * FROM t WHERE a = $1", "SELECT * FROM public.t WHERE a = $1", false},
        SamePair{"SELECT * FROM t WHERE a IN (1, 2)", "SELECT * FROM t WHERE a IN (1, 2, 3)", false},
        SamePair{"SELECT * FROM t WHERE a = $1 AND b = $2", "SELECT * FROM t WHERE b = $2 AND a = $1", false},
        SamePair{"SELECT * FROM t WHERE a = $1", "SELECT * FROM t WHERE a = $1::bigint", false},
        SamePair{"SELECT a FROM t", "SELECT a FROM t FOR UPDATE", false}));

TEST(StatementShape, SlotsCarryLiteralsParametersAndColumns) {
    auto s = shape("SELECT * FROM w WHERE project_id = $1 AND chat_id = 42 AND status = 'waiting' LIMIT 1");
    ASSERT_EQ(s.slots.size(), 4u);
    EXPECT_EQ(s.slots[0], (Slot{Slot::Kind::parameter, 1, "", false, "project_id"}));
    EXPECT_EQ(s.slots[1], (Slot{Slot::Kind::literal, 0, "42", false, "chat_id"}));
    EXPECT_EQ(s.slots[2], (Slot{Slot::Kind::literal, 0, "waiting", false, "status"}));
    EXPECT_EQ(s.slots[3], (Slot{Slot::Kind::literal, 0, "1", false, ""}));
    EXPECT_EQ(s.max_parameter, 1);
    EXPECT_EQ(s.kind, StatementKind::select);
}

TEST(StatementShape, ReversedComparisonAndQualifiedColumn) {
    auto s = shape("SELECT * FROM users u WHERE 5 = u.id AND u.project_id = $2::bigint");
    ASSERT_EQ(s.slots.size(), 2u);
    EXPECT_EQ(s.slots[0].column, "id");
    EXPECT_EQ(s.slots[1].column, "project_id");
}

TEST(StatementShape, InListValuesBelongToTheColumn) {
    auto s = shape("SELECT * FROM t WHERE id IN ($1, $2)");
    ASSERT_EQ(s.slots.size(), 2u);
    EXPECT_EQ(s.slots[0].column, "id");
    EXPECT_EQ(s.slots[1].column, "id");
}

TEST(StatementShape, NegativeNullAndStringLiterals) {
    auto s = shape("SELECT * FROM t WHERE a = -5 AND b IS DISTINCT FROM NULL AND c = E'x\\ny'");
    ASSERT_EQ(s.slots.size(), 3u);
    EXPECT_EQ(s.slots[0].literal, "-5");
    EXPECT_TRUE(s.slots[1].is_null);
    EXPECT_EQ(s.slots[2].literal, "x\ny");
}

TEST(StatementShape, UpdateAssignsColumnsAndWritesItsTable) {
    auto s = shape("UPDATE user_variables SET value = $1 WHERE user_id = $2 AND project_id = $3 AND key = $4");
    EXPECT_EQ(s.kind, StatementKind::update);
    ASSERT_EQ(s.slots.size(), 4u);
    EXPECT_EQ(s.slots[0].column, "value");
    EXPECT_EQ(s.slots[1].column, "user_id");
    EXPECT_EQ(s.slots[3].column, "key");
    EXPECT_EQ(s.tables_written, (std::vector<TableName>{{"", "user_variables"}}));
    EXPECT_TRUE(s.tables_read.empty());
}

TEST(StatementShape, InsertValuesMapToColumns) {
    auto s = shape("INSERT INTO app.transactions (user_id, project_id, amount) VALUES ($1, 7, round($3, 2))");
    EXPECT_EQ(s.kind, StatementKind::insert);
    ASSERT_EQ(s.slots.size(), 4u);
    EXPECT_EQ(s.slots[0].column, "user_id");
    EXPECT_EQ(s.slots[1].column, "project_id");
    EXPECT_EQ(s.slots[2].column, "");  // inside round(): not the column's own value
    EXPECT_EQ(s.tables_written, (std::vector<TableName>{{"app", "transactions"}}));
}

TEST(StatementShape, ReadsAndWritesAcrossJoinsSubqueriesAndCtes) {
    auto s = shape("SELECT u.balance, sum(t.amount) FROM users u JOIN transactions t ON t.user_id = u.id "
                   "WHERE u.id = $1 AND u.project_id IN (SELECT id FROM projects) GROUP BY u.balance");
    EXPECT_EQ(s.tables_read, (std::vector<TableName>{{"", "users"}, {"", "transactions"}, {"", "projects"}}));
    EXPECT_FALSE(s.data_modifying_cte);

    auto w = shape("WITH moved AS (DELETE FROM queue WHERE id = $1 RETURNING *) INSERT INTO done SELECT * FROM moved");
    EXPECT_TRUE(w.data_modifying_cte);
    EXPECT_EQ(w.kind, StatementKind::insert);
    EXPECT_NE(std::find(w.tables_written.begin(), w.tables_written.end(), TableName{"", "queue"}), w.tables_written.end());
    EXPECT_NE(std::find(w.tables_written.begin(), w.tables_written.end(), TableName{"", "done"}), w.tables_written.end());
}

TEST(StatementShape, DdlTruncateAndCopyWrite) {
    EXPECT_EQ(shape("TRUNCATE a, b").tables_written, (std::vector<TableName>{{"", "a"}, {"", "b"}}));
    EXPECT_EQ(shape("ALTER TABLE s.t ADD COLUMN x int").tables_written, (std::vector<TableName>{{"s", "t"}}));
    EXPECT_EQ(shape("DROP TABLE s.t, u").tables_written, (std::vector<TableName>{{"s", "t"}, {"", "u"}}));
    EXPECT_EQ(shape("COPY t FROM STDIN").kind, StatementKind::copy_from);
    EXPECT_EQ(shape("COPY t FROM STDIN").tables_written, (std::vector<TableName>{{"", "t"}}));
    EXPECT_EQ(shape("COPY t TO STDOUT").tables_read, (std::vector<TableName>{{"", "t"}}));
}

TEST(StatementShape, CacheabilityFacts) {
    EXPECT_TRUE(shape("SELECT * FROM t FOR SHARE").locking_clause);
    EXPECT_TRUE(shape("SELECT * INTO new_t FROM t").select_into);
    EXPECT_TRUE(shape("SELECT * FROM pg_temp.scratch").temp_table_reference);
    EXPECT_TRUE(shape("SELECT current_date").uses_time_value);
    EXPECT_FALSE(shape("SELECT current_user").uses_time_value);
    auto f = shape("SELECT lower(name), now(), pg_catalog.random() FROM t");
    EXPECT_EQ(f.functions, (std::vector<std::string>{"lower", "now", "pg_catalog.random"}));
}

TEST(StatementShape, RejectsMultipleStatementsAndSyntaxErrors) {
    ShapeError error;
    EXPECT_FALSE(analyze_statement("SELECT 1; SELECT 2", &error).has_value());
    EXPECT_EQ(error.message, "more than one statement");
    EXPECT_FALSE(analyze_statement("SELEC 1", &error).has_value());
    EXPECT_NE(error.message.find("syntax error"), std::string::npos);
    EXPECT_GT(error.cursor_position, 0);
}

}  // namespace
}  // namespace pgshelf::cache_rules
