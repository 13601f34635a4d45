// Key templates such as "user:{user_id}:{project_id}:variables": literal
// text with placeholders for a bound parameter ({$1}), a column the
// statement compares with a value ({user_id}), the database ({db}) or the
// current role ({role}). "{{" and "}}" stand for literal braces.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgshelf::cache_rules {

struct KeyTemplate {
    struct Part {
        enum class Kind { text, parameter, column, database, role };
        Kind kind = Kind::text;
        std::string text;  // literal text, or the column name
        int parameter = 0;  // for Kind::parameter
        bool operator==(const Part&) const = default;
    };
    std::string source;
    std::vector<Part> parts;

    // The template with every placeholder written as "{}": templates with
    // the same pattern address the same cache entries.
    std::string pattern() const;
};

struct TemplateError {
    std::string message;
    std::size_t offset = 0;  // into the template text
};

// Rejects two placeholders without a ':' between them: values never
// contain a raw ':', so with one the rendering is injective.
std::optional<KeyTemplate> parse_key_template(std::string_view text, TemplateError* error = nullptr);

// Appends a value to a key so that different values never render alike:
// '%', ':', '{', '}', '\', blanks and control bytes are percent-encoded;
// NULL renders as "\N", which no encoded value can produce.
void append_key_value(std::string& out, const std::optional<std::string_view>& value);

}  // namespace pgshelf::cache_rules
