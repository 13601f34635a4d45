// The admin console's pure part: command parsing, statement splitting and
// the result-set encoding (text and binary).
#include <gtest/gtest.h>

#include <bit>
#include <cstring>

#include "pgwire/codec.hpp"
#include "proxy/admin_console.hpp"

namespace pgshelf::proxy {
namespace {

using Kind = ConsoleCommand::Kind;

TEST(ConsoleCommand, ShowIsCaseInsensitiveAndToleratesCommentsAndSemicolon) {
    EXPECT_EQ(parse_console_command("SHOW RULES").kind, Kind::show_rules);
    EXPECT_EQ(parse_console_command("  show\n\tstats ;").kind, Kind::show_stats);
    EXPECT_EQ(parse_console_command("/* who */ Show Clients -- now").kind, Kind::show_clients);
    EXPECT_EQ(parse_console_command("SHOW CONFIG").kind, Kind::show_config);
    EXPECT_EQ(parse_console_command("show queries").kind, Kind::show_queries);
    EXPECT_EQ(parse_console_command("SHOW HELP").kind, Kind::show_help);
}

TEST(ConsoleCommand, EmptyStatement) {
    EXPECT_EQ(parse_console_command("").kind, Kind::empty);
    EXPECT_EQ(parse_console_command("  -- nothing\n").kind, Kind::empty);
    EXPECT_EQ(parse_console_command(";").kind, Kind::empty);
}

TEST(ConsoleCommand, InvalidateRuleKeepsTheNameAsWritten) {
    const auto command = parse_console_command("invalidate rule User_Profile");
    EXPECT_EQ(command.kind, Kind::invalidate_rule);
    EXPECT_EQ(command.argument, "User_Profile");
}

TEST(ConsoleCommand, InvalidateKeyTakesAStringLiteralWithDoubledQuotes) {
    const auto command = parse_console_command("INVALIDATE KEY 'user:42:it''s'");
    EXPECT_EQ(command.kind, Kind::invalidate_key);
    EXPECT_EQ(command.argument, "user:42:it's");
}

TEST(ConsoleCommand, MalformedInvalidateSaysHowToWriteIt) {
    const auto no_literal = parse_console_command("INVALIDATE KEY user:42");
    EXPECT_EQ(no_literal.kind, Kind::error);
    EXPECT_NE(no_literal.argument.find("usage: INVALIDATE KEY"), std::string::npos);
    const auto no_name = parse_console_command("INVALIDATE RULE");
    EXPECT_EQ(no_name.kind, Kind::error);
    EXPECT_NE(no_name.argument.find("usage: INVALIDATE RULE"), std::string::npos);
    EXPECT_EQ(parse_console_command("INVALIDATE KEY 'open").kind, Kind::error);
}

TEST(ConsoleCommand, SetAndResetAreAcceptedForDrivers) {
    EXPECT_EQ(parse_console_command("SET application_name = 'x'").kind, Kind::set);
    EXPECT_EQ(parse_console_command("RESET ALL").kind, Kind::set);
    EXPECT_EQ(parse_console_command("RELOAD").kind, Kind::reload);
}

TEST(ConsoleCommand, UnknownCommandListsTheCommands) {
    const auto command = parse_console_command("SELECT * FROM pg_class");
    EXPECT_EQ(command.kind, Kind::error);
    EXPECT_NE(command.argument.find("SELECT * FROM pg_class"), std::string::npos);
    EXPECT_NE(command.argument.find("SHOW RULES"), std::string::npos);
    EXPECT_EQ(parse_console_command("SHOW RULES EXTRA").kind, Kind::error);
    EXPECT_EQ(parse_console_command("RELOAD NOW").kind, Kind::error);
}

TEST(ConsoleStatements, SplitAtSemicolonsOutsideQuotesAndComments) {
    const auto parts = split_console_statements("SHOW RULES; INVALIDATE KEY 'a;b' -- x;y\n; /* ; */ SHOW STATS;");
    ASSERT_EQ(parts.size(), 3u);
    EXPECT_EQ(parse_console_command(parts[0]).kind, Kind::show_rules);
    const auto key = parse_console_command(parts[1]);
    EXPECT_EQ(key.kind, Kind::invalidate_key);
    EXPECT_EQ(key.argument, "a;b");
    EXPECT_EQ(parse_console_command(parts[2]).kind, Kind::show_stats);
}

TEST(ConsoleStatements, BlankTextHasNoStatements) {
    EXPECT_TRUE(split_console_statements("").empty());
    EXPECT_TRUE(split_console_statements("  ;  ; -- c\n").empty());
}

TEST(ConsoleColumns, CommandsWithRowsDescribeThemOthersNone) {
    EXPECT_EQ(console_columns(Kind::show_stats).size(), 2u);
    EXPECT_EQ(console_columns(Kind::show_rules).front().name, "rule");
    EXPECT_TRUE(console_columns(Kind::reload).empty());
    EXPECT_TRUE(console_columns(Kind::invalidate_key).empty());
}

// Splits `bytes` into decoded backend messages.
std::vector<pgwire::BackendMessage> decode_all(const std::string& bytes) {
    std::vector<pgwire::BackendMessage> out;
    std::string_view rest = bytes;
    while (!rest.empty()) {
        pgwire::FrameHeader header;
        const auto peeked = pgwire::peek_header(rest, header);
        EXPECT_EQ(peeked.status, pgwire::DecodeStatus::ok);
        if (peeked.status != pgwire::DecodeStatus::ok) {
            break;
        }
        pgwire::BackendMessage message;
        EXPECT_FALSE(pgwire::decode_backend_body(header.type, rest.substr(pgwire::frame_header_size, header.body_size()), message));
        out.push_back(message);
        rest.remove_prefix(header.frame_size());
    }
    return out;
}

ResultSet sample_result() {
    using namespace console_types;
    return {{{"name", text}, {"count", int8}, {"ratio", float8}, {"on", boolean}},
            {{"a", "42", "0.25", "t"}, {"b", std::nullopt, std::nullopt, "f"}},
            "SHOW 2"};
}

TEST(ConsoleEncoding, TextRowsAndRowDescription) {
    const ResultSet result = sample_result();
    std::string out;
    encode_row_description(result.columns, {}, out);
    encode_rows(result, {}, out);
    const auto messages = decode_all(out);
    ASSERT_EQ(messages.size(), 4u);
    const auto& description = std::get<pgwire::RowDescription>(messages[0]);
    ASSERT_EQ(description.fields.size(), 4u);
    EXPECT_EQ(description.fields[1].name, "count");
    EXPECT_EQ(description.fields[1].type_oid, console_types::int8);
    EXPECT_EQ(description.fields[1].format, 0);
    const auto& first = std::get<pgwire::DataRow>(messages[1]);
    EXPECT_EQ(first.values[1], std::optional<std::string_view>("42"));
    const auto& second = std::get<pgwire::DataRow>(messages[2]);
    EXPECT_FALSE(second.values[1].has_value());
    EXPECT_EQ(std::get<pgwire::CommandComplete>(messages[3]).tag, "SHOW 2");
}

TEST(ConsoleEncoding, BinaryFormatsFollowPostgresSendFunctions) {
    const ResultSet result = sample_result();
    const ResultFormats all_binary{1};
    std::string out;
    encode_row_description(result.columns, all_binary, out);
    encode_rows(result, all_binary, out);
    const auto messages = decode_all(out);
    ASSERT_EQ(messages.size(), 4u);
    EXPECT_EQ(std::get<pgwire::RowDescription>(messages[0]).fields[2].format, 1);
    const auto& row = std::get<pgwire::DataRow>(messages[1]);
    EXPECT_EQ(row.values[0], std::optional<std::string_view>("a"));
    EXPECT_EQ(*row.values[1], std::string_view("\0\0\0\0\0\0\0\x2a", 8));
    const double quarter = 0.25;
    auto bits = std::bit_cast<std::uint64_t>(quarter);
    std::string expected(8, '\0');
    for (int i = 7; i >= 0; --i, bits >>= 8) {
        expected[static_cast<std::size_t>(i)] = static_cast<char>(bits & 0xff);
    }
    EXPECT_EQ(*row.values[2], expected);
    EXPECT_EQ(*row.values[3], std::string_view("\1", 1));
    EXPECT_FALSE(std::get<pgwire::DataRow>(messages[2]).values[1].has_value());
}

TEST(ConsoleEncoding, PerColumnFormats) {
    const ResultFormats formats{0, 1, 0, 0};
    EXPECT_FALSE(column_is_binary(formats, 0));
    EXPECT_TRUE(column_is_binary(formats, 1));
    EXPECT_FALSE(column_is_binary(formats, 9));
    EXPECT_FALSE(column_is_binary({}, 1));
    EXPECT_TRUE(column_is_binary({1}, 3));
}

TEST(ConsoleEncoding, NoColumnsIsNoData) {
    std::string out;
    encode_row_description({}, {}, out);
    const auto messages = decode_all(out);
    ASSERT_EQ(messages.size(), 1u);
    EXPECT_TRUE(std::holds_alternative<pgwire::NoData>(messages[0]));
}

}  // namespace
}  // namespace pgshelf::proxy
