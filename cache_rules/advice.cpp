// Normalized statements and suggested cache rules; see advice.hpp.
#include "cache_rules/advice.hpp"

#include <pg_query.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "cache_rules/cacheability.hpp"
#include "cache_rules/parse_tree.hpp"
#include "cache_rules/rules.hpp"
#include "cache_rules/statement_shape.hpp"

namespace pgshelf::cache_rules {
namespace {

// Byte offsets of the nodes of one kind in a parsed text (sorted), with
// the parameter number for ParamRef nodes.
struct Located {
    int location = 0;
    int number = 0;
};

std::vector<Located> locate(const ParseTree& tree, const ProtobufCMessageDescriptor& descriptor) {
    std::vector<Located> out;
    for (std::size_t i = 0; i < tree.statement_count(); ++i) {
        walk(&tree.statement(i)->base, [&](const ProtobufCMessage& msg) {
            if (msg.descriptor == &pg_query__a__const__descriptor) {
                if (&descriptor == &pg_query__a__const__descriptor) {
                    out.push_back({reinterpret_cast<const PgQuery__AConst&>(msg).location, 0});
                }
            } else if (msg.descriptor == &pg_query__param_ref__descriptor) {
                if (&descriptor == &pg_query__param_ref__descriptor) {
                    const auto& ref = reinterpret_cast<const PgQuery__ParamRef&>(msg);
                    out.push_back({ref.location, ref.number});
                }
            }
            return true;
        });
    }
    std::sort(out.begin(), out.end(), [](const Located& a, const Located& b) { return a.location < b.location; });
    return out;
}

// Whether `candidate` is `original` with some literals replaced by new
// parameters (numbered above `max_existing`, each used once): same parse
// trees up to slot values, existing parameters untouched, kept literals equal.
bool same_statements(const std::vector<StatementShape>& original, std::string_view candidate, int max_existing) {
    auto shapes = analyze_statements(candidate);
    if (!shapes || shapes->size() != original.size()) {
        return false;
    }
    std::set<int> new_parameters;
    for (std::size_t i = 0; i < original.size(); ++i) {
        const StatementShape& o = original[i];
        const StatementShape& c = (*shapes)[i];
        if (o.canonical != c.canonical || o.slots.size() != c.slots.size()) {
            return false;
        }
        for (std::size_t j = 0; j < o.slots.size(); ++j) {
            const Slot& os = o.slots[j];
            const Slot& cs = c.slots[j];
            if (os.kind == Slot::Kind::parameter) {
                if (cs.kind != Slot::Kind::parameter || cs.parameter != os.parameter) {
                    return false;
                }
            } else if (cs.kind == Slot::Kind::parameter) {
                if (cs.parameter <= max_existing || !new_parameters.insert(cs.parameter).second) {
                    return false;
                }
            } else if (cs.literal != os.literal || cs.is_null != os.is_null) {
                return false;
            }
        }
    }
    return true;
}

// pg_query_normalize numbers new parameters in parse-tree order (LIMIT $2
// OFFSET $1); renumber them in text order, after the existing ones.
std::optional<std::string> renumber_in_text_order(const std::string& text, int max_existing) {
    auto tree = ParseTree::parse(text);
    if (!tree) {
        return std::nullopt;
    }
    std::string out;
    std::size_t copied = 0;
    int next = max_existing;
    for (const Located& ref : locate(*tree, pg_query__param_ref__descriptor)) {
        if (ref.number <= max_existing) {
            continue;
        }
        const auto start = static_cast<std::size_t>(ref.location);
        if (start >= text.size() || text[start] != '$') {
            return std::nullopt;
        }
        std::size_t end = start + 1;
        while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) {
            ++end;
        }
        out.append(text, copied, start - copied);
        out += '$' + std::to_string(++next);
        copied = end;
    }
    out.append(text, copied);
    return out;
}

std::string trim(std::string_view text) {
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
        text.remove_prefix(1);
    }
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
        text.remove_suffix(1);
    }
    return std::string(text);
}

// Lower-case [a-z0-9_], runs of '_' collapsed, at most 60 characters.
std::string rule_name_from(std::string_view raw) {
    std::string out;
    for (const char ch : raw) {
        const auto c = static_cast<unsigned char>(ch);
        const char mapped = std::isalnum(c) && c < 0x80 ? static_cast<char>(std::tolower(c)) : '_';
        if (mapped == '_' && (out.empty() || out.back() == '_')) {
            continue;
        }
        out += mapped;
    }
    if (out.size() > 60) {
        out.resize(60);
    }
    while (!out.empty() && out.back() == '_') {
        out.pop_back();
    }
    return out.empty() ? "query" : out;
}

// A name hint as the loader accepts it: letters, digits, '_', '-', '.'.
std::string rule_name_from_hint(std::string_view hint) {
    std::string out;
    for (const char ch : hint) {
        const auto c = static_cast<unsigned char>(ch);
        out += (std::isalnum(c) && c < 0x80) || ch == '-' || ch == '.' ? ch : '_';
    }
    return out;
}

template <typename T>
void add_unique(std::vector<T>& list, T value) {
    if (std::find(list.begin(), list.end(), value) == list.end()) {
        list.push_back(std::move(value));
    }
}

std::string derive_name(const StatementShape& shape) {
    std::vector<std::string> tables;
    for (const TableName& table : shape.tables_read) {
        add_unique(tables, table.name);
    }
    std::vector<std::string> columns;
    for (const Slot& slot : shape.slots) {
        if (slot.kind == Slot::Kind::parameter && !slot.column.empty()) {
            add_unique(columns, slot.column);
        }
    }
    std::string raw;
    for (const std::string& table : tables) {
        raw += (raw.empty() ? "" : "_") + table;
    }
    if (!columns.empty()) {
        raw += raw.empty() ? "by" : "_by";
        for (const std::string& column : columns) {
            raw += "_" + column;
        }
    }
    return rule_name_from(raw);
}

