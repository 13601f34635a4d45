// Error codes of the pgwire codec, with their own std::error_category.
#pragma once

#include <system_error>

namespace pgshelf::pgwire {

enum class CodecErrc {
    length_too_small = 1,      // length word below the minimum for the message
    message_too_large,         // above Limits::max_message_size
    startup_too_large,         // above Limits::max_startup_size
    truncated,                 // body ends before a declared field
    trailing_bytes,            // body has bytes after its last field
    missing_terminator,        // a C string without its NUL
    bad_count,                 // element count negative or larger than the remaining bytes allow
    bad_value_length,          // a value length below -1
    unsupported_protocol,      // startup protocol major version is not 3
    bad_kind,                  // Describe/Close kind not 'S' or 'P'
};

const std::error_category& codec_category() noexcept;
std::error_code make_error_code(CodecErrc e) noexcept;

}  // namespace pgshelf::pgwire

template <>
struct std::is_error_code_enum<pgshelf::pgwire::CodecErrc> : std::true_type {};
