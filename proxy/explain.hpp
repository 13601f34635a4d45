// What pgshelf would do with one statement under a rule set: the statement
// normalized, its kind and tables, the cacheability verdict, the cache rule
// it hits and the key it renders (or why no rule matches), and for writes
// the [[invalidate]] rule, the keys it renders and the table fallback. The
// read/write decision is proxy::plan_request's, so the explanation says
// exactly what the proxy does (for a session outside a transaction).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache_rules/rules.hpp"
#include "proxy/cache_planner.hpp"

namespace pgshelf::proxy {

struct ExplainInput {
    std::string_view sql;
    std::vector<std::optional<std::string>> parameters;  // text form, $1 first; nullopt = NULL
    std::string_view database;
    std::string_view role;
};

struct Explanation {
    // Set when the text does not parse; nothing else is then.
    std::optional<std::string> parse_error;  // the parser's message, with "at character N"

    std::string normalized;
    struct Statement {
        cache_rules::StatementKind kind = cache_rules::StatementKind::other;
        std::vector<cache_rules::TableName> tables_read;
        std::vector<cache_rules::TableName> tables_written;
    };
    std::vector<Statement> statements;
    cache_rules::Verdict verdict;  // statement-level (a matched rule's allow_volatile counts)
    RequestPlan plan;              // what the proxy does

    // Reads. Pointers refer into the RuleSet explained with.
    const cache_rules::CacheRule* cache_rule = nullptr;
    std::string key;            // rendered for the given values
    std::string no_rule_reason;  // when a single SELECT matches no rule
    std::vector<const cache_rules::InvalidateRule*> invalidated_by;  // rules whose keys cover cache_rule
    std::vector<cache_rules::TableName> fallback_tables;              // cache_rule's tables: other writes drop it whole

    // Writes.
    const cache_rules::InvalidateRule* invalidate_rule = nullptr;
    std::string no_invalidate_reason;
    std::vector<std::string> invalidated_keys;
    struct Fallback {
        std::string rule;
        std::string table;
    };
    std::vector<Fallback> fallbacks;  // cache rules invalidated whole, and the written table causing it

    // A rule to paste for a cacheable SELECT no rule matches.
    std::optional<std::string> suggestion;
};

Explanation explain(const cache_rules::RuleSet& rules, const ExplainInput& input);

// Readable, aligned text, one fact per line ("rule:        name (file:17, ttl 120s)").
std::string format_explanation(const cache_rules::RuleSet& rules, const Explanation& explanation);

}  // namespace pgshelf::proxy
