// Key template parsing and value escaping; see key_template.hpp.
#include "cache_rules/key_template.hpp"

#include <cctype>
#include <charconv>

namespace pgshelf::cache_rules {

std::string KeyTemplate::pattern() const {
    std::string out;
    for (const Part& part : parts) {
        if (part.kind == Part::Kind::text) {
            out += part.text;
        } else {
            out += "{}";
        }
    }
    return out;
}

std::optional<KeyTemplate> parse_key_template(std::string_view text, TemplateError* error) {
    auto fail = [&](std::string message, std::size_t offset) -> std::optional<KeyTemplate> {
        if (error != nullptr) {
            *error = {std::move(message), offset};
        }
        return std::nullopt;
    };
    KeyTemplate t;
    t.source = std::string(text);
    std::string literal;
    bool seen_placeholder = false;
    auto flush = [&] {
        if (!literal.empty()) {
            t.parts.push_back({KeyTemplate::Part::Kind::text, std::move(literal), 0});
            literal.clear();
        }
    };
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char ch = text[i];
        if (ch == '}') {
            if (i + 1 < text.size() && text[i + 1] == '}') {
                literal += '}';
                ++i;
                continue;
            }
            return fail("unmatched '}' (write '}}' for a literal brace)", i);
        }
        if (ch != '{') {
            literal += ch;
            continue;
        }
        if (i + 1 < text.size() && text[i + 1] == '{') {
            literal += '{';
            ++i;
            continue;
        }
        const std::size_t close = text.find('}', i);
        if (close == std::string_view::npos) {
            return fail("unterminated placeholder", i);
        }
        const std::string_view name = text.substr(i + 1, close - i - 1);
        // Values never contain a raw ':' (append_key_value encodes it), so a
        // ':' between two placeholders marks where one value ends; "{a}-{b}"
        // would render ("1-2", "3") and ("1", "2-3") as the same key.
        if (seen_placeholder && literal.find(':') == std::string::npos) {
            return fail("two placeholders without a ':' between them: different values could render the same key "
                        "(write e.g. '{a}:{b}')",
                        i);
        }
        seen_placeholder = true;
        flush();
        KeyTemplate::Part part;
        if (name == "db") {
            part.kind = KeyTemplate::Part::Kind::database;
        } else if (name == "role") {
            part.kind = KeyTemplate::Part::Kind::role;
        } else if (!name.empty() && name.front() == '$') {
            int number = 0;
            auto [end, ec] = std::from_chars(name.data() + 1, name.data() + name.size(), number);
            if (ec != std::errc{} || end != name.data() + name.size() || number < 1) {
                return fail("bad parameter placeholder '{" + std::string(name) + "}'", i);
            }
            part.kind = KeyTemplate::Part::Kind::parameter;
            part.parameter = number;
        } else {
            bool valid = !name.empty();
            for (char c : name) {
                valid = valid && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
            }
            if (!valid) {
                return fail("bad placeholder '{" + std::string(name) + "}': use {$n}, {column}, {db} or {role}", i);
            }
            part.kind = KeyTemplate::Part::Kind::column;
            part.text = std::string(name);
        }
        t.parts.push_back(std::move(part));
        i = close;
    }
    flush();
    if (t.parts.empty()) {
        return fail("empty key template", 0);
    }
    return t;
}

void append_key_value(std::string& out, const std::optional<std::string_view>& value) {
    if (!value) {
        out += "\\N";
        return;
    }
    static constexpr char hex[] = "0123456789ABCDEF";
    for (const char ch : *value) {
        const auto byte = static_cast<unsigned char>(ch);
        if (byte <= 0x20 || byte == 0x7f || ch == '%' || ch == ':' || ch == '{' || ch == '}' || ch == '\\') {
            out += '%';
            out += hex[byte >> 4];
            out += hex[byte & 0xf];
        } else {
            out += ch;
        }
    }
}

}  // namespace pgshelf::cache_rules
