// The "pgwire" error category: names, messages and error_code integration.
#include "pgwire/codec_error.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <system_error>

namespace pgshelf::pgwire {
namespace {

constexpr CodecErrc all_codes[] = {
    CodecErrc::length_too_small, CodecErrc::message_too_large, CodecErrc::startup_too_large,
    CodecErrc::truncated,        CodecErrc::trailing_bytes,    CodecErrc::missing_terminator,
    CodecErrc::bad_count,        CodecErrc::bad_value_length,  CodecErrc::unsupported_protocol,
    CodecErrc::bad_kind,
};

TEST(CodecError, CategoryName) { EXPECT_STREQ(codec_category().name(), "pgwire"); }

TEST(CodecError, CategoryIsASingleton) { EXPECT_EQ(&codec_category(), &codec_category()); }

TEST(CodecError, EveryCodeHasADistinctHumanMessage) {
    std::set<std::string> messages;
    for (const CodecErrc e : all_codes) {
        const std::error_code ec = e;  // implicit, via is_error_code_enum
        EXPECT_TRUE(ec);
        EXPECT_EQ(&ec.category(), &codec_category());
        EXPECT_EQ(ec.value(), static_cast<int>(e));
        const std::string message = ec.message();
        EXPECT_FALSE(message.empty());
        EXPECT_EQ(message.find("unknown"), std::string::npos) << message;
        messages.insert(message);
    }
    EXPECT_EQ(messages.size(), std::size(all_codes));
}

TEST(CodecError, UnknownValueStillHasAMessage) {
    const std::error_code ec(999, codec_category());
    EXPECT_NE(ec.message().find("999"), std::string::npos);
}

TEST(CodecError, ComparesWithEnum) {
    const std::error_code ec = make_error_code(CodecErrc::truncated);
    EXPECT_EQ(ec, CodecErrc::truncated);
    EXPECT_NE(ec, CodecErrc::trailing_bytes);
    EXPECT_NE(ec, std::make_error_code(std::errc::invalid_argument));
    EXPECT_EQ(ec.message(), "message body ends before a declared field");
}

}  // namespace
}  // namespace pgshelf::pgwire
