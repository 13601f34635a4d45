// SessionState: the protocol bookkeeping caching relies on, driven by the
// message sequences PostgreSQL really produces.
#include "proxy/session_state.hpp"

#include <gtest/gtest.h>

namespace pgshelf::proxy {
namespace {

// Drives a successful extended-protocol round: Parse/Bind/Execute/Sync.
void run_extended(SessionState& s, std::string_view stmt, std::string_view sql, std::string_view tag = "SELECT 1") {
    s.on_parse(stmt, sql, {});
    s.on_bind("", stmt);
    s.on_execute("", 0);
    s.on_sync();
    s.on_parse_complete();
    s.on_bind_complete();
    s.on_command_complete(tag);
    s.on_ready_for_query('I');
}

void run_simple(SessionState& s, std::string_view sql, std::string_view tag, char status) {
    s.on_query(sql);
    s.on_command_complete(tag);
    s.on_ready_for_query(status);
}

TEST(SessionState, SimpleQueryTracksTransactionStatus) {
    SessionState s;
    EXPECT_EQ(s.transaction_status(), 'I');
    run_simple(s, "BEGIN", "BEGIN", 'T');
    EXPECT_EQ(s.transaction_status(), 'T');
    s.on_query("SELECT 1/0");
    s.on_error();
    s.on_ready_for_query('E');
    EXPECT_EQ(s.transaction_status(), 'E');
    run_simple(s, "ROLLBACK", "ROLLBACK", 'I');
    EXPECT_EQ(s.transaction_status(), 'I');
    EXPECT_TRUE(s.pending().empty());
    EXPECT_EQ(s.desyncs(), 0u);
}

TEST(SessionState, NamedStatementsSurviveAndCloseRemovesThem) {
    SessionState s;
    run_extended(s, "s1", "SELECT $1::int");
    ASSERT_NE(s.statement("s1"), nullptr);
    EXPECT_EQ(s.statement("s1")->sql, "SELECT $1::int");
    // The unnamed portal is gone at the end of the implicit transaction.
    EXPECT_EQ(s.portal(""), nullptr);
    s.on_close('S', "s1");
    s.on_sync();
    EXPECT_EQ(s.statement("s1"), nullptr);
    s.on_close_complete();
    s.on_ready_for_query('I');
    EXPECT_EQ(s.statement("s1"), nullptr);
    EXPECT_EQ(s.desyncs(), 0u);
}

TEST(SessionState, PipelinedRequestsAreAnsweredInOrder) {
    SessionState s;
    for (int i = 0; i < 3; ++i) {
        s.on_parse("", "SELECT 1", {});
        s.on_bind("", "");
        s.on_describe('P', "");
        s.on_execute("", 0);
    }
    s.on_sync();
    EXPECT_EQ(s.pending().size(), 13u);
    EXPECT_EQ(s.pending_syncs(), 1u);
    for (int i = 0; i < 3; ++i) {
        s.on_parse_complete();
        s.on_bind_complete();
        s.on_row_description();
        s.on_command_complete("SELECT 1");
    }
    EXPECT_EQ(s.pending().size(), 1u);
    s.on_ready_for_query('I');
    EXPECT_TRUE(s.pending().empty());
    EXPECT_EQ(s.desyncs(), 0u);
}

TEST(SessionState, ErrorSkipsToSyncAndUndoesOptimisticStatements) {
    SessionState s;
    s.on_parse("a", "SELECT 1", {});
    s.on_parse("b", "SELECT nope", {});
    s.on_parse("c", "SELECT 3", {});
    s.on_bind("p", "c");
    s.on_sync();
    ASSERT_NE(s.statement("c"), nullptr);
    s.on_parse_complete();  // a
    s.on_error();           // b fails: c and the bind are never executed
    EXPECT_NE(s.statement("a"), nullptr);
    EXPECT_EQ(s.statement("b"), nullptr);
    EXPECT_EQ(s.statement("c"), nullptr);
    EXPECT_EQ(s.portal("p"), nullptr);
    ASSERT_EQ(s.pending().size(), 1u);
    EXPECT_EQ(s.pending().front().kind, RequestKind::sync);
    s.on_ready_for_query('I');
    EXPECT_TRUE(s.pending().empty());
    EXPECT_EQ(s.desyncs(), 0u);
}

TEST(SessionState, ErrorBeforeSyncWasSentSkipsLaterMessages) {
    SessionState s;
    s.on_parse("a", "SELECT nope", {});
    s.on_execute("", 0);
    s.on_error();
    EXPECT_TRUE(s.skipping_to_sync());
    // Sent after the error: the server discards them.
    s.on_parse("late", "SELECT 1", {});
    s.on_query("SELECT 2");
    EXPECT_EQ(s.statement("late"), nullptr);
    EXPECT_TRUE(s.pending().empty());
    s.on_sync();
    EXPECT_FALSE(s.skipping_to_sync());
    s.on_ready_for_query('I');
    EXPECT_TRUE(s.pending().empty());
    EXPECT_EQ(s.desyncs(), 0u);
}

TEST(SessionState, ReparsingExistingNameFailsAndKeepsOriginal) {
    SessionState s;
    run_extended(s, "s", "SELECT 1");
    s.on_parse("s", "SELECT 2", {});
    s.on_sync();
    s.on_error();  // 42P05 prepared statement "s" already exists
    s.on_ready_for_query('I');
    ASSERT_NE(s.statement("s"), nullptr);
    EXPECT_EQ(s.statement("s")->sql, "SELECT 1");
}

TEST(SessionState, SimpleQueryDestroysUnnamedStatement) {
    SessionState s;
    s.on_parse("", "SELECT 1", {});
    s.on_sync();
    s.on_parse_complete();
    s.on_ready_for_query('I');
    ASSERT_NE(s.statement(""), nullptr);
    run_simple(s, "SELECT 2", "SELECT 1", 'I');
    EXPECT_EQ(s.statement(""), nullptr);
}

TEST(SessionState, DescribeStatementAndPortalSuspended) {
    SessionState s;
    s.on_parse("s", "SELECT generate_series(1,10)", {});
    s.on_describe('S', "s");
    s.on_bind("p", "s");
    s.on_execute("p", 3);
    s.on_parse_complete();
    s.on_parameter_description();
    s.on_row_description();
    s.on_bind_complete();
    s.on_portal_suspended();
    EXPECT_TRUE(s.pending().empty());
    EXPECT_NE(s.portal("p"), nullptr);
    s.on_execute("p", 0);
    s.on_sync();
    s.on_command_complete("SELECT 7");
    s.on_ready_for_query('I');
    EXPECT_EQ(s.portal("p"), nullptr);
    EXPECT_EQ(s.desyncs(), 0u);
}

TEST(SessionState, ParameterStatusIsRecorded) {
    SessionState s;
    s.on_parameter_status("TimeZone", "UTC");
    s.on_parameter_status("TimeZone", "Europe/Berlin");
    s.on_parameter_status("session_authorization", "alice");
    EXPECT_EQ(s.parameter("TimeZone"), "Europe/Berlin");
    EXPECT_EQ(s.current_role(), "alice");
    EXPECT_FALSE(s.parameter("nope").has_value());
}

TEST(SessionState, SetRoleAndResetRole) {
    SessionState s;
    s.on_parameter_status("session_authorization", "alice");
    run_simple(s, "SET ROLE reader", "SET", 'I');
    EXPECT_EQ(s.current_role(), "reader");
    run_simple(s, "RESET ROLE", "RESET", 'I');
    EXPECT_EQ(s.current_role(), "alice");
    run_simple(s, "set role  \"Writer\"", "SET", 'I');
    EXPECT_EQ(s.current_role(), "Writer");
    run_simple(s, "SET ROLE NONE", "SET", 'I');
    EXPECT_EQ(s.current_role(), "alice");
}

TEST(SessionState, SetInsideRolledBackTransactionIsUndone) {
    SessionState s;
    run_simple(s, "SET search_path TO a, b", "SET", 'I');
    EXPECT_EQ(s.setting("search_path"), "a, b");
    run_simple(s, "BEGIN", "BEGIN", 'T');
    run_simple(s, "SET search_path = c", "SET", 'T');
    EXPECT_EQ(s.setting("search_path"), "c");
    run_simple(s, "ROLLBACK", "ROLLBACK", 'I');
    EXPECT_EQ(s.setting("search_path"), "a, b");
}

TEST(SessionState, CommitOfFailedTransactionIsARollback) {
    SessionState s;
    run_simple(s, "BEGIN", "BEGIN", 'T');
    run_simple(s, "SET search_path = c", "SET", 'T');
    s.on_query("SELECT 1/0");
    s.on_error();
    s.on_ready_for_query('E');
    run_simple(s, "COMMIT", "ROLLBACK", 'I');
    EXPECT_FALSE(s.setting("search_path").has_value());
}

TEST(SessionState, SetLocalLastsUntilTransactionEnd) {
    SessionState s;
    run_simple(s, "BEGIN", "BEGIN", 'T');
    run_simple(s, "SET LOCAL search_path = tmp", "SET", 'T');
    EXPECT_EQ(s.setting("search_path"), "tmp");
    run_simple(s, "COMMIT", "COMMIT", 'I');
    EXPECT_FALSE(s.setting("search_path").has_value());
}

TEST(SessionState, ExtendedSetAppliesAtExecute) {
    SessionState s;
    run_extended(s, "", "SET search_path TO app", "SET");
    EXPECT_EQ(s.setting("search_path"), "app");
    run_extended(s, "", "RESET search_path", "RESET");
    EXPECT_FALSE(s.setting("search_path").has_value());
}

TEST(SessionState, DiscardAllResetsEverything) {
    SessionState s;
    s.on_parameter_status("session_authorization", "alice");
    run_simple(s, "SET ROLE bob; SET search_path = x", "SET", 'I');
    EXPECT_EQ(s.current_role(), "bob");
    run_simple(s, "DISCARD ALL", "DISCARD ALL", 'I');
    EXPECT_EQ(s.current_role(), "alice");
    EXPECT_FALSE(s.setting("search_path").has_value());
}

TEST(SessionState, SetConfigMakesSettingsUncertain) {
    SessionState s;
    run_simple(s, "SELECT set_config('search_path', 'x', false)", "SELECT 1", 'I');
    EXPECT_TRUE(s.settings_uncertain());
    s.clear_settings_uncertain();
    run_simple(s, "SELECT 1", "SELECT 1", 'I');
    EXPECT_FALSE(s.settings_uncertain());
}

TEST(SessionState, PrefixOfAHugeStatementThatMayChangeSettingsMakesThemUncertain) {
    SessionState s;
    // Only the first bytes of a statement too large to analyse: a SET cut
    // short must not parse as "no change".
    s.on_query("SET search_path = 'aaaa", false);
    s.on_command_complete("SET");
    s.on_ready_for_query('I');
    EXPECT_TRUE(s.settings_uncertain());
}

TEST(SessionState, HugeParsedStatementIsMarkedUnanalysed) {
    SessionState s;
    s.on_parse("big", "UPDATE t SET v = 'aaaa", {}, false);
    s.on_parse("small", "SELECT 1", {});
    ASSERT_NE(s.statement("big"), nullptr);
    EXPECT_TRUE(s.statement("big")->unanalysed);
    EXPECT_TRUE(s.statement("big")->sql.empty());
    EXPECT_FALSE(s.statement("small")->unanalysed);
}

TEST(SessionState, UnnamedStatementsInTurnKeepTheirOwnSettingsAnalysis) {
    // The analysis of recent texts is reused; each text must still get its own,
    // also once more texts went by than are remembered.
    SessionState s;
    const std::vector<std::string> texts = {"SET search_path TO a", "SELECT 1", "SET LOCAL role TO r",
                                            "SELECT set_config('x', 'y', false)", "SELECT 2", "SET TimeZone = 'UTC'"};
    for (int round = 0; round < 3; ++round) {
        for (const std::string& sql : texts) {
            s.on_parse("", sql, {});
            s.on_parse_complete();
            const PreparedStatement* statement = s.statement("");
            ASSERT_NE(statement, nullptr);
            const auto fresh = cache_rules::analyze_settings(sql);
            const bool scanned = cache_rules::may_change_settings(sql);
            EXPECT_EQ(statement->settings, scanned ? fresh.changes : std::vector<cache_rules::SettingChange>{}) << sql;
            EXPECT_EQ(statement->settings_opaque, scanned && fresh.opaque) << sql;
        }
    }
    EXPECT_EQ(s.statement("")->settings.size(), 1u);  // the last text, SET TimeZone
}

TEST(SessionState, ErrorInsideMultiStatementSetMakesSettingsUncertain) {
    SessionState s;
    s.on_query("SET search_path = a; SELECT 1/0");
    s.on_command_complete("SET");
    s.on_error();
    s.on_ready_for_query('I');
    EXPECT_TRUE(s.settings_uncertain());
    EXPECT_FALSE(s.setting("search_path").has_value());
}

TEST(SessionState, UnexpectedAnswerCountsDesyncAndRecoversAtReadyForQuery) {
    SessionState s;
    s.on_bind_complete();  // nothing pending
    EXPECT_EQ(s.desyncs(), 1u);
    s.on_query("SELECT 1");
    s.on_ready_for_query('I');
    EXPECT_TRUE(s.pending().empty());
}

}  // namespace
}  // namespace pgshelf::proxy

