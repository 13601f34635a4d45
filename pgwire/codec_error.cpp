// Error category "pgwire" for CodecErrc.
#include "pgwire/codec_error.hpp"

#include <string>

namespace pgshelf::pgwire {

namespace {

class CodecCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "pgwire"; }

    std::string message(int ev) const override {
        switch (static_cast<CodecErrc>(ev)) {
        case CodecErrc::length_too_small:
            return "message length is below the minimum for the message";
        case CodecErrc::message_too_large:
            return "message length exceeds the configured maximum";
        case CodecErrc::startup_too_large:
            return "startup packet exceeds the maximum startup packet size";
        case CodecErrc::truncated:
            return "message body ends before a declared field";
        case CodecErrc::trailing_bytes:
            return "message body has bytes after its last field";
        case CodecErrc::missing_terminator:
            return "string or field list is missing its NUL terminator";
        case CodecErrc::bad_count:
            return "element count is negative or exceeds the remaining bytes";
        case CodecErrc::bad_value_length:
            return "value length is below -1";
        case CodecErrc::unsupported_protocol:
            return "unsupported frontend protocol version or request code";
        case CodecErrc::bad_kind:
            return "Describe/Close kind is not 'S' or 'P'";
        }
        return "unknown pgwire codec error " + std::to_string(ev);
    }
};

}  // namespace

const std::error_category& codec_category() noexcept {
    static const CodecCategory category;
    return category;
}

std::error_code make_error_code(CodecErrc e) noexcept { return {static_cast<int>(e), codec_category()}; }

}  // namespace pgshelf::pgwire