// {column} is usable for parameter $n when every value the statement
// compares with that column is $n (the loader's ambiguity rule) and the
// name is a valid placeholder that does not mean something else.
bool column_placeholder_fits(const StatementShape& shape, const Slot& slot) {
    const std::string& column = slot.column;
    if (column.empty() || column == "db" || column == "role") {
        return false;
    }
    for (const char ch : column) {
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') {
            return false;
        }
    }
    return std::all_of(shape.slots.begin(), shape.slots.end(), [&](const Slot& other) {
        return other.column != column || (other.kind == Slot::Kind::parameter && other.parameter == slot.parameter);
    });
}

// One placeholder per parameter, in parameter order (slots are in
// parse-tree order, which puts OFFSET before LIMIT).
std::string derive_key(const std::string& name, const StatementShape& shape) {
    std::map<int, const Slot*> parameters;
    for (const Slot& slot : shape.slots) {
        if (slot.kind == Slot::Kind::parameter) {
            parameters.emplace(slot.parameter, &slot);
        }
    }
    std::string key = name;
    for (const auto& [number, slot] : parameters) {
        key += column_placeholder_fits(shape, *slot) ? ":{" + slot->column + "}" : ":{$" + std::to_string(number) + "}";
    }
    return key;
}

// A TOML basic string ("..."), or a multi-line one ("""...""") when the
// text has line breaks, with exactly `text` as its value.
std::string toml_string(std::string_view text) {
    const bool multi_line = text.find('\n') != std::string_view::npos;
    std::string out = multi_line ? "\"\"\"\n" : "\"";
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (ch == '\n' && multi_line) {
            out += ch;
        } else if (ch == '\t') {
            out += ch;
        } else if (c < 0x20 || c == 0x7f) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04X", c);
            out += escaped;
        } else {
            out += ch;
        }
    }
    out += multi_line ? "\n\"\"\"" : "\"";
    return out;
}

}  // namespace

std::optional<std::string> normalize_statement(std::string_view sql, NormalizeError* error) {
    ShapeError shape_error;
    auto original = analyze_statements(sql, &shape_error);
    if (!original) {
        if (error != nullptr) {
            *error = {shape_error.message, shape_error.cursor_position};
        }
        return std::nullopt;
    }
    int max_existing = 0;
    for (const StatementShape& shape : *original) {
        max_existing = std::max(max_existing, shape.max_parameter);
    }
    const std::string text(sql);
    PgQueryNormalizeResult raw = pg_query_normalize(text.c_str());
    std::optional<std::string> normalized;
    if (raw.error == nullptr && raw.normalized_query != nullptr) {
        normalized = renumber_in_text_order(raw.normalized_query, max_existing);
    }
    pg_query_free_normalize_result(raw);
    if (normalized && same_statements(*original, *normalized, max_existing)) {
        return normalized;
    }
    // Not seen in practice; keeping every literal is always correct (a rule
    // made from it matches only these values).
    return text;
}

RuleSuggestion suggest_cache_rule(std::string_view sql, std::string_view name_hint) {
    RuleSuggestion out;
    ShapeError shape_error;
    auto shapes = analyze_statements(sql, &shape_error);
    if (!shapes || shapes->empty()) {
        out.reason = "parse_error";
        out.detail = shapes ? "no statement" : shape_error.message;
        if (!shapes && shape_error.cursor_position > 0) {
            out.detail += " at character " + std::to_string(shape_error.cursor_position);
        }
        return out;
    }
    if (shapes->size() > 1) {
        out.reason = std::string(to_string(BypassReason::multi_statement));
        out.detail = std::to_string(shapes->size()) + " statements";
        return out;
    }
    const StatementShape& shape = shapes->front();
    if (auto verdict = statement_verdict(shape); !verdict.cacheable()) {
        out.reason = std::string(to_string(verdict.reason));
        out.detail = verdict.detail;
        return out;
    }
    auto normalized = normalize_statement(sql);
    auto rule_shape = normalized ? analyze_statement(trim(*normalized)) : std::nullopt;
    if (!rule_shape) {
        out.reason = "internal";
        out.detail = "the normalized statement does not parse";
        return out;
    }
    out.query = trim(*normalized);
    out.name = name_hint.empty() ? derive_name(*rule_shape) : rule_name_from_hint(name_hint);
    out.key = derive_key(out.name, *rule_shape);
    const std::string toml = "[[cache]]\nname = " + toml_string(out.name) + "\nquery = " + toml_string(out.query) +
                             "\nkey = " + toml_string(out.key) + "\nttl = \"60s\"\n";

    // Check the promise: the rule loads, and the statement itself hits it.
    auto loaded = load_rules_text(toml, "suggestion");
    if (!loaded.ok()) {
        out.reason = "internal";
        out.detail = "the suggested rule does not load: " + loaded.errors.front().to_string();
        return out;
    }
    std::vector<std::optional<std::string>> parameters;
    for (int i = 1; i <= shape.max_parameter; ++i) {
        parameters.emplace_back(std::to_string(i));
    }
    auto values = slot_values(shape, parameters);
    if (!values || !loaded.rules->match_cache(shape, *values, {"db", "role"})) {
        out.reason = "internal";
        out.detail = "the suggested rule does not match the statement";
        return out;
    }
    out.toml = toml;
    return out;
}

}  // namespace pgshelf::cache_rules