namespace pgshelf::proxy {
namespace {

TEST(SessionStateStartup, OptionsSetTheInitialRoleAndSettings) {
    SessionState s;
    s.on_parameter_status("session_authorization", "alice");
    s.on_startup_parameter("options", "-c role=bob  -csearch_path=s1,public --extra-float-digits=-2 -c x=a\\ b");
    EXPECT_EQ(s.current_role(), "bob");
    EXPECT_EQ(s.startup_setting("search_path"), "s1,public");
    EXPECT_EQ(s.startup_setting("extra_float_digits"), "-2");
    EXPECT_EQ(s.startup_setting("x"), "a b");
    run_simple(s, "SET ROLE carol", "SET", 'I');
    EXPECT_EQ(s.current_role(), "carol");
    run_simple(s, "RESET ROLE", "RESET", 'I');
    EXPECT_EQ(s.current_role(), "bob");  // back to the session's starting role
}

TEST(SessionStateStartup, StartupParametersChangeTheFingerprint) {
    SessionState a;
    SessionState b;
    SessionState c;
    a.on_startup_parameter("options", "-csearch_path=s1");
    b.on_startup_parameter("options", "-csearch_path=s2");
    EXPECT_NE(a.settings_fingerprint(), b.settings_fingerprint());
    EXPECT_NE(a.settings_fingerprint(), c.settings_fingerprint());
    c.on_startup_parameter("search_path", "s1");  // a setting sent as its own startup parameter
    EXPECT_EQ(c.startup_setting("search_path"), "s1");
}

}  // namespace
}  // namespace pgshelf::proxy
