// Advice for operators: a statement with its literals turned into $n
// parameters, and a [[cache]] rule for a statement that no rule caches yet,
// ready to paste into the rules file. Pure functions; no I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pgshelf::cache_rules {

struct NormalizeError {
    std::string message;
    int cursor_position = 0;  // 1-based offset into the SQL text, 0 if unknown
};

// The statement text with every literal constant replaced by a $n
// placeholder (libpg_query's pg_query_normalize). Parameters the text
// already has keep their numbers; new ones are numbered after the highest
// of them, in the order they appear. The result is checked: it must parse
// to the same tree with the same existing parameters; if it does not, the
// text is returned unchanged. Whitespace and comments are kept. Nullopt
// when the text does not parse.
std::optional<std::string> normalize_statement(std::string_view sql, NormalizeError* error = nullptr);

struct RuleSuggestion {
    std::optional<std::string> toml;  // "[[cache]]\nname = ...\n": loads as is and matches the statement
    std::string name;                 // the rule's name, when there is a suggestion
    std::string query;                // the normalized statement
    std::string key;                  // the key template
    // Why there is no suggestion: a BypassReason name ("not_select",
    // "volatile_function", "multi_statement", ...) or "parse_error".
    std::string reason;
    std::string detail;  // e.g. the volatile function's name, the parser's message
};

// A [[cache]] rule for one cacheable SELECT: query = the normalized
// statement, key = the name followed by one placeholder per parameter
// ({column} where that names the value unambiguously, {$n} otherwise),
// ttl = 60s. The rule is checked before it is returned: it loads without
// errors and matches `sql` itself (with its literals, or with any values
// bound to its parameters). The name is derived from the tables read and
// the columns compared (e.g. "users_by_id_project_id"), unless `name_hint`
// is given.
RuleSuggestion suggest_cache_rule(std::string_view sql, std::string_view name_hint = {});

}  // namespace pgshelf::cache_rules
