// libFuzzer target: key templates (cache_rules/key_template.hpp) and how
// render_key (cache_rules/rules.hpp) fills them in.
//
// Input, split at '\n': line 1 is the template, line 2 the database, line 3
// the role, every further line one slot value ("\N" is NULL). Missing lines
// are empty. Checked:
//  - a template that does not parse has an error message and an offset
//    within the text;
//  - one that parses keeps its text as `source`, has at least one part, and
//    written back in the template syntax ("{{", "}}", "{$n}", "{column}",
//    "{db}", "{role}") parses to the same parts and pattern;
//  - every value, the database and the role encode as append_key_value
//    promises: NULL as "\N", anything else percent-encoded ('%', ':', '{',
//    '}', '\', blanks, control bytes) so that it decodes back to itself;
//  - render_key gives the same key twice, equal to the template's text with
//    each placeholder's encoded value, and a different key when one value a
//    placeholder uses changes.
// Any violation aborts, which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache_rules/key_template.hpp"
#include "cache_rules/rules.hpp"

using namespace pgshelf::cache_rules;

namespace {

using Kind = KeyTemplate::Part::Kind;

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "key template fuzz invariant violated: %s\n", what);
    std::abort();
}

std::vector<std::string_view> split_lines(std::string_view in) {
    std::vector<std::string_view> lines;
    for (;;) {
        const std::size_t nl = in.find('\n');
        lines.push_back(in.substr(0, nl));
        if (nl == std::string_view::npos) {
            return lines;
        }
        in.remove_prefix(nl + 1);
    }
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

// append_key_value's promise for one value.
void check_encoding(const std::optional<std::string_view>& value) {
    const std::string prefix = "k:";
    std::string out = prefix;
    append_key_value(out, value);
    if (out.compare(0, prefix.size(), prefix) != 0) {
        fail("append_key_value changed what was already in the key");
    }
    const std::string_view encoded = std::string_view(out).substr(prefix.size());
    if (!value) {
        if (encoded != "\\N") {
            fail("NULL does not render as \\N");
        }
        return;
    }
    std::string decoded;
    for (std::size_t i = 0; i < encoded.size(); ++i) {
        const char ch = encoded[i];
        const auto byte = static_cast<unsigned char>(ch);
        if (byte <= 0x20 || byte == 0x7f || ch == ':' || ch == '{' || ch == '}' || ch == '\\') {
            fail("an encoded value holds a byte that must be percent-encoded");
        }
        if (ch != '%') {
            decoded += ch;
            continue;
        }
        if (i + 2 >= encoded.size()) {
            fail("'%' in an encoded value is not followed by two hex digits");
        }
        const int hi = hex_digit(encoded[i + 1]);
        const int lo = hex_digit(encoded[i + 2]);
        if (hi < 0 || lo < 0) {
            fail("'%' in an encoded value is not followed by two hex digits");
        }
        decoded += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    if (decoded != *value) {
        fail("an encoded value does not decode to the value");
    }
}

// The template written back in the template syntax.
std::string unparse(const KeyTemplate& t) {
    std::string out;
    for (const auto& part : t.parts) {
        switch (part.kind) {
        case Kind::text:
            for (const char ch : part.text) {
                out += ch;
                if (ch == '{' || ch == '}') {
                    out += ch;
                }
            }
            break;
        case Kind::parameter: out += "{$" + std::to_string(part.parameter) + "}"; break;
        case Kind::column: out += "{" + part.text + "}"; break;
        case Kind::database: out += "{db}"; break;
        case Kind::role: out += "{role}"; break;
        }
    }
    return out;
}

// Parts with adjacent literal texts joined: how the text is split into
// literal parts is not part of the contract, what it says is.
std::vector<KeyTemplate::Part> joined(const std::vector<KeyTemplate::Part>& parts) {
    std::vector<KeyTemplate::Part> out;
    for (const auto& part : parts) {
        if (part.kind == Kind::text && !out.empty() && out.back().kind == Kind::text) {
            out.back().text += part.text;
        } else {
            out.push_back(part);
        }
    }
    return out;
}

void check_parse_failure(std::string_view text, const TemplateError& error) {
    if (error.message.empty()) {
        fail("a template error without a message");
    }
    if (error.offset > text.size()) {
        fail("a template error offset past the text");
    }
    if (parse_key_template(text).has_value()) {
        fail("parse result depends on whether an error is asked for");
    }
}

void check_parsed(std::string_view text, const KeyTemplate& t) {
    if (t.source != text) {
        fail("source is not the template text");
    }
    if (t.parts.empty()) {
        fail("a template that parsed has no parts");
    }
    for (const auto& part : t.parts) {
        if (part.kind == Kind::parameter && part.parameter < 1) {
            fail("a parameter placeholder below $1");
        }
    }
    const std::string again = unparse(t);
    TemplateError error;
    const auto reparsed = parse_key_template(again, &error);
    if (!reparsed) {
        fail("the template written back does not parse");
    }
    if (joined(reparsed->parts) != joined(t.parts) || reparsed->pattern() != t.pattern()) {
        fail("the template written back parses differently");
    }
}

std::string expected_key(const BoundTemplate& bound, const SlotValues& values, const KeyContext& context) {
    std::string out;
    for (std::size_t p = 0; p < bound.key.parts.size(); ++p) {
        const auto& part = bound.key.parts[p];
        switch (part.kind) {
        case Kind::text: out += part.text; break;
        case Kind::database: append_key_value(out, context.database); break;
        case Kind::role: append_key_value(out, context.role); break;
        case Kind::parameter:
        case Kind::column: {
            const auto& value = values[static_cast<std::size_t>(bound.part_slots[p])];
            append_key_value(out, value ? std::optional<std::string_view>(*value) : std::nullopt);
            break;
        }
        }
    }
    return out;
}

void check_render(const KeyTemplate& t, SlotValues values, const KeyContext& context) {
    // Bind as the rules loader would, to slots of a made-up statement:
    // {$n} to slot n-1, each distinct {column} to the next slot, wrapping
    // around the values given (one NULL slot if none are).
    bool needs_slot = false;
    for (const auto& part : t.parts) {
        needs_slot = needs_slot || part.kind == Kind::parameter || part.kind == Kind::column;
    }
    if (needs_slot && values.empty()) {
        values.emplace_back(std::nullopt);
    }
    BoundTemplate bound{t, {}};
    std::map<std::string, int> column_slots;
    for (const auto& part : t.parts) {
        int slot = -1;
        if (part.kind == Kind::parameter) {
            slot = static_cast<int>(static_cast<std::size_t>(part.parameter - 1) % values.size());
        } else if (part.kind == Kind::column) {
            const int next = static_cast<int>(column_slots.size() % values.size());
            slot = column_slots.emplace(part.text, next).first->second;
        }
        bound.part_slots.push_back(slot);
    }

    const std::string key = render_key(bound, values, context);
    if (render_key(bound, values, context) != key) {
        fail("rendering the same values twice gives different keys");
    }
    if (key != expected_key(bound, values, context)) {
        fail("the key is not the template's text with the encoded values");
    }

    // Change one used value at a time: the key must change with it.
    std::vector<bool> done(values.size(), false);
    int changes = 0;
    for (const int slot : bound.part_slots) {
        if (slot < 0 || done[static_cast<std::size_t>(slot)] || ++changes > 8) {
            continue;
        }
        done[static_cast<std::size_t>(slot)] = true;
        auto& value = values[static_cast<std::size_t>(slot)];
        const std::optional<std::string> original = value;
        for (const std::optional<std::string>& other :
             {std::optional<std::string>(), std::optional<std::string>(""), std::optional<std::string>("\\N"),
              std::optional<std::string>(original.value_or("") + ":")}) {
            if (other == original) {
                continue;
            }
            value = other;
            if (render_key(bound, values, context) == key) {
                fail("two different values render the same key");
            }
        }
        value = original;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const std::vector<std::string_view> lines = split_lines(in);
    const std::string_view text = lines[0];
    const std::string_view database = lines.size() > 1 ? lines[1] : std::string_view();
    const std::string_view role = lines.size() > 2 ? lines[2] : std::string_view();
    SlotValues values;
    for (std::size_t i = 3; i < lines.size(); ++i) {
        check_encoding(lines[i]);
        if (lines[i] == "\\N") {
            values.emplace_back(std::nullopt);
        } else {
            values.emplace_back(std::string(lines[i]));
        }
    }
    check_encoding(std::nullopt);
    check_encoding(database);
    check_encoding(role);

    TemplateError error;
    const auto t = parse_key_template(text, &error);
    if (!t) {
        check_parse_failure(text, error);
        return 0;
    }
    check_parsed(text, *t);
    check_render(*t, std::move(values), KeyContext{database, role});
    return 0;
}
